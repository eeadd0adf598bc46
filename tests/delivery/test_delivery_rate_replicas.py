"""Provider rate limits held across delivery replicas sharing one database, rate-limited
providers in a failover list, and the shared state in the database (rate_store)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from delivery_support import a_send_round_passed, delivery_app
from http_sink import Answer, HttpSink, http_sink
from sqlalchemy import select
from test_delivery_limits import QUEUED, SENT, WS, settled, sms

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import provider_pb2
from cjo_delivery import adapters
from cjo_delivery.adapters import provider_store, rate_store
from cjo_delivery.adapters.tables import provider_rates
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.providers import ProviderConfig, ProviderKind
from cjo_delivery.domain.ratelimit import Grant, RateLimit
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from cjo_platform.secret_box import SecretBox
from support import Backend, eventually, free_port, serving, settings_for

RATE, BURST, MESSAGES = 50, 50, 200
RESERVE_RETRY = timedelta(seconds=5)  # the sender's wait after reserving failed


def sms_provider(url: str, priority: int = 0, **limit: str) -> provider_pb2.Provider:
    return provider_pb2.Provider(channel=common_pb2.CHANNEL_SMS, priority=priority,
                                 kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                                 config={"url": url, **limit}, secrets={"api_key": "k"})


async def behind_a_primary(stub: pb_grpc.DeliveryServiceStub, primary: str, backup: str,
                           count: int, **limit: str) -> pb.BatchSendMessagesResponse:
    """Configure a primary and a rate-limited backup, then send ``count`` messages."""
    await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(primary)),
                              metadata=WS)
    await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
        backup, priority=1, **limit)), metadata=WS)
    reply: pb.BatchSendMessagesResponse = await stub.BatchSendMessages(
        pb.BatchSendMessagesRequest(requests=[sms(f"k{i}") for i in range(count)]),
        metadata=WS)
    return reply


async def all_messages(stub: pb_grpc.DeliveryServiceStub) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        page = await stub.ListMessages(pb.ListMessagesRequest(page_size=100, page_token=token),
                                       metadata=WS)
        found.extend(page.messages)
        token = page.next_page_token
        if not token:
            return found


async def quiet(stub: pb_grpc.DeliveryServiceStub, clock: ManualClock) -> int:
    """Wait until no sender can do more while the clock stands still (every message not sent
    is queued for later); returns how many were sent."""
    async def sent_when_quiet() -> int | None:
        found = await all_messages(stub)
        now = clock.now()
        if all(m.status == SENT or (m.status == QUEUED
                                    and m.next_attempt_time.ToDatetime(UTC) > now)
               for m in found):
            return sum(1 for m in found if m.status == SENT) or -1
        return None

    sent = await eventually(sent_when_quiet, timeout=30)
    assert isinstance(sent, int)
    return max(sent, 0)


async def test_replicas_sharing_a_database_share_the_rate_limit(backend: Backend) -> None:
    # Replicas share a database only on PostgreSQL; on SQLite one process holds the limit.
    replicas = 2 if backend.kind == "postgresql" else 1
    clock = ManualClock()
    with http_sink(HttpSink()) as sink:
        async with AsyncExitStack() as stack:
            addresses = [await stack.enter_async_context(serving(
                delivery_app(backend, free_port(), clock, CJO_DELIVERY_BATCH_SIZE="100")))
                for _ in range(replicas)]
            ch = await stack.enter_async_context(grpc.aio.insecure_channel(addresses[0]))
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
                sink.url, rate_per_second=str(RATE), burst=str(BURST))), metadata=WS)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
                requests=[sms(f"k{i}") for i in range(MESSAGES)]), metadata=WS)
            assert all(r.status.code == 0 for r in reply.results)
            # The clock stands still: the burst goes out, shared by the replicas (per-process
            # limits would let a burst through each).
            assert await quiet(stub, clock) == BURST
            # Then a second's worth per second at most, whichever replica sends it.
            seconds = 0
            sent = BURST
            while sent < MESSAGES:
                assert seconds < 2 * MESSAGES // RATE, f"only {sent} sent after {seconds}s"
                clock.advance(timedelta(seconds=1))
                seconds += 1
                sent = await quiet(stub, clock)
                assert sent <= BURST + RATE * seconds
            assert sink.count() == MESSAGES

    keys = [r.headers["idempotency-key"] for r in sink.requests]
    assert len(set(keys)) == MESSAGES  # each message once, none twice


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
            await settled(stub, limited, 2)  # the burst; the clock stands still
            await settled(stub, unlimited, 3)  # the rest at once, nothing left waiting
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
            reply = await behind_a_primary(stub, primary.url, backup.url, 6,
                                           rate_per_second="1", burst="3")
            # The clock stands still: never more than the burst, however the failovers go.
            assert await eventually(lambda: backup.count() >= 1)
            # Let the round that is handing out the burst finish, then prove nothing more
            # goes out while the clock stands still.
            await a_send_round_passed(stub)
            burst = backup.count()
            assert burst <= 3
            await settled(stub, backup, burst)
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
            # The burst went in the first round, each message in its first attempt.
            attempts = [(await stub.GetMessage(pb.GetMessageRequest(name=r.message.name),
                                               metadata=WS)).message.attempts
                        for r in reply.results]
            assert sum(1 for a in attempts if a == 1) >= 3 and all(a >= 1 for a in attempts)


async def test_every_failover_of_a_round_may_use_the_rate_limited_backup(
        backend: Backend) -> None:
    # The primary fails without its breaker opening: each message fails over on its own.
    down = HttpSink(default=lambda request: Answer(503, {"error": "down"}))
    with http_sink(down) as primary, http_sink(HttpSink()) as backup:
        app = delivery_app(backend, free_port(), ManualClock(),
                           CJO_DELIVERY_BREAKER_FAILURES="1000")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            reply = await behind_a_primary(stub, primary.url, backup.url, 10,
                                           rate_per_second="100", burst="100")
            await settled(stub, backup, 10)  # the clock stands still: all in the first round
            for r in reply.results:
                m = (await stub.GetMessage(pb.GetMessageRequest(name=r.message.name),
                                           metadata=WS)).message
                assert m.status == SENT and m.attempts == 1


async def test_a_failed_reservation_only_holds_that_providers_messages_back(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock()

    def unreachable(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database is gone")

    with http_sink(HttpSink()) as sink:
        app = delivery_app(backend, free_port(), clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=sms_provider(
                sink.url, rate_per_second="10")), metadata=WS)
            monkeypatch.setattr(rate_store, "reserve", unreachable)
            start = clock.now()
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
                requests=[sms(f"k{i}") for i in range(3)]), metadata=WS)

            async def waiting() -> bool:
                found = [(await stub.GetMessage(pb.GetMessageRequest(name=r.message.name),
                                                metadata=WS)).message for r in reply.results]
                # Back in the queue, due shortly, the attempt not counted.
                return all(m.status == QUEUED and m.attempts == 0
                           and m.next_attempt_time.ToDatetime(UTC) == start + RESERVE_RETRY
                           for m in found)

            assert await eventually(waiting)
            assert sink.count() == 0
            monkeypatch.undo()
            clock.advance(RESERVE_RETRY)
            await settled(stub, sink, 3)
            for r in reply.results:
                m = (await stub.GetMessage(pb.GetMessageRequest(name=r.message.name),
                                           metadata=WS)).message
                assert m.status == SENT and m.attempts == 1


# --- the shared state in the database ------------------------------------------------------

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"


@contextmanager
def rate_db(backend: Backend) -> Iterator[Database]:
    settings = settings_for("delivery", backend)
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url, schema=settings.database_schema)
    db.create_schema()
    upgrade(db, MIGRATIONS)
    try:
        yield db
    finally:
        db.dispose()


def limited(provider_id: str, rate: str = "2", disabled: bool = False,
            name: str = "") -> ProviderConfig:
    return ProviderConfig("ws-a", provider_id, Channel.SMS, ProviderKind.HTTP_JSON, 0, name,
                          {"url": "http://127.0.0.1:1", "rate_per_second": rate, "burst": "2"},
                          {"api_key": "k"}, disabled, "e", T0, T0)


def rate_rows(db: Database) -> dict[str, datetime]:
    with db.transaction() as session:
        rows = session.execute(select(provider_rates.c.provider_id, provider_rates.c.tat)).all()
    return {row.provider_id: row.tat for row in rows}


def test_settling_gives_back_unused_sends_and_carries_turns_to_other_replicas(
        backend: Backend) -> None:
    limit, key = RateLimit(2.0, 2), ("ws-a", "p")
    with rate_db(backend) as db:
        with db.transaction() as session:
            provider_store.insert_provider(session, limited("p"), SecretBox([]))
        with db.transaction() as session:
            grant = rate_store.reserve(session, {key: (limit, 5)}, T0)[key]
        assert grant.granted == 2 and grant.exhausted  # the burst, and no more this round
        assert grant.take()  # one sent, the other never
        turn = grant.next_turn(T0)
        grant.promise(turn)
        with db.transaction() as session:
            rate_store.settle(session, {key: grant}, T0)
        # The next round, on any replica: the send given back, turns after the promised one.
        with db.transaction() as session:
            other = rate_store.reserve(session, {key: (limit, 5)}, T0)[key]
        assert other.granted == 1 and other.promised == turn
        assert other.next_turn(T0) == turn + limit.span(1)
        # A failed reservation settles nothing.
        failed = Grant(limit, 0, T0, None, exhausted=True, failed=True)
        failed.promise(T0 + timedelta(hours=1))
        with db.transaction() as session:
            rate_store.settle(session, {key: failed}, T0)
            again = rate_store.reserve(session, {key: (limit, 0)}, T0)[key]
        assert again.promised == turn


def test_rate_rows_go_with_their_provider_and_new_settings_start_afresh(
        backend: Backend) -> None:
    limit, box = RateLimit(2.0, 2), SecretBox([])
    keys = {("ws-a", p): (limit, 2) for p in ("p", "q", "r")}
    with rate_db(backend) as db:
        with db.transaction() as session:
            for provider_id in ("p", "q", "r"):
                provider_store.insert_provider(session, limited(provider_id), box)
        with db.transaction() as session:
            rate_store.reserve(session, keys, T0)
        assert set(rate_rows(db)) == {"p", "q", "r"}
        with db.transaction() as session:  # only the name changes: the limit goes on
            provider_store.replace_provider(session, limited("p", name="renamed"), box,
                                            secrets_changed=False)
            provider_store.replace_provider(session, limited("q", rate="100"), box,
                                            secrets_changed=False)
            provider_store.replace_provider(session, limited("r", disabled=True), box,
                                            secrets_changed=False)
        assert set(rate_rows(db)) == {"p"}
        with db.transaction() as session:
            assert provider_store.delete_provider(session, "ws-a", "p")
        assert rate_rows(db) == {}
        # A round still holding the deleted provider gets no grant and leaves no row behind.
        with db.transaction() as session:
            assert rate_store.reserve(session, {("ws-a", "p"): (limit, 2)}, T0) == {}
        assert rate_rows(db) == {}
