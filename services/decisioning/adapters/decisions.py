"""The decision log: bulk insert of a batch's decisions, their replays, the contact counts
that limits check, and exposures."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, func, or_, select, update
from sqlalchemy.orm import Session

from cjo_decisioning.adapters.tables import EXPOSED, PENDING
from cjo_decisioning.adapters.tables import decisions as _d
from cjo_platform.db.bulk import bulk_insert

# Everything but what only learning reads (features, leases).
_COLUMNS = (_d.c.decision_id, _d.c.decision_point, _d.c.profile_id, _d.c.action,
            _d.c.pick_probability, _d.c.control, _d.c.request_id, _d.c.decide_time,
            _d.c.candidates, _d.c.ineligible, _d.c.context, _d.c.outcome, _d.c.expose_time,
            _d.c.reward_deadline, _d.c.reward_time)


def insert(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """A batch's decisions in one bulk insert (COPY on PostgreSQL)."""
    bulk_insert(session, _d, rows)


def replays(session: Session, workspace_id: str, point: str,
            request_ids: Collection[str]) -> dict[str, RowMapping]:
    """The decisions already made at ``point`` for these request ids (ux_decisions_request)."""
    if not request_ids:
        return {}
    rows = session.execute(select(*_COLUMNS).where(
        _d.c.workspace_id == workspace_id, _d.c.decision_point == point,
        # Repeats the partial index's own condition, without which neither database may use
        # ux_decisions_request (SQLite then read every decision of the point on each call).
        _d.c.request_id != "", _d.c.request_id.in_(sorted(set(request_ids))))).mappings()
    found: dict[str, RowMapping] = {}
    for row in rows:
        found.setdefault(row["request_id"], row)
    return found


def contacts(session: Session, workspace_id: str, profile_ids: Collection[str],
             actions: Collection[str], since: datetime) -> list[tuple[str, str, datetime]]:
    """(profile, action, time) of the contacts with ``actions`` of these people since
    ``since``: the exposures (at their expose time) and the decisions still waiting for theirs
    (at their decision time: a REPORTED point's send is on its way), one query for a whole
    batch (ix_decisions_contacts)."""
    if not profile_ids or not actions:
        return []
    rows = session.execute(select(
        _d.c.profile_id, _d.c.action, func.coalesce(_d.c.expose_time, _d.c.decide_time)
        .label("contact_time")).where(
        _d.c.workspace_id == workspace_id, _d.c.profile_id.in_(sorted(set(profile_ids))),
        _d.c.action.in_(sorted(set(actions))),
        or_(_d.c.expose_time >= since,
            and_(_d.c.outcome == PENDING, _d.c.decide_time >= since))))
    return [(row.profile_id, row.action, row.contact_time) for row in rows]


def get(session: Session, workspace_id: str, decision_id: str) -> RowMapping | None:
    return session.execute(select(*_COLUMNS).where(
        _d.c.workspace_id == workspace_id, _d.c.decision_id == decision_id)).mappings().first()


def for_exposure(session: Session, workspace_id: str,
                 decision_ids: Collection[str]) -> dict[str, RowMapping]:
    """The decisions of ``decision_ids``, locked until the exposure commits."""
    if not decision_ids:
        return {}
    rows = session.execute(select(
        _d.c.decision_id, _d.c.decision_point, _d.c.action, _d.c.outcome,
        _d.c.decide_time, _d.c.expose_time).where(
        _d.c.workspace_id == workspace_id,
        _d.c.decision_id.in_(sorted(set(decision_ids)))).with_for_update()).mappings()
    return {row["decision_id"]: row for row in rows}


def expose(session: Session, workspace_id: str, decision_id: str, expose_time: datetime,
           reward_deadline: datetime) -> bool:
    """Mark a pending decision exposed; False when it was not pending (exposed before)."""
    result = session.execute(update(_d).where(
        _d.c.workspace_id == workspace_id, _d.c.decision_id == decision_id,
        _d.c.outcome == PENDING).values(outcome=EXPOSED, expose_time=expose_time,
                                        reward_deadline=reward_deadline))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
