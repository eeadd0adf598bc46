"""`cjo apply` of identity settings with identity verification (review hident), on SQLite and
PostgreSQL: the secret is written once and then no difference (it is never read back, and
`secret_set` is output only), so a second apply changes nothing; a dry run never prints it."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cjo.identity.v1 import identity_service_pb2 as id_pb
from cjo.identity.v1 import identity_service_pb2_grpc as id_grpc
from cli_support import cjo_for, new_workspace
from suite import running_suite
from support import Backend, bearer

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-" + "k" * 40
SETTINGS = f"""kind: Settings
spec:
  identity:
    default_phone_region: %s
    identity_verification: {{required: true, secret: "{SECRET}"}}
"""


async def verification(suite: object, key: str) -> tuple[bool, bool]:
    async with grpc.aio.insecure_channel(suite.target("identity")) as channel:  # type: ignore[attr-defined]
        reply = await id_grpc.IdentityServiceStub(channel).GetIdentitySettings(
            id_pb.GetIdentitySettingsRequest(), metadata=bearer(key))
        found = reply.settings.identity_verification
        return found.required, found.secret_set


async def test_identity_verification_settles(backend: Backend, tmp_path: Path) -> None:
    async with running_suite(backend, tmp_path) as suite:
        key = await new_workspace(suite, "acme")
        cjo = cjo_for(suite, key, tmp_path / "config")
        manifest = tmp_path / "settings.yaml"
        manifest.write_text(SETTINGS % "FR")
        dry = await cjo("apply", "-f", str(manifest), "--dry-run")
        assert "Settings/identity" in dry.stdout and SECRET not in dry.stdout, dry.stdout
        first = await cjo("apply", "-f", str(manifest))
        assert "Settings/identity updated" in first.stdout, first.stdout
        assert await verification(suite, key) == (True, True)
        again = await cjo("apply", "-f", str(manifest))
        assert "Settings/identity unchanged" in again.stdout, again.stdout
        # Rotated alone (review rimport): never read back, so not compared, but never silently
        # kept either: apply says so, and --rotate-secrets sends it.
        manifest.write_text((SETTINGS % "FR").replace(SECRET, SECRET.upper()))
        rotated = await cjo("apply", "-f", str(manifest))
        assert "identity_verification.secret not compared (the server holds one); " \
            "--rotate-secrets sends it" in rotated.stdout, rotated.stdout
        sent = await cjo("apply", "-f", str(manifest), "--rotate-secrets")
        assert "Settings/identity updated" in sent.stdout and SECRET.upper() not in sent.stdout
        assert await verification(suite, key) == (True, True)
        # Another change: shown without the secret, which stays set.
        manifest.write_text(SETTINGS % "DE")
        dry = await cjo("apply", "-f", str(manifest), "--dry-run")
        assert "DE" in dry.stdout and SECRET not in dry.stdout, dry.stdout
        await cjo("apply", "-f", str(manifest))
        assert await verification(suite, key) == (True, True)
        assert "unchanged" in (await cjo("apply", "-f", str(manifest))).stdout
        # Left out of the file: turned off, then steady.
        manifest.write_text("kind: Settings\nspec:\n  identity:\n    default_phone_region: DE\n")
        assert "updated" in (await cjo("apply", "-f", str(manifest))).stdout
        assert (await verification(suite, key))[0] is False
        steady = await cjo("apply", "-f", str(manifest))
        assert "Settings/identity unchanged" in steady.stdout, steady.stdout
