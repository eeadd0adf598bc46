"""Watermark markers through a bus consumer, against the real NATS JetStream at 127.0.0.1:4222:
a marker reaches the consumer's watermark callback only after every message before it in its
partition was answered, with the workspaces the consumer still keeps (the receiver wants them
later) or sends round the stream listed behind at their oldest waiting row's write time, also
when a delivery before it was lost in transit or left unacked by the partition's previous
holder; markers taken at once are passed on as one, and a partition holds one waiting at most;
a consumer without a callback acks markers and never hands them to its receiver; and the write
time a message carries (its relay's Nats-Msg-Id, or a copy's own header)."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from cjo_platform.bus import Bus, BusSettings, naming, pull
from cjo_platform.bus.connection import CLAIM_MARGIN_SECONDS
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.packing import pack_message_id
from cjo_platform.bus.pull import PullBatches
from cjo_platform.bus.relay import bus_sender
from cjo_platform.bus.watermark import (
    MARKER_HEADER,
    MARKER_TOKEN,
    WRITTEN_HEADER,
    Marker,
    encode,
    latest,
    publish_markers,
    written_at,
)
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


async def test_a_marker_waits_for_a_delivery_lost_in_transit(
        bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review rbusmark: the connection dropped after the server sent a:0 (JetStream counts it
    delivered and sends it again only ack_wait later); the marker behind it came first and
    passed with a:0 neither taken nor listed, so decisioning could learn a lapsed window whose
    conversion a:0 was as a failure for good."""
    arrive = PullBatches._arrive
    lost: list[bytes] = []

    async def lossy(self: PullBatches, msg: Any) -> None:
        if not lost and msg.data == b"a:0":
            lost.append(msg.data)  # its first delivery never reaches the consumer
            return
        await arrive(self, msg)

    monkeypatch.setattr(pull.PullBatches, "_arrive", lossy)
    box = producer(tmp_path, "x", START)
    receiver = Receiver()
    marks = Marks(receiver)
    await publish(bus, box, "x", a=[b"a:0"])
    await publish_markers(bus, TOPIC, START + HOUR, [])
    async with consuming(consumer(bus, box, receiver, on_watermark=marks)):
        await eventually(lambda: marks.seen, timeout=30)
    assert lost == [b"a:0"]
    [(_, delivered_before, behind, taken)] = marks.seen
    assert (delivered_before, behind, taken) == (START + HOUR, {}, [b"a:0"])


async def test_a_marker_waits_for_the_lost_delivery_to_be_fetched_not_for_time_alone(
        bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review rbusmark2: the marker held for a lost delivery passed once ack_wait + 5 s had
    gone by, though a receiver call longer than that (another workspace's, b:0) kept the worker
    from fetching the redelivery meanwhile: a:0 was neither taken nor listed. A held marker
    passes only once a request sent after that time was answered in full."""
    arrive = PullBatches._arrive
    lost: list[bytes] = []

    async def lossy(self: PullBatches, msg: Any) -> None:
        if not lost and msg.data == b"a:0":
            lost.append(msg.data)
            return
        await arrive(self, msg)

    class SlowB(Receiver):
        async def __call__(self, workspace_id: str, rows: Any) -> Any:
            if workspace_id == "b":  # longer than the hold (ack_wait + margin)
                await asyncio.sleep(bus.settings.ack_wait_seconds + CLAIM_MARGIN_SECONDS + 2)
            return await super().__call__(workspace_id, rows)

    monkeypatch.setattr(pull.PullBatches, "_arrive", lossy)
    x, y = producer(tmp_path, "x", START), producer(tmp_path, "y", START)
    receiver = SlowB()
    marks = Marks(receiver)
    await publish(bus, x, "x", a=[b"a:0"])
    await publish_markers(bus, TOPIC, START + HOUR, [])
    await publish(bus, y, "y", b=[b"b:0"])
    async with consuming(consumer(bus, x, receiver, on_watermark=marks)):
        await eventually(lambda: marks.seen, timeout=40)
        await eventually(lambda: len(receiver.taken) == 2, timeout=40)
    assert lost == [b"a:0"]
    [(_, _, behind, taken)] = marks.seen
    assert b"a:0" in taken or "a" in behind


async def test_a_new_holder_s_marker_waits_for_what_the_previous_holder_left_unacked(
        bus: Bus, tmp_path: Path) -> None:
    """The partition's previous holder was handed a:0 and its give-back never arrived: a:0
    comes again only ack_wait later, and the marker after it must wait for it."""
    box = producer(tmp_path, "x", START)
    receiver = Receiver()
    marks = Marks(receiver)
    await publish(bus, box, "x", a=[b"a:0"])
    stream, name = await bus.ensure_consumer(TOPIC, 0)
    previous = PullBatches(await bus.client(), stream, name)
    await previous.start()
    assert [m.data for m in await previous.fetch(1, timeout=5)] == [b"a:0"]  # never answered
    await previous.stop()
    await publish_markers(bus, TOPIC, START + HOUR, [])
    async with consuming(consumer(bus, box, receiver, on_watermark=marks)):
        await eventually(lambda: marks.seen, timeout=30)
    [(_, delivered_before, behind, taken)] = marks.seen
    assert (delivered_before, behind, taken) == (START + HOUR, {}, [b"a:0"])


async def publish_raw_markers(bus: Bus, times: Sequence[datetime]) -> None:
    """Markers as a producer that does not bound them publishes them (every one stored)."""
    js = await bus.jetstream()
    await bus.ensure_stream(TOPIC)
    for time in times:
        await js.publish(naming.subject(bus.prefix, TOPIC, MARKER_TOKEN, 0), encode(time, []),
                         headers={MARKER_HEADER: "1"})


async def test_markers_taken_at_once_are_passed_on_as_the_latest(
        bus: Bus, tmp_path: Path) -> None:
    """Review rbusmark: each marker of a backlog was its own callback (a transaction in
    decisioning, ~70 times slower than events); the latest says all the others do."""
    box = producer(tmp_path, "x", START)
    receiver = Receiver()
    marks = Marks(receiver)
    times = [START + timedelta(seconds=5 * i) for i in range(40)]
    await publish_raw_markers(bus, times)
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with consuming(consumer(bus, box, receiver, on_watermark=marks)):
        await eventually(lambda: marks.seen and marks.seen[-1][1] == times[-1], timeout=30)
        # Nothing was lost on the way: no marker waited for a lost delivery to come again.
        assert loop.time() - began < bus.settings.ack_wait_seconds + CLAIM_MARGIN_SECONDS
    # Batches of 10: a callback a fetch at most, not one a marker.
    assert len(marks.seen) <= 40 // bus.settings.batch
    assert [seen[1] for seen in marks.seen] == sorted(seen[1] for seen in marks.seen)


def test_the_latest_of_two_markers() -> None:
    early = Marker(START, {"a": START - HOUR})
    late = Marker(START + HOUR, {"b": START})
    assert latest(None, early) == early
    assert latest(early, late) == late
    assert latest(late, early) == late
    # The same watermark: each workspace behind at the earlier of its times.
    same = Marker(START, {"a": START - 2 * HOUR, "c": START - HOUR})
    assert latest(early, same) == Marker(START, {"a": START - 2 * HOUR, "c": START - HOUR})


async def test_a_partition_holds_one_marker_waiting_at_most(bus: Bus, tmp_path: Path) -> None:
    """Review rbusmark: identity published a marker to every partition each report whether
    consumed or not (a day's outage: ~415,000 markers to drain)."""
    stored = [await publish_markers(bus, TOPIC, START + timedelta(seconds=i), [])
              for i in range(3)]
    assert stored == [1, 0, 0]

    async def waiting() -> int:
        info = await (await bus.jetstream()).stream_info(naming.stream_name(bus.prefix, TOPIC))
        return int(info.state.messages)
    assert await waiting() == 1

    box = producer(tmp_path, "x", START)
    receiver = Receiver()
    marks = Marks(receiver)
    async with consuming(consumer(bus, box, receiver, on_watermark=marks)):
        await eventually(lambda: marks.seen, timeout=20)
        assert marks.seen[0][1] == START
        # Taken: the next report stores one again.

        async def none_waiting() -> bool:
            return await waiting() == 0
        await eventually(none_waiting, timeout=20)
        assert await publish_markers(bus, TOPIC, START + HOUR, []) == 1
        await eventually(lambda: len(marks.seen) == 2, timeout=20)
        assert marks.seen[1][1] == START + HOUR


def test_a_cycle_s_write_time_unreadable_keeps_the_cycles(tmp_path: Path) -> None:
    """Review rbusmark: a malformed ``written`` in a released claim dropped every cycle
    handed over (and with them their order); now only that time is unknown."""
    worker = consumer(Bus(BusSettings(url=NATS_URL)), producer(tmp_path, "x", START),
                      Receiver())
    record = {"released": "r", "epoch": "e", "cycles": {"a": [2, 5, {"17": 1}], "b": [0, 1, {}]},
              "written": {"a": "soon", "b": START.timestamp()}}
    epoch, cycles = worker._adopt_cycles(0, json.dumps(record).encode(), "mine")
    assert epoch == "e" and sorted(cycles) == ["a", "b"]
    assert (cycles["a"].accept, cycles["a"].assigned, cycles["a"].ahead) == (2, 5, {17: 1})
    assert (cycles["a"].written, cycles["b"].written) == (None, START)
    for written in ("nonsense", 5, [1]):
        _, cycles = worker._adopt_cycles(0, json.dumps({**record, "written": written}).encode(),
                                         "mine")
        assert sorted(cycles) == ["a", "b"]
