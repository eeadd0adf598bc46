"""Issuing API keys, and authenticating them from identity's own database (identity owns the
keys, so unlike the other services it never asks anyone)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from cjo_identity.adapters.workspaces import add_api_key, find_api_key
from cjo_identity.domain.workspaces import ApiKey
from cjo_platform.db import Database
from cjo_platform.rpc.auth import (
    KeyResolver,
    Principal,
    hash_secret,
    key_id_of,
    new_api_key,
    same_secret,
)


def local_key_resolver(db: Database) -> KeyResolver:
    """Resolves a presented secret to its workspace, or None when no key has that secret."""

    def lookup(key_id: str) -> ApiKey | None:
        with db.transaction() as session:
            return find_api_key(session, key_id)

    async def resolve(secret: str) -> Principal | None:
        key_id = key_id_of(secret)
        key = await db.run(lookup, key_id) if key_id else None
        if key is None or not same_secret(hash_secret(secret), key.secret_hash):
            return None
        return Principal(workspace_id=key.workspace_id, key_id=key.key_id, is_service=False)

    return resolve


def issue_api_key(session: Session, workspace_id: str, display_name: str,
                  now: datetime) -> tuple[ApiKey, str]:
    """Create and store a key; returns it with its secret, which exists nowhere else after this
    call (only its hash is stored)."""
    key_id, secret, secret_hash = new_api_key()
    key = ApiKey(key_id, workspace_id, display_name, secret_hash, now)
    add_api_key(session, key)
    return key, secret
