"""The enrollment state machine, as pure functions.

The engine never talks to a database or a peer. Workers feed it what they read (events, claimed
enrollments, answers of content and delivery) and persist the transitions it returns: the new
enrollment state, the steps taken and the facts to publish. That keeps every rule here testable
without I/O, and every side effect in one transaction per batch outside.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cjo_orchestration.domain.graph import MAX_EVENT_NAME_LENGTH
from cjo_orchestration.domain.journeys import Channel, ExitAction, JourneyGraph, SendAction
from cjo_platform.errors import Violations
from cjo_platform.limits import MAX_ID_LENGTH

# Control nodes (exit today; wait and branch later) run without I/O, several in one pass. A
# published graph has no cycles, so this bound only guards against a corrupt version.
MAX_CONTROL_STEPS_PER_PASS = 100


class EnrollmentState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"


class StepOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class FactKind(StrEnum):
    JOURNEY_ENTERED = "journey_entered"
    MESSAGE_REQUESTED = "message_requested"
    JOURNEY_EXITED = "journey_exited"


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
    event_name: str
    entry_node_id: str


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

    def fact(self, fact_id: str, kind: FactKind, when: datetime,
             message_id: str = "") -> FactRecord:
        return FactRecord(self.workspace_id, fact_id, kind, self.profile_id, self.journey_id,
                          self.enrollment_id, when, message_id, self.traceparent)


ActiveKey = tuple[str, str, str]  # (workspace_id, journey_id, profile_id)


def plan_enrollments(events: Sequence[InboxEvent], triggers: Iterable[Trigger],
                     active: set[ActiveKey], new_id: Callable[[], str],
                     now: datetime) -> list[tuple[Enrollment, FactRecord]]:
    """Enroll each event's profile in every journey the event triggers, unless the profile is
    already walking that journey (``active``, or enrolled by an earlier event of this batch).
    Events are applied in receive order, so a profile's first matching event wins."""
    by_event: dict[tuple[str, str], list[Trigger]] = defaultdict(list)
    for trigger in triggers:
        by_event[(trigger.workspace_id, trigger.event_name)].append(trigger)
    taken = set(active)
    planned: list[tuple[Enrollment, FactRecord]] = []
    for event in sorted(events, key=lambda e: e.seq):
        if not event.event_name:
            continue
        for trigger in by_event.get((event.workspace_id, event.event_name), ()):
            key = (event.workspace_id, trigger.journey_id, event.profile_id)
            if key in taken:
                continue
            taken.add(key)
            enrollment = Enrollment(
                workspace_id=event.workspace_id, enrollment_id=new_id(),
                journey_id=trigger.journey_id, journey_version=trigger.version,
                profile_id=event.profile_id, state=EnrollmentState.ACTIVE,
                current_node_id=trigger.entry_node_id, due_time=now, create_time=now,
                update_time=now, traits=dict(event.traits), properties=dict(event.properties),
                event_id=event.event_id, traceparent=event.traceparent)
            fact = enrollment.fact(f"entered:{enrollment.enrollment_id}",
                                   FactKind.JOURNEY_ENTERED, now)
            planned.append((enrollment, fact))
    return planned


# --- running nodes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures, bounded so a step that never succeeds ends
    the enrollment as FAILED instead of stalling it forever."""

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


@dataclass(frozen=True)
class Sent:
    message_id: str


@dataclass(frozen=True)
class Rejected:
    """A permanent failure: retrying cannot help (unknown content, no address...)."""

    detail: str


@dataclass(frozen=True)
class Deferred:
    """A transient failure: the same send (same idempotency key) is tried again later."""

    detail: str


SendResult = Sent | Rejected | Deferred


@dataclass(frozen=True)
class Transition:
    enrollment: Enrollment
    steps: tuple[Step, ...] = ()
    facts: tuple[FactRecord, ...] = ()
    send: SendOrder | None = None  # the I/O the enrollment now waits for, if any


def send_key(enrollment_id: str, node_id: str, visit: int) -> str:
    """Delivery's idempotency key: a retried or replayed step never sends twice."""
    return f"{enrollment_id}:{node_id}:{visit}"


def recipient_address(channel: Channel, traits: Mapping[str, Any]) -> str:
    if channel is Channel.EMAIL:
        email = traits.get("email")
        return email.strip() if isinstance(email, str) else ""
    return ""


def advance(enrollment: Enrollment, graph: JourneyGraph, now: datetime) -> Transition:
    """Run the enrollment's current node and every control node after it, until it needs a send
    (returned as ``send``) or ends."""
    return _walk(enrollment, graph, now, [], [])


def after_send(enrollment: Enrollment, graph: JourneyGraph, order: SendOrder,
               result: SendResult, now: datetime, policy: RetryPolicy) -> Transition:
    """Apply the answer to ``order``: move on after a send, end FAILED after a permanent
    failure, or retry later with backoff after a transient one."""
    if isinstance(result, Deferred):
        attempts = enrollment.attempts + 1
        if attempts < policy.max_attempts:
            return Transition(replace(enrollment, attempts=attempts, last_error=result.detail,
                                      due_time=now + policy.delay(attempts), update_time=now))
        result = Rejected(f"gave up after {attempts} attempts: {result.detail}")
    if isinstance(result, Rejected):
        step = Step(order.node_id, order.visit, StepOutcome.FAILED, result.detail, now)
        return _end(enrollment, EnrollmentState.FAILED, now, [step], [], result.detail)
    step = Step(order.node_id, order.visit, StepOutcome.SUCCEEDED, result.message_id, now)
    fact = enrollment.fact(f"requested:{order.idempotency_key}", FactKind.MESSAGE_REQUESTED,
                           now, message_id=result.message_id)
    node = graph.node(order.node_id)
    next_id = node.action.next_node_id if node and isinstance(node.action, SendAction) else ""
    moved = _visited(enrollment, order.node_id)
    if not next_id:
        return _end(moved, EnrollmentState.COMPLETED, now, [step], [fact])
    moved = replace(moved, current_node_id=next_id, due_time=now, update_time=now)
    walked = _walk(moved, graph, now, [step], [fact])
    # The next send is due now but runs in a later pass, with its own claim and trace.
    return replace(walked, send=None)


def _visited(enrollment: Enrollment, node_id: str) -> Enrollment:
    visits = dict(enrollment.visits)
    visits[node_id] = visits.get(node_id, 0) + 1
    return replace(enrollment, visits=visits, attempts=0, last_error="")


def _end(enrollment: Enrollment, state: EnrollmentState, now: datetime, steps: list[Step],
         facts: list[FactRecord], error: str = "") -> Transition:
    ended = replace(enrollment, state=state, current_node_id="", due_time=None, attempts=0,
                    last_error=error, update_time=now)
    facts = [*facts, ended.fact(f"exited:{enrollment.enrollment_id}", FactKind.JOURNEY_EXITED,
                                now)]
    return Transition(ended, tuple(steps), tuple(facts))


def _walk(enrollment: Enrollment, graph: JourneyGraph, now: datetime, steps: list[Step],
          facts: list[FactRecord]) -> Transition:
    for _ in range(MAX_CONTROL_STEPS_PER_PASS):
        node_id = enrollment.current_node_id
        visit = enrollment.visits.get(node_id, 0)
        node = graph.node(node_id)
        if node is None or node.action is None:
            detail = f"node {node_id!r} is not in version {enrollment.journey_version}"
            return _end(enrollment, EnrollmentState.FAILED, now,
                        [*steps, Step(node_id, visit, StepOutcome.FAILED, detail, now)], facts,
                        detail)
        action = node.action
        if isinstance(action, ExitAction):
            steps = [*steps, Step(node_id, visit, StepOutcome.SUCCEEDED, "", now)]
            return _end(_visited(enrollment, node_id), EnrollmentState.COMPLETED, now, steps,
                        facts)
        assert isinstance(action, SendAction)
        channel = action.channel or Channel.EMAIL
        order = SendOrder(node_id, visit, action.content_key, channel,
                          recipient_address(channel, enrollment.traits),
                          send_key(enrollment.enrollment_id, node_id, visit))
        if not order.address:
            # Known before any call: fail the step now rather than render for nobody.
            detail = f"the profile has no {channel.value} address (trait 'email')"
            failed = Step(node_id, visit, StepOutcome.FAILED, detail, now)
            return _end(enrollment, EnrollmentState.FAILED, now, [*steps, failed], facts, detail)
        return Transition(enrollment, tuple(steps), tuple(facts), order)
    detail = f"more than {MAX_CONTROL_STEPS_PER_PASS} steps without a send; the graph loops"
    return _end(enrollment, EnrollmentState.FAILED, now, steps, facts, detail)
