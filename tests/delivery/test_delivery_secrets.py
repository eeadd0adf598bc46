"""Provider secrets encrypted at rest: what is stored, that providers still send with them, key
rotation with `reseal-secrets` (never `migrate`), rows written before encryption and back to
plaintext, rows no key decrypts, and the start-up checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc
import pytest
from delivery_support import delivery_app
from grpc_status import rpc_status
from http_sink import Answer, HttpSink, http_sink
from sqlalchemy import select, update
from structlog.testing import capture_logs

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo_delivery.adapters.provider_store import reseal_secrets
from cjo_delivery.adapters.tables import providers
from cjo_delivery.bootstrap import SECRET_KEYS as KEYS_VARIABLE
from cjo_platform.clock import ManualClock
from cjo_platform.config import ConfigError, Env
from cjo_platform.db import Database
from cjo_platform.rpc.server import ServiceApp
from cjo_platform.rpc.status import field_violations
from cjo_platform.secret_box import (
    SecretBox,
    SecretsUnreadable,
    key_id_of,
    load_secret_box,
)
from support import (
    Backend,
    as_service,
    command_env,
    eventually,
    free_port,
    serving,
    settings_for,
)

WS = as_service("ws-a")
OTHER = as_service("ws-b")
SENT = message_pb2.MESSAGE_STATUS_SENT
QUEUED = message_pb2.MESSAGE_STATUS_QUEUED
OLD_KEY, NEW_KEY, STRAY_KEY = (os.urandom(32) for _ in range(3))
BODY = '{"order": 42}'


def text(key: bytes) -> str:
    return base64.b64encode(key).decode()


def webhook(url: str, secret: str, priority: int = 0) -> provider_pb2.Provider:
    return provider_pb2.Provider(
        channel=common_pb2.CHANNEL_WEBHOOK, kind=provider_pb2.PROVIDER_KIND_WEBHOOK,
        priority=priority, config={"url": url}, secrets={"signing_secret": secret})


def app_with(backend: Backend, *keys: bytes, **env: str) -> ServiceApp:
    """A delivery app with these keys (none: plaintext). Each app serves once: serving ends by
    closing its database."""
    if keys:
        env[KEYS_VARIABLE] = ",".join(text(k) for k in keys)
    return delivery_app(backend, free_port(), ManualClock(), **env)


@contextmanager
def database(backend: Backend) -> Iterator[Database]:
    """The delivery database, opened apart from any app (the way an operator would look)."""
    settings = settings_for("delivery", backend)
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        yield db
    finally:
        db.dispose()


def stored(backend: Backend) -> dict[str, str]:
    """The secrets column as it is in the database, by provider id."""
    with database(backend) as db, db.transaction() as session:
        rows = session.execute(select(providers.c.provider_id, providers.c.secrets)).all()
        return {r.provider_id: r.secrets for r in rows}


def run_delivery(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cjo_delivery", *args], env=environ,
                          capture_output=True, text=True, timeout=60)


def reseal(backend: Backend, keys: tuple[bytes, ...], *args: str) -> tuple[int, str, str]:
    """`python -m cjo_delivery reseal-secrets` with these keys: its exit code, its report line
    (stdout) and its log (stderr)."""
    environ = command_env(backend.data_dir, **backend.env(),
                          **{KEYS_VARIABLE: ",".join(text(k) for k in keys)})
    done = run_delivery(environ, "reseal-secrets", *args)
    return done.returncode, done.stdout.strip(), done.stderr


def report(key_id: str, rewritten: int, unreadable: int, left: int) -> str:
    return f"key_id={key_id} rewritten={rewritten} unreadable={unreadable} left={left}"


@asynccontextmanager
async def stub_of(app: ServiceApp) -> AsyncIterator[pb_grpc.DeliveryServiceStub]:
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        yield pb_grpc.DeliveryServiceStub(ch)


async def create(stub: pb_grpc.DeliveryServiceStub, provider: provider_pb2.Provider,
                 metadata: tuple[tuple[str, str], ...] = WS) -> str:
    reply = await stub.CreateProvider(pb.CreateProviderRequest(provider=provider),
                                      metadata=metadata)
    return reply.provider.provider_id


async def send_webhook(stub: pb_grpc.DeliveryServiceStub, key: str,
                       metadata: tuple[tuple[str, str], ...] = WS) -> str:
    reply = await stub.SendMessage(pb.SendMessageRequest(
        idempotency_key=key, recipient=message_pb2.Recipient(profile_id="p1", address="crm"),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_WEBHOOK,
                                           webhook=common_pb2.RenderedWebhook(json_body=BODY))),
        metadata=metadata)
    return reply.message.name


async def message(stub: pb_grpc.DeliveryServiceStub, name: str,
                  ready: Callable[[message_pb2.Message], bool],
                  metadata: tuple[tuple[str, str], ...] = WS) -> message_pb2.Message:
    async def check() -> message_pb2.Message | None:
        m = (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=metadata)).message
        return m if ready(m) else None

    found = await eventually(check)
    assert isinstance(found, message_pb2.Message)
    return found


def sent(m: message_pb2.Message) -> bool:
    return m.status == SENT


def retry_planned(m: message_pb2.Message) -> bool:
    return m.status == QUEUED and m.attempts == 1 and bool(m.error)


def signed_with(sink: HttpSink, secret: str) -> list[bool]:
    """For each request the sink got: whether its signature was made with ``secret``."""
    results = []
    for request in sink.requests:
        timestamp = request.headers["x-cjo-timestamp"]
        digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body,
                          hashlib.sha256).hexdigest()
        results.append(request.headers["x-cjo-signature"] == f"t={timestamp},v1={digest}")
    return results


def accept() -> HttpSink:
    return HttpSink(default=lambda r: Answer(204))


async def test_the_stored_row_holds_no_secret_and_the_webhook_is_signed_with_it(
        backend: Backend) -> None:
    secret = "whsec-kept-at-rest-7c1d"
    with http_sink(accept()) as sink:
        async with stub_of(app_with(backend, NEW_KEY)) as stub:
            provider_id = await create(stub, webhook(sink.url, secret))
            raw = stored(backend)[provider_id]
            assert raw.startswith(f"enc:v1:{key_id_of(NEW_KEY)}:")
            assert secret not in raw and "signing_secret" not in raw
            await message(stub, await send_webhook(stub, "k1"), sent)
            # Changing another setting leaves the ciphertext byte for byte.
            await stub.UpdateProvider(pb.UpdateProviderRequest(
                provider=provider_pb2.Provider(name=f"providers/{provider_id}", priority=3),
                update_mask={"paths": ["priority"]}), metadata=WS)
            assert stored(backend)[provider_id] == raw
    assert signed_with(sink, secret) == [True]


async def test_migrate_leaves_secrets_and_reseal_secrets_re_encrypts_them(
        backend: Backend) -> None:
    with http_sink(accept()) as legacy_sink, http_sink(accept()) as old_sink:
        # A row written before encryption existed (no key: plaintext JSON) and one under the
        # old key.
        async with stub_of(app_with(backend)) as stub:
            legacy = await create(stub, webhook(legacy_sink.url, "legacy-secret", priority=1))
        async with stub_of(app_with(backend, OLD_KEY)) as stub:
            under_old = await create(stub, webhook(old_sink.url, "old-secret", priority=2))
            await message(stub, await send_webhook(stub, "k1"), sent)
        before = stored(backend)
        assert before[under_old].startswith(f"enc:v1:{key_id_of(OLD_KEY)}:")
        assert before[legacy] == '{"signing_secret": "legacy-secret"}'

        # A new pod's migrate (its initContainer) leaves them: pods of the previous release,
        # which may not read the new form, still run while it migrates.
        rotated = app_with(backend, NEW_KEY, OLD_KEY)
        await rotated.db.run(rotated.migrate)
        rotated.db.dispose()
        assert stored(backend) == before

        # The operator's command rewrites both under the first key, and says nothing is left.
        new_id = key_id_of(NEW_KEY)
        assert reseal(backend, (NEW_KEY, OLD_KEY))[:2] == (0, report(new_id, 2, 0, 0))
        after = stored(backend)
        assert all(value.startswith(f"enc:v1:{new_id}:") for value in after.values())
        assert "legacy-secret" not in after[legacy] and "old-secret" not in after[under_old]
        # Idempotent: nothing left to rewrite.
        assert reseal(backend, (NEW_KEY, OLD_KEY))[:2] == (0, report(new_id, 0, 0, 0))
        assert stored(backend) == after

        # The old key can now go: both providers still sign with their own secret.
        async with stub_of(app_with(backend, NEW_KEY)) as stub:
            await message(stub, await send_webhook(stub, "k2"), sent)
            await stub.UpdateProvider(pb.UpdateProviderRequest(
                provider=provider_pb2.Provider(name=f"providers/{legacy}", disabled=True),
                update_mask={"paths": ["disabled"]}), metadata=WS)
            via_old = await message(stub, await send_webhook(stub, "k3"), sent)
            assert via_old.provider == f"providers/{under_old}"
    assert signed_with(legacy_sink, "legacy-secret") == [True, True]
    assert signed_with(old_sink, "old-secret") == [True]


async def test_reseal_secrets_back_to_plaintext_only_when_confirmed(backend: Backend) -> None:
    async with stub_of(app_with(backend, NEW_KEY)) as stub:
        provider_id = await create(stub, webhook("http://127.0.0.1:9/a", "round-trip"))
    encrypted = stored(backend)

    code, _, err = reseal(backend, (NEW_KEY,), "--plaintext")
    assert code == 2 and "--confirm" in err
    assert stored(backend) == encrypted
    code, _, err = reseal(backend, ())
    assert code == 2 and f"{KEYS_VARIABLE} is not set" in err

    # For a rollback to a release without encryption, which reads the column as JSON.
    assert reseal(backend, (NEW_KEY,), "--plaintext", "--confirm")[:2] == (
        0, report("plaintext", 1, 0, 0))
    assert json.loads(stored(backend)[provider_id]) == {"signing_secret": "round-trip"}
    # And forward again.
    assert reseal(backend, (NEW_KEY,))[:2] == (0, report(key_id_of(NEW_KEY), 1, 0, 0))
    again = stored(backend)[provider_id]
    assert again.startswith(f"enc:v1:{key_id_of(NEW_KEY)}:") and again != encrypted[provider_id]
    assert SecretBox([NEW_KEY]).unseal("ws-a", provider_id, again) == {
        "signing_secret": "round-trip"}


async def test_replicas_re_encrypting_at_once_agree(backend: Backend) -> None:
    if backend.kind == "sqlite":
        pytest.skip("replicas share a database only on PostgreSQL")
    async with stub_of(app_with(backend, OLD_KEY)) as stub:
        for i in range(20):  # a workspace has at most 10 providers per channel
            await create(stub, webhook(f"http://127.0.0.1:9/{i}", f"secret-{i}"),
                         as_service(f"ws-{i % 2}"))
    box = SecretBox([NEW_KEY, OLD_KEY])

    def run(db: Database) -> tuple[int, int]:
        with db.transaction() as session:
            return reseal_secrets(session, box, box)

    with database(backend) as one, database(backend) as two, database(backend) as three:
        counts = await asyncio.gather(*(asyncio.to_thread(run, db)
                                        for db in (one, two, three)))
    assert sorted(rewritten for rewritten, _ in counts) == [0, 0, 20]
    with database(backend) as db, db.transaction() as session:
        rows = session.execute(select(providers)).all()
    assert all(r.secrets.startswith(f"enc:v1:{key_id_of(NEW_KEY)}:") for r in rows)
    assert sorted(box.unseal(r.workspace_id, r.provider_id, r.secrets)["signing_secret"]
                  for r in rows) == sorted(f"secret-{i}" for i in range(20))


async def test_a_row_no_key_decrypts_is_reported_and_the_others_keep_sending(
        backend: Backend) -> None:
    with http_sink(accept()) as lost_sink, http_sink(accept()) as good_sink:
        async with stub_of(app_with(backend, STRAY_KEY)) as stub:
            lost = await create(stub, webhook(lost_sink.url, "lost", priority=1))
            alone = await create(stub, webhook(lost_sink.url, "lost-too"), OTHER)
        kept = stored(backend)
        # The command reports both rows, rewrites nothing, and fails so that no old key is
        # dropped on its word.
        code, line, err = reseal(backend, (NEW_KEY,))
        assert (code, line) == (1, report(key_id_of(NEW_KEY), 0, 2, 2))
        assert "cannot be decrypted" in err and lost in err and alone in err
        assert stored(backend) == kept
        app = app_with(backend, NEW_KEY, CJO_DELIVERY_RETRY_BASE_SECONDS="60")
        with capture_logs() as logs:
            async with stub_of(app) as stub:
                good = await create(stub, webhook(good_sink.url, "good", priority=2))
                # Workspace a fails over to its readable provider.
                done = await message(stub, await send_webhook(stub, "a1"), sent)
                assert done.provider == f"providers/{good}"
                # Workspace b has only the unreadable one: retried later, with the reason.
                waiting = await message(stub, await send_webhook(stub, "b1", OTHER),
                                        retry_planned, OTHER)
                assert f"provider {alone}" in waiting.error
                assert f"key {key_id_of(STRAY_KEY)}" in waiting.error
                assert KEYS_VARIABLE in waiting.error
                # The API still answers for it, and it can be disabled without losing it.
                got = (await stub.GetProvider(pb.GetProviderRequest(name=f"providers/{lost}"),
                                              metadata=WS)).provider
                assert got.provider_id == lost
                await stub.UpdateProvider(pb.UpdateProviderRequest(
                    provider=provider_pb2.Provider(name=f"providers/{lost}", disabled=True),
                    update_mask={"paths": ["disabled"]}), metadata=WS)
    assert stored(backend)[lost] == kept[lost]
    assert lost_sink.count() == 0 and signed_with(good_sink, "good") == [True]
    reported = [e for e in logs if e.get("log_level") == "error"
                and "cannot be decrypted" in e["event"]]
    # By the sender when it routes to them (a start no longer looks at the stored secrets).
    assert {e["provider_id"] for e in reported} == {lost, alone}
    assert all("sends through it fail" in e["event"] for e in reported)


def test_an_unknown_command_is_refused_with_the_commands_there_are(tmp_path: Path) -> None:
    done = run_delivery(command_env(tmp_path), "reseal")
    assert done.returncode == 2
    assert "usage: python -m cjo_delivery [serve|migrate|reseal-secrets]" in done.stderr


def test_a_command_that_fails_exits_apart_from_what_it_reports(tmp_path: Path) -> None:
    """The database is unreachable: not "rows left" (1) nor bad configuration (2), but 3."""
    done = run_delivery(command_env(
        tmp_path, CJO_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x",
        **{KEYS_VARIABLE: text(NEW_KEY)}), "reseal-secrets")
    assert done.returncode == 3, done.stderr
    assert "command failed" in done.stderr


async def test_unreadable_secrets_are_replaced_by_an_update_not_merged(
        backend: Backend) -> None:
    smtp = provider_pb2.Provider(
        channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_SMTP,
        config={"host": "127.0.0.1", "from": "Brand <news@brand.example>"},
        secrets={"username": "ada", "password": "first"})
    async with stub_of(app_with(backend, STRAY_KEY)) as stub:
        lost_hook = await create(stub, webhook("http://127.0.0.1:9/a", "lost"))
        lost_smtp = await create(stub, smtp)
    async with stub_of(app_with(backend, NEW_KEY)) as stub:
        readable = await create(stub, smtp)

        async def set_secrets(provider_id: str, **secrets: str) -> provider_pb2.Provider:
            reply = await stub.UpdateProvider(pb.UpdateProviderRequest(
                provider=provider_pb2.Provider(name=f"providers/{provider_id}",
                                               secrets=secrets),
                update_mask={"paths": ["secrets"]}), metadata=WS)
            return reply.provider

        # Nothing to merge with: the update must carry every secret the kind requires ...
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await set_secrets(lost_hook)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(rpc_status.from_call(error.value)) == {
            "provider.secrets[signing_secret]": "is required for a webhook provider"}
        assert (await set_secrets(lost_hook, signing_secret="fresh")).secret_keys == [
            "signing_secret"]
        # ... and the secrets it leaves out are gone, as the API says (not silently kept or
        # merged with values nobody can read).
        assert (await set_secrets(lost_smtp, password="second")).secret_keys == ["password"]
        # A readable provider's secrets are merged as always.
        assert (await set_secrets(readable, password="second")).secret_keys == [
            "password", "username"]
    box = SecretBox([NEW_KEY])
    now = stored(backend)
    assert box.unseal("ws-a", lost_hook, now[lost_hook]) == {"signing_secret": "fresh"}
    assert box.unseal("ws-a", lost_smtp, now[lost_smtp]) == {"password": "second"}


async def test_a_ciphertext_moved_to_another_provider_does_not_decrypt(
        backend: Backend) -> None:
    async with stub_of(app_with(backend, NEW_KEY)) as stub:
        first = await create(stub, webhook("http://127.0.0.1:9/a", "first-secret"))
        second = await create(stub, webhook("http://127.0.0.1:9/b", "second-secret"))
    with database(backend) as db, db.transaction() as session:
        value = session.execute(select(providers.c.secrets).where(
            providers.c.provider_id == first)).scalar_one()
        session.execute(update(providers).where(providers.c.provider_id == second)
                        .values(secrets=value))
    with pytest.raises(SecretsUnreadable, match="belongs to another row"):
        SecretBox([NEW_KEY]).unseal("ws-a", second, stored(backend)[second])


def test_keys_are_checked_at_start_by_name() -> None:
    good = text(NEW_KEY)
    env = Env({KEYS_VARIABLE: f"{good}, not-a-key ,{good}"})
    load_secret_box(env, "development", KEYS_VARIABLE, "provider secrets")
    with pytest.raises(ConfigError) as error:
        env.check()
    message = str(error.value)
    assert f"{KEYS_VARIABLE}: key 2 is not 32 bytes in base64" in message
    assert f"{KEYS_VARIABLE}: key 3 is listed twice" in message
    assert "not-a-key" not in message and good not in message
    # URL-safe base64 (a Fernet key) is taken as well as `openssl rand -base64 32` output.
    env = Env({KEYS_VARIABLE: base64.urlsafe_b64encode(b"\xff" * 32).decode()})
    box = load_secret_box(env, "production", KEYS_VARIABLE, "provider secrets")
    assert box.encrypts and not env.errors

    with capture_logs() as logs:
        env = Env({})
        box = load_secret_box(env, "development", KEYS_VARIABLE, "provider secrets")
    assert not box.encrypts and not env.errors
    assert [e["log_level"] for e in logs] == ["warning"] and KEYS_VARIABLE in logs[0]["event"]
    assert box.seal("w", "p", {"k": "v"}) == '{"k": "v"}'


@pytest.mark.parametrize("keys, expected", [
    ("", f"{KEYS_VARIABLE} is required with CJO_ENV=production"),
    ("short", f"{KEYS_VARIABLE}: key 1 is not 32 bytes in base64"),
])
def test_production_refuses_to_start_without_a_usable_key(tmp_path: Path, keys: str,
                                                          expected: str) -> None:
    done = run_delivery(command_env(tmp_path, CJO_ENV="production", **{KEYS_VARIABLE: keys}),
                        "migrate")
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert not (tmp_path / "delivery.db").exists()  # refused before touching the database
