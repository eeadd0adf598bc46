"""EraseProfiles over a real gRPC server and a real SMTP server, on SQLite and PostgreSQL: a
message a sender is handing to the provider is reported in flight and erased once it finished;
queued ones are canceled; a second erasure changes nothing. (The journey-level erasure, from
identity's DeleteProfile through orchestration, is tests/orchestration/test_profile_lifecycle.py.)
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from delivery_support import SmtpSink, delivery_app, send_request, smtp_server
from grpc_status import rpc_status

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-erase")


@dataclass
class HeldSink(SmtpSink):
    """Holds every DATA until the test opens ``gate``: the message stays SENDING meanwhile."""

    gate: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrived.set()
        await asyncio.to_thread(self.gate.wait, 30)
        return await super().handle_DATA(server, session, envelope)


async def status_of(stub: pb_grpc.DeliveryServiceStub, name: str) -> message_pb2.Message:
    return (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message


async def erase(stub: pb_grpc.DeliveryServiceStub, *profile_ids: str) -> list[tuple[int, int]]:
    reply = await stub.EraseProfiles(pb.EraseProfilesRequest(profile_ids=list(profile_ids)),
                                     metadata=WS)
    assert [r.profile_id for r in reply.results] == list(profile_ids)
    return [(r.canceled_count, r.in_flight_count) for r in reply.results]


async def test_a_message_in_flight_is_erased_once_its_send_finished(backend: Backend) -> None:
    port = free_port()
    sink = HeldSink()
    with smtp_server(sink, port):
        app = delivery_app(backend, port, CJO_DELIVERY_CONCURRENCY="1")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.DeliveryServiceStub(channel)
            held = (await stub.SendMessage(send_request("k1", "ada@example.com", profile_id="ada"),
                                           metadata=WS)).message
            await eventually(sink.arrived.is_set)
            assert (await status_of(stub, held.name)).status == message_pb2.MESSAGE_STATUS_SENDING
            other = (await stub.SendMessage(send_request("k2", "bob@example.com", profile_id="bob"),
                                            metadata=WS)).message

            assert await erase(stub, "ada") == [(0, 1)]
            still = await status_of(stub, held.name)
            assert still.recipient.address == "ada@example.com"  # its sender still needs it

            sink.gate.set()

            async def sent() -> bool:
                found = await status_of(stub, held.name)
                return found.status == message_pb2.MESSAGE_STATUS_SENT

            await eventually(sent)
            assert await erase(stub, "ada") == [(0, 0)]
            erased = await status_of(stub, held.name)
            assert (erased.status, erased.recipient.address, erased.content.email.subject) == (
                message_pb2.MESSAGE_STATUS_SENT, "", "")
            assert erased.message_id == held.message_id
            # Another person's messages are untouched.
            assert (await status_of(stub, other.name)).recipient.address == "bob@example.com"


async def test_queued_messages_are_canceled_once(backend: Backend) -> None:
    # Nothing listens on the SMTP port: the message fails over to a retry and waits DEFERRED
    # or QUEUED, never handed to a provider.
    app = delivery_app(backend, free_port(), CJO_DELIVERY_RETRY_BASE_SECONDS="3600")
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.DeliveryServiceStub(channel)
        queued = (await stub.SendMessage(send_request("k1", "ada@example.com", profile_id="ada"),
                                         metadata=WS)).message

        async def waiting() -> bool:
            found = await status_of(stub, queued.name)
            return found.status in (message_pb2.MESSAGE_STATUS_QUEUED,
                                    message_pb2.MESSAGE_STATUS_DEFERRED) and found.attempts > 0

        await eventually(waiting)
        assert await erase(stub, "ada", "nobody") == [(1, 0), (0, 0)]
        canceled = await status_of(stub, queued.name)
        assert (canceled.status, canceled.error, canceled.recipient.address) == (
            message_pb2.MESSAGE_STATUS_SUPPRESSED, "canceled: profile erased", "")
        assert await erase(stub, "ada") == [(0, 0)]
        assert await status_of(stub, queued.name) == canceled


async def test_erase_profiles_refuses_empty_ids(backend: Backend) -> None:
    app = delivery_app(backend, free_port())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.DeliveryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.EraseProfiles(pb.EraseProfilesRequest(profile_ids=["ada", ""]),
                                     metadata=WS)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(refused.value)
        assert status is not None
        assert set(field_violations(status)) == {"profile_ids[1]"}
