"""The enrollment state machine, as pure functions.

The engine never talks to a database or a peer. Workers feed it what they read (events, claimed
enrollments, answers of content and delivery) and persist the transitions it returns: the new
enrollment state, the steps taken and the facts to publish. That keeps every rule here testable
without I/O, and every side effect in one transaction per batch outside.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cjo_orchestration.domain.graph import MAX_EVENT_NAME_LENGTH
from cjo_orchestration.domain.journeys import (
    SEGMENT_ENTERED,
    Action,
    BranchAction,
    Channel,
    ExitAction,
    FailurePolicy,
    JourneyGraph,
    LocalTime,
    ReEntry,
    SendAction,
    SplitAction,
    SplitArm,
    TriggerKind,
    UpdateProfileAction,
    WaitAction,
)
from cjo_platform.cel import compile_expression
from cjo_platform.errors import Violations
from cjo_platform.limits import MAX_ID_LENGTH


class EnrollmentState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    EXITED = "exited"


class StepOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WAITING = "waiting"


class FactKind(StrEnum):
    JOURNEY_ENTERED = "journey_entered"
    MESSAGE_REQUESTED = "message_requested"
    JOURNEY_EXITED = "journey_exited"
    NODE_VISITED = "node_visited"
    GOAL_REACHED = "goal_reached"


@dataclass(frozen=True)
class FactRecord:
    """A fact for analytics; ``fact_id`` is derived, so replaying a transition repeats the id
    and analytics records it once."""

    workspace_id: str
    fact_id: str
    kind: FactKind
    profile_id: str
    journey_id: str
    enrollment_id: str
    occur_time: datetime
    message_id: str = ""
    traceparent: str = ""
    node_id: str = ""
    detail: str = ""  # why an enrollment exited, or which arm a split chose
    journey_version: int = 0
    # More of analytics' Fact fields by name (channel, content_key, experiment_id, arm,
    # control, arm_weight, revenue, currency), set when they apply.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    node_id: str
    visit: int
    outcome: StepOutcome
    detail: str
    time: datetime


# --- events in, enrollments out -------------------------------------------------------------


def validate_forwarded_event(event_id: str, profile_id: str, event_name: str) -> Violations:
    problems = Violations()
    problems.check(bool(event_id), "event_id", "is required")
    problems.check(len(event_id) <= MAX_ID_LENGTH, "event_id",
                   f"at most {MAX_ID_LENGTH} characters")
    problems.check(bool(profile_id), "profile_id", "is required")
    problems.check(len(profile_id) <= MAX_ID_LENGTH, "profile_id",
                   f"at most {MAX_ID_LENGTH} characters")
    problems.check(len(event_name) <= MAX_EVENT_NAME_LENGTH, "event.name",
                   f"at most {MAX_EVENT_NAME_LENGTH} characters")
    return problems


@dataclass(frozen=True)
class InboxEvent:
    """An accepted event waiting to be matched against journeys, in receive order (``seq``)."""

    workspace_id: str
    seq: int
    event_id: str
    profile_id: str
    event_name: str
    properties: Mapping[str, Any]
    traits: Mapping[str, Any]
    traceparent: str


@dataclass(frozen=True)
class Trigger:
    """The latest published version of an active journey, listening for ``event_name``."""

    workspace_id: str
    journey_id: str
    version: int
    graph: JourneyGraph

    @property
    def event_name(self) -> str:
        return self.graph.event_name

    def matches(self, event: InboxEvent) -> bool:
        trigger = self.graph.trigger
        if trigger is None or trigger.kind in (TriggerKind.API, TriggerKind.SCHEDULED):
            return False
        if trigger.kind is TriggerKind.SEGMENT:
            return (event.event_name == SEGMENT_ENTERED
                    and str(event.properties.get("segment_id", "")) == trigger.segment_id)
        return event.event_name == trigger.event_name and condition_holds(
            trigger.filter, "event_trigger.filter", event.properties, event.traits)


def condition_holds(source: str, field: str, properties: Mapping[str, Any],
                    traits: Mapping[str, Any], journey: Mapping[str, Any] | None = None) -> bool:
    """An empty condition holds; an expression that fails (a published one always compiles)
    does not, and neither does one that errors on this person's data."""
    if not source:
        return True
    activation: dict[str, Any] = {"event": dict(properties), "profile": dict(traits)}
    if journey is not None:
        activation["journey"] = dict(journey)
    try:
        expression = compile_expression(source, field)
    except Exception:
        return False
    return expression.test(activation)


@dataclass(frozen=True)
class Enrollment:
    workspace_id: str
    enrollment_id: str
    journey_id: str
    journey_version: int
    profile_id: str
    state: EnrollmentState
    current_node_id: str
    due_time: datetime | None  # when the current node runs; None once the enrollment ended
    create_time: datetime
    update_time: datetime
    # Times each node ran, so a node visited again gets a fresh send key.
    visits: Mapping[str, int] = field(default_factory=dict)
    attempts: int = 0  # failed tries of the current node, for backoff
    last_error: str = ""
    # What templates render against, as of the triggering event.
    traits: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = ""
    traceparent: str = ""
    step_count: int = 0  # steps recorded so far; numbers the next ones
    # True while parked at a wait node: the next run of that node is its timer firing.
    waiting: bool = False
    exit_reason: str = ""
    goal_deadline: datetime | None = None  # conversions count until then
    goal_time: datetime | None = None  # when the goal was reached

    def fact(self, fact_id: str, kind: FactKind, when: datetime, message_id: str = "",
             node_id: str = "", detail: str = "", **extra: Any) -> FactRecord:
        return FactRecord(self.workspace_id, fact_id, kind, self.profile_id, self.journey_id,
                          self.enrollment_id, when, message_id, self.traceparent, node_id,
                          detail, self.journey_version, extra)

    @property
    def journey_variables(self) -> dict[str, Any]:
        return {"id": self.journey_id, "version": self.journey_version,
                "enrollment_id": self.enrollment_id}


ActiveKey = tuple[str, str, str]  # (workspace_id, journey_id, profile_id)


@dataclass(frozen=True)
class History:
    """The latest enrollment of a profile in a journey, for the re-entry rules."""

    state: EnrollmentState
    ended: datetime  # its update time; meaningful once it ended


def may_enter(graph: JourneyGraph, last: History | None, now: datetime) -> str:
    """"" when a profile may enter, otherwise why not ("already_active", "re_entry_never",
    "re_entry_cooldown"). At most one active enrollment per profile per journey, always."""
    if last is None:
        return ""
    if last.state is EnrollmentState.ACTIVE:
        return "already_active"
    if graph.re_entry is ReEntry.NEVER:
        return "re_entry_never"
    if graph.re_entry is ReEntry.AFTER_COOLDOWN and now < last.ended + graph.re_entry_cooldown:
        return "re_entry_cooldown"
    return ""


def new_enrollment(workspace_id: str, enrollment_id: str, journey_id: str, version: int,
                   graph: JourneyGraph, profile_id: str, traits: Mapping[str, Any],
                   properties: Mapping[str, Any], event_id: str, traceparent: str,
                   now: datetime) -> tuple[Enrollment, FactRecord]:
    enrollment = Enrollment(
        workspace_id=workspace_id, enrollment_id=enrollment_id, journey_id=journey_id,
        journey_version=version, profile_id=profile_id, state=EnrollmentState.ACTIVE,
        current_node_id=graph.entry_node_id, due_time=now, create_time=now, update_time=now,
        traits=dict(traits), properties=dict(properties), event_id=event_id,
        traceparent=traceparent,
        goal_deadline=now + graph.goal.window if graph.goal else None)
    return enrollment, enrollment.fact(f"entered:{enrollment_id}", FactKind.JOURNEY_ENTERED,
                                       now)


# --- profile lifecycle: identity's erasures and merges ----------------------------------------

# Forwarded by identity with the profile's id after DeleteProfile erased it.
PROFILE_DELETED = "profile_deleted"
# Forwarded by identity with the survivor's id; property ``merged_profile_id`` names the profile
# merged into it.
PROFILE_MERGED = "profile_merged"
LIFECYCLE_EVENTS = frozenset({PROFILE_DELETED, PROFILE_MERGED})
EXIT_PROFILE_DELETED = "profile_deleted"
EXIT_MERGED = "merged"
_MAX_MERGE_HOPS = 32  # A -> B -> C ...: chains are compressed when stored, so they stay short


@dataclass(frozen=True)
class Retirement:
    """A profile that no longer exists on its own: merged into ``successor_profile_id``, or
    erased (successor "")."""

    workspace_id: str
    profile_id: str
    successor_profile_id: str

    @property
    def erased(self) -> bool:
        return not self.successor_profile_id


def merged_profile_id(event: InboxEvent) -> str:
    value = event.properties.get("merged_profile_id")
    return value if isinstance(value, str) and len(value) <= MAX_ID_LENGTH else ""


def resolve_profile(successors: Mapping[tuple[str, str], str], workspace_id: str,
                    profile_id: str) -> str:
    """The profile an event addressed to ``profile_id`` belongs to now: itself, the profile it
    was merged into (transitively), or "" when that profile was erased."""
    for _ in range(_MAX_MERGE_HOPS):
        successor = successors.get((workspace_id, profile_id))
        if successor is None:
            return profile_id
        if not successor:
            return ""
        profile_id = successor
    return profile_id


@dataclass
class EventOutcome:
    """What a batch of events did: enrollments created and changed (with the steps each took),
    facts to publish, and events deferred because a worker holds one of their profile's
    enrollments right now (they are applied, in order, on a later pass).

    ``retired``: profiles the batch's lifecycle events erased or merged away, in order;
    ``dropped``: events of profiles erased before them (applied to nobody)."""

    created: dict[str, tuple[Enrollment, list[Step]]] = field(default_factory=dict)
    changed: dict[str, tuple[Enrollment, list[Step]]] = field(default_factory=dict)
    facts: list[FactRecord] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)
    unmatched: int = 0
    retired: list[Retirement] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def record(self, transition: Transition) -> None:
        """Keep an enrollment's new state and steps, after those it took earlier in the batch."""
        enrollment_id = transition.enrollment.enrollment_id
        bucket = self.created if enrollment_id in self.created else self.changed
        steps = bucket[enrollment_id][1] if enrollment_id in bucket else []
        bucket[enrollment_id] = (transition.enrollment, [*steps, *transition.steps])
        self.facts.extend(transition.facts)


def erase_enrollment(enrollment: Enrollment, now: datetime) -> Transition:
    """GDPR erasure of the profile: an active enrollment exits (no step runs again), and the
    enrollment forgets the traits and event properties it kept for rendering."""
    forgotten = _evolve(enrollment, traits={}, properties={}, last_error="")
    if enrollment.state is not EnrollmentState.ACTIVE:
        return Transition(forgotten)
    node_id = enrollment.current_node_id
    step = Step(node_id, enrollment.visits.get(node_id, 0), StepOutcome.SUCCEEDED,
                "profile deleted", now)
    return _end(forgotten, EnrollmentState.EXITED, now, [step], [],
                reason=EXIT_PROFILE_DELETED)


def merge_enrollments(merged: Sequence[Enrollment], survivor: Sequence[Enrollment],
                      survivor_profile_id: str, now: datetime) -> list[Transition]:
    """Move the merged profile's enrollments to the survivor. In a journey where both have an
    active enrollment, the one that entered first continues and the other exits ("merged"); a
    moved active enrollment records a step saying where it came from."""
    active = {e.journey_id: e for e in survivor if e.state is EnrollmentState.ACTIVE}
    transitions: list[Transition] = []
    for enrollment in merged:
        from_id = enrollment.profile_id
        moved = _evolve(enrollment, profile_id=survivor_profile_id)
        if enrollment.state is not EnrollmentState.ACTIVE:
            transitions.append(Transition(moved))  # history and open goal windows follow too
            continue
        node_id = moved.current_node_id
        visit = moved.visits.get(node_id, 0)
        other = active.get(moved.journey_id)
        if other is not None and (other.create_time, other.enrollment_id) <= (
                moved.create_time, moved.enrollment_id):
            detail = (f"merged: profile {from_id} joined {survivor_profile_id}, whose "
                      f"enrollment {other.enrollment_id} continues")
            transitions.append(_end(moved, EnrollmentState.EXITED, now,
                                    [Step(node_id, visit, StepOutcome.SUCCEEDED, detail, now)],
                                    [], reason=EXIT_MERGED))
            continue
        if other is not None:
            other_node = other.current_node_id
            detail = (f"merged: profile {from_id} joined {survivor_profile_id}; enrollment "
                      f"{moved.enrollment_id} entered first and continues")
            transitions.append(_end(other, EnrollmentState.EXITED, now, [Step(
                other_node, other.visits.get(other_node, 0), StepOutcome.SUCCEEDED, detail,
                now)], [], reason=EXIT_MERGED))
        active[moved.journey_id] = moved
        transitions.append(Transition(
            _evolve(moved, update_time=now),
            (Step(node_id, visit, StepOutcome.SUCCEEDED, f"merged from profile {from_id}",
                  now),)))
    return transitions


def apply_events(events: Sequence[InboxEvent], triggers: Iterable[Trigger],
                 watched: Sequence[tuple[Enrollment, JourneyGraph]],
                 history: Mapping[ActiveKey, History], busy_profiles: set[tuple[str, str]],
                 new_id: Callable[[], str], now: datetime,
                 retired: Mapping[tuple[str, str], str] | None = None) -> EventOutcome:
    """Apply events in receive order, per profile: each event first reaches the profile's
    enrollments (goal, exit criteria, an awaited event), then enrolls the profile in every
    journey it triggers that the re-entry rules let it enter.

    ``watched`` are the profiles' enrollments events can still change (active ones, and ended
    ones whose goal window is open); ``history`` the latest enrollment per (journey, profile);
    ``busy_profiles`` the (workspace, profile) pairs whose enrollments a step worker holds;
    ``retired`` the successor of each retired (workspace, profile) the batch names ("" erased).

    Lifecycle events (``profile_deleted``, ``profile_merged``) are applied in the same order:
    for them ``watched`` must hold every active enrollment of the profiles they name.
    """
    by_event: dict[tuple[str, str], list[Trigger]] = defaultdict(list)
    for trigger in triggers:
        by_event[(trigger.workspace_id, trigger.event_name)].append(trigger)
    graphs: dict[str, JourneyGraph] = {}
    current: dict[tuple[str, str], list[str]] = defaultdict(list)  # profile -> enrollment ids
    state: dict[str, Enrollment] = {}
    for enrollment, graph in watched:
        graphs[enrollment.enrollment_id] = graph
        state[enrollment.enrollment_id] = enrollment
        current[(enrollment.workspace_id, enrollment.profile_id)].append(
            enrollment.enrollment_id)
    latest = dict(history)
    outcome = EventOutcome()
    successors = dict(retired or {})
    busy = set(busy_profiles)
    for event in sorted(events, key=lambda e: e.seq):
        profile_id = resolve_profile(successors, event.workspace_id, event.profile_id)
        if not profile_id:
            outcome.dropped.append(event.seq)  # the person was erased: nothing may act on it
            continue
        if profile_id != event.profile_id:  # forwarded before its profile was merged away
            event = replace(event, profile_id=profile_id)
        profile = (event.workspace_id, event.profile_id)
        if event.event_name in LIFECYCLE_EVENTS:
            merged = ((event.workspace_id, merged_profile_id(event))
                      if event.event_name == PROFILE_MERGED else profile)
            if profile in busy or merged in busy:
                # Later events of both wait too, so each profile's events stay in order.
                busy |= {profile, merged}
                outcome.deferred.append(event.seq)
                continue
            moves: list[Transition] = []
            if event.event_name == PROFILE_DELETED:
                moves = [erase_enrollment(state[i], now) for i in current[profile]]
                successors[profile] = ""
                outcome.retired.append(Retirement(*profile, ""))
            elif merged[1] and merged != profile and (merged not in successors):
                moves = merge_enrollments([state[i] for i in current[merged]],
                                                [state[i] for i in current[profile]],
                                                profile_id, now)
                current[profile].extend(current.pop(merged, []))
                successors[merged] = profile_id
                outcome.retired.append(Retirement(*merged, profile_id))
            for move in moves:
                changed = move.enrollment
                state[changed.enrollment_id] = changed
                outcome.record(move)
                key = (changed.workspace_id, changed.journey_id, changed.profile_id)
                seen = latest.get(key)
                if (changed.state is EnrollmentState.ACTIVE or seen is None
                        or seen.state is not EnrollmentState.ACTIVE):
                    latest[key] = History(changed.state, changed.update_time)
            continue
        if profile in busy:
            outcome.deferred.append(event.seq)
            continue
        touched = False
        for enrollment_id in current[profile]:
            transition = on_event(state[enrollment_id], graphs[enrollment_id], event, now)
            if transition is None:
                continue
            touched = True
            state[enrollment_id] = transition.enrollment
            outcome.record(transition)
            ended = transition.enrollment
            if ended.state is not EnrollmentState.ACTIVE:
                latest[(ended.workspace_id, ended.journey_id, ended.profile_id)] = History(
                    ended.state, ended.update_time)
        for trigger in by_event.get((event.workspace_id, event.event_name), ()):
            if not trigger.matches(event):
                continue
            key = (event.workspace_id, trigger.journey_id, event.profile_id)
            if may_enter(trigger.graph, latest.get(key), now):
                continue
            touched = True
            enrollment, fact = new_enrollment(
                event.workspace_id, new_id(), trigger.journey_id, trigger.version,
                trigger.graph, event.profile_id, event.traits, event.properties, event.event_id,
                event.traceparent, now)
            latest[key] = History(EnrollmentState.ACTIVE, now)
            state[enrollment.enrollment_id] = enrollment
            graphs[enrollment.enrollment_id] = trigger.graph
            current[profile].append(enrollment.enrollment_id)
            outcome.created[enrollment.enrollment_id] = (enrollment, [])
            outcome.facts.append(fact)
        if not touched:
            outcome.unmatched += 1
    return outcome


def on_event(enrollment: Enrollment, graph: JourneyGraph, event: InboxEvent,
             now: datetime) -> Transition | None:
    """What one event does to one enrollment: count the goal, end it on an exit criterion, or
    wake it from a wait for this event. None when the event does not concern it."""
    facts: list[FactRecord] = []
    changed = enrollment
    goal = graph.goal
    if (goal is not None and changed.goal_time is None and changed.goal_deadline is not None
            and now <= changed.goal_deadline and event.event_name == goal.event_name
            and condition_holds(goal.filter, "goal.filter", event.properties, event.traits)):
        # An ended enrollment keeps its update time: re-entry cooldowns count from the end.
        changed = replace(changed, goal_time=now, update_time=(
            now if changed.state is EnrollmentState.ACTIVE else changed.update_time))
        revenue = event.properties.get("revenue")
        money: dict[str, Any] = ({"revenue": float(revenue),
                  "currency": str(event.properties.get("currency", ""))}
                 if isinstance(revenue, int | float) and not isinstance(revenue, bool) else {})
        facts.append(changed.fact(f"goal:{changed.enrollment_id}", FactKind.GOAL_REACHED, now,
                                  detail=goal.event_name, **money))
        if goal.exit_on_goal and changed.state is EnrollmentState.ACTIVE:
            return _end(changed, EnrollmentState.EXITED, now,
                        [Step(changed.current_node_id, changed.visits.get(
                            changed.current_node_id, 0), StepOutcome.SUCCEEDED,
                              f"goal {goal.event_name} reached", now)], facts,
                        reason="goal")
    if changed.state is not EnrollmentState.ACTIVE:
        return Transition(changed, (), tuple(facts)) if facts else None
    for criterion in graph.exit_criteria:
        if event.event_name == criterion.event_name and condition_holds(
                criterion.filter, "exit_criteria.filter", event.properties, event.traits):
            node_id = changed.current_node_id
            step = Step(node_id, changed.visits.get(node_id, 0), StepOutcome.SUCCEEDED,
                        f"exit criterion {criterion.event_name}", now)
            return _end(changed, EnrollmentState.EXITED, now, [step], facts,
                        reason=f"exit_criterion:{criterion.event_name}")
    node = graph.node(changed.current_node_id)
    if (changed.waiting and node is not None and isinstance(node.action, WaitAction)
            and node.action.event is not None
            and event.event_name == node.action.event.event_name
            and condition_holds(node.action.event.filter, "wait.event.filter",
                                event.properties, event.traits)):
        step = Step(node.id, changed.visits.get(node.id, 0), StepOutcome.SUCCEEDED,
                    f"event {event.event_name}", now)
        woken = replace(_visited(changed, node.id), waiting=False,
                        traits={**changed.traits, **event.traits},
                        properties=dict(event.properties), event_id=event.event_id,
                        traceparent=event.traceparent or changed.traceparent)
        # The next node runs on the step worker's next pass (due now), with its own claim.
        return replace(_go(woken, node.action.event.event_next_node_id, now, [step],
                           [*facts, _visit_fact(changed, node.id, now)]), send=None)
    return Transition(changed, (), tuple(facts)) if facts else None


def plan_enrollments(events: Sequence[InboxEvent], triggers: Iterable[Trigger],
                     active: set[ActiveKey], new_id: Callable[[], str],
                     now: datetime) -> list[tuple[Enrollment, FactRecord]]:
    """Enrollments the events create when no enrollment of theirs is watched (kept for
    callers that only enroll)."""
    history = {key: History(EnrollmentState.ACTIVE, now) for key in active}
    outcome = apply_events(events, triggers, (), history, set(), new_id, now)
    return [(enrollment, next(f for f in outcome.facts
                              if f.fact_id == f"entered:{enrollment.enrollment_id}"))
            for enrollment, _ in outcome.created.values()]


# --- running nodes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures, bounded so a step that never succeeds
    follows its failure policy instead of stalling forever."""

    base_seconds: float = 1.0
    max_seconds: float = 300.0
    max_attempts: int = 10

    def delay(self, attempt: int) -> timedelta:
        """Wait before try number ``attempt + 1`` (``attempt`` >= 1 tries already failed)."""
        return timedelta(seconds=min(self.base_seconds * 2 ** (attempt - 1), self.max_seconds))


@dataclass(frozen=True)
class SendOrder:
    """A send the worker must perform before the enrollment can move on."""

    node_id: str
    visit: int
    content_key: str
    channel: Channel
    address: str
    idempotency_key: str
    content_version: int = 0


@dataclass(frozen=True)
class ProfileOrder:
    """Traits the worker must set through identity (an identify event whose message id is the
    derived key, so identity applies it once however often it is retried)."""

    node_id: str
    visit: int
    traits: Mapping[str, Any]
    identifiers: tuple[tuple[str, str], ...]
    idempotency_key: str


Order = SendOrder | ProfileOrder


@dataclass(frozen=True)
class Sent:
    message_id: str


@dataclass(frozen=True)
class Rejected:
    """A permanent failure: retrying cannot help (unknown content, no address...)."""

    detail: str


@dataclass(frozen=True)
class Deferred:
    """A transient failure: the same order (same idempotency key) is tried again later."""

    detail: str


SendResult = Sent | Rejected | Deferred


@dataclass(frozen=True)
class Transition:
    enrollment: Enrollment
    steps: tuple[Step, ...] = ()
    facts: tuple[FactRecord, ...] = ()
    send: Order | None = None  # the I/O the enrollment now waits for, if any


def send_key(enrollment_id: str, node_id: str, visit: int) -> str:
    """Delivery's idempotency key: a retried or replayed step never sends twice."""
    return f"{enrollment_id}:{node_id}:{visit}"


# Which trait holds a profile's address on each channel; in-app and webhook need none.
ADDRESS_TRAITS = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.PUSH: "push_token"}


def recipient_address(channel: Channel, traits: Mapping[str, Any]) -> str:
    trait = ADDRESS_TRAITS.get(channel)
    if trait is None:
        return "-"  # delivery addresses in-app and webhook messages by profile
    value = traits.get(trait)
    return value.strip() if isinstance(value, str) else ""


def identity_identifiers(traits: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Identifiers identity resolves an update of this profile by."""
    found = []
    for kind in ("user_id", "email", "phone"):
        value = traits.get(kind)
        if isinstance(value, str) and value.strip():
            found.append((kind, value.strip()))
    return tuple(found)


def split_bucket(journey_id: str, profile_id: str) -> int:
    """0..99, the same for a profile in a journey on every visit and every version."""
    digest = hashlib.sha256(f"{journey_id}\x00{profile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def split_arm(split: SplitAction, journey_id: str, profile_id: str) -> SplitArm:
    bucket = split_bucket(journey_id, profile_id)
    total = 0
    for arm in split.arms:
        total += arm.percent
        if bucket < total:
            return arm
    return split.arms[-1]


_MAX_ZONE_NAME = 64  # the longest IANA name is about 30 characters


def _zone(name: object) -> ZoneInfo | None:
    if not isinstance(name, str) or not name or len(name) > _MAX_ZONE_NAME:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory: OSError
        return None


def profile_zone(traits: Mapping[str, Any], default: str) -> ZoneInfo:
    for name in (traits.get("timezone"), traits.get("time_zone"), default):
        zone = _zone(name)
        if zone is not None:
            return zone
    return ZoneInfo("UTC")


def profile_time_zone(traits: Mapping[str, Any]) -> str:
    """The IANA time zone a profile's traits name (``timezone``, else ``time_zone``), for
    delivery's quiet hours; "" when none names a known zone (delivery then uses its policy's
    default rather than refusing the message)."""
    for name in (traits.get("timezone"), traits.get("time_zone")):
        if _zone(name) is not None:
            assert isinstance(name, str)
            return name
    return ""


def next_local_time(now: datetime, zone: ZoneInfo, local: LocalTime) -> datetime:
    """The first instant after ``now`` when the wall clock in ``zone`` shows the wanted time on
    an allowed weekday. Computed on the local calendar, so it stays at 09:00 across DST; a time
    that a spring-forward skips resolves to the instant after the gap."""
    today = now.astimezone(zone).date()
    for offset in range(0, 9):
        day = today + timedelta(days=offset)
        if local.weekdays and day.isoweekday() not in local.weekdays:
            continue
        candidate = datetime.combine(day, time(local.hour, local.minute), tzinfo=zone)
        instant = candidate.astimezone(UTC)
        if instant > now:
            return instant
    raise AssertionError("an allowed weekday falls within 8 days")


def advance(enrollment: Enrollment, graph: JourneyGraph, now: datetime) -> Transition:
    """Run the enrollment's current node and every control node after it, until it needs I/O
    (returned as ``send``), waits, or ends."""
    return _walk(enrollment, graph, now, [], [])


def after_send(enrollment: Enrollment, graph: JourneyGraph, order: Order,
               result: SendResult, now: datetime, policy: RetryPolicy) -> Transition:
    """Apply the answer to ``order``: move on after success, follow the node's failure policy
    after a permanent failure, or retry later with backoff after a transient one."""
    if isinstance(result, Deferred):
        attempts = enrollment.attempts + 1
        if attempts < policy.max_attempts:
            return Transition(replace(enrollment, attempts=attempts, last_error=result.detail,
                                      due_time=now + policy.delay(attempts), update_time=now))
        result = Rejected(f"gave up after {attempts} attempts: {result.detail}")
    node = graph.node(order.node_id)
    action = node.action if node else None
    next_id = (action.next_node_id if isinstance(action, SendAction | UpdateProfileAction)
               else "")
    if isinstance(result, Rejected):
        step = Step(order.node_id, order.visit, StepOutcome.FAILED, result.detail, now)
        return _settle(_failed(enrollment, action, order.node_id, step, now, [], result.detail),
                       graph, now)
    step = Step(order.node_id, order.visit, StepOutcome.SUCCEEDED, result.message_id, now)
    facts = [_visit_fact(enrollment, order.node_id, now)]
    if isinstance(order, SendOrder):
        facts.append(enrollment.fact(f"requested:{order.idempotency_key}",
                                     FactKind.MESSAGE_REQUESTED, now,
                                     message_id=result.message_id, node_id=order.node_id,
                                     channel=order.channel.value,
                                     content_key=order.content_key))
    return _settle(_go(_visited(enrollment, order.node_id), next_id, now, [step], facts),
                   graph, now)


def _settle(transition: Transition, graph: JourneyGraph, now: datetime) -> Transition:
    """Run the control nodes after a finished I/O step; the next I/O is due now but runs in a
    later pass, with its own claim and trace."""
    if transition.send is _CONTINUE:
        transition = _walk(transition.enrollment, graph, now, list(transition.steps),
                           list(transition.facts))
    return Transition(transition.enrollment, transition.steps, transition.facts)


def _failed(enrollment: Enrollment, action: Action | None, node_id: str, step: Step,
            now: datetime, steps: list[Step], detail: str,
            facts: Sequence[FactRecord] = ()) -> Transition:
    """A permanent failure at a node: continue past it when its policy says so, else end."""
    if (isinstance(action, SendAction) and action.on_failure is FailurePolicy.CONTINUE):
        moved = _visited(enrollment, node_id)
        # Inside a walk the caller keeps walking; after I/O, after_send settles it.
        return _go(moved, action.next_node_id, now, [*steps, step], list(facts))
    return _end(enrollment, EnrollmentState.FAILED, now, [*steps, step], list(facts), detail,
                reason="failed")


_ENROLLMENT_FIELDS = frozenset(f.name for f in fields(Enrollment))


def _evolve(enrollment: Enrollment, **changes: Any) -> Enrollment:
    """``dataclasses.replace`` without running ``__init__`` over all of Enrollment's fields:
    a timer firing makes about seven copies, and ``replace`` was a fifth of a step's CPU."""
    assert changes.keys() <= _ENROLLMENT_FIELDS, changes.keys() - _ENROLLMENT_FIELDS
    copy = object.__new__(Enrollment)
    copy.__dict__.update(enrollment.__dict__, **changes)
    return copy


def _visited(enrollment: Enrollment, node_id: str) -> Enrollment:
    visits = dict(enrollment.visits)
    visits[node_id] = visits.get(node_id, 0) + 1
    return _evolve(enrollment, visits=visits, attempts=0, last_error="")


def _visit_fact(enrollment: Enrollment, node_id: str, now: datetime) -> FactRecord:
    visit = enrollment.visits.get(node_id, 0)
    return enrollment.fact(f"visited:{enrollment.enrollment_id}:{node_id}:{visit}",
                           FactKind.NODE_VISITED, now, node_id=node_id)


def _go(enrollment: Enrollment, next_id: str, now: datetime, steps: list[Step],
        facts: list[FactRecord]) -> Transition:
    """Move to ``next_id`` (an empty edge completes the journey) and run on from there."""
    if not next_id:
        return _end(enrollment, EnrollmentState.COMPLETED, now, steps, facts,
                    reason="completed")
    moved = _evolve(enrollment, current_node_id=next_id, due_time=now, update_time=now,
                    waiting=False)
    return Transition(moved, tuple(steps), tuple(facts), _CONTINUE)


# Marks a transition whose enrollment moved on and should keep walking in this pass.
_CONTINUE = ProfileOrder("", 0, {}, (), "")


def _end(enrollment: Enrollment, state: EnrollmentState, now: datetime, steps: list[Step],
         facts: list[FactRecord], error: str = "", reason: str = "") -> Transition:
    reason = reason or state.value
    ended = _evolve(enrollment, state=state, current_node_id="", due_time=None, attempts=0,
                    last_error=error, update_time=now, waiting=False, exit_reason=reason)
    facts = [*facts, ended.fact(f"exited:{enrollment.enrollment_id}", FactKind.JOURNEY_EXITED,
                                now, detail=reason)]
    return Transition(ended, tuple(steps), tuple(facts))


def _walk(enrollment: Enrollment, graph: JourneyGraph, now: datetime, steps: list[Step],
          facts: list[FactRecord]) -> Transition:
    # A published graph has no cycle without a wait, so the walk ends within len(nodes) + 1
    # control steps; the bound only guards against a corrupt version.
    for _ in range(len(graph.nodes) + 2):
        transition = _run_node(enrollment, graph, now, steps, facts)
        if transition.send is not _CONTINUE:
            return transition
        enrollment, steps, facts = (transition.enrollment, list(transition.steps),
                                    list(transition.facts))
    detail = "the walk did not stop at a wait, a send or an exit; the graph loops"
    return _end(enrollment, EnrollmentState.FAILED, now, steps, facts, detail, reason="failed")


def _run_node(enrollment: Enrollment, graph: JourneyGraph, now: datetime, steps: list[Step],
              facts: list[FactRecord]) -> Transition:
    node_id = enrollment.current_node_id
    visit = enrollment.visits.get(node_id, 0)
    node = graph.node(node_id)
    if node is None or node.action is None:
        detail = f"node {node_id!r} is not in version {enrollment.journey_version}"
        return _end(enrollment, EnrollmentState.FAILED, now,
                    [*steps, Step(node_id, visit, StepOutcome.FAILED, detail, now)], facts,
                    detail, reason="failed")
    action = node.action
    done = [*facts, _visit_fact(enrollment, node_id, now)]
    if isinstance(action, ExitAction):
        steps = [*steps, Step(node_id, visit, StepOutcome.SUCCEEDED, "", now)]
        return _end(_visited(enrollment, node_id), EnrollmentState.COMPLETED, now, steps, done,
                    reason="completed")
    if isinstance(action, SendAction):
        for channel in action.channels:
            address = recipient_address(channel, enrollment.traits)
            if address:
                order = SendOrder(node_id, visit, action.content_key, channel, address,
                                  send_key(enrollment.enrollment_id, node_id, visit),
                                  action.content_version)
                return Transition(enrollment, tuple(steps), tuple(facts), order)
        # Known before any call: fail the step now rather than render for nobody.
        wanted = ", ".join(f"{c.value} (trait {ADDRESS_TRAITS.get(c, '-')!r})"
                           for c in action.channels)
        detail = f"the profile has no address on any channel: {wanted}"
        failed = Step(node_id, visit, StepOutcome.FAILED, detail, now)
        return _failed(enrollment, action, node_id, failed, now, steps, detail, facts)
    if isinstance(action, UpdateProfileAction):
        identifiers = identity_identifiers(enrollment.traits)
        if not identifiers:
            detail = "the profile has no user_id, email or phone trait to identify it by"
            failed = Step(node_id, visit, StepOutcome.FAILED, detail, now)
            return _failed(enrollment, action, node_id, failed, now, steps, detail, facts)
        return Transition(enrollment, tuple(steps), tuple(facts), ProfileOrder(
            node_id, visit, dict(action.traits), identifiers,
            send_key(enrollment.enrollment_id, node_id, visit)))
    if isinstance(action, WaitAction):
        return _wait(enrollment, action, node_id, visit, now, steps, facts)
    if isinstance(action, BranchAction):
        journey = enrollment.journey_variables
        for index, condition in enumerate(action.conditions):
            if condition_holds(condition.condition, "branch.condition",
                               enrollment.properties, enrollment.traits, journey):
                step = Step(node_id, visit, StepOutcome.SUCCEEDED, f"condition {index}", now)
                return _go(_visited(enrollment, node_id), condition.next_node_id, now,
                           [*steps, step], done)
        step = Step(node_id, visit, StepOutcome.SUCCEEDED, "else", now)
        return _go(_visited(enrollment, node_id), action.else_next_node_id, now,
                   [*steps, step], done)
    assert isinstance(action, SplitAction)
    arm = split_arm(action, enrollment.journey_id, enrollment.profile_id)
    step = Step(node_id, visit, StepOutcome.SUCCEEDED, f"arm {arm.name}", now)
    # The visit is the exposure analytics' experiment reports count.
    done[-1] = replace(done[-1], detail=f"arm {arm.name}", extra={
        "experiment_id": f"{enrollment.journey_id}:{node_id}", "arm": arm.name,
        "control": arm.control, "arm_weight": float(arm.percent)})
    moved = _visited(enrollment, node_id)
    if arm.control:
        return _end(moved, EnrollmentState.EXITED, now, [*steps, step], done,
                    reason="control")
    return _go(moved, arm.next_node_id, now, [*steps, step], done)


def _wait(enrollment: Enrollment, action: WaitAction, node_id: str, visit: int, now: datetime,
          steps: list[Step], facts: list[FactRecord]) -> Transition:
    if enrollment.waiting:
        # The timer fired: the duration passed, the local time came, or the event timed out.
        timed_out = action.event is not None
        next_id = action.event.timeout_next_node_id if action.event else action.next_node_id
        step = Step(node_id, visit, StepOutcome.SUCCEEDED, "timeout" if timed_out else "timer",
                    now)
        return _go(_visited(enrollment, node_id), next_id, now, [*steps, step],
                   [*facts, _visit_fact(enrollment, node_id, now)])
    if action.duration is not None:
        until, detail = now + action.duration, "until"
    elif action.local_time is not None:
        zone = profile_zone(enrollment.traits, action.local_time.default_time_zone)
        until, detail = next_local_time(now, zone, action.local_time), f"until ({zone.key})"
    else:
        assert action.event is not None
        until = now + action.event.timeout
        detail = f"for event {action.event.event_name} until"
    step = Step(node_id, visit, StepOutcome.WAITING, f"{detail} {until.isoformat()}", now)
    parked = _evolve(enrollment, waiting=True, due_time=until, update_time=now, attempts=0)
    return Transition(parked, (*steps, step), tuple(facts))
