"""Journeys: a trigger and a graph of nodes, edited as a draft and frozen into versions.

A published version never changes, so every enrollment keeps walking the graph it entered on
while authors keep editing the draft.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any

from cjo_platform.errors import Aborted, FailedPrecondition


class JourneyState(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"
    PAUSED = "paused"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    IN_APP = "in_app"
    WEBHOOK = "webhook"


class TriggerKind(StrEnum):
    EVENT = "event"
    SEGMENT = "segment"
    API = "api"
    SCHEDULED = "scheduled"


# Identity forwards segment membership changes as events with this name.
SEGMENT_ENTERED = "segment_entered"


@dataclass(frozen=True)
class Schedule:
    """When a scheduled trigger fires: once ``at`` an instant, or on a 5-field ``cron``
    expression evaluated in ``time_zone`` ("" is UTC), within optional bounds."""

    at: datetime | None = None
    cron: str = ""
    time_zone: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class EventTrigger:
    """What enrolls a profile: an event (optionally filtered), entering a segment, the API, or
    a schedule (the members of ``segment_id`` at the times ``schedule`` names)."""

    event_name: str = ""
    filter: str = ""  # CEL over `event` and `profile`
    kind: TriggerKind = TriggerKind.EVENT
    segment_id: str = ""
    schedule: Schedule | None = None  # set for TriggerKind.SCHEDULED only

    @property
    def listens_for(self) -> str:
        """The event name the event worker looks this trigger up by ("" for the API)."""
        if self.kind is TriggerKind.SEGMENT:
            return SEGMENT_ENTERED
        return self.event_name if self.kind is TriggerKind.EVENT else ""


class FailurePolicy(StrEnum):
    EXIT = "exit"
    CONTINUE = "continue"


class ReEntry(StrEnum):
    NEVER = "never"
    AFTER_COOLDOWN = "after_cooldown"
    ALWAYS = "always"


@dataclass(frozen=True)
class SendAction:
    """Render a content item for the profile and hand it to delivery."""

    content_key: str
    channel: Channel | None
    next_node_id: str = ""
    content_version: int = 0  # 0: the latest published version
    channel_preference: tuple[Channel, ...] = ()
    on_failure: FailurePolicy = FailurePolicy.EXIT
    topic: str = ""  # consent topic within the channel (each channel of the preference)
    transactional: bool = False  # delivery skips consent, caps and quiet hours

    @property
    def channels(self) -> tuple[Channel, ...]:
        if self.channel_preference:
            return self.channel_preference
        return (self.channel,) if self.channel else ()


@dataclass(frozen=True)
class ExitAction:
    """End the enrollment."""


@dataclass(frozen=True)
class LocalTime:
    hour: int
    minute: int
    weekdays: tuple[int, ...] = ()  # ISO weekdays; empty: every day
    default_time_zone: str = ""


@dataclass(frozen=True)
class EventWait:
    event_name: str
    filter: str
    timeout: timedelta
    event_next_node_id: str = ""
    timeout_next_node_id: str = ""
    # An engagement event (an open, a click ... cjo_platform.engagement) wakes the wait only when
    # it is about the message this enrollment sent, unless any_message widens it.
    any_message: bool = False


@dataclass(frozen=True)
class BestTime:
    """Until the hour the person most often engages (decisioning's GetSendTimes), at most
    ``max_delay`` after arriving."""

    channel: Channel | None = None  # None: engagement on every channel counts
    max_delay: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class WaitAction:
    """Hold the enrollment for a duration, until a local time, until an event, or until the
    person's best time."""

    duration: timedelta | None = None
    local_time: LocalTime | None = None
    event: EventWait | None = None
    next_node_id: str = ""
    best_time: BestTime | None = None


@dataclass(frozen=True)
class BranchCondition:
    condition: str
    next_node_id: str


@dataclass(frozen=True)
class BranchAction:
    conditions: tuple[BranchCondition, ...]
    else_next_node_id: str = ""


@dataclass(frozen=True)
class SplitArm:
    name: str
    percent: int
    next_node_id: str = ""
    control: bool = False


@dataclass(frozen=True)
class SplitAction:
    arms: tuple[SplitArm, ...]
    # Arms chosen by decisioning's bandit on the journey's goal instead of by percent; the
    # control arm keeps at least min_control_percent (0: 10) of the people.
    optimize: bool = False
    min_control_percent: int = 0

    @property
    def control(self) -> SplitArm | None:
        return next((arm for arm in self.arms if arm.control), None)

    @property
    def control_share(self) -> float:
        """The share the control keeps whatever the bandit says (0 without a control arm)."""
        if self.control is None:
            return 0.0
        return (self.min_control_percent or DEFAULT_MIN_CONTROL_PERCENT) / 100


DEFAULT_MIN_CONTROL_PERCENT = 10


@dataclass(frozen=True)
class DecideAction:
    """Ask decisioning for the next best action at ``decision_point`` and send its content."""

    decision_point: str
    channel: Channel | None = None  # None: the chosen action's first content's channel
    next_node_id: str = ""
    no_action_next_node_id: str = ""
    on_failure: FailurePolicy = FailurePolicy.EXIT


@dataclass(frozen=True)
class UpdateProfileAction:
    traits: Mapping[str, Any]
    next_node_id: str = ""


Action = (SendAction | ExitAction | WaitAction | BranchAction | SplitAction
          | UpdateProfileAction | DecideAction)


@dataclass(frozen=True)
class Node:
    id: str
    action: Action | None  # None only in a draft someone is still writing; never published

    def edges(self) -> Iterator[tuple[str, str]]:
        """(field path relative to the node, target node id) of every outgoing edge."""
        action = self.action
        if isinstance(action, SendAction | UpdateProfileAction):
            kind = "send" if isinstance(action, SendAction) else "update_profile"
            if action.next_node_id:
                yield f"{kind}.next_node_id", action.next_node_id
        elif isinstance(action, WaitAction):
            if action.event is not None:
                if action.event.event_next_node_id:
                    yield "wait.event.event_next_node_id", action.event.event_next_node_id
                if action.event.timeout_next_node_id:
                    yield "wait.event.timeout_next_node_id", action.event.timeout_next_node_id
            elif action.next_node_id:
                yield "wait.next_node_id", action.next_node_id
        elif isinstance(action, BranchAction):
            for i, condition in enumerate(action.conditions):
                if condition.next_node_id:
                    yield f"branch.conditions[{i}].next_node_id", condition.next_node_id
            if action.else_next_node_id:
                yield "branch.else_next_node_id", action.else_next_node_id
        elif isinstance(action, SplitAction):
            for i, arm in enumerate(action.arms):
                if arm.next_node_id and not arm.control:
                    yield f"split.arms[{i}].next_node_id", arm.next_node_id
        elif isinstance(action, DecideAction):
            if action.next_node_id:
                yield "decide.next_node_id", action.next_node_id
            if action.no_action_next_node_id:
                yield "decide.no_action_next_node_id", action.no_action_next_node_id


@dataclass(frozen=True)
class Goal:
    event_name: str
    filter: str
    window: timedelta
    exit_on_goal: bool = False


@dataclass(frozen=True)
class ExitCriterion:
    event_name: str
    filter: str = ""


@dataclass(frozen=True)
class JourneyGraph:
    """What a version freezes: the trigger, the nodes and the journey's settings."""

    trigger: EventTrigger | None = None
    nodes: tuple[Node, ...] = ()
    entry_node_id: str = ""
    re_entry: ReEntry = ReEntry.NEVER
    re_entry_cooldown: timedelta = timedelta(0)
    goal: Goal | None = None
    exit_criteria: tuple[ExitCriterion, ...] = ()

    def node(self, node_id: str) -> Node | None:
        return self._by_id.get(node_id)

    @cached_property
    def _by_id(self) -> dict[str, Node]:
        # The engine looks nodes up on every step of every enrollment of a cached version.
        found: dict[str, Node] = {}
        for node in self.nodes:
            found.setdefault(node.id, node)
        return found

    @property
    def event_name(self) -> str:
        return self.trigger.listens_for if self.trigger else ""

    @cached_property
    def watches_events(self) -> bool:
        """Whether events can change an enrollment of this version once it entered."""
        return bool(self.goal or self.exit_criteria or any(
            isinstance(n.action, WaitAction) and n.action.event for n in self.nodes))

    @cached_property
    def unpaced_best_times(self) -> frozenset[str]:
        """The best-time waits that are the only waits of a loop: publishing refuses them now,
        but a version published before waits max_delay there (see the engine's walk)."""
        # graph.py imports this module; the analysis lives there with the publish check.
        from cjo_orchestration.domain.graph import unpaced_best_time_waits

        return frozenset(unpaced_best_time_waits(self))

    # Stored as JSON: readable in the database, and new node kinds only add keys.
    def to_dict(self) -> dict[str, Any]:
        return {key: _plain(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JourneyGraph:
        trigger = data.get("trigger")
        goal = data.get("goal")
        return cls(
            trigger=_trigger_from_dict(trigger) if trigger else None,
            nodes=tuple(_node_from_dict(n) for n in data.get("nodes", ())),
            entry_node_id=data.get("entry_node_id", ""),
            re_entry=ReEntry(data.get("re_entry", ReEntry.NEVER.value)),
            re_entry_cooldown=timedelta(seconds=data.get("re_entry_cooldown", 0)),
            goal=Goal(goal["event_name"], goal.get("filter", ""),
                      timedelta(seconds=goal.get("window", 0)),
                      goal.get("exit_on_goal", False)) if goal else None,
            exit_criteria=tuple(ExitCriterion(c["event_name"], c.get("filter", ""))
                                for c in data.get("exit_criteria", ())),
        )


def _plain(value: Any) -> Any:
    """asdict output made JSON-friendly: durations in seconds, enums by value, tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _trigger_from_dict(data: Mapping[str, Any]) -> EventTrigger:
    schedule = data.get("schedule")
    return EventTrigger(data.get("event_name", ""), data.get("filter", ""),
                        TriggerKind(data.get("kind", TriggerKind.EVENT.value)),
                        data.get("segment_id", ""),
                        Schedule(_instant(schedule.get("at")), schedule.get("cron", ""),
                                 schedule.get("time_zone", ""),
                                 _instant(schedule.get("start_time")),
                                 _instant(schedule.get("end_time"))) if schedule else None)


def _node_from_dict(data: Mapping[str, Any]) -> Node:
    """Reads both the current form ({"id", "action": {...}}) and the first release's
    ({"id", "send": {...}} / {"id", "exit": {}}) that older rows hold."""
    if (send := data.get("send")) is not None:  # first release
        channel = send.get("channel")
        return Node(data["id"], SendAction(send.get("content_key", ""),
                                           Channel(channel) if channel else None,
                                           send.get("next_node_id", "")))
    if data.get("exit") is not None:
        return Node(data["id"], ExitAction())
    action = data.get("action")
    return Node(data["id"], _action_from_dict(action) if action is not None else None)


def _action_from_dict(a: Mapping[str, Any]) -> Action:
    if "content_key" in a:
        return SendAction(a["content_key"], Channel(a["channel"]) if a.get("channel") else None,
                          a.get("next_node_id", ""), a.get("content_version", 0),
                          tuple(Channel(c) for c in a.get("channel_preference", ())),
                          FailurePolicy(a.get("on_failure", FailurePolicy.EXIT.value)),
                          a.get("topic", ""), a.get("transactional", False))
    if "conditions" in a:
        return BranchAction(tuple(BranchCondition(c["condition"], c["next_node_id"])
                                  for c in a["conditions"]), a.get("else_next_node_id", ""))
    if "arms" in a:
        return SplitAction(tuple(SplitArm(x["name"], x["percent"], x.get("next_node_id", ""),
                                          x.get("control", False)) for x in a["arms"]),
                           a.get("optimize", False), a.get("min_control_percent", 0))
    if "decision_point" in a:
        return DecideAction(a["decision_point"],
                            Channel(a["channel"]) if a.get("channel") else None,
                            a.get("next_node_id", ""), a.get("no_action_next_node_id", ""),
                            FailurePolicy(a.get("on_failure", FailurePolicy.EXIT.value)))
    if "traits" in a:
        return UpdateProfileAction(dict(a["traits"]), a.get("next_node_id", ""))
    if "local_time" in a:
        local, event, duration = a.get("local_time"), a.get("event"), a.get("duration")
        best = a.get("best_time")
        return WaitAction(
            duration=timedelta(seconds=duration) if duration is not None else None,
            local_time=LocalTime(local["hour"], local["minute"], tuple(local["weekdays"]),
                                 local.get("default_time_zone", "")) if local else None,
            event=EventWait(event["event_name"], event.get("filter", ""),
                            timedelta(seconds=event["timeout"]),
                            event.get("event_next_node_id", ""),
                            event.get("timeout_next_node_id", ""),
                            event.get("any_message", False)) if event else None,
            next_node_id=a.get("next_node_id", ""),
            best_time=BestTime(Channel(best["channel"]) if best.get("channel") else None,
                               timedelta(seconds=best["max_delay"])) if best else None)
    return ExitAction()


@dataclass(frozen=True)
class Journey:
    workspace_id: str
    journey_id: str
    display_name: str
    state: JourneyState
    graph: JourneyGraph  # the draft
    published_version: int
    revision: int
    create_time: datetime
    update_time: datetime
    # Errors its published versions ran into while handling one item, and the latest: a
    # definition that keeps failing shows here (the rounds count them, never the editors).
    error_count: int = 0
    last_error: str = ""
    last_error_time: datetime | None = None
    # Whether the draft holds what no published version has (never published, or a graph other
    # than the latest version's): worked out when the journey is read for a caller (see
    # adapters.journeys.read, page and service_layer.journeys.with_unpublished_changes), not
    # stored.
    unpublished_changes: bool = True

    @property
    def etag(self) -> str:
        return f'"{self.revision}"'


@dataclass(frozen=True)
class JourneyVersion:
    workspace_id: str
    journey_id: str
    version: int
    graph: JourneyGraph
    create_time: datetime


# Fields UpdateJourney may change, by their proto names, and the graph attribute each sets.
TRIGGER_FIELDS = ("event_trigger", "segment_trigger", "api_trigger", "scheduled_trigger")
UPDATABLE_FIELDS = ("display_name", *TRIGGER_FIELDS, "nodes", "entry_node_id", "re_entry",
                    "re_entry_cooldown", "goal", "exit_criteria")
_GRAPH_ATTRIBUTES = {"event_trigger": "trigger", "segment_trigger": "trigger",
                     "api_trigger": "trigger", "scheduled_trigger": "trigger",
                     "nodes": "nodes",
                     "entry_node_id": "entry_node_id", "re_entry": "re_entry",
                     "re_entry_cooldown": "re_entry_cooldown", "goal": "goal",
                     "exit_criteria": "exit_criteria"}


@dataclass(frozen=True)
class JourneyChanges:
    """New values for an update; only the fields named in ``fields`` are applied."""

    fields: frozenset[str]
    display_name: str = ""
    graph: JourneyGraph = JourneyGraph()


def pause(journey: Journey, now: datetime) -> Journey:
    """Only an active journey pauses; pausing a paused one is harmless."""
    if journey.state is JourneyState.PAUSED:
        return journey
    if journey.state is not JourneyState.ACTIVE:
        raise FailedPrecondition(f"journey {journey.journey_id} is {journey.state.value}; only "
                                 "an active journey can be paused", reason="JOURNEY_NOT_ACTIVE")
    return replace(journey, state=JourneyState.PAUSED, revision=journey.revision + 1,
                   update_time=now)


def resume(journey: Journey, now: datetime) -> Journey:
    if journey.state is JourneyState.ACTIVE:
        return journey
    if journey.state is not JourneyState.PAUSED:
        raise FailedPrecondition(f"journey {journey.journey_id} is {journey.state.value}; only "
                                 "a paused journey can be resumed", reason="JOURNEY_NOT_PAUSED")
    return replace(journey, state=JourneyState.ACTIVE, revision=journey.revision + 1,
                   update_time=now)


def ensure_editable(journey: Journey, action: str) -> None:
    """Archived journeys are frozen for good."""
    if journey.state is JourneyState.ARCHIVED:
        raise FailedPrecondition(f"journey {journey.journey_id} is archived and cannot be {action}",
                                 reason="JOURNEY_ARCHIVED")


def apply_changes(journey: Journey, changes: JourneyChanges, etag: str, now: datetime) -> Journey:
    """The journey with its draft changed. Published versions are untouched: an active journey
    keeps enrolling on its latest version until the draft is published again."""
    ensure_editable(journey, "changed")
    if etag and etag != journey.etag:
        raise Aborted(f"journey {journey.journey_id} changed since it was read (etag {etag} is "
                      f"stale, current {journey.etag}); read it again and retry")
    graph = journey.graph
    for name in sorted(changes.fields):
        attribute = _GRAPH_ATTRIBUTES.get(name)
        if attribute is not None:
            graph = replace(graph, **{attribute: getattr(changes.graph, attribute)})
    display_name = (changes.display_name if "display_name" in changes.fields
                    else journey.display_name)
    return replace(journey, display_name=display_name, graph=graph,
                   revision=journey.revision + 1, update_time=now)


def publish(journey: Journey, now: datetime) -> tuple[Journey, JourneyVersion]:
    """Freeze the draft as the next version. The caller validated the graph."""
    ensure_editable(journey, "published")
    number = journey.published_version + 1
    published = replace(journey, state=JourneyState.ACTIVE, published_version=number,
                        revision=journey.revision + 1, update_time=now,
                        unpublished_changes=False)
    return published, JourneyVersion(journey.workspace_id, journey.journey_id, number,
                                     journey.graph, now)


def archive(journey: Journey, now: datetime) -> Journey:
    """Archiving twice is harmless: the second call returns the journey unchanged."""
    if journey.state is JourneyState.ARCHIVED:
        return journey
    return replace(journey, state=JourneyState.ARCHIVED, revision=journey.revision + 1,
                   update_time=now)
