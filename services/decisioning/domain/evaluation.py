"""Off-policy evaluation: what another policy would have earned on the logged decisions.

Every logged decision carries the probability with which its action was picked (mu) and each
eligible candidate's propensity at decision time. For a target policy pi:

- IPS: mean of pi(chosen) / mu * reward; unbiased when mu is right, wide when pi and the
  logging policy differ much.
- SNIPS: the same weighted rewards divided by the sum of the weights instead of n; slightly
  biased, much lower variance; its interval by the delta method.
- Doubly robust: the logged propensities are the reward model r(x, a) (the posterior mean of
  the conversion rate at decision time); per decision sum_a pi(a) r(x, a) + pi(chosen) / mu *
  (reward - r(x, chosen)). Unbiased when either the reward model or mu is right; with a
  reasonable model, much narrower than IPS.

Intervals are normal, from the per-decision terms. A decision the target policy has no action
for (an always-action policy whose action was not eligible) is uncovered and left out; so is a
decision logged with no pick probability (it cannot be reweighted), and an unsupported one: a
mandatory action won it (probability 1, no other action could have been picked) or its winner
gave way to a budget or contact limit after the policy picked (the logged probability is not
the one the pick was made with). Left in, they would weigh every other target's choice 0 and
bias its value toward 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class LoggedCandidate:
    """One eligible candidate of a logged decision, as it was then."""

    action: str
    propensity: float
    value: float
    lever: float
    context_weight: float
    pick_probability: float


@dataclass(frozen=True)
class LoggedDecision:
    """A decision with a known outcome: its candidates, the action picked, the probability it
    was picked with and the reward (1 rewarded, 0 not)."""

    candidates: Sequence[LoggedCandidate]
    chosen: str
    pick_probability: float
    reward: float
    supported: bool = True
    """False when the logging policy could pick nothing else (a mandatory action won) or the
    pick was replaced after it (a budget or contact limit): left out, counted as uncovered."""


Target = Callable[[LoggedDecision], Mapping[str, float]]
"""A policy to evaluate: each candidate's probability of being picked; {} = uncovered."""


def uniform_random() -> Target:
    """Uniformly at random among each decision's candidates."""

    def target(decision: LoggedDecision) -> Mapping[str, float]:
        if not decision.candidates:
            return {}
        share = 1.0 / len(decision.candidates)
        return {c.action: share for c in decision.candidates}

    return target


def always(action: str) -> Target:
    """Always `action` when it was eligible; uncovered otherwise."""

    def target(decision: LoggedDecision) -> Mapping[str, float]:
        return {action: 1.0} if any(c.action == action for c in decision.candidates) else {}

    return target


def greedy(levers: Mapping[str, float] | None = None, values: Mapping[str, float] | None = None,
           epsilon: float = 0.0) -> Target:
    """The best score propensity x context weight x value x lever by the logged propensities,
    with levers and values replaced where given (ties to the smallest action key), mixed with
    `epsilon` uniform exploration."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError("epsilon must lie in [0, 1]")
    new_levers, new_values = dict(levers or {}), dict(values or {})

    def target(decision: LoggedDecision) -> Mapping[str, float]:
        if not decision.candidates:
            return {}
        best = min(decision.candidates, key=lambda c: (
            -c.propensity * c.context_weight * new_values.get(c.action, c.value)
            * new_levers.get(c.action, c.lever), c.action))
        share = epsilon / len(decision.candidates)
        chances = {c.action: share for c in decision.candidates}
        chances[best.action] += 1.0 - epsilon
        return chances

    return target


@dataclass(frozen=True)
class Estimate:
    value: float
    lower: float
    upper: float
    standard_error: float


@dataclass(frozen=True)
class Evaluation:
    decisions: int
    uncovered: int
    logged: Estimate
    ips: Estimate
    snips: Estimate
    doubly_robust: Estimate
    effective_sample_size: float
    # Exposed decisions whose window is still open: not in the estimates (set by the caller,
    # which reads the log; evaluate() sees only final outcomes).
    pending: int = 0


def _estimate(value: float, standard_error: float, z: float) -> Estimate:
    return Estimate(value, value - z * standard_error, value + z * standard_error,
                    standard_error)


def _mean_estimate(terms: np.ndarray, z: float) -> Estimate:
    n = terms.size
    if n == 0:
        return Estimate(0.0, 0.0, 0.0, 0.0)
    se = float(terms.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    return _estimate(float(terms.mean()), se, z)


def evaluate(logged: Sequence[LoggedDecision], target: Target,
             confidence: float = 0.95) -> Evaluation:
    """The target policy's expected reward per decision, estimated on `logged`."""
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    rewards: list[float] = []
    weights: list[float] = []
    direct: list[float] = []
    modelled: list[float] = []
    uncovered = 0
    for decision in logged:
        chances = target(decision)
        if not chances or not decision.pick_probability > 0.0 or not decision.supported:
            uncovered += 1
            continue
        propensity = {c.action: c.propensity for c in decision.candidates}
        rewards.append(decision.reward)
        weights.append(chances.get(decision.chosen, 0.0) / decision.pick_probability)
        direct.append(sum(p * propensity.get(a, 0.0) for a, p in chances.items()))
        modelled.append(propensity.get(decision.chosen, 0.0))
    r, w = np.asarray(rewards), np.asarray(weights)
    n = r.size
    ips = _mean_estimate(w * r, z)
    dr = _mean_estimate(np.asarray(direct) + w * (r - np.asarray(modelled)), z)
    total = float(w.sum())
    if total > 0.0:
        value = float((w * r).sum()) / total
        # Delta method for a ratio of means: Var ~ sum w^2 (r - V)^2 / (sum w)^2.
        se = math.sqrt(float((w * w * (r - value) ** 2).sum())) / total
        snips = _estimate(value, se, z)
        ess = total * total / float((w * w).sum())
    else:
        snips, ess = Estimate(0.0, 0.0, 0.0, 0.0), 0.0
    return Evaluation(decisions=n, uncovered=uncovered, logged=_mean_estimate(r, z), ips=ips,
                      snips=snips, doubly_robust=dr, effective_sample_size=ess)
