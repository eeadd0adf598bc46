"""Watermark markers through a bus consumer, against the real NATS JetStream at 127.0.0.1:4222:
a marker reaches the consumer's watermark callback only after every message before it in its
partition was answered, with the workspaces the consumer still keeps (the receiver wants them
later) or sends round the stream listed behind at their oldest waiting row's write time; a
consumer without a callback acks markers and never hands them to its receiver; and the write
time a message carries (its relay's Nats-Msg-Id, or a copy's own header)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nats_support import NATS_URL, TEST_STREAM_BYTES, drain, drop_streams, nats_listening
from outbox_support import Box, open_box

from cjo_platform.backoff import RetryPolicy
from cjo_platform.bus import Bus, BusSettings, naming
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.packing import pack_message_id
from cjo_platform.bus.relay import bus_sender
from cjo_platform.bus.watermark import WRITTEN_HEADER, publish_markers, written_at
from cjo_platform.clock import ManualClock
from cjo_platform.db.outbox import Forwarder, Later, OutboxRow, Refusal
from support import eventually

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")

TOPIC = "test.marks"
START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    # One partition; a waiting workspace keeps one message (a tenth of the batch), the rest of
    # its messages go round the stream.
    bus = Bus(BusSettings(url=NATS_URL, prefix=f"t{uuid.uuid4().hex[:10]}", partitions=1,
                          ack_wait_seconds=2.0, batch=10, max_attempts=2, pack_rows=1,
                          max_bytes=TEST_STREAM_BYTES))
    yield bus
    await bus.close()
    await drop_streams(bus.prefix, [TOPIC])


def producer(tmp_path: Path, name: str, written: datetime) -> Box:
    """A producer's outbox whose rows are written at ``written`` (its clock stands still)."""
    return open_box(f"sqlite:///{tmp_path / name}.db", "", ManualClock(written), create=True)


async def publish(bus: Bus, box: Box, name: str, **payloads: list[bytes]) -> None:
    """Queue each workspace's payloads, then publish them all (in one go: an emptied SQLite
    outbox gives the same ids again, and at the same write time they would be duplicates)."""
    for workspace_id, queued in payloads.items():
        box.queue(TOPIC, workspace_id, queued)
    await drain(Forwarder(box.db, box.outbox, TOPIC, bus_sender(bus, name, TOPIC)))


class Receiver:
    """Takes every workspace's messages but those of :attr:`later` (asked for later)."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []
        self.later: set[str] = set()

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        if workspace_id in self.later:
            raise Later("busy")
        self.taken.extend(row.payload for row in rows)
        return []


class Marks:
    """A consumer's watermark callback: what each marker said, and what the receiver had
    taken when it came."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.seen: list[tuple[int, datetime, dict[str, datetime], list[bytes]]] = []

    async def __call__(self, partition: int, delivered_before: datetime,
                       behind: Mapping[str, datetime]) -> None:
        self.seen.append((partition, delivered_before, dict(behind), list(self.receiver.taken)))


def consumer(bus: Bus, box: Box, receiver: Receiver, **options: Any) -> BusConsumer:
    return BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                       retry=RetryPolicy(base_delay=timedelta(seconds=0.2),
                                         max_delay=timedelta(seconds=0.5)), **options)


@contextlib.asynccontextmanager
async def consuming(worker: BusConsumer) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_marker_comes_after_what_precedes_it_with_the_waiting_workspaces_behind(
        bus: Bus, tmp_path: Path) -> None:
    # Producer x writes at START + 1 min, producer y at START: y's messages of workspace b,
    # published after x's, are older, and go round the stream (b keeps x's one message).
    x, y = producer(tmp_path, "x", START + timedelta(minutes=1)), producer(tmp_path, "y", START)
    receiver = Receiver()
    receiver.later.add("b")
    marks = Marks(receiver)
    await publish(bus, x, "x", b=[b"b:0"], a=[b"a:0", b"a:1"])
    await publish(bus, y, "y", b=[b"b:1", b"b:2", b"b:3"])
    # The producer lists c behind (its own outbox holds c's row of an hour ago).
    await publish_markers(bus, TOPIC, START + 2 * HOUR, [("c", START - HOUR)])
    async with consuming(consumer(bus, x, receiver, on_watermark=marks)):
        await eventually(lambda: marks.seen, timeout=20)
        [(partition, delivered_before, behind, taken)] = marks.seen
        assert (partition, delivered_before) == (0, START + 2 * HOUR)
        # a's messages before the marker were taken first; b waits (held and sent round: its
        # oldest waiting row is y's), c as the producer listed it.
        assert taken == [b"a:0", b"a:1"]
        assert behind == {"b": START, "c": START - HOUR}

        # b's messages taken: the next marker lists nobody.
        receiver.later.clear()
        await eventually(lambda: len(receiver.taken) == 6, timeout=20)
        await publish_markers(bus, TOPIC, START + 3 * HOUR, [])
        await eventually(lambda: len(marks.seen) == 2, timeout=20)
        assert marks.seen[1][1:3] == (START + 3 * HOUR, {})
    assert [p for p in receiver.taken if p.startswith(b"b:")] == [b"b:0", b"b:1", b"b:2",
                                                                   b"b:3"]


async def test_a_consumer_without_a_callback_drops_markers(bus: Bus, tmp_path: Path) -> None:
    box, later = producer(tmp_path, "x", START), producer(tmp_path, "y", START + HOUR)
    receiver = Receiver()
    await publish(bus, box, "x", a=[b"a:0"])
    await publish_markers(bus, TOPIC, START + HOUR, [])
    await publish(bus, later, "y", a=[b"a:1"])
    async with consuming(consumer(bus, box, receiver)):
        await eventually(lambda: len(receiver.taken) == 2, timeout=20)

        async def empty() -> bool:
            info = await (await bus.jetstream()).stream_info(
                naming.stream_name(bus.prefix, TOPIC))
            return info.state.messages == 0
        await eventually(empty, timeout=20)
    assert receiver.taken == [b"a:0", b"a:1"]
    assert box.letters("") == []


def test_a_message_carries_its_rows_write_time() -> None:
    stored = START + HOUR
    rows = [OutboxRow(id=i, topic=TOPIC, workspace_id="a", payload=b"", traceparent="",
                      create_time=START + timedelta(seconds=i)) for i in (7, 8)]

    def msg(**headers: str) -> Any:
        return SimpleNamespace(headers=headers)

    single = naming.message_id("identity", TOPIC, 7, rows[0].create_time)
    packed = pack_message_id("identity", TOPIC, rows)
    assert written_at(msg(**{"Nats-Msg-Id": single}), stored) == rows[0].create_time
    assert written_at(msg(**{"Nats-Msg-Id": packed}), stored) == rows[0].create_time
    # A copy sent round has no Nats-Msg-Id but its own header.
    assert written_at(msg(**{WRITTEN_HEADER: f"{START.timestamp():.6f}"}), stored) == START
    # Neither (a copy a release before markers sent round): when the stream stored it.
    assert written_at(msg(), stored) == stored
