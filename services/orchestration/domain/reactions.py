"""What one event does to one enrollment it reaches: count the journey's goal, end the
enrollment on an exit criterion, or wake it from a wait for that event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from cjo_orchestration.domain.conditions import enrollment_condition_holds
from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    ExitReason,
    FactKind,
    FactRecord,
    Step,
    StepOutcome,
    evolve,
)
from cjo_orchestration.domain.entry import InboxEvent
from cjo_orchestration.domain.journeys import (
    EventWait,
    ExitCriterion,
    Goal,
    JourneyGraph,
    WaitAction,
)
from cjo_orchestration.domain.transitions import (
    Transition,
    end_enrollment,
    move_on,
    step_at_current_node,
    visited,
)
from cjo_platform.engagement import ENROLLMENT_ID, is_message_event


def on_event(enrollment: Enrollment, graph: JourneyGraph, event: InboxEvent,
             now: datetime) -> Transition | None:
    """What one event does to one enrollment: count the goal, end it on an exit criterion, or
    wake it from a wait for this event. None when the event does not concern it."""
    goal = graph.goal
    facts: tuple[FactRecord, ...] = ()
    if goal is not None and goal_reached(enrollment, goal, event, now):
        enrollment, conversion = reach_goal(enrollment, goal, event, now)
        facts = (conversion,)
        if goal.exit_on_goal and enrollment.active:
            return _exit(enrollment, now, facts, f"goal {goal.event_name} reached",
                         ExitReason.GOAL_REACHED)
    if enrollment.active:
        reaction = (exit_on_criterion(enrollment, graph, event, now, facts)
                    or wake_on_event(enrollment, graph, event, now, facts))
        if reaction is not None:
            return reaction
    return Transition(enrollment, (), facts) if facts else None


# --- goals -------------------------------------------------------------------------------------


def goal_reached(enrollment: Enrollment, goal: Goal, event: InboxEvent, now: datetime) -> bool:
    """The first conversion inside the goal window counts, whether or not the enrollment is
    still active."""
    return (enrollment.goal_time is None and enrollment.goal_deadline is not None
            and now <= enrollment.goal_deadline and event.event_name == goal.event_name
            and enrollment_condition_holds(goal.filter, "goal.filter", event.properties,
                                           event.traits, enrollment))


def reach_goal(enrollment: Enrollment, goal: Goal, event: InboxEvent,
               now: datetime) -> tuple[Enrollment, FactRecord]:
    # An ended enrollment keeps its update time: re-entry cooldowns count from the end.
    reached = evolve(enrollment, goal_time=now,
                     update_time=now if enrollment.active else enrollment.update_time)
    return reached, reached.fact(f"goal:{reached.enrollment_id}", FactKind.GOAL_REACHED, now,
                                 detail=goal.event_name, source_event_id=event.event_id,
                                 **conversion_value(event.properties))


def conversion_value(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The revenue (and its currency) a conversion event carries, when it carries a number."""
    revenue = properties.get("revenue")
    if not isinstance(revenue, int | float) or isinstance(revenue, bool):
        return {}
    return {"revenue": float(revenue), "currency": str(properties.get("currency", ""))}


# --- exit criteria -----------------------------------------------------------------------------


def met_exit_criterion(criteria: Sequence[ExitCriterion], event: InboxEvent,
                       enrollment: Enrollment) -> ExitCriterion | None:
    for criterion in criteria:
        if event.event_name == criterion.event_name and enrollment_condition_holds(
                criterion.filter, "exit_criteria.filter", event.properties, event.traits,
                enrollment):
            return criterion
    return None


def exit_on_criterion(enrollment: Enrollment, graph: JourneyGraph, event: InboxEvent,
                      now: datetime, facts: Sequence[FactRecord]) -> Transition | None:
    criterion = met_exit_criterion(graph.exit_criteria, event, enrollment)
    if criterion is None:
        return None
    return _exit(enrollment, now, facts, f"exit criterion {criterion.event_name}",
                 ExitReason.EXIT_CRITERIA)


def _exit(enrollment: Enrollment, now: datetime, facts: Sequence[FactRecord], detail: str,
          reason: ExitReason) -> Transition:
    return end_enrollment(enrollment, EnrollmentState.EXITED, now,
                          [step_at_current_node(enrollment, detail, now)], facts, reason=reason)


# --- event waits -------------------------------------------------------------------------------


def awaited_event(enrollment: Enrollment, graph: JourneyGraph,
                  event: InboxEvent) -> EventWait | None:
    """The wait the enrollment is parked at, when it waits for this very event: for an
    engagement with a message (an open, a click ...), one about the message this enrollment
    sent unless the wait takes ``any_message``; then its filter."""
    if not enrollment.waiting:
        return None
    node = graph.node(enrollment.current_node_id)
    wait = node.action.event if node is not None and isinstance(node.action, WaitAction) else None
    if wait is None or event.event_name != wait.event_name:
        return None
    if not (wait.any_message or own_message(enrollment, event)):
        return None
    if not enrollment_condition_holds(wait.filter, "wait.event.filter", event.properties,
                                      event.traits, enrollment):
        return None
    return wait


def own_message(enrollment: Enrollment, event: InboxEvent) -> bool:
    """Whether ``event`` concerns this enrollment: any event but an engagement with a message
    does; an engagement (an open, a click, a delivery report ...: cjo_platform.engagement) only
    when this enrollment sent the message."""
    return (not is_message_event(event.event_name)
            or event.properties.get(ENROLLMENT_ID) == enrollment.enrollment_id)


def wake_on_event(enrollment: Enrollment, graph: JourneyGraph, event: InboxEvent,
                  now: datetime, facts: Sequence[FactRecord]) -> Transition | None:
    """Leave the wait along its event edge; later nodes render against this event."""
    wait = awaited_event(enrollment, graph, event)
    if wait is None:
        return None
    node_id = enrollment.current_node_id
    step = Step(node_id, enrollment.visits.get(node_id, 0), StepOutcome.SUCCEEDED,
                f"event {event.event_name}", now)
    woken = evolve(visited(enrollment, node_id), waiting=False,
                   traits={**enrollment.traits, **event.traits},
                   properties=dict(event.properties), event_id=event.event_id,
                   traceparent=event.traceparent or enrollment.traceparent)
    # The next node runs on the step worker's next pass (due now), with its own claim.
    return replace(move_on(woken, wait.event_next_node_id, now, [step], facts), send=None)
