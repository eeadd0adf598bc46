"""Provider rate limits held across delivery replicas sharing one database, and rate-limited
providers in a failover list."""

from __future__ import annotations

import threading
import time
from contextlib import AsyncExitStack
from datetime import timedelta

import grpc
from delivery_support import delivery_app
from http_sink import Answer, HttpSink, Request, http_sink
from test_delivery_limits import SENT, WS, settled, sms

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import provider_pb2
from cjo_platform.clock import ManualClock
from support import Backend, eventually, free_port, serving

RATE, BURST, MESSAGES = 50, 50, 200


class TimedSink(HttpSink):
    """An HTTP sink that notes when each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.times_lock = threading.Lock()
        self.default = self._accept

    def _accept(self, request: Request) -> Answer:
        with self.times_lock:
            self.times.append(time.monotonic())
        return Answer(200, {"id": "ok"})


def sms_provider(url: str, priority: int = 0, **limit: str) -> provider_pb2.Provider:
    return provider_pb2.Provider(channel=common_pb2.CHANNEL_SMS, priority=priority,
                                 kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                                 config={"url": url, **limit}, secrets={"api_key": "k"})


async def test_replicas_sharing_a_database_share_the_rate_limit(backend: Backend) -> None:
    # Replicas share a database only on PostgreSQL; on SQLite one process holds the limit.
    replicas = 2 if backend.kind == "postgresql" else 1
    with http_sink(TimedSink()) as sink:
        async with AsyncExitStack() as stack:
            addresses = [await stack.enter_async_context(serving(
                delivery_app(backend, free_port(), CJO_DELIVERY_BATCH_SIZE="100")))
                for _ in range(replicas)]
            ch = await stack.enter_async_context(grpc.aio.insecure_channel(addresses[0]))
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
                sink.url, rate_per_second=str(RATE), burst=str(BURST))), metadata=WS)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
                requests=[sms(f"k{i}") for i in range(MESSAGES)]), metadata=WS)
            assert all(r.status.code == 0 for r in reply.results)
            await settled(sink, MESSAGES)

    keys = [r.headers["idempotency-key"] for r in sink.requests]
    assert len(set(keys)) == MESSAGES  # each message once, none twice
    times = sorted(sink.times)
    # The burst at once, the rest at the rate: per-process limits would take half the time.
    assert times[-1] - times[0] >= (MESSAGES - BURST) / RATE - 0.3
    # In any second, at most a burst and a second's worth (slack for sends that left late;
    # per-process limits would let twice that through).
    for i, start in enumerate(times):
        within = sum(1 for t in times[i:] if t < start + 1.0)
        assert within <= BURST + RATE + 10


async def test_a_rate_limited_provider_falls_over_to_an_unlimited_one(backend: Backend) -> None:
    with http_sink(HttpSink()) as limited, http_sink(HttpSink()) as unlimited:
        app = delivery_app(backend, free_port(), ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
                limited.url, rate_per_second="1", burst="2")), metadata=WS)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
                unlimited.url, priority=1)), metadata=WS)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
                requests=[sms(f"k{i}") for i in range(5)]), metadata=WS)
            await settled(limited, 2)  # the burst; the clock stands still
            await settled(unlimited, 3)  # the rest at once, nothing left waiting
            for r in reply.results:
                m = (await stub.GetMessage(pb.GetMessageRequest(name=r.message.name),
                                           metadata=WS)).message
                assert m.status == SENT and m.attempts == 1


async def test_messages_failing_over_to_a_rate_limited_provider_keep_to_its_limit(
        backend: Backend) -> None:
    clock = ManualClock()
    down = HttpSink(default=lambda request: Answer(503, {"error": "down"}))
    with http_sink(down) as primary, http_sink(HttpSink()) as backup:
        app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_RETRY_BASE_SECONDS="1")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
                primary.url)), metadata=WS)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
                backup.url, priority=1, rate_per_second="1", burst="3")), metadata=WS)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
                requests=[sms(f"k{i}") for i in range(6)]), metadata=WS)
            # The clock stands still: never more than the burst, however the failovers go.
            assert await eventually(lambda: backup.count() >= 1)
            await settled(backup, backup.count())
            assert backup.count() <= 3
            start = clock.now()

            async def all_sent() -> bool:
                clock.advance(timedelta(seconds=5))
                statuses = [(await stub.GetMessage(pb.GetMessageRequest(name=r.message.name),
                                                   metadata=WS)).message.status
                            for r in reply.results]
                return all(s == SENT for s in statuses)

            assert await eventually(all_sent, timeout=20)
            elapsed = (clock.now() - start).total_seconds()
            assert backup.count() == 6 and backup.count() <= 3 + elapsed
            keys = [r.headers["idempotency-key"] for r in backup.requests]
            assert len(set(keys)) == 6
