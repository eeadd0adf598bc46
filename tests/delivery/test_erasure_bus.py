"""Orchestration's erasures reaching delivery through the event bus (CJO_EVENT_BUS) against the
real NATS JetStream at 127.0.0.1:4222 and a real SMTP server: the rows orchestration's forwarder
publishes (delivery.erasures) are taken by delivery's own consumer into EraseProfiles, so a
queued message of the erased person is canceled, and one a sender is handing to the provider
right now is erased once its send finished (the erasure is kept and tried again, not lost); a
consumer that cannot claim its partitions shows in the service's grpc.health.v1. Each test uses
a stream prefix of its own and removes its streams afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from delivery_support import delivery_app, send_request, smtp_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats_support import NATS_URL, SenderOutbox, bus_env, drain, drop_streams, nats_listening
from test_delivery_erasure import WS, HeldSink, status_of

from cjo.common.v1 import dead_letter_service_pb2 as dead_letter_pb
from cjo.common.v1 import dead_letter_service_pb2_grpc as dead_letter_grpc
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo_orchestration.adapters.erasures import ERASURES_TOPIC, erasures_forwarder
from cjo_platform.bus import Bus, BusSettings, naming
from support import Backend, eventually, free_port, serving, settings_for

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

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
    bus = Bus(BusSettings(url=NATS_URL, prefix=prefix, partitions=2, pack_rows=64))
    # The very forwarder orchestration's bootstrap runs with CJO_EVENT_BUS set.
    forwarder = erasures_forwarder(settings_for("orchestration", sqlite_backend), box.db,
                                   box.outbox, bus=bus)
    port = free_port()
    sink = HeldSink()
    try:
        with smtp_server(sink, port):
            # One round under way and one send at a time: Bob's message stays queued,
            # unclaimed, behind Ada's.
            app = delivery_app(sqlite_backend, port, CJO_DELIVERY_CONCURRENCY="1",
                               CJO_DELIVERY_ROUNDS="1", **bus_env(prefix))
            async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.DeliveryServiceStub(channel)
                held = (await stub.SendMessage(send_request("k1", "ada@example.com",
                                                            profile_id="ada"),
                                               metadata=WS)).message
                await eventually(sink.arrived.is_set)
                queued = (await stub.SendMessage(send_request("k2", "bob@example.com",
                                                              profile_id="bob"),
                                                 metadata=WS)).message
                # Bob's waits behind Ada's (held at the SMTP server).
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

                # Both erasures were taken by EraseProfiles and acknowledged, once each: the
                # stream stored exactly what the relay published, one message per partition
                # (the two share one, packed: Bob's was taken while Ada's waited), so nothing
                # went round or came twice, and holds none; no partition has one pending or
                # unanswered, none was handed out again (Ada's waited in the consumer, its
                # message in progress), and none was given up on.
                js = await bus.jetstream()
                stream = naming.stream_name(prefix, ERASURES_TOPIC)

                async def acked() -> bool:
                    return int((await js.stream_info(stream)).state.messages) == 0
                await eventually(acked, timeout=30)
                published = len({naming.partition_of(p, 2) for p in ("bob", "ada")})
                assert (await js.stream_info(stream)).state.last_seq == published
                for partition in range(2):
                    consumer = await js.consumer_info(
                        stream, naming.consumer_name(ERASURES_TOPIC, partition))
                    assert (consumer.num_pending, consumer.num_ack_pending,
                            consumer.num_redelivered) == (0, 0, 0)
                letters = dead_letter_grpc.DeadLetterServiceStub(channel)
                assert not (await letters.ListDeadLetters(
                    dead_letter_pb.ListDeadLettersRequest(), metadata=WS)).dead_letters
    finally:
        await bus.close()
        box.db.dispose()


async def test_a_consumer_that_cannot_claim_shows_in_health(
        sqlite_backend: Backend, prefix: str) -> None:
    # Three stream replicas asked of a one-node server: the claims bucket cannot be made, so
    # delivery's erasures consumer works no partition. grpc.health.v1 says so under the
    # consumer's own name, while the service as a whole keeps serving its RPCs.
    app = delivery_app(sqlite_backend, free_port(), **bus_env(prefix), CJO_BUS_REPLICAS="3")
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            return int(reply.status)

        async def not_serving() -> bool:
            return await status(f"cjo.bus.{ERASURES_TOPIC}") == NOT_SERVING
        await eventually(not_serving, timeout=20)
        assert await status("") == SERVING
