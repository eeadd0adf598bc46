"""One mailbox, many spellings: the suppression list treats them as one address, a From names
exactly one mailbox, and suppressions stored before the canonical form gain a canonical row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from alembic import command
from delivery_support import SmtpSink, delivery_app, send_request, smtp_server
from grpc_status import rpc_status
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo_delivery import adapters
from cjo_delivery.adapters import round_context
from cjo_delivery.adapters.tables import suppressions
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.migrations import alembic_config, upgrade
from cjo_platform.rpc.status import field_violations
from cjo_platform.secret_box import SecretBox
from support import PG_URL, Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT
BOUNCED = message_pb2.MESSAGE_STATUS_BOUNCED
SUPPRESSED = message_pb2.MESSAGE_STATUS_SUPPRESSED
MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


async def _settled(stub: pb_grpc.DeliveryServiceStub, name: str) -> message_pb2.Message:
    async def final() -> message_pb2.Message | None:
        message = (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message
        return message if message.status in (SENT, BOUNCED, SUPPRESSED) else None

    found = await eventually(final)
    assert isinstance(found, message_pb2.Message)
    return found


async def test_a_bounce_of_one_spelling_suppresses_every_spelling_of_the_mailbox(
        backend: Backend) -> None:
    port = free_port()
    sink = SmtpSink(refuse={"someone@xn--bcher-kva.example": "550 5.1.1 no such user"})
    with smtp_server(sink, port):
        app = delivery_app(backend, port, ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            first = await stub.SendMessage(send_request("k0", "someone@bücher.example"),
                                           metadata=WS)
            bounced = await _settled(stub, first.message.name)
            assert bounced.status == BOUNCED
            spellings = ["someone@BÜCHER.example", "someone@xn--bcher-kva.example",
                         "someone@bücher\u3002example", "someone@XN--BCHER-KVA.EXAMPLE",
                         # Local parts keep their case (RFC 5321): another mailbox, so sent.
                         "Someone@bücher.example"]
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                send_request(f"k{n}", to) for n, to in enumerate(spellings, 1)]), metadata=WS)
            outcomes = [await _settled(stub, r.message.name) for r in reply.results]
    assert [m.status for m in outcomes] == [SUPPRESSED] * 4 + [SENT]
    # The message keeps the address as the caller wrote it.
    assert [m.recipient.address for m in outcomes] == spellings
    assert sink.envelopes == [("no-reply@cjo.localhost", ["Someone@xn--bcher-kva.example"])]


async def test_a_from_with_two_mailboxes_is_refused(sqlite_backend: Backend) -> None:
    app = delivery_app(sqlite_backend, free_port(), ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
                channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_SMTP,
                config={"host": "127.0.0.1",
                        "from": "Brand <news@brand.example>, eve@evil.example"})),
                metadata=WS)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)
    assert status is not None and field_violations(status) == {
        "provider.config[from]": "must be one address like 'Brand <news@brand.example>'"}


def _migrated(backend: Backend, old: list[tuple[str, str, str, str, datetime]]) -> Database:
    """A delivery schema at 0002 holding the ``old`` suppressions, then upgraded to head."""
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/d.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "delivery")
    db.create_schema()
    command.upgrade(alembic_config(db, MIGRATIONS), "0002")
    with db.engine.begin() as conn:
        conn.execute(insert(suppressions), [
            {"workspace_id": w, "channel": c, "address": a, "reason": r, "create_time": t}
            for w, c, a, r, t in old])
    upgrade(db, MIGRATIONS)
    return db


def suppressed(session: Session, keys: list[tuple[str, str, str]]
               ) -> dict[tuple[str, str, str], str]:
    """The suppressed keys' reasons, as a send round reads them with its context."""
    return round_context.read(session, sorted({k[0] for k in keys}), keys, SecretBox([]))[2]


def _stored(db: Database) -> set[tuple[str, str, str, str]]:
    s = suppressions.c
    with db.transaction() as session:
        return set(session.execute(select(s.workspace_id, s.channel, s.address, s.reason)))


def test_the_migration_adds_the_canonical_form_and_keeps_every_stored_spelling(
        backend: Backend) -> None:
    old = [(w, c, a, r, T0.replace(minute=minutes)) for w, c, a, r, minutes in [
        ("ws-a", "email", "someone@BÜCHER.example", "bounced: first", 0),
        ("ws-a", "email", "someone@bücher.example", "unsubscribed: later", 5),
        ("ws-a", "email", "someone@xn--bcher-kva.example", "complained: latest", 9),
        ("ws-a", "email", "Ada@Example.COM", "bounced: ada", 1),
        ("ws-a", "email", "bob@example.com", "bounced: bob", 2),
        ("ws-b", "email", "someone@bücher.example", "bounced: other workspace", 3),
        ("ws-a", "sms", "+14155550100", "bounced: sms", 4),
    ]]
    db = _migrated(backend, old)
    try:
        rows = _stored(db)
        with db.transaction() as session:
            found = suppressed(
                session, [("ws-a", "email", "someone@bücher\u3002example"),
                          ("ws-a", "email", "Ada@example.com"),
                          ("ws-a", "email", "ada@example.com"),
                          ("ws-a", "email", "Carol@Example.com")])
            # After the migration a pod of the previous release, still serving during the
            # rollout, records a bounce in the spelling it was given.
            session.execute(insert(suppressions).values(
                workspace_id="ws-a", channel="email", address="Carol@Example.com",
                reason="bounced: by an old pod", create_time=T0.replace(hour=10)))
        with db.transaction() as session:
            later = suppressed(
                session, [("ws-a", "email", "Carol@Example.com"),
                          ("ws-a", "email", "carol@example.com")])
    finally:
        db.dispose()
    # Every original row, which the previous release looks up as typed, is still there; the
    # canonical rows carry the earliest spelling's reason.
    assert rows == {(w, c, a, r) for w, c, a, r, _ in old
                    if a != "someone@xn--bcher-kva.example"} | {
        ("ws-a", "email", "someone@xn--bcher-kva.example", "bounced: first"),
        ("ws-a", "email", "Ada@example.com", "bounced: ada"),
        ("ws-b", "email", "someone@xn--bcher-kva.example", "bounced: other workspace"),
    }
    assert found == {("ws-a", "email", "someone@bücher\u3002example"): "bounced: first",
                     ("ws-a", "email", "Ada@example.com"): "bounced: ada"}
    # The typed spelling still suppresses that spelling; another mailbox (local parts keep
    # their case) stays unsuppressed.
    assert later == {("ws-a", "email", "Carol@Example.com"): "bounced: by an old pod"}


def test_the_migration_streams_a_long_list_and_leaves_canonical_rows_alone(
        backend: Backend) -> None:
    # More rows than one batch of the migration (1000), most canonical already, as on a real
    # list: those stay as they are unless another spelling of theirs is older.
    old = [("ws-a", "email", f"user{n}@example.com", f"bounced: {n}", T0) for n in range(2400)]
    old += [("ws-a", "email", f"user{n}@EXAMPLE.com", f"earlier: {n}",
             T0.replace(minute=0, second=0) - timedelta(minutes=1)) for n in range(0, 2400, 100)]
    old += [("ws-z", "email", f"late{n}@Example.COM", f"only: {n}", T0) for n in range(30)]
    db = _migrated(backend, old)
    try:
        rows = _stored(db)
    finally:
        db.dispose()
    expected = {(w, c, a, r) for w, c, a, r, _ in old}
    expected -= {("ws-a", "email", f"user{n}@example.com", f"bounced: {n}")
                 for n in range(0, 2400, 100)}
    expected |= {("ws-a", "email", f"user{n}@example.com", f"earlier: {n}")
                 for n in range(0, 2400, 100)}
    expected |= {("ws-z", "email", f"late{n}@example.com", f"only: {n}") for n in range(30)}
    assert rows == expected
