"""Workspaces (tenants) and their API keys. Identity owns the keys, so it authenticates them in
its own database; the other services ask it (AuthenticateApiKey).

A key's secret exists only in the answer that created it: only its hash is stored."""

from __future__ import annotations

from datetime import timedelta

from cjo_identity.adapters import workspaces
from cjo_identity.domain.workspaces import (
    LAST_USE_GRANULARITY,
    ApiKey,
    Workspace,
    check_new_api_key,
    check_new_workspace,
    check_rotation_overlap,
    secret_hint,
)
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import NotFound
from cjo_platform.rpc.auth import (
    KeyResolver,
    Principal,
    hash_secret,
    key_id_of,
    new_api_key,
    new_secret,
    same_secret,
)
from cjo_platform.rpc.scopes import Scope

DEFAULT_KEY_NAME = "default"


def create_workspace(uow: UnitOfWork, workspace_id: str, display_name: str
                     ) -> tuple[Workspace, ApiKey, str]:
    """The workspace with its first API key, and that key's secret."""
    check_new_workspace(workspace_id, display_name)
    workspace = Workspace(workspace_id, display_name, uow.now())
    workspaces.add_workspace(uow.session, workspace)
    key, secret = _issue_api_key(uow, workspace_id, DEFAULT_KEY_NAME)
    return workspace, key, secret


def get_workspace(uow: UnitOfWork, workspace_id: str) -> Workspace:
    workspace = workspaces.get_workspace(uow.session, workspace_id)
    if workspace is None:
        raise NotFound(f"workspace {workspace_id!r} does not exist")
    return workspace


def create_api_key(uow: UnitOfWork, workspace_id: str, display_name: str,
                   scope: Scope = Scope.ADMIN) -> tuple[ApiKey, str]:
    """Another key for the workspace, and its secret."""
    check_new_api_key(display_name)
    # A key holder's workspace exists; a service acting for one might name any.
    get_workspace(uow, workspace_id)
    return _issue_api_key(uow, workspace_id, display_name, scope)


def list_api_keys(uow: UnitOfWork, workspace_id: str, size: int, after: str
                  ) -> tuple[list[ApiKey], str | None]:
    """A page of the workspace's keys by key id, and the last id when more may follow."""
    keys = workspaces.list_api_keys(uow.session, workspace_id, size + 1, after)
    more = len(keys) > size
    keys = keys[:size]
    return keys, keys[-1].key_id if more else None


def delete_api_key(uow: UnitOfWork, workspace_id: str, key_id: str) -> ApiKey:
    """Delete one of the workspace's keys (it is no longer listed); the key is returned."""
    key = _own_key(uow, workspace_id, key_id)
    workspaces.delete_api_key(uow.session, key_id)
    return key


def revoke_api_key(uow: UnitOfWork, workspace_id: str, key_id: str) -> ApiKey:
    """Revoke one of the workspace's keys: every secret of it is refused from now on, and it
    stays listed. A revoked key is returned as it is."""
    key = _own_key(uow, workspace_id, key_id)
    if key.revoke_time is None:
        workspaces.revoke_api_key(uow.session, key_id, uow.now())
        key = _own_key(uow, workspace_id, key_id)
    return key


def rotate_api_key(uow: UnitOfWork, workspace_id: str, key_id: str, overlap: timedelta
                   ) -> tuple[ApiKey, str]:
    """A new secret for the key (returned with it); the current one works ``overlap`` longer."""
    check_rotation_overlap(overlap)
    key = _own_key(uow, workspace_id, key_id)
    secret, secret_hash = new_secret(key_id)
    rotated = key.rotated(secret_hash, secret_hint(secret), uow.now(), overlap)
    workspaces.save_secrets(uow.session, rotated)
    return rotated, secret


def authenticate_api_key(uow: UnitOfWork, secret: str) -> Principal | None:
    """Who presents ``secret``; None when no key has it (or it is revoked or rotated out)."""
    key_id = key_id_of(secret)
    key = workspaces.find_api_key(uow.session, key_id) if key_id else None
    if key is None or key.revoke_time is not None:
        return None
    now = uow.now()
    presented = hash_secret(secret)
    if same_secret(presented, key.secret_hash):
        expire_time = None
    elif key.previous_secret_works(now) and same_secret(presented,
                                                         key.previous_secret_hash or ""):
        expire_time = key.previous_secret_expire_time
    else:
        return None
    if key.last_use_time is None or key.last_use_time < now - LAST_USE_GRANULARITY:
        workspaces.note_use(uow.session, key.key_id, now, now - LAST_USE_GRANULARITY)
    return Principal(workspace_id=key.workspace_id, key_id=key.key_id, is_service=False,
                     scope=key.scope, expire_time=expire_time)


def local_key_resolver(transactions: Transactions) -> KeyResolver:
    """Resolves presented secrets from identity's own database, instead of calling itself."""

    async def resolve(secret: str) -> Principal | None:
        return await transactions.run(lambda uow: authenticate_api_key(uow, secret))

    return resolve


def _own_key(uow: UnitOfWork, workspace_id: str, key_id: str) -> ApiKey:
    key = workspaces.find_api_key(uow.session, key_id)
    if key is None or key.workspace_id != workspace_id:
        raise NotFound(f"API key {key_id!r} does not exist in workspace {workspace_id!r}",
                       reason="API_KEY_NOT_FOUND")
    return key


def _issue_api_key(uow: UnitOfWork, workspace_id: str, display_name: str,
                   scope: Scope = Scope.ADMIN) -> tuple[ApiKey, str]:
    key_id, secret, secret_hash = new_api_key()
    key = ApiKey(key_id, workspace_id, display_name, secret_hash, uow.now(), scope=scope,
                 secret_hint=secret_hint(secret))
    workspaces.add_api_key(uow.session, key)
    return key, secret

