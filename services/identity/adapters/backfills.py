"""Storage of backfills (domain/backfills.py): one row per workspace and target, leased by the
worker that scans it (SKIP LOCKED on PostgreSQL), its cursor advanced with each chunk by a
compare-and-set, so a chunk is written once even when two workers raced for it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from cjo_identity.adapters.tables import backfills, profiles
from cjo_identity.domain.backfills import Backfill, BackfillState
from cjo_platform.db import one_of
from cjo_platform.db.engine import upsert
from cjo_platform.limits import storable_text

_OPEN = [BackfillState.PENDING.value, BackfillState.RUNNING.value]


def _backfill(row: Any) -> Backfill:
    return Backfill(
        workspace_id=row.workspace_id, target=row.target, definition=row.definition,
        state=BackfillState(row.state), create_time=row.create_time, cursor=row.cursor,
        profiles_scanned=int(row.profiles_scanned), profiles_total=int(row.profiles_total),
        start_time=row.start_time, end_time=row.end_time, attempts=int(row.attempts),
        last_error=row.last_error or "")


def start(session: Session, workspace_id: str, target: str, definition: str,
          now: datetime) -> None:
    """Record a backfill of ``target`` to ``definition``, replacing any earlier one (its scan
    starts over; a worker still holding the old one loses its lease)."""
    fresh = {"workspace_id": workspace_id, "target": target, "definition": definition,
             "state": BackfillState.PENDING.value, "cursor": "", "profiles_scanned": 0,
             "profiles_total": 0, "create_time": now, "start_time": None, "end_time": None,
             "lease_token": None, "lease_until": None, "attempts": 0, "last_error": None}
    upsert(session, backfills, [fresh],
           lambda excluded: {k: excluded[k] for k in fresh if k not in ("workspace_id",
                                                                      "target")})


def remove(session: Session, workspace_id: str, target: str) -> None:
    session.execute(delete(backfills).where(backfills.c.workspace_id == workspace_id,
                                            backfills.c.target == target))


def read(session: Session, workspace_id: str, targets: Sequence[str]) -> dict[str, Backfill]:
    if not targets:
        return {}
    return {r.target: _backfill(r) for r in session.execute(select(backfills).where(
        backfills.c.workspace_id == workspace_id,
        one_of(session, backfills.c.target, list(targets))))}


def claim(session: Session, now: datetime, until: datetime, token: str,
          limit: int) -> list[Backfill]:
    """Lease up to ``limit`` unfinished backfills, oldest first: free ones, ones whose lease
    ran out (their worker died) and this worker's own. A backfill no worker had started
    becomes RUNNING, with its start time and the workspace's profile count as its total."""
    c = backfills.c
    rows = session.execute(
        select(backfills)
        .where(c.state.in_(_OPEN),
               or_(c.lease_until.is_(None), c.lease_until <= now, c.lease_token == token))
        .order_by(c.create_time, c.workspace_id, c.target).limit(limit)
        .with_for_update(skip_locked=True)).all()
    claimed: list[Backfill] = []
    for row in rows:
        values: dict[str, Any] = {"lease_token": token, "lease_until": until}
        if row.state == BackfillState.PENDING.value:
            values.update(state=BackfillState.RUNNING.value, start_time=now,
                          profiles_total=session.execute(
                              select(func.count()).select_from(profiles)
                              .where(profiles.c.workspace_id == row.workspace_id))
                          .scalar_one())
        session.execute(update(backfills).where(
            c.workspace_id == row.workspace_id, c.target == row.target).values(**values))
        claimed.append(_backfill(row))
    return [read(session, b.workspace_id, [b.target])[b.target] for b in claimed]


def advance(session: Session, job: Backfill, token: str, cursor: str, scanned: int,
            done: bool, now: datetime, until: datetime) -> bool:
    """Store a chunk's progress if this worker still holds ``job`` as it read it (same
    definition, same cursor); False otherwise (the transaction must then be rolled back)."""
    c = backfills.c
    values: dict[str, Any] = {
        "cursor": cursor, "profiles_scanned": c.profiles_scanned + scanned,
        "lease_until": until, "attempts": 0, "last_error": None}
    if done:
        values.update(state=BackfillState.DONE.value, end_time=now, lease_token=None,
                      lease_until=None)
    result = session.execute(update(backfills).where(
        c.workspace_id == job.workspace_id, c.target == job.target,
        c.definition == job.definition, c.cursor == job.cursor, c.lease_token == token,
        c.state == BackfillState.RUNNING.value).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def failed(session: Session, job: Backfill, token: str, error: str,
           retry_at: datetime, max_attempts: int) -> BackfillState:
    """A chunk failed: recorded on the backfill, which no worker takes again before
    ``retry_at`` (other backfills go on); the ``max_attempts``-th failure in a row makes it
    FAILED, never taken again until its definition is set again (:func:`start`). Returns the
    state it is left in."""
    c = backfills.c
    given_up = c.attempts + 1 >= max_attempts
    session.execute(update(backfills).where(
        c.workspace_id == job.workspace_id, c.target == job.target,
        c.definition == job.definition, c.lease_token == token).values(
        attempts=c.attempts + 1, last_error=storable_text(error, 1000), lease_token=None,
        state=case((given_up, BackfillState.FAILED.value), else_=c.state),
        lease_until=case((given_up, None), else_=retry_at)))
    return BackfillState.FAILED if job.attempts + 1 >= max_attempts else job.state
