"""The rewards' forwarding watermark over the event bus (CJO_EVENT_BUS), against the real NATS
JetStream at 127.0.0.1:4222: identity's forwarder publishes its events and its reporter a
watermark marker to every partition (the very workers its bootstrap runs with the bus on, on
an outbox of the test's own), and decisioning's consumer passes each marker on once it answered
what came before, listing the workspaces its receiver wants later.

While decisioning's receiver asks for one workspace's events later for longer than the reward
grace, a purchase inside a decision's window waits in the consumer; the window lapses by the
clock, but that workspace's watermark stays at the purchase's write time, so the decision is not
learned as NOT_REWARDED, while another workspace's lapsed window is learned on time; once the
receiver takes the purchase the decision is learned REWARDED. And the partitions' markers: none
holds anything until every partition has reported once, and none moves its partition back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats_support import (
    NATS_URL,
    TEST_STREAM_BYTES,
    LaterFor,
    SenderOutbox,
    bus_consumer,
    bus_env,
    drain,
    drop_streams,
    nats_listening,
)
from outcomes_support import START, Decisioning, learned, running, sent, shown, track
from sqlalchemy import event

from cjo_decisioning.adapters.tables import EXPOSED, NOT_REWARDED, REWARDED
from cjo_platform.bus import Bus, BusSettings
from cjo_platform.clock import ManualClock
from cjo_platform.decisioning import (
    DECISIONING_EVENTS_TOPIC,
    DECISIONING_FACTS_TOPIC,
    decisioning_events_forwarder,
    decisioning_events_watermark,
)
from support import Backend, as_service, eventually, settings_for

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
GRACE = timedelta(minutes=5)  # CJO_DECISIONING_REWARD_GRACE_SECONDS' default


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await drop_streams(name, (DECISIONING_FACTS_TOPIC, DECISIONING_EVENTS_TOPIC))


async def exposed(d: Decisioning, decision_id: str, profile_id: str, workspace_id: str,
                  at: datetime = START) -> None:
    await d.decided(decision_id, "home", profile_id, workspace_id=workspace_id)
    await d.facts(sent(f"m-{decision_id}", decision_id, at, profile_id),
                  workspace=as_service(workspace_id))


async def a_round_ran(d: Decisioning, name: str, workspace_id: str = "ws-b") -> None:
    """Wait for a learning round that began after now: one learns a decision whose window
    lapsed long before any watermark (exposed now, its deadline hours ago)."""
    await d.decided(name, "home", f"someone-{name}", workspace_id=workspace_id,
                    outcome=EXPOSED, expose_time=START - 4 * HOUR,
                    reward_deadline=START - 3 * HOUR)
    await eventually(lambda: learned(d, name, workspace_id), timeout=20)


async def test_a_workspace_its_receiver_wants_later_is_held_back_alone_through_the_grace(
        backend: Backend, prefix: str, tmp_path: Path) -> None:
    decisioning_clock, identity_clock = ManualClock(START), ManualClock(START)

    def advance(delta: timedelta) -> None:
        for clock in (decisioning_clock, identity_clock):
            clock.advance(delta)

    box = SenderOutbox(tmp_path / "identity.db", "ws-a", identity_clock)
    bus = Bus(BusSettings(url=NATS_URL, prefix=prefix, partitions=2,
                          max_bytes=TEST_STREAM_BYTES))
    identity = settings_for("identity", backend)
    # Identity's workers with CJO_EVENT_BUS set: the forwarder, and the reporter publishing
    # markers (run a report at a time here: CJO_IDENTITY_WATERMARK_SECONDS' loop otherwise).
    events = decisioning_events_forwarder(identity, box.db, box.outbox, bus=bus)
    reporter = decisioning_events_watermark(identity, box.db, box.outbox, bus=bus)
    try:
        async with running(backend, decisioning_clock, **bus_env(prefix)) as d:
            later = LaterFor(bus_consumer(d.app, DECISIONING_EVENTS_TOPIC))
            for workspace_id in ("ws-a", "ws-b"):
                await d.point("home", "order_completed", window=HOUR,
                              workspace_id=workspace_id)
            await exposed(d, "ada", "p1", "ws-a")
            await exposed(d, "bob", "p2", "ws-b")

            # Identity idle: a report moves both workspaces' watermark with its clock once the
            # markers went through both partitions.
            await reporter.run_once()

            async def at_least(workspace_id: str, moment: datetime) -> bool:
                found = await shown(d, workspace_id)
                return found is not None and found >= moment
            await eventually(lambda: at_least("ws-a", START), timeout=20)

            # Decisioning's receiver asks for ws-a's events later. Ada buys inside her window;
            # the purchase is published and waits in decisioning's consumer.
            later.workspaces.add("ws-a")
            advance(HOUR / 2)
            written = identity_clock.now()
            box.queue(DECISIONING_EVENTS_TOPIC, [track(
                "e1", "p1", "order_completed", written).SerializeToString()])
            await drain(events)
            await eventually(lambda: "ws-a" in later.asked, timeout=20)

            # Both windows lapse, grace and all; identity reports again (nothing waits in its
            # outbox): ws-b's watermark moves on, ws-a's stays at the purchase's write time.
            advance(2 * HOUR)
            await reporter.run_once()
            await eventually(lambda: at_least("ws-b", identity_clock.now()), timeout=20)
            held = await shown(d, "ws-a")
            assert held is not None and held <= written
            # Bob's window is learned on time; a round after that leaves Ada's decision alone.
            await eventually(lambda: learned(d, "bob", "ws-b"), timeout=20)
            assert (await d.decision("bob", "ws-b")).outcome == NOT_REWARDED
            await a_round_ran(d, "old-1")
            ada = await d.decision("ada")
            assert (ada.outcome, ada.learned) == (EXPOSED, False)

            # The receiver takes ws-a's events again: the purchase rewards Ada's decision, and
            # the next marker lets it be learned.
            later.workspaces.clear()

            async def rewarded_and_learned() -> bool:
                await reporter.run_once()
                ada = await d.decision("ada")
                return bool(ada.learned and ada.outcome == REWARDED)
            await eventually(rewarded_and_learned, timeout=60)
    finally:
        await bus.close()
        box.db.dispose()


async def test_partition_markers_hold_only_once_all_reported_and_never_move_back(
        backend: Backend, prefix: str) -> None:
    clock = ManualClock(START + 2 * HOUR)
    async with running(backend, clock, **bus_env(prefix)) as d:
        consumer = bus_consumer(d.app, DECISIONING_EVENTS_TOPIC)
        assert consumer.on_watermark is not None
        record = consumer.on_watermark
        for workspace_id in ("ws-a", "ws-b"):
            await d.point("home", "order_completed", window=HOUR, workspace_id=workspace_id)

        # Partition 0 of 2 only: no watermark, windows are learned after the grace alone.
        await record(0, START + 10 * MINUTE, {})
        assert await shown(d, "ws-a") is None
        await exposed(d, "first", "p1", "ws-a")
        await eventually(lambda: learned(d, "first"), timeout=20)

        # Partition 1 too: the watermark is the earlier of the two, and holds.
        await record(1, START + 30 * MINUTE, {})
        assert await shown(d, "ws-a") == START + 10 * MINUTE
        await exposed(d, "second", "p1", "ws-a")
        await a_round_ran(d, "old-1")
        assert not await learned(d, "second")

        # Older markers (another identity replica's report, published later) move nothing.
        await record(0, START + 5 * MINUTE, {})
        await record(1, START + 20 * MINUTE, {})
        assert await shown(d, "ws-a") == START + 10 * MINUTE

        # Both partitions on past the windows, ws-a behind on partition 1: only ws-a waits.
        await record(0, START + 2 * HOUR, {})
        await record(1, START + 2 * HOUR, {"ws-a": START + 40 * MINUTE})
        assert await shown(d, "ws-a") == START + 40 * MINUTE
        assert await shown(d, "ws-b") == START + 2 * HOUR
        await exposed(d, "third", "p2", "ws-b")
        await eventually(lambda: learned(d, "third", "ws-b"), timeout=20)
        await a_round_ran(d, "old-2")
        assert not await learned(d, "second")

        # ws-a caught up on partition 1: its window is learned.
        await record(1, START + 2 * HOUR, {})
        await eventually(lambda: learned(d, "second"), timeout=20)
        assert (await d.decision("second")).outcome == NOT_REWARDED


async def test_a_learning_claim_reads_no_workspace_behind_a_partition(
        backend: Backend, prefix: str) -> None:
    """Review rbusmark: each learning claim read every partition's rows of workspaces behind
    (up to a thousand each) only to see whether all partitions had reported."""
    clock = ManualClock(START + 2 * HOUR)
    async with running(backend, clock, **bus_env(prefix)) as d:
        record = bus_consumer(d.app, DECISIONING_EVENTS_TOPIC).on_watermark
        assert record is not None
        for workspace_id in ("ws-a", "ws-b"):
            await d.point("home", "order_completed", window=HOUR, workspace_id=workspace_id)
        behind = {"ws-b": START - HOUR, **{f"ws-{i:03d}": START + i * MINUTE for i in range(99)}}
        await record(0, START + 2 * HOUR, behind)
        read: list[str] = []

        def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "bus_watermarks" in statement:
                read.append(statement)

        event.listen(d.app.db.engine, "after_cursor_execute", note)
        try:
            # Partition 1 not reported: nothing holds, windows are learned after the grace.
            await a_round_ran(d, "old-1")
            await record(1, START + 2 * HOUR, behind)
            read.clear()
            await a_round_ran(d, "old-2")
        finally:
            event.remove(d.app.db.engine, "after_cursor_execute", note)
        assert read and not [s for s in read if "delivered_before" in s]
        assert await shown(d, "ws-a") == START + 2 * HOUR
        assert await shown(d, "ws-b") == START - HOUR
