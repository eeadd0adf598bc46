"""Storage of the engine: the event inbox, enrollments and their steps.

Every function works on a caller's session, so a worker puts a whole batch (enrollments, steps,
outbox facts, inbox marks) in one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, or_, select, tuple_, update
from sqlalchemy.orm import Session

from cjo_orchestration.adapters.tables import enrollments, inbox, steps
from cjo_orchestration.domain.engine import (
    ActiveKey,
    Enrollment,
    EnrollmentState,
    History,
    InboxEvent,
    Step,
    StepOutcome,
)
from cjo_platform.db import insert_ignore
from cjo_platform.errors import NotFound

# --- inbox -----------------------------------------------------------------------------------


def receive(session: Session, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Store events not seen before; returns the event ids that were new."""
    return set(insert_ignore(session, inbox, rows, returning=inbox.c.event_id))


def pending_events(session: Session, limit: int) -> list[InboxEvent]:
    """The oldest unprocessed events, locked for this transaction.

    A plain FOR UPDATE (not SKIP LOCKED): a second replica waits for the first batch to commit
    instead of overtaking it, so a profile's events are never applied out of order.
    """
    c = inbox.c
    rows = session.execute(
        select(c.seq, c.workspace_id, c.event_id, c.profile_id, c.event_name, c.properties,
               c.traits, c.traceparent)
        .where(c.processed.is_(False)).order_by(c.seq).limit(limit).with_for_update()
    ).all()
    return [InboxEvent(r.workspace_id, r.seq, r.event_id, r.profile_id, r.event_name,
                       r.properties, r.traits, r.traceparent) for r in rows]


def mark_processed(session: Session, seqs: Sequence[int]) -> None:
    session.execute(update(inbox).where(inbox.c.seq.in_(seqs)).values(processed=True))


# --- enrollments -----------------------------------------------------------------------------


def active_keys(session: Session, candidates: Iterable[ActiveKey]) -> set[ActiveKey]:
    """Which (workspace, journey, profile) triples already have an active enrollment."""
    wanted = sorted(set(candidates))
    if not wanted:
        return set()
    c = enrollments.c
    rows = session.execute(
        select(c.workspace_id, c.journey_id, c.profile_id)
        .where(c.state == EnrollmentState.ACTIVE.value,
               tuple_(c.workspace_id, c.journey_id, c.profile_id).in_(wanted))
    ).all()
    return {(r.workspace_id, r.journey_id, r.profile_id) for r in rows}


def insert_new(session: Session, batch: Sequence[Enrollment]) -> set[str]:
    """Insert enrollments; one that would make a second active enrollment of the same profile in
    the same journey (a racing replica) is skipped. Returns the enrollment ids inserted."""
    rows = [{
        "workspace_id": e.workspace_id, "enrollment_id": e.enrollment_id,
        "journey_id": e.journey_id, "journey_version": e.journey_version,
        "profile_id": e.profile_id, "state": e.state.value,
        "current_node_id": e.current_node_id, "visits": dict(e.visits), "attempts": e.attempts,
        "last_error": e.last_error, "step_count": e.step_count, "due_time": e.due_time,
        "lease_until": None, "lease_token": None, "traits": dict(e.traits),
        "properties": dict(e.properties), "event_id": e.event_id,
        "traceparent": e.traceparent, "create_time": e.create_time,
        "update_time": e.update_time, "waiting": e.waiting, "exit_reason": e.exit_reason,
        "goal_deadline": e.goal_deadline, "goal_time": e.goal_time,
    } for e in batch]
    return set(insert_ignore(session, enrollments, rows, returning=enrollments.c.enrollment_id))


def _enrollment(row: Row[Any]) -> Enrollment:
    return Enrollment(
        workspace_id=row.workspace_id, enrollment_id=row.enrollment_id,
        journey_id=row.journey_id, journey_version=row.journey_version,
        profile_id=row.profile_id, state=EnrollmentState(row.state),
        current_node_id=row.current_node_id, due_time=row.due_time,
        create_time=row.create_time, update_time=row.update_time, visits=row.visits,
        attempts=row.attempts, last_error=row.last_error, traits=row.traits,
        properties=row.properties, event_id=row.event_id, traceparent=row.traceparent,
        step_count=row.step_count, waiting=row.waiting, exit_reason=row.exit_reason,
        goal_deadline=row.goal_deadline, goal_time=row.goal_time)


def watched(session: Session, profiles: Iterable[tuple[str, str]],
            now: datetime) -> list[tuple[Enrollment, bool]]:
    """The enrollments events of these (workspace, profile) pairs can change, locked: active
    ones and ended ones whose goal window is still open; with whether a step worker holds each
    one's lease right now."""
    wanted = sorted(set(profiles))
    if not wanted:
        return []
    c = enrollments.c
    rows = session.execute(
        select(enrollments)
        .where(tuple_(c.workspace_id, c.profile_id).in_(wanted),
               or_(c.state == EnrollmentState.ACTIVE.value,
                   and_(c.goal_time.is_(None), c.goal_deadline >= now)))
        .order_by(c.create_time, c.enrollment_id).with_for_update()
    ).all()
    return [(_enrollment(r), r.lease_until is not None and r.lease_until > now) for r in rows]


def history(session: Session, keys: Iterable[ActiveKey]) -> dict[ActiveKey, History]:
    """The latest enrollment of each (workspace, journey, profile): the active one if any, else
    the one that ended last."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    c = enrollments.c
    rows = session.execute(
        select(c.workspace_id, c.journey_id, c.profile_id, c.state, c.update_time)
        .where(tuple_(c.workspace_id, c.journey_id, c.profile_id).in_(wanted))
    ).all()
    found: dict[ActiveKey, History] = {}
    for r in rows:
        key = (r.workspace_id, r.journey_id, r.profile_id)
        seen = found.get(key)
        state = EnrollmentState(r.state)
        if seen is not None and (seen.state is EnrollmentState.ACTIVE or (
                state is not EnrollmentState.ACTIVE and seen.ended >= r.update_time)):
            continue
        found[key] = History(state, r.update_time)
    return found


def claim_due(session: Session, now: datetime, until: datetime, token: str,
              limit: int) -> list[Enrollment]:
    """Lease up to ``limit`` due active enrollments, earliest first.

    SKIP LOCKED lets replicas claim disjoint batches at once (PostgreSQL; SQLite has a single
    writer anyway). The lease outlives this transaction, so the peer calls that follow happen
    without holding row locks, and a crashed worker's batch is taken over once it expires.
    """
    c = enrollments.c
    rows = session.execute(
        select(enrollments)
        .where(c.state == EnrollmentState.ACTIVE.value, c.due_time <= now,
               or_(c.lease_until.is_(None), c.lease_until <= now))
        .order_by(c.due_time).limit(limit).with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    session.execute(
        update(enrollments)
        .where(tuple_(c.workspace_id, c.enrollment_id).in_(
            [(r.workspace_id, r.enrollment_id) for r in rows]))
        .values(lease_until=until, lease_token=token))
    return [_enrollment(r) for r in rows]


def still_leased(session: Session, token: str, keys: Sequence[tuple[str, str]]) -> set[
        tuple[str, str]]:
    """Which claimed enrollments this worker still holds (a lease that expired mid-batch may
    have been taken over; its new holder records the outcome instead)."""
    if not keys:
        return set()
    c = enrollments.c
    rows = session.execute(
        select(c.workspace_id, c.enrollment_id)
        .where(tuple_(c.workspace_id, c.enrollment_id).in_(sorted(set(keys))),
               c.lease_token == token)
        .with_for_update()
    ).all()
    return {(r.workspace_id, r.enrollment_id) for r in rows}


def save_progress(session: Session, batch: Sequence[tuple[Enrollment, Sequence[Step]]]) -> None:
    """Write each enrollment's new state and release its lease, and append its steps."""
    if not batch:
        return
    c = enrollments.c
    session.execute(
        update(enrollments)
        .where(c.workspace_id == bindparam("p_ws"), c.enrollment_id == bindparam("p_id"))
        .values(state=bindparam("p_state"), current_node_id=bindparam("p_node"),
                visits=bindparam("p_visits"), attempts=bindparam("p_attempts"),
                last_error=bindparam("p_error"), step_count=bindparam("p_count"),
                due_time=bindparam("p_due"), update_time=bindparam("p_updated"),
                waiting=bindparam("p_waiting"), exit_reason=bindparam("p_reason"),
                goal_time=bindparam("p_goal"), traits=bindparam("p_traits"),
                properties=bindparam("p_properties"), event_id=bindparam("p_event"),
                traceparent=bindparam("p_traceparent"),
                lease_until=None, lease_token=None),
        [{"p_ws": e.workspace_id, "p_id": e.enrollment_id, "p_state": e.state.value,
          "p_node": e.current_node_id, "p_visits": dict(e.visits), "p_attempts": e.attempts,
          "p_error": e.last_error, "p_count": e.step_count + len(taken), "p_due": e.due_time,
          "p_updated": e.update_time, "p_waiting": e.waiting, "p_reason": e.exit_reason,
          "p_goal": e.goal_time, "p_traits": dict(e.traits), "p_properties": dict(e.properties),
          "p_event": e.event_id, "p_traceparent": e.traceparent} for e, taken in batch])
    insert_steps(session, batch)


def insert_steps(session: Session, batch: Sequence[tuple[Enrollment, Sequence[Step]]]) -> None:
    """Append steps, numbered on from each enrollment's ``step_count`` as read."""
    step_rows = [
        {"workspace_id": e.workspace_id, "enrollment_id": e.enrollment_id,
         "step_number": e.step_count + offset, "node_id": s.node_id, "visit": s.visit,
         "outcome": s.outcome.value, "detail": s.detail, "time": s.time}
        for e, taken in batch for offset, s in enumerate(taken)
    ]
    if step_rows:
        session.execute(steps.insert(), step_rows)


def release(session: Session, token: str, keys: Sequence[tuple[str, str]]) -> None:
    """Give claimed enrollments back untouched (e.g. when the worker is stopping)."""
    if not keys:
        return
    c = enrollments.c
    session.execute(
        update(enrollments)
        .where(tuple_(c.workspace_id, c.enrollment_id).in_(sorted(set(keys))),
               c.lease_token == token)
        .values(lease_until=None, lease_token=None))


def get(session: Session, workspace_id: str, journey_id: str, enrollment_id: str) -> Enrollment:
    c = enrollments.c
    row = session.execute(select(enrollments).where(
        c.workspace_id == workspace_id, c.journey_id == journey_id,
        c.enrollment_id == enrollment_id)).first()
    if row is None:
        raise NotFound(f"enrollment {enrollment_id} of journey {journey_id} not found",
                       reason="ENROLLMENT_NOT_FOUND")
    return _enrollment(row)


def page(session: Session, workspace_id: str, journey_id: str, profile_id: str, size: int,
         before: tuple[datetime, str] | None) -> list[Enrollment]:
    """Newest first; ``before`` is the (create_time, enrollment_id) of the previous page's last."""
    c = enrollments.c
    query = select(enrollments).where(c.workspace_id == workspace_id,
                                      c.journey_id == journey_id)
    if profile_id:
        query = query.where(c.profile_id == profile_id)
    if before is not None:
        when, enrollment_id = before
        query = query.where(or_(c.create_time < when,
                                and_(c.create_time == when, c.enrollment_id < enrollment_id)))
    rows = session.execute(
        query.order_by(c.create_time.desc(), c.enrollment_id.desc()).limit(size)).all()
    return [_enrollment(r) for r in rows]


def steps_of(session: Session, workspace_id: str,
             enrollment_ids: Sequence[str]) -> dict[str, list[Step]]:
    """Steps of several enrollments in one query, oldest first."""
    if not enrollment_ids:
        return {}
    c = steps.c
    rows = session.execute(
        select(steps).where(c.workspace_id == workspace_id,
                            c.enrollment_id.in_(enrollment_ids))
        .order_by(c.enrollment_id, c.step_number)).all()
    found: dict[str, list[Step]] = defaultdict(list)
    for r in rows:
        found[r.enrollment_id].append(
            Step(r.node_id, r.visit, StepOutcome(r.outcome), r.detail, r.time))
    return found
