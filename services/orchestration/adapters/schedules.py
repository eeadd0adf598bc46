"""Storage of scheduled-trigger occurrences, and the schedule's reactions to the journey's
lifecycle (publish, resume, archive), each in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    case,
    delete,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from cjo_orchestration.adapters.tables import enrollments, journeys, schedule_occurrences
from cjo_orchestration.domain.journeys import Journey, JourneyState, JourneyVersion
from cjo_orchestration.domain.schedule import (
    FINAL_STATES,
    OPEN_STATES,
    Occurrence,
    OccurrenceState,
    first_fire,
    next_fire,
    schedule_of,
)
from cjo_platform.db import insert_ignore, keys_in
from cjo_platform.errors import NotFound

_OPEN = [s.value for s in OPEN_STATES]
_FINAL = [s.value for s in FINAL_STATES]
# Literals, not bound parameters: the partial index of due occurrences (WHERE state IN
# ('pending', 'running')) then matches in every plan; with parameters SQLite cannot tell the
# query implies the index's condition and scans every occurrence ever planned.
_OPEN_LITERALS: list[ColumnElement[str]] = [literal_column(f"'{state}'") for state in _OPEN]


def _occurrence(row: Row[Any]) -> Occurrence:
    return Occurrence(row.workspace_id, row.journey_id, row.journey_version, row.fire_time,
                      OccurrenceState(row.state), row.page_token, row.pages, row.enrolled,
                      row.not_enrolled, row.detail, row.start_time, row.finish_time,
                      row.attempts, row.create_time)


def _where_key(key: tuple[str, str, int, datetime]) -> Any:
    c = schedule_occurrences.c
    workspace_id, journey_id, version, fire_time = key
    return and_(c.workspace_id == workspace_id, c.journey_id == journey_id,
                c.journey_version == version, c.fire_time == fire_time)


def _keys_in(session: Session, occurrences: Iterable[tuple[str, str, int, datetime]]) -> Any:
    """Occurrences by key, one primary-key probe per occurrence (cjo_platform.db.keys_in)."""
    c = schedule_occurrences.c
    return keys_in(session, (c.workspace_id, c.journey_id, c.journey_version, c.fire_time),
                   occurrences)


def plan(session: Session, workspace_id: str, journey_id: str, version: int,
         fire_time: datetime | None, now: datetime) -> None:
    """Add a pending occurrence (planning the same one twice is harmless)."""
    if fire_time is None:
        return
    insert_ignore(session, schedule_occurrences, [{
        "workspace_id": workspace_id, "journey_id": journey_id, "journey_version": version,
        "fire_time": fire_time, "state": OccurrenceState.PENDING.value, "page_token": "",
        "pages": 0, "enrolled": 0, "not_enrolled": 0, "detail": "", "create_time": now}])


def save(session: Session, occurrence: Occurrence) -> None:
    """Write an occurrence's progress and release its lease."""
    session.execute(update(schedule_occurrences).where(_where_key(occurrence.key)).values(
        state=occurrence.state.value, page_token=occurrence.page_token, pages=occurrence.pages,
        enrolled=occurrence.enrolled, not_enrolled=occurrence.not_enrolled,
        detail=occurrence.detail, start_time=occurrence.start_time,
        finish_time=occurrence.finish_time, attempts=occurrence.attempts, lease_until=None,
        lease_token=None))


def claim_due(session: Session, now: datetime, until: datetime, token: str,
              limit: int) -> list[Occurrence]:
    """Lease up to ``limit`` due open occurrences, earliest first (SKIP LOCKED, as timers)."""
    c = schedule_occurrences.c
    rows = session.execute(
        select(schedule_occurrences)
        .where(c.state.in_(_OPEN_LITERALS), c.fire_time <= now,
               (c.lease_until.is_(None)) | (c.lease_until <= now))
        .order_by(c.fire_time).limit(limit).with_for_update(skip_locked=True)).all()
    if rows:
        session.execute(
            update(schedule_occurrences)
            .where(_keys_in(session, [(r.workspace_id, r.journey_id, r.journey_version,
                                       r.fire_time) for r in rows]))
            .values(lease_until=until, lease_token=token))
    return [_occurrence(r) for r in rows]


def next_due(session: Session, now: datetime) -> datetime | None:
    """When the earliest open occurrence falls due after ``now``: its fire time, or the end of
    its lease (a retry's backoff, a crashed holder). Open occurrences are few (one planned per
    scheduled journey, and those firing)."""
    c = schedule_occurrences.c
    due = case((c.lease_until > c.fire_time, c.lease_until), else_=c.fire_time)
    found: datetime | None = session.execute(
        select(func.min(due)).where(c.state.in_(_OPEN_LITERALS), due > now)).scalar()
    return found


def held(session: Session, occurrence: Occurrence, token: str) -> Occurrence | None:
    """The occurrence, locked, if this worker still holds it at the page it read; None when its
    lease expired and another worker moved on (that worker enrolls the page instead)."""
    row = session.execute(select(schedule_occurrences).where(_where_key(occurrence.key))
                          .with_for_update()).first()
    if row is None or row.lease_token != token or row.page_token != occurrence.page_token:
        return None
    return _occurrence(row)


def release(session: Session, token: str, occurrences: Sequence[Occurrence]) -> None:
    """Hand occurrences this worker holds back at once (stopping): the next pass takes them."""
    if not occurrences:
        return
    c = schedule_occurrences.c
    session.execute(update(schedule_occurrences)
                    .where(_keys_in(session, [o.key for o in occurrences]),
                           c.lease_token == token)
                    .values(lease_until=None, lease_token=None))


def retry_later(session: Session, token: str, occurrence: Occurrence, retry_time: datetime,
                detail: str) -> bool:
    """Hand an occurrence back after a transient failure: it stays open, at its page, and is not
    claimed again before ``retry_time`` (its lease doubles as the retry time). Counts the failed
    try and keeps why in ``detail``. False when this worker no longer held it."""
    c = schedule_occurrences.c
    done = session.execute(update(schedule_occurrences)
                           .where(_where_key(occurrence.key), c.lease_token == token)
                           .values(lease_until=retry_time, lease_token=None,
                                   attempts=c.attempts + 1, detail=detail))
    return bool(getattr(done, "rowcount", 0))


def journey_state(session: Session, workspace_id: str,
                  journey_id: str) -> tuple[JourneyState, int] | None:
    """(state, published version) of a journey, read under a share lock: a pause or archive
    committing at the same time waits for the caller's transaction, or the caller sees it."""
    c = journeys.c
    row = session.execute(select(c.state, c.published_version).where(
        c.workspace_id == workspace_id, c.journey_id == journey_id)
        .with_for_update(read=True)).first()
    return None if row is None else (JourneyState(row.state), row.published_version)


def sweep(session: Session, finished_before: datetime, journeys_at_most: int) -> tuple[int, int]:
    """Delete the occurrences that reached a final state before ``finished_before``, except each
    journey's latest final one (its last outcome stays visible), for up to
    ``journeys_at_most`` journeys. Returns (occurrences deleted, journeys swept)."""
    c = schedule_occurrences.c
    old = session.execute(
        select(c.workspace_id, c.journey_id)
        .where(c.finish_time < finished_before, c.state.in_(_FINAL))
        .group_by(c.workspace_id, c.journey_id).limit(journeys_at_most)).all()
    deleted = 0
    for workspace_id, journey_id in old:
        of_journey = and_(c.workspace_id == workspace_id, c.journey_id == journey_id,
                          c.state.in_(_FINAL))
        latest = session.execute(select(func.max(c.fire_time)).where(of_journey)).scalar()
        done = session.execute(delete(schedule_occurrences).where(
            of_journey, c.finish_time < finished_before, c.fire_time < latest))
        deleted += getattr(done, "rowcount", 0) or 0
    return deleted, len(old)


def enrolled_by(session: Session, occurrence: Occurrence,
                profile_ids: Iterable[str]) -> set[str]:
    """Profiles this occurrence already enrolled, whatever became of their enrollments (matched
    on entry_id, which no later event overwrites)."""
    wanted = sorted(set(profile_ids))
    if not wanted:
        return set()
    c = enrollments.c
    rows = session.execute(select(c.profile_id).where(
        keys_in(session, (c.workspace_id, c.journey_id, c.profile_id),
                [(occurrence.workspace_id, occurrence.journey_id, p) for p in wanted]),
        c.entry_id == occurrence.event_id)).all()
    return {r.profile_id for r in rows}


def of_journey(session: Session, workspace_id: str, journey_id: str) -> list[Occurrence]:
    """Every occurrence of a journey, oldest first (for operators and tests)."""
    c = schedule_occurrences.c
    rows = session.execute(select(schedule_occurrences).where(
        c.workspace_id == workspace_id, c.journey_id == journey_id)
        .order_by(c.fire_time, c.journey_version)).all()
    return [_occurrence(r) for r in rows]


def get(session: Session, workspace_id: str, journey_id: str, journey_version: int,
        fire_time: datetime) -> Occurrence:
    row = session.execute(select(schedule_occurrences).where(
        _where_key((workspace_id, journey_id, journey_version, fire_time)))).first()
    if row is None:
        raise NotFound(f"occurrence of journey {journey_id} version {journey_version} at "
                       f"{fire_time.isoformat()} not found",
                       reason="SCHEDULE_OCCURRENCE_NOT_FOUND")
    return _occurrence(row)


def page(session: Session, workspace_id: str, journey_id: str, state: OccurrenceState | None,
         size: int, before: tuple[datetime, int] | None) -> list[Occurrence]:
    """A journey's occurrences, newest fire time first (then newest version); ``before`` is the
    (fire_time, journey_version) of the previous page's last. The row-value comparison lets the
    journey index seek to the cursor rather than walk past every newer occurrence."""
    c = schedule_occurrences.c
    query = select(schedule_occurrences).where(c.workspace_id == workspace_id,
                                               c.journey_id == journey_id)
    if state is not None:
        query = query.where(c.state == state.value)
    if before is not None:
        query = query.where(tuple_(c.fire_time, c.journey_version) < before)
    rows = session.execute(query.order_by(c.fire_time.desc(), c.journey_version.desc())
                           .limit(size)).all()
    return [_occurrence(r) for r in rows]


def _close_open(session: Session, workspace_id: str, journey_id: str, state: OccurrenceState,
                detail: str, now: datetime, *, states: Sequence[str] = tuple(_OPEN),
                before: datetime | None = None, other_than_version: int | None = None) -> None:
    c = schedule_occurrences.c
    query = update(schedule_occurrences).where(
        c.workspace_id == workspace_id, c.journey_id == journey_id, c.state.in_(list(states)))
    if before is not None:
        query = query.where(c.fire_time <= before)
    if other_than_version is not None:
        query = query.where(c.journey_version != other_than_version)
    session.execute(query.values(state=state.value, detail=detail, finish_time=now,
                                 lease_until=None, lease_token=None))


def after_publish(session: Session, version: JourneyVersion, now: datetime) -> None:
    """A new version replaces the schedule: pending occurrences of older versions are cancelled
    (one already enrolling finishes on its version) and the new one's first is planned."""
    _close_open(session, version.workspace_id, version.journey_id, OccurrenceState.CANCELLED,
                f"replaced by version {version.version}", now,
                states=[OccurrenceState.PENDING.value], other_than_version=version.version)
    scheduled = schedule_of(version.graph)
    if scheduled is not None:
        plan(session, version.workspace_id, version.journey_id, version.version,
             first_fire(scheduled[1], now), now)


def after_lifecycle(session: Session, journey: Journey, graph_of_version: Any,
                    now: datetime) -> None:
    """Archive ends the schedule. Resume does not make up what came due while paused: those
    occurrences are skipped, and the schedule continues with the next one after ``now``.
    ``graph_of_version`` is the published version's graph (None for a draft)."""
    if journey.state is JourneyState.ARCHIVED:
        _close_open(session, journey.workspace_id, journey.journey_id,
                    OccurrenceState.CANCELLED, "journey archived", now)
    elif journey.state is JourneyState.ACTIVE and graph_of_version is not None:
        _close_open(session, journey.workspace_id, journey.journey_id, OccurrenceState.SKIPPED,
                    "came due while the journey was paused", now,
                    states=[OccurrenceState.PENDING.value], before=now)
        scheduled = schedule_of(graph_of_version)
        if scheduled is not None:
            plan(session, journey.workspace_id, journey.journey_id, journey.published_version,
                 next_fire(scheduled[1], now), now)
