"""Workspaces (tenants) and their API keys. Identity owns the keys, so it authenticates them in
its own database; the other services ask it (AuthenticateApiKey).

A key's secret exists only in the answer that created it: only its hash is stored."""

from __future__ import annotations

from cjo_identity.adapters import workspaces
from cjo_identity.domain.workspaces import (
    ApiKey,
    Workspace,
    check_new_api_key,
    check_new_workspace,
)
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import NotFound
from cjo_platform.rpc.auth import (
    KeyResolver,
    Principal,
    hash_secret,
    key_id_of,
    new_api_key,
    same_secret,
)

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


def create_api_key(uow: UnitOfWork, workspace_id: str, display_name: str
                   ) -> tuple[ApiKey, str]:
    """Another key for the workspace (e.g. for rotation), and its secret."""
    check_new_api_key(display_name)
    # A key holder's workspace exists; a service acting for one might name any.
    get_workspace(uow, workspace_id)
    return _issue_api_key(uow, workspace_id, display_name)


def delete_api_key(uow: UnitOfWork, workspace_id: str, key_id: str) -> ApiKey:
    """Revoke one of the workspace's keys; the deleted key is returned."""
    key = workspaces.find_api_key(uow.session, key_id)
    if key is None or key.workspace_id != workspace_id:
        raise NotFound(f"API key {key_id!r} does not exist in workspace {workspace_id!r}",
                       reason="API_KEY_NOT_FOUND")
    workspaces.delete_api_key(uow.session, key_id)
    return key


def authenticate_api_key(uow: UnitOfWork, secret: str) -> Principal | None:
    """Who presents ``secret``; None when no key has it."""
    key_id = key_id_of(secret)
    key = workspaces.find_api_key(uow.session, key_id) if key_id else None
    if key is None or not same_secret(hash_secret(secret), key.secret_hash):
        return None
    return Principal(workspace_id=key.workspace_id, key_id=key.key_id, is_service=False)


def local_key_resolver(transactions: Transactions) -> KeyResolver:
    """Resolves presented secrets from identity's own database, instead of calling itself."""

    async def resolve(secret: str) -> Principal | None:
        return await transactions.run(lambda uow: authenticate_api_key(uow, secret))

    return resolve


def _issue_api_key(uow: UnitOfWork, workspace_id: str, display_name: str
                   ) -> tuple[ApiKey, str]:
    key_id, secret, secret_hash = new_api_key()
    key = ApiKey(key_id, workspace_id, display_name, secret_hash, uow.now())
    workspaces.add_api_key(uow.session, key)
    return key, secret
