"""What delivery replicas sharing one database share: frequency caps (reserved in the
database), circuit breakers (one state, one half-open trial), and signals (the in-app inbox
and the sender's wake-ups reach the other replicas at once, through LISTEN/NOTIFY).

Replicas share a database only on PostgreSQL: there each test runs two delivery servers (each
with its own Database, sender and listener) on one schema; on SQLite one process holds it all.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, timedelta

import grpc
from delivery_support import delivery_app
from http_sink import Answer, HttpSink, Request, http_sink

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, policy_pb2, provider_pb2
from cjo_platform.clock import ManualClock
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT
DEFERRED = message_pb2.MESSAGE_STATUS_DEFERRED
QUEUED = message_pb2.MESSAGE_STATUS_QUEUED
FAILED = message_pb2.MESSAGE_STATUS_FAILED


def replica_count(backend: Backend) -> int:
    return 2 if backend.kind == "postgresql" else 1


@asynccontextmanager
async def replicas(backend: Backend, clock: ManualClock | None, count: int, **env: str
                   ) -> AsyncIterator[list[pb_grpc.DeliveryServiceStub]]:
    """``count`` delivery servers on ``backend``'s one database; a stub for each."""
    async with AsyncExitStack() as stack:
        stubs = []
        for _ in range(count):
            address = await stack.enter_async_context(serving(
                delivery_app(backend, free_port(), clock, **env)))
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(address))
            stubs.append(pb_grpc.DeliveryServiceStub(channel))
        yield stubs


def slow(seconds: float) -> HttpSink:
    """A provider that takes ``seconds`` to accept each message: long enough for the other
    replica's round to run while this one's message is still with the provider."""
    def answer(request: Request) -> Answer:
        time.sleep(seconds)
        return Answer(200, {"id": "ok"})

    return HttpSink(default=answer)


def sms_provider(url: str) -> provider_pb2.Provider:
    return provider_pb2.Provider(channel=common_pb2.CHANNEL_SMS,
                                 kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                                 config={"url": url}, secrets={"api_key": "k"})


def sms(key: str, profile_id: str) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        idempotency_key=key,
        recipient=message_pb2.Recipient(profile_id=profile_id, address="+14155550100"),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_SMS,
                                           sms=common_pb2.RenderedSms(text=f"Code {key}")))


async def statuses(stub: pb_grpc.DeliveryServiceStub, names: list[str],
                   metadata: tuple[tuple[str, str], ...] = WS) -> list[message_pb2.Message]:
    return [(await stub.GetMessage(pb.GetMessageRequest(name=n), metadata=metadata)).message
            for n in names]


# --- frequency caps ------------------------------------------------------------------------

async def test_a_frequency_cap_is_exact_across_replicas(backend: Backend) -> None:
    clock = ManualClock()
    with http_sink(slow(0.05)) as sink:
        async with replicas(backend, clock, replica_count(backend),
                            CJO_DELIVERY_BATCH_SIZE="2") as stubs:
            stub = stubs[0]
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(sink.url)),
                                      metadata=WS)
            await stub.UpdateDeliveryPolicy(pb.UpdateDeliveryPolicyRequest(
                policy=policy_pb2.DeliveryPolicy(frequency_caps=[policy_pb2.FrequencyCap(
                    channel=common_pb2.CHANNEL_SMS, max_messages=1, window_seconds=86400)])),
                metadata=WS)
            # Many messages to one profile at once (and a few to another, counted apart),
            # queued through both replicas so both senders claim them in parallel.
            names = []
            for i in range(24):
                reply = await stubs[i % len(stubs)].SendMessage(
                    sms(f"k{i}", "p1" if i < 20 else "p2"), metadata=WS)
                names.append(reply.message.name)

            async def decided() -> list[message_pb2.Message] | None:
                found = await statuses(stub, names)
                return found if all(m.status in (SENT, DEFERRED) for m in found) else None

            done = await eventually(decided, timeout=30)
            assert isinstance(done, list)
            first_send = clock.now()
            for profile, mine in (("p1", done[:20]), ("p2", done[20:])):
                sent = [m for m in mine if m.status == SENT]
                assert len(sent) == 1, (profile, [m.status for m in mine])
                for m in mine:
                    if m.status == DEFERRED:
                        assert m.error == "frequency cap: 1 per 86400 s on sms"
                        assert m.attempts == 0  # no provider was called for it
                        assert m.next_attempt_time.ToDatetime(UTC) == first_send + timedelta(
                            days=1)
            assert sink.count() == 2
            # A day later, exactly one more each, whichever replica claims them.
            clock.advance(timedelta(days=1))

            async def two_each() -> bool:
                found = await statuses(stub, names)
                return (sum(m.status == SENT for m in found[:20]) == 2
                        and sum(m.status == SENT for m in found[20:]) == 2
                        and all(m.status in (SENT, DEFERRED) for m in found))

            assert await eventually(two_each, timeout=30)
            assert sink.count() == 4
