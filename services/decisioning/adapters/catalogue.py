"""Actions and decision points in storage, each scoped to one workspace. A definition is its
JSON spec; the etag changes with every saved change (a hash of the spec and the time)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, delete, select, update
from sqlalchemy.orm import Session

from cjo_decisioning.adapters.tables import actions as _a
from cjo_decisioning.adapters.tables import decision_points as _p
from cjo_decisioning.domain.catalogue import (
    Action,
    DecisionPoint,
    StoredAction,
    StoredPoint,
    action_from_json,
    action_json,
    point_from_json,
    point_json,
)
from cjo_platform.db import insert_ignore


def _etag(spec: Mapping[str, Any], now: datetime) -> str:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":")) + now.isoformat()
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- actions ---------------------------------------------------------------------------------


def _to_action(row: RowMapping) -> StoredAction:
    return StoredAction(action_from_json(row["spec"]), row["etag"], row["create_time"],
                        row["update_time"], int(row["exposures"]))


def insert_action(session: Session, workspace_id: str, action: Action, now: datetime,
                  ) -> StoredAction | None:
    """The new action; None when the key is taken."""
    spec = action_json(action)
    etag = _etag(spec, now)
    inserted = insert_ignore(session, _a, [{
        "workspace_id": workspace_id, "key": action.key, "spec": spec, "etag": etag,
        "exposures": 0, "create_time": now, "update_time": now}], returning=_a.c.key)
    return StoredAction(action, etag, now, now) if inserted else None


def get_action(session: Session, workspace_id: str, key: str, *, for_update: bool = False,
               ) -> StoredAction | None:
    query = select(_a).where(_a.c.workspace_id == workspace_id, _a.c.key == key)
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).mappings().first()
    return None if row is None else _to_action(row)


def get_actions(session: Session, workspace_id: str, keys: Collection[str],
                ) -> dict[str, StoredAction]:
    if not keys:
        return {}
    rows = session.execute(select(_a).where(
        _a.c.workspace_id == workspace_id, _a.c.key.in_(sorted(set(keys))))).mappings()
    return {row["key"]: _to_action(row) for row in rows}


def action_etags(session: Session, workspace_id: str, keys: Collection[str],
                 ) -> dict[str, tuple[str, int]]:
    """(etag, exposures) of each existing action of ``keys``: what a cached definition is
    checked against on every decision (cheap: no spec)."""
    if not keys:
        return {}
    rows = session.execute(select(_a.c.key, _a.c.etag, _a.c.exposures).where(
        _a.c.workspace_id == workspace_id, _a.c.key.in_(sorted(set(keys)))))
    return {row.key: (row.etag, int(row.exposures)) for row in rows}


def page_actions(session: Session, workspace_id: str, after: str | None, limit: int,
                 ) -> list[StoredAction]:
    query = select(_a).where(_a.c.workspace_id == workspace_id)
    if after is not None:
        query = query.where(_a.c.key > after)
    rows = session.execute(query.order_by(_a.c.key).limit(limit)).mappings()
    return [_to_action(row) for row in rows]


def save_action(session: Session, workspace_id: str, current: StoredAction, action: Action,
                now: datetime) -> StoredAction | None:
    """``action`` saved over ``current``; None when it changed meanwhile."""
    spec = action_json(action)
    etag = _etag(spec, now)
    result = session.execute(update(_a).where(
        _a.c.workspace_id == workspace_id, _a.c.key == action.key,
        _a.c.etag == current.etag).values(spec=spec, etag=etag, update_time=now))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return StoredAction(action, etag, current.create_time, now, current.exposures)


def delete_action(session: Session, workspace_id: str, key: str, etag: str) -> bool:
    result = session.execute(delete(_a).where(
        _a.c.workspace_id == workspace_id, _a.c.key == key, _a.c.etag == etag))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def lock_budgets(session: Session, workspace_id: str, keys: Collection[str]) -> dict[str, int]:
    """The units of budget spent of each of ``keys``, the rows locked until the transaction
    ends (in key order, so concurrent decisions never deadlock), so that no concurrent call
    or replica can spend the same units. SQLite has no row locks: a no-op update takes its
    database write lock first, so the count read is the one the transaction will add to."""
    if not keys:
        return {}
    wanted = sorted(set(keys))
    where = (_a.c.workspace_id == workspace_id, _a.c.key.in_(wanted))
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(_a).where(*where).values(exposures=_a.c.exposures))
    rows = session.execute(select(_a.c.key, _a.c.exposures).where(*where)
                           .order_by(_a.c.key).with_for_update())
    return {row.key: int(row.exposures) for row in rows}


def add_exposures(session: Session, workspace_id: str, counts: Mapping[str, int]) -> None:
    """Count exposures of actions (their budgets), one statement per action, in key order so
    concurrent transactions lock the rows in the same order."""
    for key in sorted(counts):
        session.execute(update(_a).where(_a.c.workspace_id == workspace_id, _a.c.key == key)
                        .values(exposures=_a.c.exposures + counts[key]))


# --- decision points -------------------------------------------------------------------------


def _to_point(row: RowMapping) -> StoredPoint:
    return StoredPoint(point_from_json(row["spec"]), row["etag"], row["create_time"],
                       row["update_time"], int(row["error_count"]), row["last_error"],
                       row["last_error_time"])


def insert_point(session: Session, workspace_id: str, point: DecisionPoint, now: datetime,
                 ) -> StoredPoint | None:
    spec = point_json(point)
    etag = _etag(spec, now)
    inserted = insert_ignore(session, _p, [{
        "workspace_id": workspace_id, "key": point.key, "spec": spec, "etag": etag,
        "error_count": 0, "last_error": "", "create_time": now, "update_time": now}],
        returning=_p.c.key)
    return StoredPoint(point, etag, now, now) if inserted else None


def get_point(session: Session, workspace_id: str, key: str, *, for_update: bool = False,
              ) -> StoredPoint | None:
    query = select(_p).where(_p.c.workspace_id == workspace_id, _p.c.key == key)
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).mappings().first()
    return None if row is None else _to_point(row)


def point_etag(session: Session, workspace_id: str, key: str) -> str | None:
    return session.execute(select(_p.c.etag).where(
        _p.c.workspace_id == workspace_id, _p.c.key == key)).scalar()


def page_points(session: Session, workspace_id: str, after: str | None, limit: int,
                ) -> list[StoredPoint]:
    query = select(_p).where(_p.c.workspace_id == workspace_id)
    if after is not None:
        query = query.where(_p.c.key > after)
    rows = session.execute(query.order_by(_p.c.key).limit(limit)).mappings()
    return [_to_point(row) for row in rows]


def save_point(session: Session, workspace_id: str, current: StoredPoint, point: DecisionPoint,
               now: datetime) -> StoredPoint | None:
    spec = point_json(point)
    etag = _etag(spec, now)
    result = session.execute(update(_p).where(
        _p.c.workspace_id == workspace_id, _p.c.key == point.key,
        _p.c.etag == current.etag).values(spec=spec, etag=etag, update_time=now))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return replace_point(current, point, etag, now)


def replace_point(current: StoredPoint, point: DecisionPoint, etag: str,
                  now: datetime) -> StoredPoint:
    return StoredPoint(point, etag, current.create_time, now, current.error_count,
                       current.last_error, current.last_error_time)


def delete_point(session: Session, workspace_id: str, key: str, etag: str) -> bool:
    result = session.execute(delete(_p).where(
        _p.c.workspace_id == workspace_id, _p.c.key == key, _p.c.etag == etag))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def record_point_error(session: Session, workspace_id: str, key: str, count: int, error: str,
                       now: datetime) -> None:
    """Errors of a point's formula or reward filter at run time, shown on the point (the etag
    stays: the definition did not change)."""
    session.execute(update(_p).where(_p.c.workspace_id == workspace_id, _p.c.key == key).values(
        error_count=_p.c.error_count + count, last_error=error[:1000], last_error_time=now))
