"""Keys stored before scopes (revision 0006) keep working after migration 0007, as ADMIN keys."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
from alembic import command
from identity_support import Recorder
from sqlalchemy import String, column, table

from cjo.identity.v1 import workspace_pb2
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_identity import adapters
from cjo_identity.bootstrap import build
from cjo_platform.config import Env
from cjo_platform.db import UtcDateTime
from cjo_platform.db.migrations import alembic_config
from cjo_platform.rpc.auth import new_api_key
from support import Backend, bearer, serving, settings_for

MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"
# The tables as revision 0006 left them (no scope, hint, rotation or revocation yet).
WORKSPACES_0006 = table("workspaces", column("workspace_id", String),
                        column("display_name", String), column("create_time", UtcDateTime))
API_KEYS_0006 = table("api_keys", column("key_id", String), column("workspace_id", String),
                      column("display_name", String), column("secret_hash", String),
                      column("create_time", UtcDateTime))


async def test_a_key_from_before_scopes_is_an_admin_key(backend: Backend,
                                                        recorder: Recorder) -> None:
    app = build(settings_for("identity", backend, CJO_ORCHESTRATION_TARGET=recorder.address,
                             CJO_DECISIONING_TARGET=recorder.address), Env({}))
    db = app.db
    db.create_schema()
    command.upgrade(alembic_config(db, MIGRATIONS), "0006")
    key_id, secret, secret_hash = new_api_key()
    created = datetime(2026, 1, 5, tzinfo=UTC)
    with db.engine.begin() as conn:
        conn.execute(WORKSPACES_0006.insert().values(workspace_id="acme", display_name="Acme",
                                                     create_time=created))
        conn.execute(API_KEYS_0006.insert().values(key_id=key_id, workspace_id="acme",
                                                   display_name="old", secret_hash=secret_hash,
                                                   create_time=created))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        keys = ws_grpc.WorkspaceServiceStub(channel)
        # Key management needs ADMIN: the old key has it.
        listed = await keys.ListApiKeys(ws_pb.ListApiKeysRequest(), metadata=bearer(secret))
        [old] = listed.api_keys
        assert old.key_id == key_id and old.scope == workspace_pb2.API_KEY_SCOPE_ADMIN
        assert old.secret_hint == f"cjo_{key_id}_…"  # its secret was never seen again
        assert not old.HasField("revoke_time")
        rotated = await keys.RotateApiKey(ws_pb.RotateApiKeyRequest(name=old.name),
                                          metadata=bearer(secret))
        assert rotated.api_key.secret_hint.startswith(f"cjo_{key_id}_")
        await keys.GetWorkspace(ws_pb.GetWorkspaceRequest(), metadata=bearer(secret))
