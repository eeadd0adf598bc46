"""Workspace and API key storage."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cjo_identity.adapters.tables import api_keys, workspaces
from cjo_identity.domain.workspaces import ApiKey, Workspace
from cjo_platform.db import insert_ignore
from cjo_platform.errors import AlreadyExists


def add_workspace(session: Session, workspace: Workspace) -> None:
    inserted = insert_ignore(session, workspaces, [{
        "workspace_id": workspace.workspace_id, "display_name": workspace.display_name,
        "create_time": workspace.create_time,
    }], returning=workspaces.c.workspace_id)
    if not inserted:
        raise AlreadyExists(f"workspace {workspace.workspace_id!r} already exists",
                            reason="WORKSPACE_EXISTS")


def get_workspace(session: Session, workspace_id: str) -> Workspace | None:
    row = session.execute(select(workspaces).where(
        workspaces.c.workspace_id == workspace_id)).first()
    return None if row is None else Workspace(row.workspace_id, row.display_name, row.create_time)


def add_api_key(session: Session, key: ApiKey) -> None:
    session.execute(api_keys.insert().values(
        key_id=key.key_id, workspace_id=key.workspace_id, display_name=key.display_name,
        secret_hash=key.secret_hash, create_time=key.create_time))


def delete_api_key(session: Session, key_id: str) -> None:
    session.execute(api_keys.delete().where(api_keys.c.key_id == key_id))


def find_api_key(session: Session, key_id: str) -> ApiKey | None:
    row = session.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
    if row is None:
        return None
    return ApiKey(row.key_id, row.workspace_id, row.display_name, row.secret_hash,
                  row.create_time)
