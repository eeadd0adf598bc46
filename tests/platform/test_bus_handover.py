"""A bus partition changing hands between replicas (real NATS at 127.0.0.1:4222): what the old
holder gave back reaches the next holder before anything newer, a receiver call under way ends
before the partition changes hands, and a replica whose claim rounds fail stops its partitions
before their claims can lapse. Helpers from test_event_bus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import pytest
import test_event_bus
from nats.js.errors import NotFoundError
from nats_support import nats_listening
from outbox_support import Box
from test_event_bus import TOPIC, Receiver, Stalled, bus_settings, relay, running, stop

from cjo_platform.backoff import RetryPolicy
from cjo_platform.bus import Bus, naming
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.clock import ManualClock
from cjo_platform.db.outbox import OutboxRow, Refusal
from support import eventually

pytestmark = pytest.mark.skipif(not nats_listening(),
                                reason="no NATS server with JetStream at 127.0.0.1:4222")

prefix = test_event_bus.prefix  # fixtures
box = test_event_bus.box

FAST = RetryPolicy(base_delay=timedelta(seconds=0.2), max_delay=timedelta(seconds=0.5))


async def waiting_holding(bus: Bus, holding: int) -> bool:
    """Whether partition 0's holder has a pull request waiting at the server while it holds
    ``holding`` messages unanswered."""
    js = await bus.jetstream()
    try:
        info = await js.consumer_info(naming.stream_name(bus.prefix, TOPIC),
                                      naming.consumer_name(TOPIC, 0))
    except NotFoundError:  # not made yet
        return False
    return (info.num_waiting, info.num_ack_pending) == (1, holding)


async def taken_over(bus: Bus, box: Box, ready: Callable[[], Awaitable[bool]],
                     more: list[bytes], expected: int) -> list[bytes]:
    """What replica B takes (until ``expected`` distinct messages) of partition 0 once replica
    A, whose receiver asks for workspace ``stalled``'s messages later, stopped when ``ready``;
    ``more`` of that workspace is published in between."""
    a = BusConsumer(bus, TOPIC, Stalled(), box.db, box.dead_letters, ManualClock(), owner="a",
                    retry=FAST)
    task = await running(a)
    await eventually(ready, timeout=20)
    await stop(task)
    if more:
        await relay(bus, box, more, workspace="stalled")
    receiver = Receiver()
    b = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(), owner="b",
                    retry=FAST)
    task = await running(b)
    try:
        await eventually(lambda: len(set(receiver.taken)) >= expected, timeout=30)
    finally:
        await stop(task)
    return receiver.taken


@pytest.mark.parametrize("run", range(5))
async def test_what_a_stopped_holder_gave_back_comes_before_newer_messages(
        prefix: str, box: Box, run: int) -> None:
    # A holds a waiting workspace's five messages (its receiver asks for them later) while its
    # pull request waits at the server for more; A stops (a rolling deploy). What it gave back
    # must reach the next holder first, not be taken by A's request still waiting at the server.
    bus = Bus(bus_settings(prefix, partitions=1, batch=50, pack_rows=1))
    first = [f"s:{i}".encode() for i in range(5)]
    await relay(bus, box, first, workspace="stalled")
    more = [f"s:{i}".encode() for i in range(5, 10)]
    taken = await taken_over(bus, box, lambda: waiting_holding(bus, 5), more, 10)
    assert taken == first + more  # nothing goes round: no copy comes twice
    await bus.close()


class Logged(Receiver):
    """Logs (replica, "start"/"end", payloads) of each call; replica A's calls wait for
    ``a_may_end`` (set by the test) before they take their rows."""

    def __init__(self, name: str, log: list[tuple[str, str, list[str]]]) -> None:
        super().__init__()
        self.name, self.log = name, log
        self.a_may_end = asyncio.Event()

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        payloads = [row.payload.decode() for row in rows]
        self.log.append((self.name, "start", payloads))
        if self.name == "A":
            await self.a_may_end.wait()
        out = await super().__call__(workspace_id, rows)
        self.log.append((self.name, "end", payloads))
        return out


def buses(prefix: str, partitions: int, batch: int) -> tuple[Bus, Bus]:
    """Two replicas' connections, ack wait 1 s (a claim lasts 9 s, renewed every 3 s)."""
    settings = bus_settings(prefix, partitions=partitions, ack_wait_seconds=1.0, batch=batch,
                            pack_rows=1)
    return Bus(settings), Bus(settings)


def replica(bus: Bus, box: Box, name: str, log: list[tuple[str, str, list[str]]],
            ) -> tuple[BusConsumer, Logged]:
    receiver = Logged(name, log)
    return BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(),
                       owner=name.lower()), receiver


async def test_a_partition_given_up_mid_call_changes_hands_after_the_call(
        prefix: str, box: Box) -> None:
    # A holds both partitions and is applying a profile's first row when B joins: A gives
    # partition 1 up (fair share). B may start on that profile only once A's call ended.
    bus_a, bus_b = buses(prefix, partitions=2, batch=5)
    settings = bus_a.settings
    log: list[tuple[str, str, list[str]]] = []
    a, a_receiver = replica(bus_a, box, "A", log)
    task_a = await running(a)
    await eventually(lambda: a.held_partitions() == [0, 1], timeout=10)
    profile = next(f"q{i}" for i in range(100) if naming.partition_of(f"q{i}", 2) == 1)
    sent = [f"{profile}:{i}".encode() for i in range(4)]
    await relay(bus_a, box, sent)
    await eventually(lambda: bool(log), timeout=10)
    b, _ = replica(bus_b, box, "B", log)
    task_b = await running(b)
    try:
        # A's call goes on until B holds partition 1, or B had two claim rounds to take it.
        with contextlib.suppress(AssertionError):  # not within that time: as it should be
            await eventually(lambda: b.held_partitions() == [1],
                             timeout=2 * settings.renew_seconds + 1)
        taken_by_b_meanwhile = [entry for entry in log if entry[0] == "B"]
        a_receiver.a_may_end.set()
        await eventually(lambda: b.held_partitions() == [1], timeout=20)
        await eventually(lambda: sum(len(e[2]) for e in log if e[1] == "end") >= len(sent),
                         timeout=20)
    finally:
        await stop(task_a)
        await stop(task_b)
    assert taken_by_b_meanwhile == []
    applied = [payload for entry in log if entry[1] == "end" for payload in entry[2]]
    assert applied == [p.decode() for p in sent]  # each once, in order
    await bus_a.close()
    await bus_b.close()


async def test_a_replica_whose_claim_rounds_fail_stops_before_its_claim_can_lapse(
        prefix: str, box: Box) -> None:
    # A holds the only partition; then its claim rounds fail (the claims bucket times out). B
    # takes the partition once A's claim lapsed: A must have stopped working it by then.
    bus_a, bus_b = buses(prefix, partitions=1, batch=2)
    log: list[tuple[str, str, list[str]]] = []
    a, a_receiver = replica(bus_a, box, "A", log)
    a_receiver.a_may_end.set()
    task_a = await running(a)
    await eventually(lambda: a.held_partitions() == [0], timeout=10)

    async def broken() -> None:
        raise TimeoutError("claims bucket timed out")

    bus_a.claims = broken  # type: ignore[assignment,method-assign]
    b, _ = replica(bus_b, box, "B", log)
    task_b = await running(b)
    try:
        await eventually(lambda: b.held_partitions() == [0], timeout=30)
        assert a.held_partitions() == []
        assert a.claim_error is not None
        sent = [f"p0:{i}".encode() for i in range(6)]
        await relay(bus_b, box, sent)
        await eventually(lambda: sum(len(e[2]) for e in log if e[1] == "end") >= len(sent),
                         timeout=30)
    finally:
        await stop(task_a)
        await stop(task_b)
    assert {entry[0] for entry in log} == {"B"}
    await bus_a.close()
    await bus_b.close()


async def published(bus: Bus, at_least: int) -> bool:
    js = await bus.jetstream()
    info = await js.stream_info(naming.stream_name(bus.prefix, TOPIC))
    return int(info.state.last_seq) >= at_least


@pytest.mark.parametrize("copies", [3, 12, 21, 30])
async def test_a_waiting_workspaces_messages_going_round_keep_their_order_across_a_handover(
        prefix: str, box: Box, copies: int) -> None:
    # Batch 5: the waiting workspace may keep one message, the other nine go round the stream
    # (republished at its end, in an order only their holder knows). A stops after ``copies``
    # copies were published; B must apply the ten in their order.
    bus = Bus(bus_settings(prefix, partitions=1, batch=5, pack_rows=1))
    stalled = [f"s:{i}".encode() for i in range(10)]
    await relay(bus, box, stalled, workspace="stalled")
    taken = await taken_over(bus, box, lambda: published(bus, len(stalled) + copies), [],
                             len(stalled))
    # A copy published by A just before it stopped may come twice: receivers dedupe.
    assert list(dict.fromkeys(taken)) == stalled
    await bus.close()
