"""Target policies replayed on logged decisions, for off-policy evaluation (the estimators are
domain.evaluation's): what a request asks for, checked, and turned into a function of one logged
decision.

The logged candidates carry what the arbitration used (propensity, value, lever, context
weight) and the probability with which the logged policy picked its winner, so a target policy
is a function of the logged decision alone: no profile is read again, no model is needed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from cjo_decisioning.domain import evaluation
from cjo_decisioning.domain.catalogue import Action, DecisionPoint
from cjo_decisioning.domain.evaluation import (
    LoggedCandidate,
    LoggedDecision,
    LoggedDecisions,
    Target,
)
from cjo_platform.cel import CelEvaluationError, Expression, compile_expression, load_expression
from cjo_platform.errors import InvalidArgument, Violations

DEFAULT_CONFIDENCE = 0.95
DEFAULT_EPSILON_GREEDY = 0.1
# What an alternative formula may read: the logged terms. The profile is not logged (and may
# have changed since), so a formula over `profile` or `context` cannot be replayed.
LOGGED_TERMS = ("propensity", "value", "lever", "context_weight", "action")
# Distinct (action, value, lever, context weight) whose formula coefficients are kept: one
# evaluation pair per combination instead of one evaluation per candidate and decision.
MAX_CACHED_TERMS = 100_000


@dataclass(frozen=True)
class UniformRandom:
    pass


@dataclass(frozen=True)
class AlwaysAction:
    action: str


@dataclass(frozen=True)
class Greedy:
    pass


@dataclass(frozen=True)
class Alternative:
    """The point with some settings changed. ``formula`` None keeps the point's (""
    is the default arbitration); ``method`` "" is no exploration."""

    formula: str | None = None
    context_weight: str = ""
    levers: Mapping[str, float] = field(default_factory=dict)
    values: Mapping[str, float] = field(default_factory=dict)
    method: str = ""  # "" | "thompson" | "epsilon_greedy" | "greedy" | "uniform_random"
    epsilon: float = 0.0


Policy = UniformRandom | AlwaysAction | Greedy | Alternative


@dataclass(frozen=True)
class EvaluationQuery:
    decision_point: str
    policy: Policy | None
    start: datetime | None = None
    end: datetime | None = None  # None: now
    confidence: float = 0.0  # 0: DEFAULT_CONFIDENCE

    @property
    def level(self) -> float:
        return self.confidence or DEFAULT_CONFIDENCE


def check_query(query: EvaluationQuery) -> None:
    """Every problem of the request that needs no storage, all at once."""
    v = Violations()
    v.check(math.isfinite(query.confidence) and 0 <= query.confidence < 1, "confidence_level",
            "must be in (0, 1); 0 means 0.95")
    if query.start is not None and query.end is not None:
        v.check(query.start < query.end, "end_time", "must be after start_time")
    policy = query.policy
    if policy is None:
        v.add("policy", "is required")
    elif isinstance(policy, AlwaysAction):
        v.check(bool(policy.action), "policy.always_action", "is empty")
    elif isinstance(policy, Alternative):
        _check_alternative(v, policy)
    v.raise_if_any()


def _check_alternative(v: Violations, policy: Alternative) -> None:
    prefix = "policy.alternative"
    for name, numbers in (("levers", policy.levers), ("values", policy.values)):
        for key, number in numbers.items():
            v.check(math.isfinite(number) and number >= 0, f"{prefix}.{name}[{key}]",
                    "must be a finite number >= 0")
    v.check(policy.method != "thompson", f"{prefix}.exploration.method",
            "Thompson sampling needs the model's posterior at decision time, which is not "
            "logged; evaluate GREEDY or EPSILON_GREEDY instead")
    v.check(math.isfinite(policy.epsilon) and 0 <= policy.epsilon <= 1,
            f"{prefix}.exploration.epsilon", "must be from 0 to 1")
    # The logged context weights are what a replay can use: a new context weight formula
    # would need the person's profile at decision time.
    v.check(not policy.context_weight, f"{prefix}.arbitration.context_weight",
            "cannot be replayed on logged decisions (the profile is not logged); the logged "
            "context weights are used")
    if policy.formula:
        try:
            compile_expression(policy.formula, f"{prefix}.arbitration.formula", LOGGED_TERMS)
        except InvalidArgument as exc:
            v.items.extend(exc.violations)


def log_reason(mandatory: object, replaced: object) -> str:
    """Why a logged decision cannot be reweighted, from its first candidate's flags: a
    mandatory action won it (probability 1), or its winner gave way to a budget or contact
    limit after the policy picked (``replaced``); "" when it can."""
    if mandatory:
        return evaluation.MANDATORY
    if replaced:
        return evaluation.REPLACED
    return ""


def logged_decision(candidates: Sequence[Mapping[str, Any]], chosen: str,
                    pick_probability: float, rewarded: bool) -> LoggedDecision | None:
    """A logged decision as stored (candidates as dicts), for tests and tools; None when its
    log cannot be used (no candidate, a malformed one, or no positive pick probability)."""
    if not candidates or not pick_probability > 0:
        return None
    try:
        logged = tuple(
            LoggedCandidate(str(c["action"]), float(c["propensity"]), float(c.get("value", 1.0)),
                            float(c.get("lever", 1.0)), float(c.get("context_weight", 1.0)),
                            float(c.get("pick_probability", 0.0)))
            for c in candidates)
    except (KeyError, TypeError, ValueError):
        return None
    reason = log_reason(candidates[0].get("mandatory"), candidates[0].get("replaced"))
    return LoggedDecision(logged, chosen, pick_probability, 1.0 if rewarded else 0.0,
                          not reason, reason)


def target_policy(policy: Policy, point: DecisionPoint, actions: Mapping[str, Action]) -> Target:
    """The policy as a function of one logged decision. Values and levers are the actions' as
    they are now (an alternative overrides some); an action deleted since keeps the logged
    ones."""
    if isinstance(policy, UniformRandom):
        return evaluation.uniform_random()
    if isinstance(policy, AlwaysAction):
        if policy.action not in point.actions:
            raise InvalidArgument.one("policy.always_action",
                                      f"{policy.action!r} is not an action of decision point "
                                      f"{point.key!r}")
        return evaluation.always(policy.action)
    levers = {key: action.effective_lever for key, action in actions.items()}
    values = {key: action.effective_value for key, action in actions.items()}
    if isinstance(policy, Greedy):
        return _best_score(point.arbitration.formula, "policy.greedy", actions, levers, values,
                           0.0)
    if policy.method == "uniform_random":
        return evaluation.uniform_random()
    epsilon = policy.epsilon
    if policy.method == "epsilon_greedy" and not epsilon:
        epsilon = DEFAULT_EPSILON_GREEDY
    if policy.method in ("", "greedy"):
        epsilon = 0.0
    formula = point.arbitration.formula if policy.formula is None else policy.formula
    field_path = ("policy.alternative.arbitration.formula" if policy.formula is not None
                  else "policy.alternative")
    return _best_score(formula, field_path, actions, {**levers, **policy.levers},
                       {**values, **policy.values}, epsilon)


def _best_score(formula: str, field_path: str, actions: Mapping[str, Action],
                levers: Mapping[str, float], values: Mapping[str, float],
                epsilon: float) -> Target:
    if not formula:
        return evaluation.greedy(levers=levers, values=values, epsilon=epsilon)
    expression = load_expression(formula, field_path)
    unreadable = sorted(expression.variables - set(LOGGED_TERMS))
    if unreadable:
        raise InvalidArgument.one(
            field_path, f"the arbitration formula reads {', '.join(unreadable)}, which "
                        f"decisions do not log; replay one over {', '.join(LOGGED_TERMS)}")
    return FormulaTarget(expression, {key: a.cel() for key, a in actions.items()}, levers,
                         values, epsilon)


class FormulaTarget:
    """The best score by a CEL arbitration formula over the logged terms, with a share
    ``epsilon`` uniform among the candidates the formula scores. A candidate whose formula
    fails or gives no finite number >= 0 is ineligible, as at decision time; a decision with
    none left is uncovered.

    A formula is affine in the propensity (decisions require it), so each distinct (action,
    value, lever, context weight) costs two evaluations, whatever the number of decisions; a
    formula that turns out not to be affine is evaluated per candidate."""

    def __init__(self, expression: Expression, action_cel: Mapping[str, dict[str, Any]],
                 levers: Mapping[str, float], values: Mapping[str, float],
                 epsilon: float) -> None:
        self.expression = expression
        self.action_cel = action_cel
        self.levers = levers
        self.values = values
        self.epsilon = epsilon
        # (action, value, lever, weight) -> (intercept, slope), or None: not affine.
        self._terms: dict[tuple[str, float, float, float], tuple[float, float] | None] = {}

    def _score(self, terms: tuple[str, float, float, float], propensity: float) -> float | None:
        action, value, lever, weight = terms
        activation = {"value": value, "lever": lever, "context_weight": weight,
                      "action": self.action_cel.get(action, {"key": action, "tags": []})}
        try:
            score = self.expression.evaluate({**activation, "propensity": propensity})
        except CelEvaluationError:
            return None
        if isinstance(score, bool) or not isinstance(score, int | float):
            return None
        score = float(score)
        return score if math.isfinite(score) and score >= 0 else None

    def _coefficients(self, terms: tuple[str, float, float, float]
                      ) -> tuple[float, float] | None:
        if terms not in self._terms:
            if len(self._terms) >= MAX_CACHED_TERMS:
                self._terms.clear()
            at_0, at_1, at_half = (self._score(terms, p) for p in (0.0, 1.0, 0.5))
            self._terms[terms] = None
            if (at_0 is not None and at_1 is not None and at_half is not None
                    and math.isclose(at_half, (at_0 + at_1) / 2, rel_tol=1e-9, abs_tol=1e-12)):
                self._terms[terms] = (at_0, at_1 - at_0)
        return self._terms[terms]

    def scores(self, logged: LoggedDecisions) -> np.ndarray:
        """(n, width) scores; NaN where the candidate is ineligible (or a padding slot)."""
        valid = logged.valid
        values = evaluation.by_action(logged, self.values, logged.value)[valid]
        levers = evaluation.by_action(logged, self.levers, logged.lever)[valid]
        combos = np.stack([logged.action[valid].astype(float), values, levers,
                           logged.context_weight[valid]], axis=1)
        unique, inverse = np.unique(combos, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        coefficients = np.full((len(unique), 2), np.nan)
        for u, (code, value, lever, weight) in enumerate(unique.tolist()):
            found = self._coefficients((logged.keys[int(code)], value, lever, weight))
            if found is not None:
                coefficients[u] = found
        propensity = logged.propensity[valid]
        flat = coefficients[inverse, 0] + coefficients[inverse, 1] * propensity
        for cell in np.flatnonzero(np.isnan(coefficients[inverse, 0])):
            code, value, lever, weight = unique[inverse[cell]].tolist()
            score = self._score((logged.keys[int(code)], value, lever, weight),
                                float(propensity[cell]))
            flat[cell] = np.nan if score is None else score
        flat = np.where(np.isfinite(flat) & (flat >= 0), flat, np.nan)
        scores = np.full(valid.shape, np.nan)
        scores[valid] = flat
        return scores

    def __call__(self, logged: LoggedDecisions) -> np.ndarray:
        # Slots are in action-key order and best_of takes the first best: ties go to the
        # smallest key, as decisions (and evaluation.greedy) break them, so the same
        # configuration is the same policy here as in production.
        return evaluation.best_of(self.scores(logged), self.epsilon)
