"""Learned models in storage: one row per (decision point, action), its ``version`` growing
with every update.

Decisions read them through a per-process cache: within ``refresh_seconds`` of the last check
the cached models are used as they are; after that one query of the versions tells which
changed (another replica's or the learning worker's update), and only those are read again."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cjo_decisioning.adapters.tables import models as _m
from cjo_decisioning.domain.model import ActionModel
from cjo_platform.db import insert_ignore
from cjo_platform.db.unit_of_work import UnitOfWork


@dataclass
class _Cached:
    checked: float  # time.monotonic() of the last version check
    versions: dict[str, int]
    models: dict[str, ActionModel]
    absent: frozenset[str]  # actions the check found without a model


# Per database (an engine; tests run several services in one process), per (workspace, point).
_caches: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], _Cached]] = (
    weakref.WeakKeyDictionary())
_lock = threading.Lock()


def load(uow: UnitOfWork, workspace_id: str, point: str, actions: Collection[str], *,
         refresh_seconds: float = 1.0) -> dict[str, ActionModel]:
    """The stored models of ``point``'s ``actions``, by action; an action with no stored model
    is absent (the caller decides by the prior for it)."""
    wanted = set(actions)
    key = (workspace_id, point)
    now = time.monotonic()
    with _lock:
        cache = _caches.setdefault(uow.session.get_bind().engine, {})
        cached = cache.get(key)
    if (cached is not None and now - cached.checked < refresh_seconds
            and wanted <= set(cached.versions) | cached.absent):
        return {a: m for a, m in cached.models.items() if a in wanted}
    t = _m.c
    versions = {row.action: int(row.version) for row in uow.session.execute(
        select(t.action, t.version).where(t.workspace_id == workspace_id,
                                          t.decision_point == point, t.action.in_(sorted(wanted))))}
    previous = cached or _Cached(now, {}, {}, frozenset())
    stale = [a for a, v in versions.items() if previous.versions.get(a) != v
             or a not in previous.models]
    models = {a: m for a, m in previous.models.items() if a in versions and a not in stale}
    if stale:
        for row in uow.session.execute(select(
                t.action, t.mean, t.precision, t.observations, t.rewards, t.version).where(
                t.workspace_id == workspace_id, t.decision_point == point,
                t.action.in_(sorted(stale)))):
            models[row.action] = ActionModel.from_bytes(row.mean, row.precision,
                                                        int(row.observations), int(row.rewards))
            versions[row.action] = int(row.version)
    fresh = _Cached(now, versions, models, frozenset(wanted - set(versions)))
    with _lock:
        cache[key] = fresh
    return {a: m for a, m in models.items() if a in wanted}


def forget(engine: Any, workspace_id: str, point: str) -> None:
    """Drop the cached models of ``point`` (its models were deleted or replaced here)."""
    with _lock:
        _caches.get(engine, {}).pop((workspace_id, point), None)


def delete(uow: UnitOfWork, workspace_id: str, point: str) -> None:
    """Every model of ``point`` (the point was deleted)."""
    uow.session.execute(sql_delete(_m).where(_m.c.workspace_id == workspace_id,
                                             _m.c.decision_point == point))
    engine = uow.session.get_bind().engine
    uow.after_commit(lambda: forget(engine, workspace_id, point))


# --- the learning worker's side ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredModel:
    model: ActionModel
    version: int


def lock_model(session: Session, workspace_id: str, decision_point: str, action: str,
               prior_propensity: float, now: datetime) -> StoredModel:
    """The model of (point, action), locked until the transaction ends; created from the prior
    when there is none yet (ON CONFLICT DO NOTHING: two replicas creating it at once both find
    the one row). A learner locks one model per transaction, so learners cannot deadlock."""
    t = _m.c
    key = (t.workspace_id == workspace_id, t.decision_point == decision_point,
           t.action == action)
    if session.execute(select(t.version).where(*key)).first() is None:
        mean, precision = ActionModel.prior(prior_propensity).to_bytes()
        insert_ignore(session, _m, [{
            "workspace_id": workspace_id, "decision_point": decision_point, "action": action,
            "mean": mean, "precision": precision, "observations": 0, "rewards": 0,
            "version": 0, "update_time": now}])
    row = session.execute(
        select(t.mean, t.precision, t.observations, t.rewards, t.version).where(*key)
        .with_for_update()).one()
    return StoredModel(ActionModel.from_bytes(row.mean, row.precision, int(row.observations),
                                              int(row.rewards)), int(row.version))


def save_model(session: Session, workspace_id: str, decision_point: str, action: str,
               model: ActionModel, version: int, now: datetime) -> None:
    """Store a model locked with :func:`lock_model` as ``version``: every process's cache
    (:func:`load`) sees the new version at its next check and reads it again."""
    t = _m.c
    mean, precision = model.to_bytes()
    session.execute(update(_m).where(
        t.workspace_id == workspace_id, t.decision_point == decision_point,
        t.action == action).values(
        mean=mean, precision=precision, observations=model.observations,
        rewards=model.rewards, version=version, update_time=now))
