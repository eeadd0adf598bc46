"""A forwarder with a linger (the facts forwarders) gathers the rows of several units of work
into one call to the real receiver (analytics), sends a lone row once the linger ran out (not
at the next poll), and loses nothing when it stops while rows linger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from outbox_support import Box, open_box, url_of
from sqlalchemy import select

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo_analytics.bootstrap import build
from cjo_platform.clock import SystemClock
from cjo_platform.config import Env, ServiceSettings
from cjo_platform.db.outbox import Forwarder, OutboxRow, Refusal
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.facts import FACTS_TOPIC, facts_forwarder
from cjo_platform.forwarding import stored_items_sender
from cjo_platform.protobuf import to_timestamp
from support import Backend, as_service, eventually, serving, settings_for

WHEN = to_timestamp(datetime(2026, 3, 1, tzinfo=UTC))


@pytest.fixture
def box(backend: Backend) -> Iterator[Box]:
    opened = open_box(url_of(backend), backend.schema_prefix + "linger", SystemClock(),
                      create=True)
    yield opened
    if backend.kind == "postgresql":
        opened.db.drop_schema()
    opened.close()


def fact(fact_id: str) -> bytes:
    return fact_pb2.Fact(fact_id=fact_id, type=fact_pb2.FACT_TYPE_JOURNEY_ENTERED,
                         profile_id=f"p-{fact_id}", journey_id="j1",
                         occur_time=WHEN).SerializeToString()


class Calls:
    """The calls a forwarder makes to the receiver, made by its own sender."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.sizes: list[int] = []
        self.times: list[float] = []
        send = forwarder.send

        async def counted(workspace: str, rows: Sequence[OutboxRow]
                          ) -> Sequence[Refusal] | None:
            self.sizes.append(len(rows))
            self.times.append(time.monotonic())
            return await send(workspace, rows)

        forwarder.send = counted


def publisher(box: Box) -> Any:
    transactions = Transactions(box.db, box.outbox.clock, box.outbox)

    async def publish(fact_id: str) -> None:
        def work(uow: UnitOfWork) -> None:
            uow.publish(FACTS_TOPIC, "ws-a", [(fact(fact_id), "")])
        await transactions.run(work)

    return publish


def forwarder_of(settings: ServiceSettings, box: Box, *, hand_off: bool) -> Forwarder:
    """A facts forwarder to analytics that takes hand-offs or, without, claims every row."""
    if hand_off:
        return facts_forwarder(settings, box.db, box.outbox, poll_interval=60)
    send = stored_items_sender(
        settings, "analytics", service=pb.DESCRIPTOR.services_by_name["AnalyticsService"],
        method="RecordFacts", what="facts", timeout=10)
    return Forwarder(box.db, box.outbox, FACTS_TOPIC, send, poll_interval=60,
                     hand_off=False, linger=settings.facts_linger_seconds)


async def entered(channel: grpc.aio.Channel) -> int:
    report = (await pb_grpc.AnalyticsServiceStub(channel).GetJourneyReport(
        pb.GetJourneyReportRequest(journey="journeys/j1"), metadata=as_service("ws-a"))).report
    return sum(c.count for c in report.counts)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("hand_off", [True, False], ids=["handed-off", "claimed"])
async def test_units_of_work_written_within_the_linger_go_in_one_call(
        backend: Backend, box: Box, hand_off: bool) -> None:
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        settings = settings_for("orchestration", backend, CJO_ANALYTICS_TARGET=address,
                                CJO_FACTS_LINGER_MS="3000")
        forwarder = forwarder_of(settings, box, hand_off=hand_off)
        calls = Calls(forwarder)
        publish = publisher(box)
        task = asyncio.create_task(forwarder.run())
        try:
            await eventually(lambda: forwarder._loop is not None and not forwarder._claim_due)
            for n in range(6):
                await publish(f"f{n}")
            await eventually(lambda: calls.sizes, timeout=15)
            assert await eventually(lambda: entered(channel)) == 6
            assert calls.sizes == [6]
        finally:
            await stop(task)


async def test_a_full_batch_goes_without_waiting_for_the_linger(
        backend: Backend, box: Box) -> None:
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        settings = settings_for("orchestration", backend, CJO_ANALYTICS_TARGET=address,
                                CJO_FACTS_LINGER_MS="5000")
        forwarder = forwarder_of(settings, box, hand_off=True)
        forwarder.batch_size = 3
        calls = Calls(forwarder)
        publish = publisher(box)
        task = asyncio.create_task(forwarder.run())
        try:
            await eventually(lambda: forwarder._loop is not None and not forwarder._claim_due)
            for n in range(3):
                await publish(f"f{n}")
            # Well before the linger runs out.
            await eventually(lambda: calls.sizes == [3], timeout=3)
            assert await eventually(lambda: entered(channel)) == 3
        finally:
            await stop(task)


@pytest.mark.parametrize("hand_off", [True, False], ids=["handed-off", "claimed"])
async def test_a_lone_row_goes_once_the_linger_ran_out_not_at_the_next_poll(
        backend: Backend, box: Box, hand_off: bool) -> None:
    linger = 0.3
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        settings = settings_for("orchestration", backend, CJO_ANALYTICS_TARGET=address,
                                CJO_FACTS_LINGER_MS=str(int(linger * 1000)))
        forwarder = forwarder_of(settings, box, hand_off=hand_off)
        calls = Calls(forwarder)
        publish = publisher(box)
        task = asyncio.create_task(forwarder.run())
        try:
            # The first round (a poll, which may claim) is over.
            await eventually(lambda: forwarder._loop is not None and not forwarder._claim_due)
            await publish("f0")
            written = time.monotonic()
            # The poll interval is 60 s: only the linger's own timer sends it this soon.
            await eventually(lambda: calls.sizes, timeout=linger + 5)
            assert calls.sizes == [1]
            # It did wait (the writer's commit came a little after the linger began).
            assert calls.times[0] - written >= linger / 2
            await eventually(lambda: entered(channel), timeout=5)
        finally:
            await stop(task)


async def test_rows_lingering_when_the_forwarder_stops_are_released_and_sent_later(
        backend: Backend, box: Box) -> None:
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        settings = settings_for("orchestration", backend, CJO_ANALYTICS_TARGET=address,
                                CJO_FACTS_LINGER_MS="5000")
        forwarder = forwarder_of(settings, box, hand_off=True)
        calls = Calls(forwarder)
        publish = publisher(box)
        task = asyncio.create_task(forwarder.run())
        try:
            await eventually(lambda: forwarder._loop is not None)
            for n in range(3):
                await publish(f"f{n}")
        finally:
            await stop(task)
        assert calls.sizes == []
        # Released, not left leased to a forwarder that is gone.
        table = box.outbox.table
        with box.db.transaction() as session:
            leases = session.execute(select(table.c.lease_owner, table.c.lease_until)).all()
        assert len(leases) == 3 and all(lease == (None, None) for lease in leases)
        # The service started again sends them at once.
        again = forwarder_of(settings_for("orchestration", backend, CJO_ANALYTICS_TARGET=address,
                                          CJO_FACTS_LINGER_MS="0"), box, hand_off=True)
        task = asyncio.create_task(again.run())
        try:
            assert await eventually(lambda: entered(channel)) == 3
            await eventually(lambda: box.queued(FACTS_TOPIC) == 0)
        finally:
            await stop(task)
