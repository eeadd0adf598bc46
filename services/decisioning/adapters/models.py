"""Learned models in storage: one row per (decision point, action)."""

from __future__ import annotations

from sqlalchemy import delete as sql_delete

from cjo_decisioning.adapters.tables import models as _m
from cjo_platform.db.unit_of_work import UnitOfWork


def delete(uow: UnitOfWork, workspace_id: str, point: str) -> None:
    """Every model of ``point`` (the point was deleted)."""
    uow.session.execute(sql_delete(_m).where(_m.c.workspace_id == workspace_id,
                                             _m.c.decision_point == point))
