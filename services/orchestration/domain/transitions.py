"""A transition (an enrollment's new state, the steps it took, the facts to publish, the I/O it
waits for) and the moves every rule builds one from: visit a node, move on, end. Arriving at a
node and ending are the two moves that publish the funnel's facts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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
    return evolve(enrollment, visits=visits, attempts=0, last_error="", wait_deadline=None)


def arrival_fact(enrollment: Enrollment, now: datetime) -> FactRecord:
    """The NODE_VISITED fact of ``enrollment`` arriving at its current node (analytics counts a
    node when it is entered). The id carries the node's visit number, so a re-visit has its own
    and a replayed transition repeats it; ``visit_sequence`` numbers the arrival among all of the
    enrollment's (1: the entry node), since the arrivals of one walk share their time and a
    report must still tell which came last."""
    node_id = enrollment.current_node_id
    visit = enrollment.visits.get(node_id, 0)
    return enrollment.fact(f"arrived:{enrollment.enrollment_id}:{node_id}:{visit}",
                           FactKind.NODE_VISITED, now, node_id=node_id,
                           visit_sequence=sum(enrollment.visits.values()) + 1)


def failure_fact(enrollment: Enrollment, failed: Step) -> FactRecord:
    """The NODE_FAILED fact of a step that failed for good at ``failed.node_id``, whether the
    enrollment then ends there or (a send whose on_failure is CONTINUE) moves on."""
    return enrollment.fact(f"failed:{enrollment.enrollment_id}:{failed.node_id}:{failed.visit}",
                           FactKind.NODE_FAILED, failed.time, node_id=failed.node_id)


def step_at_current_node(enrollment: Enrollment, detail: str, now: datetime) -> Step:
    """A succeeded step where the enrollment stands, for what happens to it between nodes (an
    exit criterion, a goal, an erasure, a merge)."""
    node_id = enrollment.current_node_id
    return Step(node_id, enrollment.visits.get(node_id, 0), StepOutcome.SUCCEEDED, detail, now)


def move_on(enrollment: Enrollment, next_id: str, now: datetime, steps: Sequence[Step],
            facts: Sequence[FactRecord]) -> Transition:
    """Move to ``next_id`` (an empty edge completes the journey at the node it leaves) and run
    on from there. ``enrollment`` has counted the visit of the node it leaves (``visited``)."""
    if not next_id:
        return end_enrollment(enrollment, EnrollmentState.COMPLETED, now, steps, facts,
                              reason=ExitReason.COMPLETED)
    moved = evolve(enrollment, current_node_id=next_id, due_time=now, update_time=now,
                   waiting=False)
    return Transition(moved, tuple(steps), (*facts, arrival_fact(moved, now)), KEEP_WALKING)


def end_enrollment(enrollment: Enrollment, state: EnrollmentState, now: datetime,
                   steps: Sequence[Step], facts: Sequence[FactRecord], *,
                   reason: ExitReason, error: str = "") -> Transition:
    """End in ``state`` for ``reason``, at the node the enrollment stands at: the exit fact
    names that node, so analytics counts the exit (a wait it was parked at, a send that failed,
    the exit node) where it happened."""
    ended = evolve(enrollment, state=state, current_node_id="", due_time=None, attempts=0,
                   last_error=error, update_time=now, waiting=False, exit_reason=reason,
                   wait_deadline=None)
    exited = ended.fact(f"exited:{enrollment.enrollment_id}", FactKind.JOURNEY_EXITED, now,
                        node_id=enrollment.current_node_id, detail=reason)
    return Transition(ended, tuple(steps), (*facts, exited))
