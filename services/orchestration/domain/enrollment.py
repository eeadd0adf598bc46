"""An enrollment (one profile's run through one journey version), the steps it records and the
facts it publishes for analytics."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class EnrollmentState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    EXITED = "exited"


class ExitReason(StrEnum):
    """Why an enrollment ended: the closed list documented on analytics' ``Fact.exit_reason``
    (fact.proto), kept on the enrollment and sent on its JOURNEY_EXITED fact. Analytics counts
    COMPLETED and GOAL_REACHED as completing the node the enrollment ended at, every other
    reason as dropping (FAILED: failing) it there."""

    COMPLETED = "completed"  # an exit node, or a node whose next edge is empty
    GOAL_REACHED = "goal_reached"  # the goal's event, with exit_on_goal
    EXIT_CRITERIA = "exit_criteria"  # an exit criterion's event (its name is in the step)
    FAILED = "failed"  # a step failed for good and the node's policy ends the enrollment
    CONTROL = "control"  # held out by the control arm of a split
    PROFILE_DELETED = "profile_deleted"  # the profile was erased
    MERGED = "merged"  # merged into a profile whose enrollment in the journey continues


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
    NODE_FAILED = "node_failed"
    EXPERIMENT_EXPOSED = "experiment_exposed"


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
    detail: str = ""  # why an enrollment exited (an ExitReason), or which arm a split chose
    journey_version: int = 0
    # More of analytics' Fact fields by name (channel, content_key, experiment_id, arm,
    # control, arm_weight, conversion_deadline, revenue, currency, source_event_id), set when
    # they apply.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    node_id: str
    visit: int
    outcome: StepOutcome
    detail: str
    time: datetime


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
    # The properties of the event that enrolled it, never overwritten (``properties`` follows
    # the latest event): ``journey.entry`` in conditions.
    entry_properties: Mapping[str, Any] = field(default_factory=dict)
    # While a best-time wait asks decisioning for the send time: the latest moment it may
    # wait (arrival + max_delay), so retries after an outage never wait past it; else None.
    wait_deadline: datetime | None = None

    def fact(self, fact_id: str, kind: FactKind, when: datetime, message_id: str = "",
             node_id: str = "", detail: str = "", **extra: Any) -> FactRecord:
        # Built without FactRecord's frozen __init__ (a setattr per field): a timer firing
        # makes about five facts.
        record = object.__new__(FactRecord)
        record.__dict__.update(
            workspace_id=self.workspace_id, fact_id=fact_id, kind=kind,
            profile_id=self.profile_id, journey_id=self.journey_id,
            enrollment_id=self.enrollment_id, occur_time=when, message_id=message_id,
            traceparent=self.traceparent, node_id=node_id, detail=detail,
            journey_version=self.journey_version, extra=extra)
        return record

    @property
    def active(self) -> bool:
        return self.state is EnrollmentState.ACTIVE


_ENROLLMENT_FIELDS = frozenset(f.name for f in fields(Enrollment))


def evolve(enrollment: Enrollment, **changes: Any) -> Enrollment:
    """``dataclasses.replace`` without running ``__init__`` over all of Enrollment's fields:
    a timer firing makes about seven copies, and ``replace`` was a fifth of a step's CPU."""
    assert changes.keys() <= _ENROLLMENT_FIELDS, changes.keys() - _ENROLLMENT_FIELDS
    copy = object.__new__(Enrollment)
    copy.__dict__.update(enrollment.__dict__, **changes)
    return copy


def check_fields(names: Collection[str]) -> None:
    """Raise unless ``names`` are exactly Enrollment's fields: what :func:`restore` must be
    given. The rows of one query share their names (its columns), so they are checked once per
    query, not once per row; a raise, not an ``assert``, so ``python -O`` keeps it."""
    given = frozenset(names)
    if given != _ENROLLMENT_FIELDS:
        raise TypeError(f"an enrollment is restored from its fields exactly: missing "
                        f"{sorted(_ENROLLMENT_FIELDS - given)}, unknown "
                        f"{sorted(given - _ENROLLMENT_FIELDS)}")


def restore(values: dict[str, Any]) -> Enrollment:
    """The enrollment a stored row holds, every field given (by name; the caller checked the
    names with :func:`check_fields`): built like :func:`evolve`, without the frozen
    ``__init__``'s setattr per field (a claim restores a whole batch)."""
    enrollment = object.__new__(Enrollment)
    enrollment.__dict__.update(values)
    return enrollment
