"""The catalogue: actions (offers) and decision points, and what makes them valid.

Plain data, stored as JSON (``to_json`` / ``from_json``); field violations name the fields of
the resource (``contents[0].content_key``, ``reward.window``), the API edge puts them under its
request field. Content keys and the existence of a point's actions need the storage and the
content service: the use-cases check those."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cjo_platform.cel import compile_expression
from cjo_platform.errors import Aborted, InvalidArgument, NotFound, Violations

ACTION_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
POINT_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
CHANNELS = ("email", "sms", "push", "in_app", "webhook")
MAX_DISPLAY_NAME = 200
MAX_TOPIC = 64
MAX_TAGS, MAX_TAG = 20, 64
MAX_CONTACT_LIMITS = 5
MIN_PERIOD, MAX_PERIOD = timedelta(minutes=1), timedelta(days=366)
# How far a caller's decision time may lie from the server's clock: a journey decides at its
# step's time, a batch job may lag, but a time a year off would expose a decision whose window
# had lapsed at once (or never does) and check contact limits at the wrong moment. A contact
# limit checked at such a time counts contacts up to MAX_PERIOD before it.
MAX_CONTEXT_TIME_SKEW = timedelta(days=1)
MAX_POINT_ACTIONS = 100
MAX_RANKED = 10
MAX_FEATURES = 100
MAX_EVENT_NAME = 128
MAX_CONTROL_SHARE = 0.5
DEFAULT_WINDOW = timedelta(days=7)
DEFAULT_PRIOR = 0.05
DEFAULT_EPSILON_GREEDY = 0.1
# Thompson sampling's default exploration floor: every eligible candidate keeps a pick
# probability of at least 0.02 / candidates, so the importance weights of off-policy
# evaluation stay below candidates / 0.02 (400 for 8 candidates) and every action keeps
# support; it costs at most 2% of the gap between the policy and uniform random.
DEFAULT_EXPLORATION_FLOOR = 0.02
METHODS = ("thompson", "epsilon_greedy", "greedy", "uniform_random")
EXPOSURES = ("reported", "on_decide")

# What each expression may read (the proto comments say so).
ELIGIBILITY_VARIABLES = ("profile", "context")
CONTEXT_WEIGHT_VARIABLES = ("action", "profile", "context")
FORMULA_VARIABLES = ("propensity", "context_weight", "value", "lever", "action", "profile",
                     "context")
REWARD_FILTER_VARIABLES = ("event", "profile", "decision")

T = TypeVar("T")


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContactLimit:
    max_exposures: int
    period: timedelta


@dataclass(frozen=True)
class ActionContent:
    channel: str  # a name of CHANNELS ("" when the caller gave none: refused)
    content_key: str


@dataclass(frozen=True)
class Action:
    """An action as its editor defines it (see action.proto)."""

    key: str
    display_name: str = ""
    contents: tuple[ActionContent, ...] = ()
    value: float = 0.0  # 0: 1
    eligibility: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    contact_limits: tuple[ContactLimit, ...] = ()
    budget: int = 0
    lever: float = 0.0  # 0: 1
    mandatory: bool = False
    transactional: bool = False
    topic: str = ""
    tags: tuple[str, ...] = ()

    @property
    def effective_value(self) -> float:
        return self.value or 1.0

    @property
    def effective_lever(self) -> float:
        return self.lever or 1.0

    def content_for(self, channel: str) -> str | None:
        return next((c.content_key for c in self.contents if c.channel == channel), None)

    def cel(self) -> dict[str, Any]:
        """``action`` in formulas and context weights."""
        return {"key": self.key, "tags": list(self.tags)}


@dataclass(frozen=True)
class StoredAction:
    action: Action
    etag: str
    create_time: datetime
    update_time: datetime
    exposures: int = 0


ACTION_MASK = frozenset({"display_name", "contents", "value", "eligibility", "start_time",
                         "end_time", "contact_limits", "budget", "lever", "mandatory",
                         "transactional", "topic", "tags"})


def check_action_key(key: str, field_path: str = "key") -> None:
    if not key:
        raise InvalidArgument.one(field_path, "is required")
    if not ACTION_KEY.fullmatch(key):
        raise InvalidArgument.one(field_path, "1 to 64 characters of a-z, 0-9, _ and -, "
                                              "starting with a letter or digit")


def _finite_non_negative(violations: Violations, number: float, field_path: str) -> None:
    violations.check(math.isfinite(number) and number >= 0, field_path,
                     "must be a finite number >= 0")


def _expression(violations: Violations, source: str, field_path: str,
                allowed: Collection[str]) -> None:
    if not source:
        return
    try:
        compile_expression(source, field_path, allowed)
    except InvalidArgument as exc:
        violations.items.extend(exc.violations)


def check_action(action: Action) -> Violations:
    """Every problem of ``action`` (its key included)."""
    v = Violations()
    try:
        check_action_key(action.key)
    except InvalidArgument as exc:
        v.items.extend(exc.violations)
    v.check(len(action.display_name) <= MAX_DISPLAY_NAME, "display_name",
            f"at most {MAX_DISPLAY_NAME} characters")
    seen: set[str] = set()
    for i, content in enumerate(action.contents):
        if v.check(content.channel in CHANNELS, f"contents[{i}].channel", "is required"):
            v.check(content.channel not in seen, f"contents[{i}].channel",
                    "at most one content per channel")
            seen.add(content.channel)
        v.check(bool(content.content_key), f"contents[{i}].content_key", "is required")
    _finite_non_negative(v, action.value, "value")
    _finite_non_negative(v, action.lever, "lever")
    _expression(v, action.eligibility, "eligibility", ELIGIBILITY_VARIABLES)
    if action.start_time and action.end_time:
        v.check(action.start_time < action.end_time, "end_time", "must be after start_time")
    v.check(len(action.contact_limits) <= MAX_CONTACT_LIMITS, "contact_limits",
            f"at most {MAX_CONTACT_LIMITS}")
    for i, limit in enumerate(action.contact_limits):
        v.check(limit.max_exposures >= 1, f"contact_limits[{i}].max_exposures",
                "must be at least 1")
        v.check(MIN_PERIOD <= limit.period <= MAX_PERIOD, f"contact_limits[{i}].period",
                "must be from 1 minute to 366 days")
    v.check(action.budget >= 0, "budget", "must not be negative")
    v.check(len(action.topic) <= MAX_TOPIC, "topic", f"at most {MAX_TOPIC} characters")
    v.check(len(action.tags) <= MAX_TAGS, "tags", f"at most {MAX_TAGS}")
    for i, tag in enumerate(action.tags):
        v.check(0 < len(tag) <= MAX_TAG, f"tags[{i}]", f"1 to {MAX_TAG} characters")
    return v


# --- decision points ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arbitration:
    formula: str = ""
    context_weight: str = ""


@dataclass(frozen=True)
class Exploration:
    method: str = "thompson"
    epsilon: float | None = None
    """None: not set (the method's default)."""

    @property
    def effective_epsilon(self) -> float:
        """The uniform share the policy mixes in: for epsilon-greedy its exploration (0.1 when
        unset or 0); for Thompson sampling the exploration floor, DEFAULT_EXPLORATION_FLOOR
        when unset (0 switches it off)."""
        if self.method == "epsilon_greedy" and not self.epsilon:
            return DEFAULT_EPSILON_GREEDY
        if self.method == "thompson" and self.epsilon is None:
            return DEFAULT_EXPLORATION_FLOOR
        return self.epsilon or 0.0


@dataclass(frozen=True)
class ModelSpec:
    non_contextual: bool = False
    features: tuple[str, ...] = ()
    prior_propensity: float = 0.0  # 0: DEFAULT_PRIOR

    @property
    def effective_prior(self) -> float:
        return self.prior_propensity or DEFAULT_PRIOR


@dataclass(frozen=True)
class Reward:
    event_name: str = ""
    filter: str = ""
    window: timedelta | None = None  # None: DEFAULT_WINDOW

    @property
    def effective_window(self) -> timedelta:
        return self.window or DEFAULT_WINDOW


@dataclass(frozen=True)
class DecisionPoint:
    """A decision point as its editor defines it (see decision_point.proto)."""

    key: str
    display_name: str = ""
    actions: tuple[str, ...] = ()
    arbitration: Arbitration = field(default_factory=Arbitration)
    max_actions: int = 0  # 0: 1
    exploration: Exploration = field(default_factory=Exploration)
    model: ModelSpec = field(default_factory=ModelSpec)
    reward: Reward = field(default_factory=Reward)
    exposure: str = "reported"
    control_action: str = ""
    min_control_share: float = 0.0

    @property
    def effective_max_actions(self) -> int:
        return self.max_actions or 1


@dataclass(frozen=True)
class StoredPoint:
    point: DecisionPoint
    etag: str
    create_time: datetime
    update_time: datetime
    error_count: int = 0
    last_error: str = ""
    last_error_time: datetime | None = None


POINT_MASK = frozenset({"display_name", "actions", "arbitration", "max_actions", "exploration",
                        "model", "reward", "exposure", "control_action", "min_control_share"})


def check_point_key(key: str, field_path: str = "key") -> None:
    if not key:
        raise InvalidArgument.one(field_path, "is required")
    if not POINT_KEY.fullmatch(key):
        raise InvalidArgument.one(field_path, "1 to 128 characters of a-z, 0-9, _, - and ., "
                                              "starting with a letter or digit")


def check_point(point: DecisionPoint) -> Violations:
    """Every problem of ``point`` that needs no storage (its actions' existence does)."""
    v = Violations()
    try:
        check_point_key(point.key)
    except InvalidArgument as exc:
        v.items.extend(exc.violations)
    v.check(len(point.display_name) <= MAX_DISPLAY_NAME, "display_name",
            f"at most {MAX_DISPLAY_NAME} characters")
    if v.check(1 <= len(point.actions) <= MAX_POINT_ACTIONS, "actions",
               f"must name 1 to {MAX_POINT_ACTIONS} actions"):
        seen: set[str] = set()
        for i, key in enumerate(point.actions):
            if not ACTION_KEY.fullmatch(key):
                v.add(f"actions[{i}]", "is not an action key")
            elif not v.check(key not in seen, f"actions[{i}]", "is named twice"):
                continue
            seen.add(key)
    _expression(v, point.arbitration.formula, "arbitration.formula", FORMULA_VARIABLES)
    _expression(v, point.arbitration.context_weight, "arbitration.context_weight",
                CONTEXT_WEIGHT_VARIABLES)
    v.check(0 <= point.max_actions <= MAX_RANKED, "max_actions", f"must be 0 to {MAX_RANKED}")
    v.check(point.exploration.method in METHODS, "exploration.method", "is not a method")
    epsilon = point.exploration.epsilon
    v.check(epsilon is None or (math.isfinite(epsilon) and 0 <= epsilon <= 1),
            "exploration.epsilon", "must be from 0 to 1")
    v.check(len(point.model.features) <= MAX_FEATURES, "model.features",
            f"at most {MAX_FEATURES} names")
    for i, name in enumerate(point.model.features):
        v.check(bool(name.strip()), f"model.features[{i}]", "is empty")
    prior = point.model.prior_propensity
    v.check(math.isfinite(prior) and 0 <= prior < 1, "model.prior_propensity",
            "must be in (0, 1)")
    reward = point.reward
    v.check(0 < len(reward.event_name) <= MAX_EVENT_NAME, "reward.event_name",
            f"is required (1 to {MAX_EVENT_NAME} characters)")
    _expression(v, reward.filter, "reward.filter", REWARD_FILTER_VARIABLES)
    if reward.window is not None:
        v.check(MIN_PERIOD <= reward.window <= MAX_PERIOD, "reward.window",
                "must be from 1 minute to 366 days")
    v.check(point.exposure in EXPOSURES, "exposure", "is not an exposure mode")
    share = point.min_control_share
    v.check(math.isfinite(share) and 0 <= share <= MAX_CONTROL_SHARE, "min_control_share",
            f"must be from 0 to {MAX_CONTROL_SHARE}")
    if point.control_action:
        v.check(point.control_action in point.actions, "control_action",
                "must be one of the point's actions")
    elif share > 0:
        v.add("control_action", "is required with a min_control_share")
    return v


# --- updates -------------------------------------------------------------------------------


def parse_mask(paths: Sequence[str], allowed: frozenset[str], field_path: str = "update_mask",
               ) -> frozenset[str]:
    """The top-level fields an update changes (every one of them when ``paths`` is empty);
    a sub-field (``reward.window``) changes its whole message."""
    if not paths:
        return allowed
    chosen: set[str] = set()
    for i, path in enumerate(paths):
        top = path.split(".", 1)[0]
        if top not in allowed:
            raise InvalidArgument.one(f"{field_path}.paths[{i}]",
                                      f"cannot change {path!r}; allowed: "
                                      f"{', '.join(sorted(allowed))}")
        chosen.add(top)
    return frozenset(chosen)


def apply_update(current: T, patch: T, mask: frozenset[str]) -> T:
    changes = {name: getattr(patch, name) for name in mask}
    return replace(current, **changes)  # type: ignore[type-var]


# --- errors ----------------------------------------------------------------------------------


def action_not_found(key: str) -> NotFound:
    return NotFound(f"action {key!r} not found", reason="ACTION_NOT_FOUND",
                    metadata={"action": key})


def point_not_found(key: str) -> NotFound:
    return NotFound(f"decision point {key!r} not found", reason="DECISION_POINT_NOT_FOUND",
                    metadata={"decision_point": key})


def decision_not_found(decision_id: str) -> NotFound:
    return NotFound(f"decision {decision_id!r} not found", reason="DECISION_NOT_FOUND",
                    metadata={"decision_id": decision_id})


def content_not_found(key: str) -> NotFound:
    return NotFound(f"content item {key!r} not found", reason="CONTENT_NOT_FOUND",
                    metadata={"content_key": key})


def stale(what: str, key: str, etag: str) -> Aborted:
    return Aborted(f"{what} {key!r} changed since etag {etag!r} was read; read it again",
                   metadata={"key": key})


def check_etag(what: str, key: str, expected: str, actual: str) -> None:
    if expected and expected != actual:
        raise stale(what, key, expected)


# --- JSON ------------------------------------------------------------------------------------


def _time_json(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time_from(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def action_json(action: Action) -> dict[str, Any]:
    doc = asdict(action)
    doc["start_time"] = _time_json(action.start_time)
    doc["end_time"] = _time_json(action.end_time)
    doc["contact_limits"] = [{"max_exposures": c.max_exposures,
                              "period": c.period.total_seconds()}
                             for c in action.contact_limits]
    return doc


def action_from_json(doc: Mapping[str, Any]) -> Action:
    known = {f.name for f in fields(Action)}
    values = {k: v for k, v in doc.items() if k in known}
    return Action(**{
        **values,
        "contents": tuple(ActionContent(**c) for c in doc.get("contents", ())),
        "start_time": _time_from(doc.get("start_time")),
        "end_time": _time_from(doc.get("end_time")),
        "contact_limits": tuple(ContactLimit(int(c["max_exposures"]),
                                             timedelta(seconds=c["period"]))
                                for c in doc.get("contact_limits", ())),
        "tags": tuple(doc.get("tags", ())),
    })


def point_json(point: DecisionPoint) -> dict[str, Any]:
    doc = asdict(point)
    window = point.reward.window
    doc["reward"]["window"] = None if window is None else window.total_seconds()
    return doc


def point_from_json(doc: Mapping[str, Any]) -> DecisionPoint:
    reward = dict(doc.get("reward") or {})
    window = reward.get("window")
    model = dict(doc.get("model") or {})
    return DecisionPoint(
        key=doc["key"], display_name=doc.get("display_name", ""),
        actions=tuple(doc.get("actions", ())),
        arbitration=Arbitration(**(doc.get("arbitration") or {})),
        max_actions=int(doc.get("max_actions", 0)),
        exploration=Exploration(**(doc.get("exploration") or {})),
        model=ModelSpec(non_contextual=bool(model.get("non_contextual", False)),
                        features=tuple(model.get("features", ())),
                        prior_propensity=float(model.get("prior_propensity", 0.0))),
        reward=Reward(event_name=reward.get("event_name", ""), filter=reward.get("filter", ""),
                      window=None if window is None else timedelta(seconds=window)),
        exposure=doc.get("exposure", "reported"),
        control_action=doc.get("control_action", ""),
        min_control_share=float(doc.get("min_control_share", 0.0)))
