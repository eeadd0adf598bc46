"""Triggers and entry: which journeys an event starts, whether the re-entry rules let a profile
in, and the enrollment it starts with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cjo_orchestration.domain.conditions import condition_holds, trigger_variables
from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    FactKind,
    FactRecord,
)
from cjo_orchestration.domain.graph import MAX_EVENT_NAME_LENGTH
from cjo_orchestration.domain.journeys import SEGMENT_ENTERED, JourneyGraph, ReEntry, TriggerKind
from cjo_orchestration.domain.transitions import arrival_fact
from cjo_platform.errors import Violations
from cjo_platform.limits import MAX_ID_LENGTH, MAX_PROFILE_ID_LENGTH, check_id


def validate_forwarded_event(event_id: str, profile_id: str, event_name: str) -> Violations:
    if (0 < len(event_id) <= MAX_ID_LENGTH and 0 < len(profile_id) <= MAX_PROFILE_ID_LENGTH
            and len(event_name) <= MAX_EVENT_NAME_LENGTH):
        return Violations()  # the usual case, without formatting each rule's text
    problems = Violations()
    check_id(problems, "event_id", event_id, required=True)
    check_id(problems, "profile_id", profile_id, required=True,
             max_length=MAX_PROFILE_ID_LENGTH)
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
    attempts: int = 0  # earlier rounds that failed to apply it
    # Properties and traits not read yet (``properties`` and ``traits`` are empty until then):
    # how to read them. HandleEvents reads a received event's only when a journey may use them.
    unread: Contents | None = field(default=None, compare=False, repr=False)

    def read(self) -> InboxEvent:
        """This event with its properties and traits read."""
        if self.unread is None:
            return self
        properties, traits = self.unread()
        return replace(self, properties=properties, traits=traits, unread=None)


# Reads an event's properties and traits (from the request that carried it).
Contents = Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]]


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
            trigger.filter, "event_trigger.filter", event.properties, event.traits,
            trigger_variables(self.journey_id, self.version))


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
                   now: datetime) -> tuple[Enrollment, tuple[FactRecord, FactRecord]]:
    """A new enrollment at the journey's entry node, with its facts: it entered the journey,
    and arrived at the entry node (the funnel counts a node when it is entered)."""
    enrollment = Enrollment(
        workspace_id=workspace_id, enrollment_id=enrollment_id, journey_id=journey_id,
        journey_version=version, profile_id=profile_id, state=EnrollmentState.ACTIVE,
        current_node_id=graph.entry_node_id, due_time=now, create_time=now, update_time=now,
        traits=dict(traits), properties=dict(properties), event_id=event_id,
        traceparent=traceparent, entry_properties=dict(properties),
        goal_deadline=now + graph.goal.window if graph.goal else None)
    entered = enrollment.fact(f"entered:{enrollment_id}", FactKind.JOURNEY_ENTERED, now)
    return enrollment, (entered, arrival_fact(enrollment, now))
