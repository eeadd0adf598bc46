"""Orchestration's erasures reaching delivery through the event bus (CJO_EVENT_BUS) against the
real NATS JetStream at 127.0.0.1:4222 and a real SMTP server: the rows orchestration's forwarder
publishes (delivery.erasures) are taken by delivery's own consumer into EraseProfiles, so a
queued message of the erased person is canceled, and one a sender is handing to the provider
right now is erased once its send finished (the erasure is kept and tried again, not lost). The
test uses a stream prefix of its own and removes its streams afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from delivery_support import delivery_app, send_request, smtp_server
from nats_support import NATS_URL, SenderOutbox, bus_env, drain, drop_streams, nats_listening
from test_delivery_erasure import WS, HeldSink, status_of

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo_orchestration.adapters.erasures import ERASURES_TOPIC, erasures_forwarder
from cjo_platform.bus import Bus, BusSettings, naming
from support import Backend, eventually, free_port, serving, settings_for

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")

# Delivery's own topics go to the bus too once it is set.
TOPICS = (ERASURES_TOPIC, "identity.events", "analytics.facts", "decisioning.facts")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await drop_streams(name, TOPICS)


def erasure(profile_id: str) -> bytes:
    return pb.EraseProfilesRequest(profile_ids=[profile_id]).SerializeToString()


async def test_erasures_reach_delivery_through_jetstream(
        sqlite_backend: Backend, prefix: str, tmp_path: Path) -> None:
    box = SenderOutbox(tmp_path / "orchestration.db", "ws-erase")
    bus = Bus(BusSettings(url=NATS_URL, prefix=prefix, partitions=2))
    # The very forwarder orchestration's bootstrap runs with CJO_EVENT_BUS set.
    forwarder = erasures_forwarder(settings_for("orchestration", sqlite_backend), box.db,
                                   box.outbox, bus=bus)
    port = free_port()
    sink = HeldSink()
    try:
        with smtp_server(sink, port):
            app = delivery_app(sqlite_backend, port, CJO_DELIVERY_CONCURRENCY="1",
                               **bus_env(prefix))
            async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.DeliveryServiceStub(channel)
                held = (await stub.SendMessage(send_request("k1", "ada@example.com",
                                                            profile_id="ada"),
                                               metadata=WS)).message
                await eventually(sink.arrived.is_set)
                queued = (await stub.SendMessage(send_request("k2", "bob@example.com",
                                                              profile_id="bob"),
                                                 metadata=WS)).message
                # Bob's waits behind Ada's (one sender at a time, held at the SMTP server).
                box.queue(ERASURES_TOPIC, [erasure("bob"), erasure("ada")])
                await drain(forwarder)
                assert box.queued() == 0  # in the stream now

                async def canceled() -> bool:
                    found = await status_of(stub, queued.name)
                    return found.status == message_pb2.MESSAGE_STATUS_SUPPRESSED
                await eventually(canceled, timeout=20)
                bob = await status_of(stub, queued.name)
                assert (bob.error, bob.recipient.address) == ("canceled: profile erased", "")
                # Ada's is being sent: her erasure waits, and its sender still has the address.
                assert (await status_of(stub, held.name)).recipient.address == "ada@example.com"

                sink.gate.set()

                async def erased() -> bool:
                    found = await status_of(stub, held.name)
                    return (found.status == message_pb2.MESSAGE_STATUS_SENT
                            and found.recipient.address == "")
                await eventually(erased, timeout=90)

                # Both erasures were answered and acknowledged: none is left in the stream.
                async def acked() -> bool:
                    js = await bus.jetstream()
                    info = await js.stream_info(naming.stream_name(prefix, ERASURES_TOPIC))
                    return int(info.state.messages) == 0
                await eventually(acked, timeout=30)
    finally:
        await bus.close()
        box.db.dispose()
