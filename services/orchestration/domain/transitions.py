"""A transition (an enrollment's new state, the steps it took, the facts to publish, the I/O it
waits for) and the moves every rule builds one from: visit a node, move on, end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    FactKind,
    FactRecord,
    Step,
    StepOutcome,
    evolve,
)
from cjo_orchestration.domain.orders import Order, ProfileOrder


@dataclass(frozen=True)
class Transition:
    enrollment: Enrollment
    steps: tuple[Step, ...] = ()
    facts: tuple[FactRecord, ...] = ()
    send: Order | None = None  # the I/O the enrollment now waits for, if any
    # The error of the journey's definition this transition ran into (a condition that failed
    # to evaluate, a node that raised): its journey counts it; "" when none.
    error: str = ""


# Marks a transition whose enrollment moved on and should keep walking in this pass.
KEEP_WALKING = ProfileOrder("", 0, {}, (), "")


def visited(enrollment: Enrollment, node_id: str) -> Enrollment:
    """One more run of ``node_id`` counted; its retries start afresh."""
    visits = dict(enrollment.visits)
    visits[node_id] = visits.get(node_id, 0) + 1
    return evolve(enrollment, visits=visits, attempts=0, last_error="")


def visit_fact(enrollment: Enrollment, node_id: str, now: datetime) -> FactRecord:
    visit = enrollment.visits.get(node_id, 0)
    return enrollment.fact(f"visited:{enrollment.enrollment_id}:{node_id}:{visit}",
                           FactKind.NODE_VISITED, now, node_id=node_id)


def step_at_current_node(enrollment: Enrollment, detail: str, now: datetime) -> Step:
    """A succeeded step where the enrollment stands, for what happens to it between nodes (an
    exit criterion, a goal, an erasure, a merge)."""
    node_id = enrollment.current_node_id
    return Step(node_id, enrollment.visits.get(node_id, 0), StepOutcome.SUCCEEDED, detail, now)


def move_on(enrollment: Enrollment, next_id: str, now: datetime, steps: Sequence[Step],
            facts: Sequence[FactRecord]) -> Transition:
    """Move to ``next_id`` (an empty edge completes the journey) and run on from there."""
    if not next_id:
        return end_enrollment(enrollment, EnrollmentState.COMPLETED, now, steps, facts,
                              reason="completed")
    moved = evolve(enrollment, current_node_id=next_id, due_time=now, update_time=now,
                   waiting=False)
    return Transition(moved, tuple(steps), tuple(facts), KEEP_WALKING)


def end_enrollment(enrollment: Enrollment, state: EnrollmentState, now: datetime,
                   steps: Sequence[Step], facts: Sequence[FactRecord], error: str = "",
                   reason: str = "") -> Transition:
    """End in ``state``; ``reason`` (default: the state) is the exit fact's detail."""
    reason = reason or state.value
    ended = evolve(enrollment, state=state, current_node_id="", due_time=None, attempts=0,
                   last_error=error, update_time=now, waiting=False, exit_reason=reason)
    exited = ended.fact(f"exited:{enrollment.enrollment_id}", FactKind.JOURNEY_EXITED, now,
                        detail=reason)
    return Transition(ended, tuple(steps), (*facts, exited))
