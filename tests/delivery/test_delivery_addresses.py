"""One mailbox, many spellings: the suppression list treats them as one address, a From names
exactly one mailbox, and suppressions stored before the canonical form are rewritten to it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from alembic import command
from delivery_support import SmtpSink, delivery_app, send_request, smtp_server
from grpc_status import rpc_status
from sqlalchemy import insert, select

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo_delivery import adapters
from cjo_delivery.adapters import repository
from cjo_delivery.adapters.tables import suppressions
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.migrations import alembic_config, upgrade
from cjo_platform.rpc.status import field_violations
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


def test_the_migration_rewrites_stored_suppressions_to_the_canonical_form(
        backend: Backend) -> None:
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/d.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "delivery")
    old = [  # workspace, channel, address, reason, minutes after T0
        ("ws-a", "email", "someone@BÜCHER.example", "bounced: first", 0),
        ("ws-a", "email", "someone@bücher.example", "unsubscribed: later", 5),
        ("ws-a", "email", "someone@xn--bcher-kva.example", "complained: latest", 9),
        ("ws-a", "email", "Ada@Example.COM", "bounced: ada", 1),
        ("ws-a", "email", "bob@example.com", "bounced: bob", 2),
        ("ws-b", "email", "someone@bücher.example", "bounced: other workspace", 3),
        ("ws-a", "sms", "+14155550100", "bounced: sms", 4),
    ]
    try:
        db.create_schema()
        command.upgrade(alembic_config(db, MIGRATIONS), "0002")
        with db.engine.begin() as conn:
            conn.execute(insert(suppressions), [
                {"workspace_id": w, "channel": c, "address": a, "reason": r,
                 "create_time": T0.replace(minute=minutes)} for w, c, a, r, minutes in old])
        upgrade(db, MIGRATIONS)
        s = suppressions.c
        with db.transaction() as session:
            rows = set(session.execute(select(s.workspace_id, s.channel, s.address, s.reason)))
            found = repository.suppressed_addresses(
                session, [("ws-a", "email", "someone@bücher\u3002example"),
                          ("ws-a", "email", "Ada@example.com"),
                          ("ws-a", "email", "ada@example.com")])
    finally:
        db.dispose()
    assert rows == {
        ("ws-a", "email", "someone@xn--bcher-kva.example", "bounced: first"),
        ("ws-a", "email", "Ada@example.com", "bounced: ada"),
        ("ws-a", "email", "bob@example.com", "bounced: bob"),
        ("ws-b", "email", "someone@xn--bcher-kva.example", "bounced: other workspace"),
        ("ws-a", "sms", "+14155550100", "bounced: sms"),
    }
    assert found == {("ws-a", "email", "someone@bücher\u3002example"): "bounced: first",
                     ("ws-a", "email", "Ada@example.com"): "bounced: ada"}
