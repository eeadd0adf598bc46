"""Workspace and API key storage."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, or_, select
from sqlalchemy.orm import Session

from cjo_identity.adapters.tables import api_keys, workspaces
from cjo_identity.domain.workspaces import ApiKey, Workspace
from cjo_platform.db import insert_ignore
from cjo_platform.errors import AlreadyExists
from cjo_platform.rpc.scopes import Scope


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
        secret_hash=key.secret_hash, create_time=key.create_time, scope=key.scope.value,
        secret_hint=key.secret_hint))


def delete_api_key(session: Session, key_id: str) -> None:
    session.execute(api_keys.delete().where(api_keys.c.key_id == key_id))


def find_api_key(session: Session, key_id: str) -> ApiKey | None:
    row = session.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
    return None if row is None else _api_key(row)


def list_api_keys(session: Session, workspace_id: str, limit: int, after: str
                  ) -> list[ApiKey]:
    rows = session.execute(
        select(api_keys)
        .where(api_keys.c.workspace_id == workspace_id, api_keys.c.key_id > after)
        .order_by(api_keys.c.key_id).limit(limit)).all()
    return [_api_key(row) for row in rows]


def save_secrets(session: Session, key: ApiKey) -> None:
    """Store a rotation: the new secret's hash and hint, and the previous secret's window."""
    session.execute(api_keys.update().where(api_keys.c.key_id == key.key_id).values(
        secret_hash=key.secret_hash, secret_hint=key.secret_hint,
        previous_secret_hash=key.previous_secret_hash,
        previous_secret_expire_time=key.previous_secret_expire_time))


def revoke_api_key(session: Session, key_id: str, when: datetime) -> None:
    session.execute(api_keys.update().where(
        api_keys.c.key_id == key_id, api_keys.c.revoke_time.is_(None)).values(revoke_time=when))


def note_use(session: Session, key_id: str, when: datetime, not_since: datetime) -> None:
    """Record a use, unless one after ``not_since`` is recorded (no write for most calls)."""
    session.execute(api_keys.update().where(
        api_keys.c.key_id == key_id,
        or_(api_keys.c.last_use_time.is_(None), api_keys.c.last_use_time < not_since),
    ).values(last_use_time=when))


def _api_key(row: Row[tuple[object, ...]]) -> ApiKey:
    return ApiKey(row.key_id, row.workspace_id, row.display_name, row.secret_hash,
                  row.create_time, scope=Scope.of(row.scope), secret_hint=row.secret_hint,
                  previous_secret_hash=row.previous_secret_hash,
                  previous_secret_expire_time=row.previous_secret_expire_time,
                  revoke_time=row.revoke_time, last_use_time=row.last_use_time)
