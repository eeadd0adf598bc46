"""The workspaces' identity verification secrets sealed at rest (CJO_IDENTITY_SECRET_KEYS):
never stored nor logged in plaintext, still verifying after a restart and across a key
rotation, one no key opens failing its workspace's verification alone, and migration 0009
sealing (and its downgrade opening) the plaintext ones stored before. Through the real gRPC
server on both backends."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from identity_support import (
    SECRET,
    START,
    Identity,
    Metadata,
    Recorder,
    identifier,
    ingest,
    publishable,
    sent,
    serve_identity,
)
from sqlalchemy import select
from structlog.testing import capture_logs

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_settings_pb2 as settings_pb2
from cjo_identity import adapters
from cjo_identity.adapters.settings import SECRET_FIELD
from cjo_identity.adapters.tables import identity_settings
from cjo_identity.bootstrap import SECRET_KEYS
from cjo_identity.domain.verification import verification_hash
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.migrations import alembic_config, upgrade
from cjo_platform.secret_box import MARKER, SecretBox, key_id_of
from support import PG_URL, Backend, command_env

MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"
OLD_KEY, NEW_KEY, OTHER_KEY = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def keys(*chosen: bytes) -> dict[str, str]:
    return {SECRET_KEYS: ",".join(base64.b64encode(k).decode() for k in chosen)}


def stored_secret(identity: Identity, workspace_id: str) -> str:
    """The verification secret as it is in the database."""
    with identity.app.db.transaction() as session:
        document: dict[str, Any] = session.execute(select(identity_settings.c.settings).where(
            identity_settings.c.workspace_id == workspace_id)).scalar_one()
    assert SECRET not in json.dumps(document)
    return str(document[SECRET_FIELD])


async def require_verification(identity: Identity, admin: Metadata, secret: str = SECRET,
                               region: str = "") -> settings_pb2.IdentitySettings:
    return (await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=settings_pb2.IdentitySettings(
            default_phone_region=region,
            identity_verification=settings_pb2.IdentityVerification(
                required=True, secret=secret))), metadata=admin)).settings


async def verifies(identity: Identity, web: Metadata, n: int) -> list[int]:
    """Codes of a correctly signed, a wrongly signed and an unsigned claim (0, 3, 3 when the
    workspace's secret is the one in use)."""
    results = await ingest(
        identity, web,
        sent(f"ok{n}", identifier("user_id", f"ada{n}", verification_hash(SECRET, f"ada{n}"))),
        sent(f"bad{n}", identifier("user_id", f"bob{n}", verification_hash("x" * 40, "bob"))),
        sent(f"none{n}", identifier("user_id", f"eve{n}")))
    return [r.status.code for r in results]


async def test_the_secret_is_stored_sealed_and_verifies_after_a_restart(
        backend: Backend, recorder: Recorder) -> None:
    clock = ManualClock(START)
    with capture_logs() as logs:
        async with serve_identity(backend, recorder, clock, **keys(NEW_KEY)) as identity:
            admin = await identity.new_workspace("acme")
            web, _ = await publishable(identity, admin)
            saved = await require_verification(identity, admin)
            assert not saved.identity_verification.secret
            assert saved.identity_verification.secret_set
            sealed = stored_secret(identity, "acme")
            assert sealed.startswith(f"{MARKER}{key_id_of(NEW_KEY)}:")
            assert await verifies(identity, web, 1) == [0, 3, 3]
        async with serve_identity(backend, recorder, clock, **keys(NEW_KEY)) as identity:
            assert await verifies(identity, web, 2) == [0, 3, 3]
            # Another setting changed: the secret is kept as it is stored, byte for byte.
            await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
                settings=settings_pb2.IdentitySettings(
                    default_phone_region="DE",
                    identity_verification=settings_pb2.IdentityVerification(required=True))),
                metadata=admin)
            assert stored_secret(identity, "acme") == sealed
            got = (await identity.events.GetIdentitySettings(
                pb.GetIdentitySettingsRequest(), metadata=admin)).settings
            assert got.identity_verification.secret == "" and got.identity_verification.secret_set
            assert await verifies(identity, web, 3) == [0, 3, 3]
    assert SECRET not in repr(logs)


async def test_a_rotated_key_keeps_verifying_and_an_unknown_one_fails_only_its_workspace(
        backend: Backend, recorder: Recorder) -> None:
    clock = ManualClock(START)
    async with serve_identity(backend, recorder, clock, **keys(OLD_KEY)) as identity:
        admin = await identity.new_workspace("acme")
        web, _ = await publishable(identity, admin)
        await require_verification(identity, admin)
        other = await identity.new_workspace("other")
        other_web, _ = await publishable(identity, other)
        assert stored_secret(identity, "acme").startswith(f"{MARKER}{key_id_of(OLD_KEY)}:")

    # The new key first: the old one still opens what it sealed; reseal-secrets moves it.
    async with serve_identity(backend, recorder, clock, **keys(NEW_KEY, OLD_KEY)) as identity:
        assert await verifies(identity, web, 1) == [0, 3, 3]
        reseal = identity.app.commands["reseal-secrets"]
        assert await asyncio.to_thread(reseal, []) == 0
        assert stored_secret(identity, "acme").startswith(f"{MARKER}{key_id_of(NEW_KEY)}:")

    async with serve_identity(backend, recorder, clock, **keys(NEW_KEY)) as identity:
        assert await verifies(identity, web, 2) == [0, 3, 3]
        sealed = stored_secret(identity, "acme")

    # A key that does not open it: that workspace's verified claims fail (INVALID_ARGUMENT,
    # naming the field), its secret stays stored as it was through an update of the rest,
    # and another workspace is untouched.
    with capture_logs() as logs:
        async with serve_identity(backend, recorder, clock, **keys(OTHER_KEY)) as identity:
            assert await verifies(identity, web, 3) == [3, 3, 3]
            assert [r.status.code for r in await ingest(
                identity, other_web, sent("o1", identifier("user_id", "zed")))] == [0]
            saved = await require_verification(identity, admin, secret="", region="DE")
            assert saved.identity_verification.secret_set
            assert stored_secret(identity, "acme") == sealed
    assert any("verification secret cannot be decrypted" in e["event"]
               and e.get("workspace") == "acme" for e in logs)
    async with serve_identity(backend, recorder, clock, **keys(NEW_KEY)) as identity:
        assert await verifies(identity, web, 4) == [0, 3, 3]


def test_migration_0009_seals_plaintext_secrets_and_its_downgrade_opens_them(
        backend: Backend) -> None:
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/i.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "identity")
    box = SecretBox([NEW_KEY], SECRET_KEYS)

    def documents() -> dict[str, dict[str, Any]]:
        with db.engine.connect() as conn:
            return dict(conn.execute(select(identity_settings.c.workspace_id,
                                            identity_settings.c.settings)).all())

    try:
        db.create_schema()
        command.upgrade(alembic_config(db, MIGRATIONS), "0008")
        with db.engine.begin() as conn:  # as the release before stored them
            for workspace_id, secret in (("acme", SECRET), ("bare", "")):
                conn.execute(identity_settings.insert().values(
                    workspace_id=workspace_id, update_time=START, settings={
                        "default_phone_region": "FR", "verification_required": bool(secret),
                        SECRET_FIELD: secret}))
        upgrade(db, MIGRATIONS, {"secret_box": box})
        after = documents()
        assert after["acme"][SECRET_FIELD].startswith(f"{MARKER}{key_id_of(NEW_KEY)}:")
        assert SECRET not in json.dumps(after)
        assert after["acme"]["default_phone_region"] == "FR"
        assert after["bare"][SECRET_FIELD] == ""
        assert box.unseal_text("acme", "identity_settings.verification_secret",
                               after["acme"][SECRET_FIELD]) == SECRET

        # Without the key the downgrade refuses (nothing changes); with it, plaintext again.
        command.downgrade(alembic_config(db, MIGRATIONS), "0009")
        with pytest.raises(RuntimeError, match=f"cannot be decrypted with {SECRET_KEYS}"):
            command.downgrade(alembic_config(db, MIGRATIONS), "0008")
        assert documents() == after
        command.downgrade(alembic_config(db, MIGRATIONS, {"secret_box": box}), "0008")
        assert documents()["acme"][SECRET_FIELD] == SECRET
        # Upgraded without a key: left in plaintext (read as it is).
        upgrade(db, MIGRATIONS)
        assert documents()["acme"][SECRET_FIELD] == SECRET
    finally:
        db.dispose()


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cjo_identity", "migrate"],
                          env=command_env(tmp_path, CJO_ENV="production"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"{SECRET_KEYS} is required with CJO_ENV=production" in done.stderr
    assert not (tmp_path / "identity.db").exists()  # refused before touching the database
