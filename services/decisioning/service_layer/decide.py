"""Decide: the ranked eligible actions of a decision point for a batch of people, in one
transaction.

Per call: the point and its actions (their compiled expressions cached by etag), the models
(cached by version), the replays of request ids and the contact counts are read with one query
each, whatever the batch size; every candidate of every person is checked (validity, budget,
contact limits, channel content, eligibility, context weight, formula), the policy ranks the
whole batch at once, and the decisions are written in one bulk insert. A failing expression
makes only that action ineligible for that person; nothing here fails the batch for one item."""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import cel
import numpy as np
from sqlalchemy import RowMapping

from cjo_decisioning.adapters import catalogue as repository
from cjo_decisioning.adapters import decisions as log
from cjo_decisioning.adapters import models as model_store
from cjo_decisioning.adapters import outcomes as outcome_store
from cjo_decisioning.adapters.tables import EXPOSED, NO_ACTION, PENDING
from cjo_decisioning.domain.catalogue import (
    Action,
    ActionContent,
    StoredPoint,
    decision_not_found,
    point_not_found,
)
from cjo_decisioning.domain.features import ContextView, Features, featurize
from cjo_decisioning.domain.model import ActionModel
from cjo_decisioning.domain.policy import Candidate, PolicyConfig, Ranked, decide
from cjo_platform.cel import CelEvaluationError, Expression, load_expression
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import InvalidArgument
from cjo_platform.profiles import CONSENT, IDENTIFIERS, SEGMENTS, consent_view

# Ineligibility reasons (IneligibilityReason names without the prefix).
ELIGIBILITY_RULE = "ELIGIBILITY_RULE"
ELIGIBILITY_ERROR = "ELIGIBILITY_ERROR"
NOT_ACTIVE = "NOT_ACTIVE"
CONTACT_LIMIT = "CONTACT_LIMIT"
BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
NO_CONTENT_FOR_CHANNEL = "NO_CONTENT_FOR_CHANNEL"
ARBITRATION_ERROR = "ARBITRATION_ERROR"
ACTION_DELETED = "ACTION_DELETED"

MAX_ATTRIBUTES = 50
# A formula is affine in the propensity when its midpoint is the mean of its ends, up to this.
AFFINE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class DecisionContext:
    channel: str = ""  # "" any
    attributes: Mapping[str, Any] = field(default_factory=dict)
    time: datetime | None = None  # None: now
    journey_id: str = ""
    enrollment_id: str = ""
    node_id: str = ""

    def to_json(self, decide_time: datetime) -> dict[str, Any]:
        return {"channel": self.channel, "attributes": dict(self.attributes),
                "time": decide_time.isoformat(), "journey_id": self.journey_id,
                "enrollment_id": self.enrollment_id, "node_id": self.node_id}

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> DecisionContext:
        time = doc.get("time")
        return DecisionContext(doc.get("channel", ""), dict(doc.get("attributes") or {}),
                               None if time is None else datetime.fromisoformat(time),
                               doc.get("journey_id", ""), doc.get("enrollment_id", ""),
                               doc.get("node_id", ""))


@dataclass(frozen=True)
class DecideItem:
    profile_id: str  # the survivor's when identity answered for a merged-away id
    profile: Mapping[str, Any]  # the profile view
    context: DecisionContext
    request_id: str = ""


class RankedAction(NamedTuple):
    """A NamedTuple, not a dataclass: a batch builds one per candidate and decision, and a
    frozen dataclass's __init__ cost a twentieth of a BatchDecide."""

    action: str
    propensity: float
    score: float
    pick_probability: float
    value: float
    lever: float
    context_weight: float
    contents: tuple[ActionContent, ...] = ()
    mandatory: bool = False
    transactional: bool = False
    topic: str = ""
    control: bool = False


class IneligibleAction(NamedTuple):
    action: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    decision_id: str
    decision_point: str
    profile_id: str
    actions: tuple[RankedAction, ...]
    ineligible: tuple[IneligibleAction, ...]
    decide_time: datetime
    outcome: int
    context: DecisionContext
    expose_time: datetime | None = None
    reward_time: datetime | None = None


@dataclass(frozen=True)
class Engine:
    """What a decision needs beyond its inputs: ids, randomness and model refreshes."""

    new_id: Callable[[], str]
    seed: int | None = None
    draws: int = 256
    model_refresh_seconds: float = 1.0


def check_context(context: DecisionContext, field_path: str = "context") -> None:
    if len(context.attributes) > MAX_ATTRIBUTES:
        raise InvalidArgument.one(f"{field_path}.attributes", f"at most {MAX_ATTRIBUTES}")


_NO_CONSENT = consent_view(())


def profile_of(view: Mapping[str, Any]) -> dict[str, Any]:
    """An inline profile as a full view: the reserved keys a caller left out are empty."""
    full = dict(view)
    full.setdefault("computed", {})
    full.setdefault(SEGMENTS, [])
    if CONSENT not in full:
        full[CONSENT] = dict(_NO_CONSENT)
    full.setdefault(IDENTIFIERS, {})
    return full


# --- the catalogue, compiled and cached --------------------------------------------------------


@dataclass(frozen=True)
class _CompiledAction:
    action: Action
    etag: str
    eligibility: Expression | None


@dataclass
class _CompiledPoint:
    stored: StoredPoint
    context_weight: Expression | None
    formula: Expression | None
    # profile_keys of the point's expressions and its actions' rules, by the actions' etags.
    reads: dict[tuple[str, ...], frozenset[str] | None] = field(default_factory=dict)

    def profile_keys(self, actions: Mapping[str, _CompiledAction]) -> frozenset[str] | None:
        etags = tuple(f"{key}:{a.etag}" for key, a in sorted(actions.items()))
        cached = self.reads.get(etags, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        sources = [e.source for e in (self.context_weight, self.formula) if e is not None]
        sources += [a.eligibility.source for a in actions.values() if a.eligibility is not None]
        keys = profile_keys(sources)
        # One entry: the point's actions change rarely (threads may race here harmlessly).
        self.reads = {etags: keys}
        return keys


_lock = threading.Lock()
_points: dict[tuple[int, str, str], _CompiledPoint] = {}
_actions: dict[tuple[int, str, str], _CompiledAction] = {}
_MAX_CACHED = 10_000


def _expression(source: str, field_path: str) -> Expression | None:
    return load_expression(source, field_path) if source else None


def _point(uow: UnitOfWork, workspace_id: str, key: str) -> _CompiledPoint:
    engine = id(uow.session.get_bind().engine)
    etag = repository.point_etag(uow.session, workspace_id, key)
    if etag is None:
        raise point_not_found(key)
    with _lock:
        cached = _points.get((engine, workspace_id, key))
    if cached is not None and cached.stored.etag == etag:
        return cached
    stored = repository.get_point(uow.session, workspace_id, key)
    if stored is None:
        raise point_not_found(key)
    arbitration = stored.point.arbitration
    compiled = _CompiledPoint(stored,
                              _expression(arbitration.context_weight,
                                          "arbitration.context_weight"),
                              _expression(arbitration.formula, "arbitration.formula"))
    with _lock:
        if len(_points) > _MAX_CACHED:
            _points.clear()
        _points[(engine, workspace_id, key)] = compiled
    return compiled


def _catalogue(uow: UnitOfWork, workspace_id: str, keys: Sequence[str],
               ) -> tuple[dict[str, _CompiledAction], dict[str, int]]:
    """The point's existing actions (compiled) and their exposures so far (budgets)."""
    engine = id(uow.session.get_bind().engine)
    current = repository.action_etags(uow.session, workspace_id, keys)
    found: dict[str, _CompiledAction] = {}
    stale: list[str] = []
    with _lock:
        for key, (etag, _) in current.items():
            cached = _actions.get((engine, workspace_id, key))
            if cached is not None and cached.etag == etag:
                found[key] = cached
            else:
                stale.append(key)
    if stale:
        loaded = repository.get_actions(uow.session, workspace_id, stale)
        with _lock:
            if len(_actions) > _MAX_CACHED:
                _actions.clear()
            for key, stored in loaded.items():
                compiled = _CompiledAction(stored.action, stored.etag,
                                           _expression(stored.action.eligibility, "eligibility"))
                _actions[(engine, workspace_id, key)] = compiled
                found[key] = compiled
    return found, {key: exposures for key, (_, exposures) in current.items()}


# --- candidates --------------------------------------------------------------------------------


# `profile.name` not followed by a call: a read of one top-level key of the profile.
_PROFILE_READ = re.compile(r"\bprofile\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)(\s*\()?")
_PROFILE_NAME = re.compile(r"\bprofile\b")


def profile_keys(sources: Sequence[str]) -> frozenset[str] | None:
    """The top-level profile keys these expressions read, or None when one may read the
    profile otherwise (``profile["x"]``, ``profile.all(...)``, ``profile`` alone, ``.?``):
    then the whole profile is needed. Conservative on purpose: every ``profile`` in the text,
    even one inside a string literal, must be such a read, else the answer is None."""
    keys: set[str] = set()
    for source in sources:
        reads = list(_PROFILE_READ.finditer(source))
        if len(reads) != len(_PROFILE_NAME.findall(source)) or any(m.group(2) for m in reads):
            return None
        keys.update(m.group(1) for m in reads)
    return frozenset(keys)


def _variables(profile: Mapping[str, Any], context: Mapping[str, Any],
               keys: frozenset[str] | None) -> cel.Context:
    """A person's CEL variables, converted once for all the expressions run for them: turning
    a profile into CEL values is most of an evaluation's cost (~35 µs for a profile of 8
    traits against ~0.3 µs to run a small expression), and a decision runs several per person.
    Only the ``keys`` the point's expressions read are converted (an absent key stays absent,
    so ``has()`` answers the same), a quarter of the cost for a rule over one trait."""
    if keys is not None:
        profile = {key: profile[key] for key in keys if key in profile}
    return cel.Context(variables={"profile": profile, "context": context})


def _run(expression: Expression, variables: cel.Context, activation: Mapping[str, Any]) -> Any:
    """``expression.evaluate(activation)``, on the converted ``variables`` when its cost does
    not depend on the data (else the evaluation checks the bound with the data first)."""
    if expression.cost.depends_on_data:
        return expression.evaluate(activation)
    try:
        return expression.program.execute(variables)
    except Exception as exc:  # the Rust core's errors, as Expression.evaluate wraps them
        raise CelEvaluationError(f"{expression.source!r}: {exc}") from exc


def _number(value: Any) -> float | None:
    """A finite number >= 0, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _contacts(uow: UnitOfWork, workspace_id: str, items: Sequence[DecideItem],
              actions: Mapping[str, _CompiledAction], now: datetime,
              ) -> dict[tuple[str, str], list[datetime]]:
    limited = {key: a.action for key, a in actions.items()
               if a.action.contact_limits and not a.action.transactional}
    if not limited or not items:
        return {}
    longest = max(limit.period for a in limited.values() for limit in a.contact_limits)
    earliest = min(item.context.time or now for item in items)
    # A person's contacts under the ids merged into them count too (a merge makes their
    # decisions the survivor's).
    ids = outcome_store.people(uow.session, workspace_id, {item.profile_id for item in items})
    person = {alias: profile_id for profile_id, aliases in ids.items() for alias in aliases}
    found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for profile_id, action, exposed in log.contacts(
            uow.session, workspace_id, set(person), limited, earliest - longest):
        found[(person[profile_id], action)].append(exposed)
    return found


def _limit_reached(action: Action, exposures: Sequence[datetime], at: datetime) -> str | None:
    for limit in action.contact_limits:
        since = at - limit.period
        count = sum(1 for t in exposures if since <= t <= at)
        if count >= limit.max_exposures:
            return (f"{count} exposures in {limit.period} (at most {limit.max_exposures})")
    return None


def _formula_at(formula: Expression, variables: cel.Context, terms: Mapping[str, Any],
                propensity: float) -> float | None:
    variables.add_variable("propensity", propensity)
    return _number(_run(formula, variables, {**terms, "propensity": propensity}))


@dataclass
class _Evaluated:
    candidates: list[Candidate] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    ineligible: list[IneligibleAction] = field(default_factory=list)


def _candidates(point: _CompiledPoint, actions: Mapping[str, _CompiledAction],
                exposures: Mapping[str, int], contacts: Mapping[tuple[str, str], list[datetime]],
                item: DecideItem, at: datetime, context: ContextView,
                errors: list[str], reads: frozenset[str] | None) -> _Evaluated:
    spec = point.stored.point
    out = _Evaluated()
    cel_context = context.cel()
    variables: cel.Context | None = None
    for key in spec.actions:
        compiled = actions.get(key)
        if compiled is None:
            out.ineligible.append(IneligibleAction(key, ACTION_DELETED,
                                                   "the action was deleted"))
            continue
        action = compiled.action
        if (action.start_time and at < action.start_time) or (
                action.end_time and at >= action.end_time):
            out.ineligible.append(IneligibleAction(key, NOT_ACTIVE,
                                                   f"not offered at {at.isoformat()}"))
            continue
        if action.budget and exposures.get(key, 0) >= action.budget:
            out.ineligible.append(IneligibleAction(
                key, BUDGET_EXHAUSTED, f"{exposures.get(key, 0)} of {action.budget} exposed"))
            continue
        if action.contact_limits and not action.transactional:
            reached = _limit_reached(action, contacts.get((item.profile_id, key), ()), at)
            if reached:
                out.ineligible.append(IneligibleAction(key, CONTACT_LIMIT, reached))
                continue
        if context.channel and action.contents and action.content_for(context.channel) is None:
            out.ineligible.append(IneligibleAction(key, NO_CONTENT_FOR_CHANNEL,
                                                   f"no content for {context.channel}"))
            continue
        activation: dict[str, Any] = {"profile": item.profile, "context": cel_context}
        if variables is None and (compiled.eligibility or point.formula or point.context_weight):
            variables = _variables(item.profile, cel_context, reads)
        if compiled.eligibility is not None:
            assert variables is not None
            try:
                held = _run(compiled.eligibility, variables, activation)
            except CelEvaluationError as exc:
                out.ineligible.append(IneligibleAction(key, ELIGIBILITY_ERROR, str(exc)))
                continue
            if held is not True:
                out.ineligible.append(IneligibleAction(key, ELIGIBILITY_RULE,
                                                       f"{action.eligibility} is not true"))
                continue
        activation["action"] = action.cel()
        if variables is not None and (point.context_weight or point.formula):
            variables.add_variable("action", activation["action"])
        weight: float | None = 1.0
        if point.context_weight is not None:
            assert variables is not None
            try:
                weight = _number(_run(point.context_weight, variables, activation))
                problem = "is not a finite number >= 0"
            except CelEvaluationError as exc:
                weight, problem = None, str(exc)
            if weight is None:
                out.ineligible.append(IneligibleAction(
                    key, ARBITRATION_ERROR, f"context weight: {problem}"))
                continue
        assert weight is not None
        value, lever = action.effective_value, action.effective_lever
        slope, intercept = weight * value * lever, 0.0
        if point.formula is not None:
            assert variables is not None
            terms = {**activation, "context_weight": weight, "value": value, "lever": lever}
            for name in ("context_weight", "value", "lever"):
                variables.add_variable(name, terms[name])
            try:
                at0, at1, middle = (_formula_at(point.formula, variables, terms, p)
                                    for p in (0.0, 1.0, 0.5))
            except CelEvaluationError as exc:
                errors.append(f"arbitration.formula: {exc}")
                out.ineligible.append(IneligibleAction(key, ARBITRATION_ERROR, str(exc)))
                continue
            if at0 is None or at1 is None or middle is None:
                out.ineligible.append(IneligibleAction(
                    key, ARBITRATION_ERROR, "the formula gave no finite number >= 0"))
                continue
            if abs(middle - (at0 + at1) / 2) > AFFINE_TOLERANCE * max(1.0, abs(at0), abs(at1)):
                errors.append("arbitration.formula: not affine in propensity")
                out.ineligible.append(IneligibleAction(
                    key, ARBITRATION_ERROR, "the formula must be affine in propensity "
                                            "(a + b * propensity)"))
                continue
            slope, intercept = at1 - at0, at0
        out.weights[key] = weight
        out.candidates.append(Candidate(action=key, slope=slope, intercept=intercept,
                                        mandatory=action.mandatory,
                                        control=key == spec.control_action))
    return out


def _personal(point: _CompiledPoint, actions: Mapping[str, _CompiledAction]) -> bool:
    """Whether a candidate's checks depend on the person, beyond the time and channel."""
    return (point.context_weight is not None or point.formula is not None
            or any(a.eligibility is not None
                   or (a.action.contact_limits and not a.action.transactional)
                   for a in actions.values()))


# --- decide ------------------------------------------------------------------------------------


def _rng(engine: Engine, point: str, items: Sequence[DecideItem]) -> np.random.Generator:
    if engine.seed is None:
        return np.random.default_rng()
    text = "\x1f".join([point, *(item.request_id or item.profile_id for item in items)])
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return np.random.default_rng([engine.seed, digest])


def _contents_json(contents: Sequence[ActionContent]) -> list[dict[str, str]]:
    return [{"channel": c.channel, "content_key": c.content_key} for c in contents]


# The logged candidates. A decision's eligible candidates, best first, are logged as columns
# (COMPACT: one JSON object per decision), not as an object per candidate (the first format,
# still read): building and encoding an object per candidate was a tenth of a BatchDecide's
# CPU (issue 14). Its keys: "a" the actions, "p" their propensities, "s" scores, "q" pick
# probabilities, "v" values, "l" levers, "w" context weights (one list each, best first); "n"
# how many were returned; "m" whether the first is mandatory; "r" whether the first stands in
# for one the policy picked but a budget or contact limit refused (evaluation leaves the
# decision out: see domain.evaluation); "o" what each action offered (its contents on the
# decision's channel, mandatory, transactional, topic, control), the same for a batch's
# decisions, so encoded once per batch.
COMPACT_KEYS = ("a", "p", "s", "q", "v", "l", "w")


def _logged_candidates(ranked: Sequence[RankedAction], returned: int, replaced: bool,
                       offered: Any) -> dict[str, Any]:
    columns = list(zip(*ranked, strict=True)) if ranked else [()] * len(COMPACT_KEYS)
    return {**dict(zip(COMPACT_KEYS, columns, strict=False)),
            "n": min(returned, len(ranked)), "m": bool(ranked and ranked[0].mandatory),
            "r": replaced, "o": offered}


def _offered(ranked: Sequence[RankedAction]) -> dict[str, dict[str, Any]]:
    return {r.action: {"contents": _contents_json(r.contents), "mandatory": r.mandatory,
                       "transactional": r.transactional, "topic": r.topic,
                       "control": r.control} for r in ranked}


def _returned(stored: Any) -> tuple[RankedAction, ...]:
    """The returned candidates of a logged decision, in either format."""
    if isinstance(stored, list):  # an object per candidate
        return tuple(RankedAction(**{
            **{k: v for k, v in c.items() if k not in ("returned", "replaced")},
            "contents": tuple(ActionContent(**x) for x in c.get("contents", ()))})
            for c in stored if c.get("returned"))
    offered = stored["o"]
    out = []
    for action, propensity, score, pick, value, lever, weight in zip(
            *(stored[k][:stored["n"]] for k in COMPACT_KEYS), strict=True):
        about = offered[action]
        out.append(RankedAction(
            action, propensity, score, pick, value, lever, weight,
            tuple(ActionContent(**x) for x in about["contents"]), about["mandatory"],
            about["transactional"], about["topic"], about["control"]))
    return tuple(out)


def decision_from_row(row: RowMapping) -> Decision:
    ranked = _returned(row["candidates"])
    ineligible = tuple(IneligibleAction(i["action"], i["reason"], i.get("detail", ""))
                       for i in row["ineligible"])
    return Decision(row["decision_id"], row["decision_point"], row["profile_id"], ranked,
                    ineligible, row["decide_time"], int(row["outcome"]),
                    DecisionContext.from_json(row["context"]), row["expose_time"],
                    row["reward_time"])


def replayed_requests(uow: UnitOfWork, workspace_id: str, point_key: str,
                      request_ids: Collection[str]) -> set[str]:
    """Which of ``request_ids`` already have their decision at the point."""
    return set(log.replays(uow.session, workspace_id, point_key, request_ids))


def decide_batch(uow: UnitOfWork, workspace_id: str, point_key: str,
                 items: Sequence[DecideItem], engine: Engine) -> list[Decision]:
    """One decision per item, in order (a repeated request id gets its first decision)."""
    point = _point(uow, workspace_id, point_key)
    spec = point.stored.point
    now = uow.now()
    replayed = log.replays(uow.session, workspace_id, point_key,
                           [i.request_id for i in items if i.request_id])
    answers: list[Decision | None] = [
        decision_from_row(replayed[i.request_id]) if i.request_id in replayed else None
        for i in items]
    # A request id twice in one batch: the later ones get the first one's decision.
    first_of: dict[str, int] = {}
    fresh: list[int] = []
    for index, item in enumerate(items):
        if answers[index] is None:
            if item.request_id and item.request_id in first_of:
                continue
            if item.request_id:
                first_of[item.request_id] = index
            fresh.append(index)
    todo = [items[i] for i in fresh]
    if todo:
        actions, exposures = _catalogue(uow, workspace_id, spec.actions)
        contacts = _contacts(uow, workspace_id, todo, actions, now)
        stored = model_store.load(uow, workspace_id, point_key, list(actions),
                                  refresh_seconds=engine.model_refresh_seconds)
        prior = spec.model.effective_prior
        models = {key: stored.get(key) or ActionModel.prior(prior) for key in actions}
        errors: list[str] = []
        features: list[Features] = []
        evaluated: list[_Evaluated] = []
        times: list[datetime] = []
        reads = point.profile_keys(actions)
        # Without a rule about the person (eligibility, context weight, formula, contact
        # limit) every item at one time on one channel has the same candidates: checked once.
        personal = _personal(point, actions)
        shared: dict[tuple[datetime, str], _Evaluated] = {}
        for item in todo:
            at = (item.context.time or now).astimezone(UTC)
            view = ContextView(item.context.channel, at, item.context.attributes)
            times.append(at)
            features.append(featurize(item.profile, view, names=spec.model.features,
                                      contextual=not spec.model.non_contextual))
            if personal:
                evaluated.append(_candidates(point, actions, exposures, contacts, item, at,
                                             view, errors, reads))
                continue
            found = shared.get((at, view.channel))
            if found is None:
                found = shared[(at, view.channel)] = _candidates(
                    point, actions, exposures, contacts, item, at, view, errors, reads)
            # Read-only but for the reasons, which _log adds to per decision.
            evaluated.append(_Evaluated(found.candidates, found.weights, list(found.ineligible)))
        config = PolicyConfig(method=spec.exploration.method,
                              epsilon=spec.exploration.effective_epsilon,
                              min_control_share=spec.min_control_share, draws=engine.draws)
        rankings = decide(models, features, [e.candidates for e in evaluated], config,
                          _rng(engine, point_key, todo))
        # Budgets are reserved as the decisions are made: the budgeted rows are locked and
        # re-read now (the count the candidates were checked against may be stale), the winners
        # spend them in order, and the units go in the same transaction.
        spent = repository.lock_budgets(
            uow.session, workspace_id, [k for k, a in actions.items() if a.action.budget])
        decisions, rows, reserved = _log(uow, workspace_id, point, actions, spent, contacts,
                                         todo, times, features, evaluated, rankings, engine)
        log.insert(uow.session, rows)
        if reserved:
            repository.add_exposures(uow.session, workspace_id, reserved)
        if errors:
            repository.record_point_error(uow.session, workspace_id, point_key, len(errors),
                                          errors[-1], now)
        for index, decision in zip(fresh, decisions, strict=True):
            answers[index] = decision
    for index, item in enumerate(items):
        if answers[index] is None:
            answers[index] = answers[first_of[item.request_id]]
    return [a for a in answers if a is not None]


def _log(uow: UnitOfWork, workspace_id: str, point: _CompiledPoint,
         actions: Mapping[str, _CompiledAction], spent: Mapping[str, int],
         contacts: dict[tuple[str, str], list[datetime]], items: Sequence[DecideItem],
         times: Sequence[datetime], features: Sequence[Features],
         evaluated: Sequence[_Evaluated], rankings: Sequence[Sequence[Ranked]], engine: Engine,
         ) -> tuple[list[Decision], list[dict[str, Any]], dict[str, int]]:
    spec = point.stored.point
    on_decide = spec.exposure == "on_decide"
    window = spec.reward.effective_window
    limit = spec.effective_max_actions
    decisions: list[Decision] = []
    rows: list[dict[str, Any]] = []
    reserved: dict[str, int] = defaultdict(int)
    # A batch's winners spend budgets and contacts as they go: a winner whose budget is spent
    # (by this batch, or by another call since the candidates were checked) or whose contact
    # limit this batch's earlier decisions for the same person reached gives way to the next
    # candidate. Its logged pick probability is then the policy's without that constraint;
    # evaluation leaves such decisions out (their `replaced` flag in the log).
    left = {key: a.action.budget - spent.get(key, 0) for key, a in actions.items()
            if a.action.budget}
    # A batch's items mostly share one context (BatchDecide's): converted once per time.
    # Its JSON is encoded once (a log fragment).
    contexts: dict[tuple[int, datetime], tuple[DecisionContext, Any]] = {}
    # An action's contents on a channel: the same for every decision of the batch.
    offers: dict[tuple[str, str], tuple[ActionContent, ...]] = {}
    # What the actions of a decision offered, as a log fragment (encoded once per batch for
    # each channel and set of candidates).
    offered: dict[tuple[str, frozenset[str]], Any] = {}
    for item, at, feats, found, ranking in zip(items, times, features, evaluated, rankings,
                                               strict=True):
        ranking = list(ranking)
        replaced = False
        while ranking:
            head = actions[ranking[0].action].action
            if left.get(head.key, 1) <= 0:
                found.ineligible.append(IneligibleAction(
                    head.key, BUDGET_EXHAUSTED, f"{head.budget} of {head.budget} reserved"))
            elif head.contact_limits and not head.transactional and (reached := _limit_reached(
                    head, contacts.get((item.profile_id, head.key), ()), at)):
                found.ineligible.append(IneligibleAction(head.key, CONTACT_LIMIT, reached))
            else:
                break
            ranking.pop(0)
            replaced = True
        if ranking:
            head = actions[ranking[0].action].action
            if head.key in left:
                left[head.key] -= 1
                reserved[head.key] += 1
            if head.contact_limits and not head.transactional:
                contacts.setdefault((item.profile_id, head.key), []).append(at)
        ranked: list[RankedAction] = []
        for r in ranking:
            action = actions[r.action].action
            channel = item.context.channel
            contents = offers.get((r.action, channel))
            if contents is None:
                contents = action.contents
                if channel:
                    contents = tuple(c for c in contents if c.channel == channel)
                offers[(r.action, channel)] = contents
            ranked.append(RankedAction(
                r.action, float(r.propensity), float(r.score), float(r.pick_probability),
                action.effective_value, action.effective_lever, found.weights[r.action],
                contents, action.mandatory, action.transactional, action.topic,
                r.action == spec.control_action))
        first = ranked[0] if ranked else None
        offer = (item.context.channel, frozenset([r.action for r in ranked]))
        fragment = offered.get(offer)
        if fragment is None:
            fragment = offered[offer] = log.fragment(_offered(ranked))
        outcome = NO_ACTION if first is None else EXPOSED if on_decide else PENDING
        expose_time = at if outcome == EXPOSED else None
        shared = contexts.get((id(item.context), at))
        if shared is None:
            shared = contexts[(id(item.context), at)] = (
                replace(item.context, time=at), log.fragment(item.context.to_json(at)))
        decision = Decision(engine.new_id(), spec.key, item.profile_id, tuple(ranked[:limit]),
                            tuple(found.ineligible), at, outcome, shared[0], expose_time)
        decisions.append(decision)
        rows.append({
            "workspace_id": workspace_id, "decision_id": decision.decision_id,
            "decision_point": spec.key, "profile_id": item.profile_id,
            "action": first.action if first else "",
            "pick_probability": first.pick_probability if first else 0.0,
            "control": bool(first and first.control), "request_id": item.request_id,
            "decide_time": at, "decide_hour": int(at.timestamp() // 3600),
            "candidates": _logged_candidates(ranked, limit, replaced, fragment),
            "ineligible": [{"action": i.action, "reason": i.reason, "detail": i.detail}
                           for i in found.ineligible],
            "features": feats.to_json(), "context": shared[1],
            "outcome": outcome, "expose_time": expose_time,
            "reward_deadline": at + window if expose_time else None,
            "reward_time": None, "reward_event_id": "", "learned": False,
            "lease_owner": "", "lease_until": None})
    return decisions, rows, dict(reserved)


def get_decision(uow: UnitOfWork, workspace_id: str, decision_id: str) -> Decision:
    row = log.get(uow.session, workspace_id, decision_id)
    if row is None:
        raise decision_not_found(decision_id)
    return decision_from_row(row)

