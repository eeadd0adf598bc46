"""Off-policy evaluation: what another policy would have earned on the logged decisions.

Every logged decision carries each eligible candidate's probability of being picked (mu, the
logging policy's, with which the pick was drawn) and its propensity at decision time (the
model's posterior mean, r_hat). For a target policy pi, with weight w = pi(chosen) / mu(chosen):

- IPS (Horvitz-Thompson): mean of w * reward. Unbiased when mu is right and mu > 0 wherever pi
  > 0; its variance grows with E[pi^2 / mu], so wide when pi and mu differ much.
- SNIPS (self-normalised IPS, Swaminathan & Joachims 2015): sum of w * reward over the sum of
  w; slightly biased, lower variance; its interval by the delta method for a ratio.
- Doubly robust (Dudik, Langford & Li 2011): per decision sum_a pi(a) r_hat(a) + w * (reward -
  r_hat(chosen)). Unbiased when either r_hat or mu is right. r_hat is the model as it was at
  decision time, fitted only on earlier decisions' outcomes: it is independent of the
  decision's own reward (the sequential form of the cross-fitting DR asks for), so the
  correction term has mean 0 given the model and DR stays unbiased under a right mu.

Honest intervals. The normal interval needs the variance of the per-decision terms. Their
sample variance misses what the sample did not see: when the logging policy picks an action
with probability 0.0005, a target that favours it draws its value from a handful of decisions
with weights in the thousands, and most logs contain none of them, so the sample variance (and
the interval) is near 0 while the truth sits far away. Every candidate's mu and r_hat are
logged, so the terms' variance can also be computed in expectation over the actions the
logging policy could have picked (the decomposition of Dudik et al. 2014, Statistical Science
29(4), Theorem 1), e.g. for IPS with 0/1 rewards:

    E[(w r)^2 | x] = sum_a pi(a)^2 / mu(a) * r_hat(a)

The standard error is the larger of the sample one and this model-based one: the first is
right when the model is wrong, the second when the sample is too small to show its tail.
Weights are not clipped (clipping trades an unknown bias for variance; the floor of the logging
policy bounds them instead: max weight <= candidates / epsilon). Intervals are cut to [0, 1]:
a reward rate lies there.

Support diagnostics: the expected effective sample size n^2 / sum_i sum_a pi^2 / mu (what the
weights leave of the decisions, whatever the rewards drew), the largest weight the target can
take, and the share of the target's choices the logging policy could not make (mu = 0; IPS and
SNIPS cannot see that part, DR takes it from the model alone).

Left out (uncovered), by reason: the target has no action (an always-action policy whose
action was not eligible), a mandatory action won (probability 1: no other action could have
been picked), the policy's pick gave way to a budget or contact limit (the logged probability
is not the one the pick was made with), or the log cannot be reweighted (no positive pick
probability, malformed candidates). Left in, they would weigh every other target's choice 0
and bias its value toward 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from statistics import NormalDist
from typing import Any

import numpy as np

# Why a decision is left out (the reasons of EvaluatePolicyResponse.uncovered_reasons).
NO_TARGET_ACTION = "NO_TARGET_ACTION"
MANDATORY = "MANDATORY"
REPLACED = "REPLACED"
UNUSABLE_LOG = "UNUSABLE_LOG"
_SUPPORTED = ""
_REASONS = (_SUPPORTED, MANDATORY, REPLACED, UNUSABLE_LOG)
_REASON_INDEX = {r: i for i, r in enumerate(_REASONS)}

# Below this expected effective sample size the normal interval rests on too few decisions
# (at a 5% reward rate, about 5 rewards) to be trusted.
MIN_RELIABLE_ESS = 100.0


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
    unsupported_reason: str = ""
    """MANDATORY, REPLACED or UNUSABLE_LOG when not supported ("" : MANDATORY)."""


@dataclass(frozen=True)
class LoggedDecisions:
    """n logged decisions as arrays of (n, width) candidate slots, each row's slots in action
    key order (so the first of equal scores is the smallest key, as in production) and padded
    with action -1. The estimators and targets work on these, never per decision."""

    keys: tuple[str, ...]
    """Action keys, sorted; ``action`` holds indices into it."""
    action: np.ndarray
    propensity: np.ndarray
    value: np.ndarray
    lever: np.ndarray
    context_weight: np.ndarray
    pick: np.ndarray
    """Every candidate's probability under the logging policy."""
    chosen: np.ndarray
    """(n,) the chosen candidate's slot, -1 when it is not among the candidates."""
    logged_probability: np.ndarray
    reward: np.ndarray
    reason: np.ndarray
    """(n,) index into _REASONS: 0 supported."""

    @property
    def valid(self) -> np.ndarray:
        return self.action >= 0

    def __len__(self) -> int:
        return int(self.reward.size)

    def code(self, action: str) -> int:
        """The index of ``action`` in keys, -1 when no decision had it."""
        found = int(np.searchsorted(self.keys, action)) if self.keys else 0
        return found if found < len(self.keys) and self.keys[found] == action else -1

    @staticmethod
    def from_rows(candidates: Sequence[Sequence[Sequence[Any]]], chosen: Sequence[str],
                  probability: Sequence[float], reward: Sequence[float],
                  reason: Sequence[str]) -> LoggedDecisions:
        """From one row per decision: its candidates as [action, propensity, value, lever,
        context weight, pick probability] (value, lever and context weight None: 1; pick
        probability None: 0), the action chosen, its logged pick probability, the reward and
        why the decision cannot be reweighted ("" : it can). A row whose candidates are
        malformed is kept as UNUSABLE_LOG. Vectorised: no per-candidate Python objects."""
        n = len(candidates)
        reasons = np.array([_REASON_INDEX.get(r, _REASON_INDEX[UNUSABLE_LOG]) for r in reason],
                           dtype=np.int8).reshape(n)
        lengths = np.fromiter((len(c) for c in candidates), dtype=np.int64, count=n)
        flat = list(chain.from_iterable(candidates))
        try:
            columns = _columns(flat)
        except (TypeError, ValueError, IndexError):
            # Some row is malformed: find it (rare, so per row), mark it and drop its candidates.
            good = np.ones(n, dtype=bool)
            for i, one in enumerate(candidates):
                try:
                    _columns(list(one))
                except (TypeError, ValueError, IndexError):
                    good[i] = False
            reasons[~good] = _REASON_INDEX[UNUSABLE_LOG]
            lengths[~good] = 0
            flat = list(chain.from_iterable(c for c, ok in zip(candidates, good, strict=True)
                                            if ok))
            columns = _columns(flat)
        names, numbers = columns
        keys = tuple(sorted(set(names)))
        code_of = {k: i for i, k in enumerate(keys)}
        codes = np.fromiter((code_of[a] for a in names), dtype=np.int64, count=len(names))
        width = int(lengths.max()) if n else 0
        row = np.repeat(np.arange(n), lengths)
        slot = np.arange(len(names)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        action = np.full((n, width), -1, dtype=np.int64)
        action[row, slot] = codes
        grid = np.zeros((5, n, width))
        grid[:, row, slot] = numbers
        # A propensity missing makes the row unusable; the other terms default as logged.
        missing = np.zeros((n, width), dtype=bool)
        missing[row, slot] = np.isnan(numbers[0])
        reasons[missing.any(axis=1)] = _REASON_INDEX[UNUSABLE_LOG]
        for term in (1, 2, 3):
            grid[term] = np.where(np.isnan(grid[term]), 1.0, grid[term])
        grid[4] = np.nan_to_num(grid[4], nan=0.0)
        grid[0] = np.nan_to_num(grid[0], nan=0.0)
        # Slots in action-key order (padding last): ties then go to the smallest key.
        order = np.argsort(np.where(action >= 0, action, len(keys)), axis=1, kind="stable")
        action = np.take_along_axis(action, order, axis=1)
        grid = np.take_along_axis(grid, np.broadcast_to(order, grid.shape), axis=2)
        chosen_code = np.fromiter((code_of.get(c, -2) for c in chosen), dtype=np.int64,
                                  count=n)
        hit = action == chosen_code[:, None]
        chosen_slot = np.where(hit.any(axis=1), hit.argmax(axis=1), -1) if width else \
            np.full(n, -1, dtype=np.int64)
        return LoggedDecisions(keys, action, grid[0], grid[1], grid[2], grid[3], grid[4],
                               chosen_slot, np.asarray(probability, dtype=float).reshape(n),
                               np.asarray(reward, dtype=float).reshape(n), reasons)

    @staticmethod
    def of(decisions: Sequence[LoggedDecision]) -> LoggedDecisions:
        return LoggedDecisions.from_rows(
            [[[c.action, c.propensity, c.value, c.lever, c.context_weight, c.pick_probability]
              for c in d.candidates] for d in decisions],
            [d.chosen for d in decisions], [d.pick_probability for d in decisions],
            [d.reward for d in decisions],
            ["" if d.supported else (d.unsupported_reason or MANDATORY) for d in decisions])


def _columns(flat: list[Sequence[Any]]) -> tuple[list[str], np.ndarray]:
    """Candidates as action keys and a (5, m) array of their numbers (None: NaN)."""
    if not flat:
        return [], np.zeros((5, 0))
    # One object array, no list per candidate (the collector's passes over a million small
    # lists cost more than the numbers); None (a term not logged) becomes NaN.
    table = np.array(flat, dtype=object)
    if table.ndim != 2 or table.shape[1] != 6:
        raise ValueError("malformed candidate")
    names = table[:, 0].tolist()
    if not all(isinstance(a, str) for a in names):
        raise ValueError("malformed candidate")
    terms = table[:, 1:]
    numbers = np.where(terms == None, np.nan, terms).astype(float).T  # noqa: E711
    if np.isinf(numbers).any():
        raise ValueError("a number is not finite")
    return names, numbers


Target = Callable[[LoggedDecisions], np.ndarray]
"""A policy to evaluate: each candidate slot's probability of being picked, (n, width); a row
of zeros = uncovered (the policy has no action there)."""


def _uniform(valid: np.ndarray) -> np.ndarray:
    return np.asarray(valid / valid.sum(axis=1, keepdims=True).clip(min=1), dtype=float)


def uniform_random() -> Target:
    """Uniformly at random among each decision's candidates."""
    return lambda logged: _uniform(logged.valid)


def always(action: str) -> Target:
    """Always `action` when it was eligible; uncovered otherwise."""

    def target(logged: LoggedDecisions) -> np.ndarray:
        code = logged.code(action)
        return np.asarray((logged.action == code) & (code >= 0), dtype=float)

    return target


def best_of(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """The best score of each row (NaN or -inf: not a candidate; the first of equal ones),
    mixed with ``epsilon`` uniform among the scored; rows with none scored are all 0."""
    scored = np.isfinite(scores)
    best = np.argmax(np.where(scored, scores, -np.inf), axis=1)
    chances = epsilon * _uniform(scored)
    any_scored = scored.any(axis=1)
    chances[np.arange(len(scores))[any_scored], best[any_scored]] += 1.0 - epsilon
    return chances


def by_action(logged: LoggedDecisions, overrides: Mapping[str, float],
               logged_numbers: np.ndarray) -> np.ndarray:
    """The logged numbers with each overridden action's replaced."""
    if not overrides:
        return logged_numbers
    table = np.full(len(logged.keys) + 1, np.nan)  # the last: padding (code -1)
    for key, number in overrides.items():
        code = logged.code(key)
        if code >= 0:
            table[code] = number
    new = table[logged.action]
    return np.where(np.isnan(new), logged_numbers, new)


def greedy(levers: Mapping[str, float] | None = None, values: Mapping[str, float] | None = None,
           epsilon: float = 0.0) -> Target:
    """The best score propensity x context weight x value x lever by the logged propensities,
    with levers and values replaced where given (ties to the smallest action key), mixed with
    `epsilon` uniform exploration."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError("epsilon must lie in [0, 1]")
    new_levers, new_values = dict(levers or {}), dict(values or {})

    def target(logged: LoggedDecisions) -> np.ndarray:
        scores = (logged.propensity * logged.context_weight
                  * by_action(logged, new_values, logged.value)
                  * by_action(logged, new_levers, logged.lever))
        return best_of(np.where(logged.valid, scores, np.nan), epsilon)

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
    uncovered_reasons: Mapping[str, int] = field(default_factory=dict)
    expected_effective_sample_size: float = 0.0
    max_weight: float = 0.0
    unsupported_share: float = 0.0
    """Mean share of the target's choices the logging policy gave probability 0."""
    warnings: tuple[str, ...] = ()
    """Why the estimates should not be trusted (empty: no reason known)."""


_NOTHING = Estimate(0.0, 0.0, 0.0, 0.0)


def _estimate(value: float, variance: float, n: int, z: float) -> Estimate:
    se = math.sqrt(max(variance, 0.0) / n) if n > 1 else 0.0
    return Estimate(value, max(0.0, value - z * se), min(1.0, value + z * se), se)


def _sample_variance(terms: np.ndarray) -> float:
    return float(terms.var(ddof=1)) if terms.size > 1 else 0.0


def evaluate(logged: LoggedDecisions | Sequence[LoggedDecision], target: Target,
             confidence: float = 0.95) -> Evaluation:
    """The target policy's expected reward per decision, estimated on `logged`."""
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    if not isinstance(logged, LoggedDecisions):
        logged = LoggedDecisions.of(logged)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    pi = target(logged) if len(logged) else np.zeros((0, 0))
    valid = logged.valid
    has_target = pi.sum(axis=1) > 0 if pi.size else np.zeros(len(logged), dtype=bool)
    supported = (logged.reason == 0) & (logged.logged_probability > 0) & (logged.chosen >= 0)
    covered = has_target & supported
    # One reason per left-out decision: what the log says first (it rules out every target),
    # then whether the target has an action there.
    reasons: dict[str, int] = {}
    for index, name in enumerate(_REASONS[1:], start=1):
        count = int((logged.reason == index).sum())
        if count:
            reasons[name] = count
    bad_log = int(((logged.reason == 0) & ~supported).sum())
    if bad_log:
        reasons[UNUSABLE_LOG] = reasons.get(UNUSABLE_LOG, 0) + bad_log
    no_target = int((supported & ~has_target).sum())
    if no_target:
        reasons[NO_TARGET_ACTION] = no_target
    uncovered = int(sum(reasons.values()))

    n = int(covered.sum())
    if n == 0:
        return Evaluation(0, uncovered, _NOTHING, _NOTHING, _NOTHING, _NOTHING, 0.0,
                          uncovered_reasons=reasons, warnings=("NO_DECISIONS",))
    pi = pi[covered]
    mu = np.where(valid[covered], logged.pick[covered], 0.0)
    r_hat = np.where(valid[covered], logged.propensity[covered], 0.0)
    r = logged.reward[covered]
    rows = np.arange(n)
    slot = logged.chosen[covered]
    w = pi[rows, slot] / logged.logged_probability[covered]
    # Per-decision expectations over the actions the logging policy could have picked.
    reachable = mu > 0
    ratio = np.divide(pi * pi, mu, out=np.zeros_like(mu), where=reachable)  # pi^2 / mu
    second_weight = ratio.sum(axis=1)  # E[w^2 | x]
    unsupported_share = float(np.where(reachable, 0.0, pi).sum(axis=1).mean())
    max_weight = float(np.divide(pi, mu, out=np.zeros_like(mu), where=reachable).max())

    # IPS.
    ips_terms = w * r
    ips_value = float(ips_terms.mean())
    ips_model = float((ratio * r_hat).sum(axis=1).mean()) - ips_value ** 2
    ips = _estimate(ips_value, max(_sample_variance(ips_terms), ips_model), n, z)

    # Doubly robust: Var = Var_x(direct) + E_x[sum_a pi^2 / mu * Var(r | x, a)].
    direct = (pi * r_hat).sum(axis=1)
    dr_terms = direct + w * (r - r_hat[rows, slot])
    dr_model = _sample_variance(direct) + float(
        (ratio * r_hat * (1.0 - r_hat)).sum(axis=1).mean())
    dr = _estimate(float(dr_terms.mean()), max(_sample_variance(dr_terms), dr_model), n, z)

    # SNIPS, delta method for a ratio of means: Var ~ E[w^2 (r - V)^2] / E[w]^2.
    total = float(w.sum())
    if total > 0.0:
        value = float((w * r).sum()) / total
        mean_w = total / n
        sample = float((w * w * (r - value) ** 2).mean()) / mean_w ** 2
        expected_w = float(np.where(reachable, pi, 0.0).sum(axis=1).mean())
        model = float((ratio * (r_hat * (1.0 - 2.0 * value) + value ** 2)).sum(axis=1).mean()
                      ) / max(expected_w, 1e-12) ** 2
        # _estimate divides by n; the delta method's variance is per decision, as above.
        snips = _estimate(value, max(sample, model), n, z)
        ess = total * total / float((w * w).sum())
    else:
        # No decision where the target's choice was picked: SNIPS knows nothing of the rate
        # (0 / 0), so it says so with the whole range (the standard error of a 0/1 variable
        # at its largest), never 0 +- 0.
        snips, ess = Estimate(0.0, 0.0, 1.0, 0.5), 0.0
    expected_ess = n * n / float(second_weight.sum()) if second_weight.sum() > 0 else 0.0

    warnings: list[str] = []
    if expected_ess < MIN_RELIABLE_ESS:
        warnings.append("LOW_EFFECTIVE_SAMPLE_SIZE")
    if unsupported_share > 0.0:
        warnings.append("UNSUPPORTED_ACTIONS")
    return Evaluation(decisions=n, uncovered=uncovered,
                      logged=_estimate(float(r.mean()), _sample_variance(r), n, z), ips=ips,
                      snips=snips, doubly_robust=dr, effective_sample_size=ess,
                      uncovered_reasons=reasons, expected_effective_sample_size=expected_ess,
                      max_weight=max_weight, unsupported_share=unsupported_share,
                      warnings=tuple(warnings))
