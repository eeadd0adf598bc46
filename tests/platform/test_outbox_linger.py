"""A forwarder with a linger (the facts forwarders) gathers the rows of several units of work
into one call to the real receiver (analytics), sends a lone row once the linger ran out (not
at the next poll), and loses nothing when it stops while rows linger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace

import grpc
import pytest
from outbox_support import Box, open_box, url_of
from sqlalchemy import select

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo_analytics.bootstrap import build
from cjo_platform.clock import SystemClock
from cjo_platform.config import Env
from cjo_platform.db import outbox as outbox_module
from cjo_platform.db.outbox import Forwarder, OutboxRow, Refusal
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.facts import FACTS_TOPIC, facts_forwarder
from cjo_platform.forwarding import stored_items_sender
from cjo_platform.protobuf import to_timestamp
from support import Backend, as_service, eventually, serving, settings_for

WHEN = to_timestamp(datetime(2026, 3, 1, tzinfo=UTC))


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


class Linger:
    """A served analytics, an outbox of orchestration's facts and, once :meth:`start`-ed, a
    facts forwarder from the one to the other with a linger, its calls counted."""

    def __init__(self, backend: Backend, box: Box, address: str,
                 channel: grpc.aio.Channel) -> None:
        self.backend = backend
        self.box = box
        self.address = address
        self.channel = channel
        self.transactions = Transactions(box.db, box.outbox.clock, box.outbox)
        self._task: asyncio.Task[None] | None = None

    async def start(self, linger_ms: int, *, hand_off: bool = True,
                    batch_size: int | None = None) -> tuple[Forwarder, Calls]:
        """Runs a forwarder with ``linger_ms`` that takes hand-offs or, without, claims every
        row; returns once its first round (a poll, which may claim) is over."""
        settings = settings_for("orchestration", self.backend, CJO_ANALYTICS_TARGET=self.address,
                                CJO_FACTS_LINGER_MS=str(linger_ms))
        if hand_off:
            forwarder = facts_forwarder(settings, self.box.db, self.box.outbox, poll_interval=60)
        else:
            send = stored_items_sender(
                settings, "analytics",
                service=pb.DESCRIPTOR.services_by_name["AnalyticsService"],
                method="RecordFacts", what="facts", timeout=10)
            forwarder = Forwarder(self.box.db, self.box.outbox, FACTS_TOPIC, send,
                                  poll_interval=60, hand_off=False,
                                  linger=settings.facts_linger_seconds)
        if batch_size is not None:
            forwarder.batch_size = batch_size
        calls = Calls(forwarder)
        self._task = asyncio.create_task(forwarder.run())
        await eventually(lambda: forwarder._loop is not None and not forwarder._claim_due)
        return forwarder, calls

    async def stop(self) -> None:
        """Stops the forwarder as the service's shutdown does."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def publish(self, fact_id: str) -> None:
        """A unit of work that writes one fact."""
        def work(uow: UnitOfWork) -> None:
            uow.publish(FACTS_TOPIC, "ws-a", [(fact(fact_id), "")])
        await self.transactions.run(work)

    async def entered(self) -> int:
        """How many entries analytics counts for the journey."""
        report = (await pb_grpc.AnalyticsServiceStub(self.channel).GetJourneyReport(
            pb.GetJourneyReportRequest(journey="journeys/j1"),
            metadata=as_service("ws-a"))).report
        return sum(c.count for c in report.counts)


@pytest.fixture
async def linger(backend: Backend) -> AsyncIterator[Linger]:
    box = open_box(url_of(backend), backend.schema_prefix + "linger", SystemClock(),
                   create=True)
    app = build(settings_for("analytics", backend), Env({}))
    try:
        async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
            rig = Linger(backend, box, address, channel)
            try:
                yield rig
            finally:
                await rig.stop()
    finally:
        if backend.kind == "postgresql":
            box.db.drop_schema()
        box.close()


@pytest.mark.parametrize("hand_off", [True, False], ids=["handed-off", "claimed"])
async def test_units_of_work_written_within_the_linger_go_in_one_call(
        linger: Linger, hand_off: bool) -> None:
    _, calls = await linger.start(3000, hand_off=hand_off)
    began = time.monotonic()
    for n in range(6):
        await linger.publish(f"f{n}")
    written = time.monotonic() - began
    await eventually(lambda: sum(calls.sizes) == 6, timeout=15)

    async def all_entered() -> bool:
        return await linger.entered() == 6
    await eventually(all_entered)
    # The six units of work are written within the linger unless the machine is so loaded
    # that six commits take longer (seen at load 23 on two cores): then the linger rightly
    # sent what it had when it ran out.
    if written >= 2.5:
        pytest.skip(f"six commits took {written:.1f} s, longer than the linger: not the case")
    assert calls.sizes == [6]


async def test_a_full_batch_goes_without_waiting_for_the_linger(linger: Linger) -> None:
    _, calls = await linger.start(5000, batch_size=3)
    for n in range(3):
        await linger.publish(f"f{n}")
    # Well before the linger runs out.
    await eventually(lambda: calls.sizes == [3], timeout=3)
    assert await eventually(linger.entered) == 3


@pytest.mark.parametrize("hand_off", [True, False], ids=["handed-off", "claimed"])
async def test_a_lone_row_goes_once_the_linger_ran_out_not_at_the_next_poll(
        linger: Linger, hand_off: bool) -> None:
    seconds = 0.3
    _, calls = await linger.start(int(seconds * 1000), hand_off=hand_off)
    writing = time.monotonic()
    await linger.publish("f0")
    # The poll interval is 60 s: only the linger's own timer sends it this soon.
    await eventually(lambda: calls.sizes, timeout=seconds + 5)
    assert calls.sizes == [1]
    # It did wait: the linger began during the write, so no sooner than its length after the
    # write began. (Not measured from the write's return: on a loaded machine the writer may
    # resume after most of the linger went by.)
    assert calls.times[0] - writing >= seconds
    await eventually(linger.entered, timeout=5)


async def test_rows_lingering_when_the_forwarder_stops_are_released_and_sent_later(
        linger: Linger) -> None:
    _, calls = await linger.start(5000)
    for n in range(3):
        await linger.publish(f"f{n}")
    await linger.stop()
    assert calls.sizes == []
    # Released, not left leased to a forwarder that is gone.
    table = linger.box.outbox.table
    with linger.box.db.transaction() as session:
        leases = session.execute(select(table.c.lease_owner, table.c.lease_until)).all()
    assert len(leases) == 3 and all(lease == (None, None) for lease in leases)
    # The service started again sends them at once.
    await linger.start(0)
    assert await eventually(linger.entered) == 3
    await eventually(lambda: linger.box.queued(FACTS_TOPIC) == 0)


async def test_a_round_that_found_the_linger_all_but_over_waits_for_its_end_not_the_poll(
        linger: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    # The race CI met under load: a round found 47 us of the linger left and waited; by the
    # time it asked how long to sleep, the linger was over, and it slept the poll interval.
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(outbox_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    settings = settings_for("orchestration", linger.backend, CJO_FACTS_LINGER_MS="3000")
    forwarder = facts_forwarder(settings, linger.box.db, linger.box.outbox, poll_interval=60)
    forwarder._written()  # a unit of work wrote a fact: its linger starts
    clock.now += 3 - 0.00005
    assert await forwarder.run_once() is False  # it lingers, without a claim
    clock.now += 0.0001
    assert forwarder.idle_seconds() == 0.0
