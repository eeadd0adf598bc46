"""Actions and decision points: create, read, list, change and delete them.

Field violations name fields of the resource; the API edge puts them under its request field.
Content keys are checked against the content service by the caller before the transaction
(a peer call does not belong inside one)."""

from __future__ import annotations

from cjo_decisioning.adapters import catalogue as repository
from cjo_decisioning.adapters import models, outcomes
from cjo_decisioning.domain.catalogue import (
    Action,
    DecisionPoint,
    StoredAction,
    StoredPoint,
    action_not_found,
    apply_update,
    check_action,
    check_etag,
    check_point,
    point_not_found,
    stale,
)
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import AlreadyExists

ACTION = "action"
POINT = "decision point"


# --- actions ---------------------------------------------------------------------------------


def create_action(uow: UnitOfWork, workspace_id: str, action: Action) -> StoredAction:
    check_action(action).raise_if_any()
    stored = repository.insert_action(uow.session, workspace_id, action, uow.now())
    if stored is None:
        raise AlreadyExists(f"action {action.key!r} already exists", reason="ACTION_EXISTS",
                            metadata={"action": action.key})
    return stored


def get_action(uow: UnitOfWork, workspace_id: str, key: str) -> StoredAction:
    stored = repository.get_action(uow.session, workspace_id, key)
    if stored is None:
        raise action_not_found(key)
    return stored


def page_actions(uow: UnitOfWork, workspace_id: str, after: str | None, size: int,
                 ) -> tuple[list[StoredAction], str | None]:
    found = repository.page_actions(uow.session, workspace_id, after, size + 1)
    return found[:size], found[size - 1].action.key if len(found) > size else None


def update_action(uow: UnitOfWork, workspace_id: str, patch: Action, mask: frozenset[str],
                  etag: str = "", allow_missing: bool = False) -> StoredAction:
    """The masked fields of ``patch`` saved; with ``allow_missing`` an absent action is
    created from ``patch``. ABORTED when ``etag`` is stale."""
    current = repository.get_action(uow.session, workspace_id, patch.key, for_update=True)
    if current is None:
        if not allow_missing:
            raise action_not_found(patch.key)
        return create_action(uow, workspace_id, patch)
    check_etag(ACTION, patch.key, etag, current.etag)
    action = apply_update(current.action, patch, mask)
    if action == current.action:
        return current
    check_action(action).raise_if_any()
    saved = repository.save_action(uow.session, workspace_id, current, action, uow.now())
    if saved is None:
        raise stale(ACTION, patch.key, current.etag)
    return saved


def delete_action(uow: UnitOfWork, workspace_id: str, key: str, etag: str = "") -> None:
    """Points naming it leave it out of their decisions (ACTION_DELETED) until changed."""
    current = repository.get_action(uow.session, workspace_id, key, for_update=True)
    if current is None:
        raise action_not_found(key)
    check_etag(ACTION, key, etag, current.etag)
    if not repository.delete_action(uow.session, workspace_id, key, current.etag):
        raise stale(ACTION, key, current.etag)


# --- decision points -------------------------------------------------------------------------


def _check_actions_exist(uow: UnitOfWork, workspace_id: str, point: DecisionPoint) -> None:
    found = repository.action_etags(uow.session, workspace_id, point.actions)
    missing = [key for key in point.actions if key not in found]
    if missing:
        raise action_not_found(missing[0])


def create_point(uow: UnitOfWork, workspace_id: str, point: DecisionPoint) -> StoredPoint:
    check_point(point).raise_if_any()
    _check_actions_exist(uow, workspace_id, point)
    stored = repository.insert_point(uow.session, workspace_id, point, uow.now())
    if stored is None:
        raise AlreadyExists(f"decision point {point.key!r} already exists",
                            reason="DECISION_POINT_EXISTS", metadata={"decision_point": point.key})
    return stored


def get_point(uow: UnitOfWork, workspace_id: str, key: str) -> StoredPoint:
    stored = repository.get_point(uow.session, workspace_id, key)
    if stored is None:
        raise point_not_found(key)
    return stored


def page_points(uow: UnitOfWork, workspace_id: str, after: str | None, size: int,
                ) -> tuple[list[StoredPoint], str | None]:
    found = repository.page_points(uow.session, workspace_id, after, size + 1)
    return found[:size], found[size - 1].point.key if len(found) > size else None


def update_point(uow: UnitOfWork, workspace_id: str, patch: DecisionPoint, mask: frozenset[str],
                 etag: str = "", allow_missing: bool = False) -> StoredPoint:
    """The masked fields of ``patch`` saved (the learned models stay: a new candidate starts
    from the prior); with ``allow_missing`` an absent point is created from ``patch``."""
    current = repository.get_point(uow.session, workspace_id, patch.key, for_update=True)
    if current is None:
        if not allow_missing:
            raise point_not_found(patch.key)
        return create_point(uow, workspace_id, patch)
    check_etag(POINT, patch.key, etag, current.etag)
    point = apply_update(current.point, patch, mask)
    if point == current.point:
        return current
    check_point(point).raise_if_any()
    if "actions" in mask:
        _check_actions_exist(uow, workspace_id, point)
    saved = repository.save_point(uow.session, workspace_id, current, point, uow.now())
    if saved is None:
        raise stale(POINT, patch.key, current.etag)
    return saved


def delete_point(uow: UnitOfWork, workspace_id: str, key: str, etag: str = "") -> None:
    """The point and its models go; its logged decisions stay for the reports, closed: they
    are never rewarded or learned again (a point created with the same key starts afresh)."""
    current = repository.get_point(uow.session, workspace_id, key, for_update=True)
    if current is None:
        raise point_not_found(key)
    check_etag(POINT, key, etag, current.etag)
    if not repository.delete_point(uow.session, workspace_id, key, current.etag):
        raise stale(POINT, key, current.etag)
    models.delete(uow, workspace_id, key)
    outcomes.close_point_decisions(uow.session, workspace_id, key)
