"""A bus partition changing hands between replicas (real NATS at 127.0.0.1:4222): what the old
holder gave back reaches the next holder before anything newer, a receiver call under way ends
before the partition changes hands, and a replica whose claim rounds fail stops its partitions
before their claims can lapse. Helpers from test_event_bus."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import test_event_bus
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats_support import nats_listening
from outbox_support import Box
from test_event_bus import TOPIC, Receiver, Stalled, bus_settings, relay, running, stop

import cjo_platform.bus.consumer as consumer_module
from cjo_platform.backoff import RetryPolicy
from cjo_platform.bus import Bus, naming
from cjo_platform.bus.consumer import CYCLE_HEADER, BusConsumer, _Claim, _stopped
from cjo_platform.bus.pull import PullBatches, _status
from cjo_platform.bus.relay import WORKSPACE_HEADER
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


async def taken_by_b(bus: Bus, box: Box, expected: int) -> list[bytes]:
    """What replica B takes of partition 0 (until ``expected`` distinct messages)."""
    receiver = Receiver()
    b = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(), owner="b",
                    retry=FAST)
    task = await running(b)
    try:
        await eventually(lambda: len(set(receiver.taken)) >= expected, timeout=30)
    finally:
        await stop(task)
    return receiver.taken


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
    return await taken_by_b(bus, box, expected)


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
    """Logs (replica, "start"/"end"/"cancelled", payloads) of each call; replica A's calls wait
    for ``a_may_end`` (set by the test) before they take their rows."""

    def __init__(self, name: str, log: list[tuple[str, str, list[str]]]) -> None:
        super().__init__()
        self.name, self.log = name, log
        self.a_may_end = asyncio.Event()

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        payloads = [row.payload.decode() for row in rows]
        self.log.append((self.name, "start", payloads))
        if self.name == "A":
            try:
                await self.a_may_end.wait()
            except asyncio.CancelledError:
                self.log.append((self.name, "cancelled", payloads))
                raise
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


@dataclass
class Joining:
    """Replica A holding both partitions, applying the first of the messages ``sent`` of a
    partition-1 profile (its call waits for ``a_may_end``), when replica B joins."""

    buses: tuple[Bus, Bus]
    log: list[tuple[str, str, list[str]]]
    a: BusConsumer
    a_receiver: Logged
    b: BusConsumer
    tasks: tuple[asyncio.Task[None], asyncio.Task[None]]
    sent: list[bytes]

    async def end(self) -> None:
        self.a_receiver.a_may_end.set()  # lets A stop, also where it waits for its call
        for task in self.tasks:
            await stop(task)
        for bus in self.buses:
            await bus.close()


async def b_joining(prefix: str, box: Box, count: int) -> Joining:
    bus_a, bus_b = buses(prefix, partitions=2, batch=5)
    log: list[tuple[str, str, list[str]]] = []
    a, a_receiver = replica(bus_a, box, "A", log)
    task_a = await running(a)
    await eventually(lambda: a.held_partitions() == [0, 1], timeout=10)
    profile = next(f"q{i}" for i in range(100) if naming.partition_of(f"q{i}", 2) == 1)
    sent = [f"{profile}:{i}".encode() for i in range(count)]
    await relay(bus_a, box, sent)
    await eventually(lambda: bool(log), timeout=10)
    b, _ = replica(bus_b, box, "B", log)
    return Joining((bus_a, bus_b), log, a, a_receiver, b, (task_a, await running(b)), sent)


async def test_a_partition_given_up_mid_call_changes_hands_after_the_call(
        prefix: str, box: Box) -> None:
    # A holds both partitions and is applying a profile's first row when B joins: A gives
    # partition 1 up (fair share). B may start on that profile only once A's call ended (here:
    # was cancelled, as it does not end within SETTLE_SHARE of the claim's lifetime).
    joining = await b_joining(prefix, box, 4)
    log, sent = joining.log, joining.sent
    try:
        await eventually(lambda: joining.b.held_partitions() == [1], timeout=30)
        joining.a_receiver.a_may_end.set()
        await eventually(lambda: sum(len(e[2]) for e in log if e[1] == "end") >= len(sent),
                         timeout=20)
    finally:
        await joining.end()
    a_ended = next(i for i, entry in enumerate(log) if entry[0] == "A" and entry[1] != "start")
    b_started = next(i for i, entry in enumerate(log) if entry[0] == "B")
    assert a_ended < b_started
    applied = [payload for entry in log if entry[1] == "end" for payload in entry[2]]
    assert applied == [p.decode() for p in sent]  # each once, in order


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


async def test_a_stuck_receiver_call_delays_no_other_partitions_claim(
        prefix: str, box: Box) -> None:
    # A holds both partitions; its receiver call for a partition-1 profile never ends. B joins
    # and A gives partition 1 up: that waits for the stuck call, but only SETTLE_SHARE of the
    # claim's lifetime, and the claim of partition 0 is renewed meanwhile (it lapsed and B took
    # partition 0 while A's worker still ran it).
    joining = await b_joining(prefix, box, 1)
    a, b, log, [sent] = joining.a, joining.b, joining.log, joining.sent
    try:
        await eventually(lambda: bool(b.held_partitions()), timeout=30)
        assert (a.held_partitions(), b.held_partitions()) == ([0], [1])
        # The stuck call was cancelled; its message, given back, is B's.
        await eventually(lambda: ("B", "end", [sent.decode()]) in log, timeout=30)
        assert ("A", "cancelled", [sent.decode()]) in log
    finally:
        await joining.end()


@pytest.mark.parametrize("failing", [1, 2, 3, 4, 9])
async def test_a_message_whose_copy_could_not_be_sent_round_keeps_its_place(
        prefix: str, box: Box, failing: int) -> None:
    # A waiting workspace's eleven messages, batch 5: A keeps s:0 and sends the others round
    # (ordinals 0..3 for s:1..s:4 from what its first fetch held, 4..8 for s:5..s:9 as they
    # are fetched, 9 for s:10, published later). Publishing the copy of ordinal ``failing``
    # fails once (a full stream): A's worker stops and takes the partition again with what it
    # handed over; then B takes over and must apply the eleven in their order (ordinal 9's
    # place never came; with 1..3 the messages not sent were handed over twice, so ordinals
    # below the kept message were nobody's: every later message went round for ever).
    bus = Bus(bus_settings(prefix, partitions=1, batch=5, pack_rows=1))
    stalled = [f"s:{i}".encode() for i in range(11)]
    await relay(bus, box, stalled[:10], workspace="stalled")
    a = BusConsumer(bus, TOPIC, Stalled(), box.db, box.dead_letters, ManualClock(), owner="a",
                    retry=FAST)
    go_round = a._go_round
    failed: list[asyncio.Task[Any]] = []

    async def failing_once(msg: Msg, cycle: Any, ordinal: int) -> None:
        if ordinal == failing and not failed:
            failed.append(asyncio.current_task())  # type: ignore[arg-type]
            raise RuntimeError("nats: maximum bytes exceeded")
        await go_round(msg, cycle, ordinal)

    a._go_round = failing_once  # type: ignore[method-assign]
    task = await running(a)
    if failing == 9:
        await eventually(lambda: published(bus, 19), timeout=20)
        await relay(bus, box, stalled[10:], workspace="stalled")
    await eventually(lambda: bool(failed), timeout=20)
    await eventually(lambda: 0 in a._partitions and a._partitions[0].task is not failed[0],
                     timeout=20)
    js = await bus.jetstream()
    info = await js.stream_info(naming.stream_name(bus.prefix, TOPIC))
    await eventually(lambda: published(bus, int(info.state.last_seq) + 1), timeout=20)
    if failing != 9:
        await relay(bus, box, stalled[10:], workspace="stalled")
    await stop(task)
    taken = await taken_by_b(bus, box, len(stalled))
    assert list(dict.fromkeys(taken)) == stalled
    await bus.close()


async def test_a_replica_stopped_while_sending_a_workspace_round_keeps_its_order(
        prefix: str, box: Box) -> None:
    # As above, but A is stopped (a rolling deploy) while it publishes the copy of ordinal 2
    # (s:3) of what its first fetch held: s:3 and s:4, not sent, are given back and must keep
    # their places for B.
    bus = Bus(bus_settings(prefix, partitions=1, batch=5, pack_rows=1))
    stalled = [f"s:{i}".encode() for i in range(10)]
    await relay(bus, box, stalled, workspace="stalled")
    a = BusConsumer(bus, TOPIC, Stalled(), box.db, box.dead_letters, ManualClock(), owner="a",
                    retry=FAST)
    go_round = a._go_round
    publishing = asyncio.Event()

    async def stuck_at_two(msg: Msg, cycle: Any, ordinal: int) -> None:
        if ordinal == 2:
            publishing.set()
            await asyncio.Event().wait()  # until the replica stops
        await go_round(msg, cycle, ordinal)

    a._go_round = stuck_at_two  # type: ignore[method-assign]
    task = await running(a)
    await eventually(publishing.is_set, timeout=20)
    await stop(task)
    taken = await taken_by_b(bus, box, len(stalled))
    assert list(dict.fromkeys(taken)) == stalled
    await bus.close()


async def test_a_partition_slow_to_stop_delays_no_other_claims_renewal(
        prefix: str, box: Box) -> None:
    # A gives partition 1 up (B joins) and stopping it takes long (its receiver call ends only
    # at SETTLE_SHARE, then its pull request ends and what it held goes back over a slow
    # connection). The claim of partition 0 must still be renewed every round: the next round
    # waited for the stop, so a claim was renewed up to renew + settle + stop after the last
    # time, and A killed then left a claim shorter than its messages' ack wait (B applied a
    # profile's newer messages before those A had fetched).
    bus_a, bus_b = buses(prefix, partitions=2, batch=5)
    log: list[tuple[str, str, list[str]]] = []
    a, _ = replica(bus_a, box, "A", log)
    settle = a._settle
    stopping, may_end = asyncio.Event(), asyncio.Event()

    async def slow_settle(partition: int) -> None:
        if partition == 1:
            stopping.set()
            await may_end.wait()
        await settle(partition)

    a._settle = slow_settle  # type: ignore[method-assign]
    task_a = await running(a)
    await eventually(lambda: a.held_partitions() == [0, 1], timeout=10)
    b, _ = replica(bus_b, box, "B", log)
    task_b = await running(b)
    try:
        await eventually(stopping.is_set, timeout=20)
        kv = await bus_b.claims()
        revisions: set[int] = set()

        async def renewed_twice() -> bool:
            entry = await kv.get("claim.test_events.0")
            if entry.value == b"a":
                revisions.add(entry.revision)
            return len(revisions) >= 3

        await eventually(renewed_twice, timeout=20)
        assert not may_end.is_set() and a.held_partitions() == [0]
    finally:
        may_end.set()
        await stop(task_a)
        await stop(task_b)
    await bus_a.close()
    await bus_b.close()


async def test_a_replica_whose_claim_rounds_are_slow_to_fail_stops_before_its_claim_lapses(
        prefix: str, box: Box) -> None:
    # A's receiver call for q:0 never ends; then each of A's claim rounds fails after 1.2 s (a
    # request timing out, as nats-py's do after 5 s). A must stop (cancelling the call, giving
    # q:0 back) before its claim lapses: it stopped only at the end of a failed round, past
    # half the claim's lifetime counted without the failing rounds' own time, and then waited
    # for the call, past the lapse; B took the partition and applied q:1 before q:0.
    bus_a, bus_b = buses(prefix, partitions=1, batch=5)
    log: list[tuple[str, str, list[str]]] = []
    a, _ = replica(bus_a, box, "A", log)  # a_may_end is never set: A's calls never end
    task_a = await running(a)
    await eventually(lambda: a.held_partitions() == [0], timeout=10)
    await relay(bus_a, box, [b"q:0"])
    await eventually(lambda: ("A", "start", ["q:0"]) in log, timeout=10)
    kv = await bus_b.claims()
    last = (await kv.get("claim.test_events.0")).revision

    async def renewed() -> bool:
        return (await kv.get("claim.test_events.0")).revision != last

    await eventually(renewed, timeout=10, interval=0.01)

    async def slow_to_fail() -> None:
        await asyncio.sleep(1.2)
        raise TimeoutError("nats: timeout")

    bus_a.claims = slow_to_fail  # type: ignore[assignment,method-assign]

    async def lapsed() -> bool:
        try:
            await kv.get("claim.test_events.0")
        except KeyNotFoundError:
            return True
        return False

    b, _ = replica(bus_b, box, "B", log)
    await eventually(lapsed, timeout=20)
    task_b = await running(b)
    try:
        await eventually(lambda: b.held_partitions() == [0], timeout=10)
        await relay(bus_b, box, [b"q:1"])
        await eventually(lambda: ("B", "end", ["q:1"]) in log, timeout=20)
    finally:
        await stop(task_a)
        await stop(task_b)
    assert ("A", "cancelled", ["q:0"]) in log
    assert [entry[2] for entry in log if entry[:2] == ("B", "end")] == [["q:0"], ["q:1"]]
    await bus_a.close()
    await bus_b.close()


async def test_a_replica_cancelled_while_its_partitions_stop_deletes_each_claim_after_its_worker(
        prefix: str, box: Box) -> None:
    # A's claim rounds fail and both its partitions stop (each worker waits for its receiver
    # call); A is cancelled meanwhile. Each claim must be deleted only once its own worker
    # ended: the stops were gathered, the gather returned when the first ended, and A deleted
    # the other claim while that worker still ran.
    bus_a, _ = buses(prefix, partitions=2, batch=5)
    a, _ = replica(bus_a, box, "A", [])
    settle = a._settle
    workers: dict[int, asyncio.Task[Any]] = {}
    may_end = {0: asyncio.Event(), 1: asyncio.Event()}

    async def slow_settle(partition: int) -> None:
        workers[partition] = asyncio.current_task()  # type: ignore[assignment]
        await may_end[partition].wait()
        await settle(partition)

    a._settle = slow_settle  # type: ignore[method-assign]
    kv = await bus_a.claims()
    deletes: list[tuple[str, bool]] = []  # (key, whether its worker had ended)
    delete = kv.delete

    async def noted_delete(key: str, *args: Any, **kwargs: Any) -> bool:
        partition = int(key.rsplit(".", 1)[1]) if key.startswith("claim.") else None
        deletes.append((key, partition is None or workers[partition].done()))
        return await delete(key, *args, **kwargs)

    kv.delete = noted_delete  # type: ignore[method-assign]
    claims = bus_a.claims
    broken = False

    async def failing() -> Any:
        if broken:
            raise TimeoutError("claims bucket timed out")
        return await claims()

    bus_a.claims = failing  # type: ignore[method-assign]
    task_a = await running(a)
    await eventually(lambda: a.held_partitions() == [0, 1], timeout=10)
    broken = True
    await eventually(lambda: len(workers) == 2, timeout=20)
    broken = False
    task_a.cancel()
    may_end[0].set()
    await eventually(lambda: workers[0].done()
                     and ("claim.test_events.0", True) in deletes, timeout=10)
    may_end[1].set()
    with pytest.raises(asyncio.CancelledError):
        await task_a
    assert all(ended for _, ended in deletes), deletes
    assert {key for key, _ in deletes} >= {"claim.test_events.0", "claim.test_events.1"}
    await bus_a.close()


async def bucket_of(bus: Bus) -> tuple[Any, Any]:
    """The claims bucket, and a copy of it that ``bus.claims`` returns from now on (the test
    replaces its methods, calling the bucket's)."""
    kv = await bus.claims()
    bucket = copy.copy(kv)

    async def claims() -> Any:
        return bucket

    bus.claims = claims  # type: ignore[method-assign]
    return kv, bucket


class HeldEnd(PullBatches):
    """Partition 0's pull requests (the only consumer's), whose first end status to come once
    ``came`` messages came (the end of the burst under way) is held until a fetch was
    cancelled: the fetch then holds those messages in hand."""

    made: list[HeldEnd] = []

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.came, self.held, self.release = 0, False, asyncio.Event()
        HeldEnd.made.append(self)

    async def _arrive(self, msg: Msg) -> None:
        if not _status(msg):
            self.came += 1
        elif self.came >= 5 and not self.release.is_set():
            self.held = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 10)
        await super()._arrive(msg)

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        try:
            return await super().fetch(batch, timeout)
        except asyncio.CancelledError:
            self.release.set()
            raise


async def test_a_worker_stopped_mid_fetch_gives_back_what_the_fetch_took(
        prefix: str, box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    # A's fetch took q:0..q:4 (or the last of them: earlier fetches may have returned some)
    # and waits for its request's end when A stops (a deploy; a give-up or its deadline is
    # the same). What the fetch took must be given back: it was kept nowhere, so B got it
    # only ack_wait later, after q:5..q:9.
    HeldEnd.made.clear()
    monkeypatch.setattr(consumer_module, "PullBatches", HeldEnd)
    bus = Bus(bus_settings(prefix, partitions=1, batch=50, pack_rows=1))
    a_receiver = Receiver()
    a = BusConsumer(bus, TOPIC, a_receiver, box.db, box.dead_letters, ManualClock(), owner="a")
    task = await running(a)
    await eventually(lambda: waiting_holding(bus, 0), timeout=20)
    first = [f"q:{i}".encode() for i in range(5)]
    await relay(bus, box, first)
    [pulls] = HeldEnd.made
    await eventually(lambda: pulls.held and not pulls._arrived, timeout=10)
    await stop(task)
    more = [f"q:{i}".encode() for i in range(5, 10)]
    await relay(bus, box, more)
    taken = await taken_by_b(bus, box, len(first) + len(more) - len(a_receiver.taken))
    assert list(dict.fromkeys(a_receiver.taken + taken)) == first + more
    await bus.close()


async def test_one_slow_claim_round_stops_no_partition(prefix: str, box: Box) -> None:
    # One claims request of A hangs (a KV hiccup): its round fails after claim_round_seconds
    # and is tried again a fifth of renew_seconds after it began. That retry must renew the
    # claims well before the workers' deadlines (fence_seconds after the last renewal):
    # with the round bound at claim / 6 (ack_wait <= 15 s) the retry began just as they fired,
    # and one slow request stopped and restarted every partition.
    bus = Bus(bus_settings(prefix, partitions=2, batch=5, ack_wait_seconds=1.0, pack_rows=1))
    renew = bus.settings.renew_seconds
    a = BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock(), owner="a")
    loop = asyncio.get_running_loop()
    hang = {"armed": False, "hung": False}
    retry: list[tuple[float, float, bool]] = []  # (began, earliest deadline, any stopping)
    claims = bus.claims

    async def hanging_update(key: str, value: bytes, last: int | None = None) -> int:
        if hang["armed"]:
            hang["armed"], hang["hung"] = False, True
            await asyncio.Event().wait()  # until the round's bound cuts it
        return await kv.update(key, value, last=last)

    async def noted_claims() -> Any:
        if hang["hung"] and not retry:
            retry.append((loop.time(), min(c.deadline for c in a._partitions.values()),
                          any(c.stopping for c in a._partitions.values())))
        return bucket

    kv = await claims()
    bucket = copy.copy(kv)
    bucket.update = hanging_update  # type: ignore[method-assign]
    bus.claims = noted_claims  # type: ignore[method-assign]
    task = await running(a)
    try:
        await eventually(lambda: a.held_partitions() == [0, 1], timeout=10)
        workers = {p: claim.task for p, claim in a._partitions.items()}
        revisions = {p: claim.revision for p, claim in a._partitions.items()}
        hang["armed"] = True
        await eventually(lambda: all(a._partitions[p].revision > revisions[p] for p in workers)
                         and a.claim_error is None and bool(retry), timeout=20)
        [(began, deadline, stopping)] = retry
        assert not stopping
        assert deadline - began >= renew / 8
        assert {p: claim.task for p, claim in a._partitions.items()} == workers
        assert not any(claim.stopping or claim.task.done() for claim in a._partitions.values())
    finally:
        await stop(task)
        await bus.close()


async def test_a_renewal_answered_as_the_deadline_fires_does_not_fail_the_round() -> None:
    # A renewal's answer handled in the loop iteration in which the worker's deadline fired,
    # before the worker ran its finally (I/O callbacks before timers, on a busy loop): the
    # deadline must not be moved on (Timeout.reschedule raised RuntimeError "Cannot change
    # state of expiring Timeout", failing the whole claim round and the replica's health).
    loop = asyncio.get_running_loop()
    now = loop.time()
    claim = _Claim(revision=1, asked=now, deadline=now + 0.05)

    async def work() -> None:  # BusConsumer._work and _pull, reduced
        lease = claim.lease = asyncio.timeout_at(claim.deadline)
        with contextlib.suppress(TimeoutError):
            async with lease:
                try:
                    await asyncio.Event().wait()  # fetching
                finally:
                    claim.stop()

    claim.task = asyncio.create_task(work())
    answer: asyncio.Future[int] = loop.create_future()  # the kv.update the round awaits
    loop.call_at(claim.deadline - 0.002, time.sleep, 0.01)  # the loop is busy for 10 ms
    loop.call_at(claim.deadline - 0.001, answer.set_result, 2)  # the answer comes just before
    revision = await answer
    claim.renewed(revision, loop.time(), loop.time() + 5)  # as _tend_claims does
    await claim.task
    assert claim.lease is not None and claim.lease.expired()


async def test_a_renewal_applied_but_answered_too_late_keeps_the_partition(
        prefix: str, box: Box) -> None:
    # The server applied a renewal of A's claim whose answer came after the round's bound: A
    # kept the revision before it, so the next round's renewal failed on it and was read as
    # the claim lost; the partition stopped and stalled until its own claim lapsed (nobody
    # could create it meanwhile, A included). The claim, still A's, is renewed at its revision.
    bus = Bus(bus_settings(prefix, partitions=1, batch=5, ack_wait_seconds=1.0, pack_rows=1))
    receiver = Receiver()
    a = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(), owner="a")
    state: dict[str, Any] = {"armed": False, "applied": None, "rounds": 0}

    async def late_update(key: str, value: bytes, last: int | None = None) -> int:
        revision: int = await kv.update(key, value, last=last)
        if state["armed"]:
            state["armed"], state["applied"] = False, revision
            await asyncio.Event().wait()  # answered after the round's bound cut it
        return revision

    async def noted_put(key: str, value: bytes) -> int:
        if state["applied"] is not None and key.startswith("member."):
            state["rounds"] += 1  # a round after the late one renewed its claims
        revision: int = await kv.put(key, value)
        return revision

    kv, bucket = await bucket_of(bus)
    bucket.update = late_update  # type: ignore[method-assign]
    bucket.put = noted_put  # type: ignore[method-assign]
    task = await running(a)
    try:
        await eventually(lambda: a.held_partitions() == [0], timeout=10)
        worker = a._partitions[0].task
        state["armed"] = True
        await eventually(lambda: state["rounds"] >= 1, timeout=20)
        assert a.held_partitions() == [0] and a.claim_error is None
        claim = a._partitions[0]
        assert claim.task is worker and not claim.stopping and claim.revision > state["applied"]
        await relay(bus, box, [b"q:0"])
        await eventually(lambda: receiver.taken == [b"q:0"], timeout=10)
    finally:
        await stop(task)
        await bus.close()


async def test_a_claim_of_its_own_left_behind_is_taken_up_at_once(prefix: str, box: Box) -> None:
    # A claim of A's own is left (its delete failed on a stale revision after a renewal
    # answered too late): A's next round takes the partition up rather than waiting a claim
    # lifetime for it to lapse (the create failed on it; nobody else could take it either).
    bus = Bus(bus_settings(prefix, partitions=1, batch=5, ack_wait_seconds=1.0, pack_rows=1))
    a = BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock(), owner="a")
    kv, bucket = await bucket_of(bus)
    await kv.create("claim.test_events.0", b"a")
    rounds = 0

    async def noted_put(key: str, value: bytes) -> int:
        nonlocal rounds
        if key.startswith("member."):
            rounds += 1
        revision: int = await kv.put(key, value)
        return revision

    bucket.put = noted_put  # type: ignore[method-assign]
    task = await running(a)
    try:
        await eventually(lambda: rounds >= 2, timeout=10)  # the first round ended
        assert a.held_partitions() == [0] and a.claim_error is None
    finally:
        await stop(task)
        await bus.close()


async def test_a_round_renews_the_claims_before_deleting_those_of_ended_workers(
        prefix: str, box: Box) -> None:
    # Partition 0's worker ended (crashed): the next round deletes its claim, after renewing
    # partition 1's (a slow delete delayed the renewals behind it).
    bus = Bus(bus_settings(prefix, partitions=2, batch=5, ack_wait_seconds=1.0, pack_rows=1))
    a = BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock(), owner="a")
    kv, bucket = await bucket_of(bus)
    calls: list[tuple[str, str]] = []

    async def noted_update(key: str, value: bytes, last: int | None = None) -> int:
        calls.append(("update", key))
        revision: int = await kv.update(key, value, last=last)
        return revision

    async def noted_delete(key: str, *args: Any, **kwargs: Any) -> bool:
        calls.append(("delete", key))
        done: bool = await kv.delete(key, *args, **kwargs)
        return done

    bucket.update = noted_update  # type: ignore[method-assign]
    bucket.delete = noted_delete  # type: ignore[method-assign]
    task = await running(a)
    try:
        await eventually(lambda: a.held_partitions() == [0, 1], timeout=10)
        worker = a._partitions[0].task
        worker.cancel()
        await eventually(worker.done, timeout=10)
        calls.clear()
        await eventually(lambda: ("delete", "claim.test_events.0") in calls, timeout=10)
        assert calls.index(("update", "claim.test_events.1")) < calls.index(
            ("delete", "claim.test_events.0"))
    finally:
        await stop(task)
        await bus.close()


async def test_a_worker_crashing_as_it_stops_has_its_exception_read() -> None:
    # A worker stopped (given up) that fails while giving back: its exception is read and
    # logged, not left for "Task exception was never retrieved" at garbage collection.
    async def work() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("giving back failed")

    claim = _Claim(revision=1, asked=0.0, deadline=0.0)
    claim.task = asyncio.create_task(work())
    await asyncio.sleep(0)  # the worker runs
    await _stopped(claim)
    assert claim.task.done() and not claim.task._log_traceback  # type: ignore[attr-defined]


async def test_a_partition_still_ending_is_not_taken_up_again(
        prefix: str, box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition given up (fair share) while its worker is slow to end is not taken up
    again from our own claim, still in the bucket, before that worker ended (review rho3: no
    test failed without the guard); once it ended, the claim is deleted and the partition
    claimed again, and nothing stays marked as ending."""
    bus = Bus(bus_settings(prefix, partitions=2, batch=5, ack_wait_seconds=1.0, pack_rows=1))
    renew = bus.settings.renew_seconds
    a = BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock(), owner="a")
    real_stop = PullBatches.stop
    slow = asyncio.Event()

    async def slow_stop(self: PullBatches) -> list[Any]:
        if slow.is_set():
            await asyncio.sleep(2.5 * renew)  # the worker ends over two rounds
        return await real_stop(self)

    monkeypatch.setattr(PullBatches, "stop", slow_stop)
    kv = await bus.claims()
    task = await running(a)
    try:
        await eventually(lambda: a.held_partitions() == [0, 1], timeout=10)
        old = a._partitions[1].task
        slow.set()
        await kv.put("member.test_events.other", b"1")  # a fair share of 1: partition 1 goes
        await eventually(lambda: 1 not in a._partitions, timeout=10)
        await kv.delete("member.test_events.other")  # a fair share of 2: wanted back
        taken_up_early = False
        while not old.done():
            taken_up_early |= 1 in a._partitions
            await asyncio.sleep(0.05)
        assert not taken_up_early, "partition 1 taken up again while its worker was ending"
        await eventually(lambda: a.held_partitions() == [0, 1], timeout=3 * renew)
        assert a._ending == set()
    finally:
        await stop(task)
        await bus.close()


class CutOff:
    """A replica's claims bucket on a connection that dropped: each write times out for the
    caller, but nats-py keeps it buffered and sends it when it reconnects (:meth:`reconnect`),
    maybe after another replica took the partition."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.buffered: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...],
                                  dict[str, Any]]] = []
        self.methods = {name: getattr(kv, name) for name in ("put", "update", "delete",
                                                              "create")}
        for name, method in self.methods.items():
            setattr(kv, name, self._buffering(method))

    def _buffering(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def buffered(*args: Any, **kwargs: Any) -> Any:
            self.buffered.append((method, args, kwargs))
            raise TimeoutError("nats: timeout")
        return buffered

    async def reconnect(self) -> None:
        for name, method in self.methods.items():
            setattr(self.kv, name, method)
        for method, args, kwargs in self.buffered:
            with contextlib.suppress(Exception):  # a compare-and-set may fail now
                await method(*args, **kwargs)


async def test_a_release_sent_late_leaves_no_cycles_for_a_later_holder(
        prefix: str, box: Box) -> None:
    # A sends a waiting workspace's messages round, its connection drops and it stops: its
    # hand-over of the cycles times out, but goes out when the connection comes back, after B
    # took the partition (having found nothing). B takes everything and stops with no cycles of
    # its own. C must not adopt A's stale cycles: they wait for an ordinal whose message B
    # took, and every new message of the workspace went round the stream for ever.
    settings = bus_settings(prefix, partitions=1, ack_wait_seconds=1.0, batch=5, pack_rows=1)
    bus_a, bus_b, bus_c = Bus(settings), Bus(settings), Bus(settings)
    stalled = [f"s:{i}".encode() for i in range(10)]
    await relay(bus_a, box, stalled, workspace="stalled")
    a = BusConsumer(bus_a, TOPIC, Stalled(), box.db, box.dead_letters, ManualClock(), owner="a",
                    retry=FAST)
    task_a = await running(a)
    await eventually(lambda: published(bus_a, len(stalled) + 4), timeout=20)
    cut = CutOff(await bus_a.claims())
    await stop(task_a)
    assert cut.buffered  # the hand-over (and the claim's delete) timed out
    receiver_b = Receiver()
    b = BusConsumer(bus_b, TOPIC, receiver_b, box.db, box.dead_letters, ManualClock(),
                    owner="b", retry=FAST)
    task_b = await running(b)  # takes the partition once A's claim lapsed
    await eventually(lambda: set(receiver_b.taken) == set(stalled), timeout=30)
    await cut.reconnect()
    await stop(task_b)
    more = [f"n:{i}".encode() for i in range(3)]
    await relay(bus_c, box, more, workspace="stalled")
    receiver_c = Receiver()
    c = BusConsumer(bus_c, TOPIC, receiver_c, box.db, box.dead_letters, ManualClock(),
                    owner="c", retry=FAST)
    task_c = await running(c)
    try:
        # Well within a claim's lifetime (12 s), after which C gives up on stale cycles.
        await eventually(lambda: set(receiver_c.taken) >= set(more), timeout=8)
    finally:
        await stop(task_c)
    assert [p for p in receiver_c.taken if p in more] == more
    for bus in (bus_a, bus_b, bus_c):
        await bus.close()


async def released(prefix: str, cycle: list[Any]) -> tuple[Bus, bytes]:
    """A bus (ack wait 1 s) whose partition 0 a holder released with workspace ``stalled``'s
    ``cycle`` ([accept, assigned, ahead]) in it, and that release."""
    bus = Bus(bus_settings(prefix, partitions=1, ack_wait_seconds=1.0, batch=5, pack_rows=1))
    record = json.dumps({"released": "x", "epoch": "x/0/gone",
                         "cycles": {"stalled": cycle}}).encode()
    await (await bus.claims()).put("claim.test_events.0", record)
    return bus, record


async def test_a_worker_failing_before_it_fetched_passes_the_cycles_it_took_over_on(
        prefix: str, box: Box) -> None:
    # C takes over a claim released with cycles; its worker fails before it fetched anything
    # (its consumer could not be made): the cycles must go on with the claim's release, to C's
    # next worker here, not be lost with the worker.
    bus, record = await released(prefix, [0, 2, {}])
    ensure = bus.ensure_consumer
    calls: list[int] = []

    async def failing_once(topic: str, partition: int) -> tuple[str, str]:
        calls.append(partition)
        if len(calls) == 1:
            raise RuntimeError("nats: timeout")
        return await ensure(topic, partition)

    bus.ensure_consumer = failing_once  # type: ignore[method-assign]
    c = BusConsumer(bus, TOPIC, Receiver(), box.db, box.dead_letters, ManualClock(), owner="c",
                    retry=FAST)
    task = await running(c)
    try:
        await eventually(lambda: len(calls) >= 2 and c.held_partitions() == [0], timeout=20)
        assert c._partitions[0].adopted == record
    finally:
        await stop(task)
    await bus.close()


class SlowOthers(Receiver):
    """Takes everything; workspace ``other``'s calls take 0.4 s each (a busy receiver)."""

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        if workspace_id == "other":
            await asyncio.sleep(0.4)
        return await super().__call__(workspace_id, rows)


async def test_a_partition_more_than_a_claim_behind_keeps_the_handed_over_order(
        prefix: str, box: Box) -> None:
    """Review rcycles: a time limit on adopted cycles skipped the places of a partition that
    was merely slow (a backlog of more than a claim's lifetime, 12 s here, before the previous
    holder's copies) and applied the workspace's newer message first."""
    # The stream as A left it when it released the partition: it had fetched s:0 (taken), s:1
    # and s:2 (sent round as copies 0 and 1 of epoch E, at the stream's end); behind its fetch
    # point the producers had put a backlog of workspace other's messages (~16 s of work) and
    # one newer message of workspace stalled, s:3.
    backlog = 200
    bus = Bus(bus_settings(prefix, partitions=1, ack_wait_seconds=1.0, batch=5, pack_rows=1))
    await relay(bus, box, [f"o:{i}".encode() for i in range(backlog)], workspace="other")
    await relay(bus, box, [b"s:3"], workspace="stalled")
    js = await bus.jetstream()
    subject = naming.subject(bus.prefix, TOPIC, "stalled", 0)
    for ordinal, payload in enumerate([b"s:1", b"s:2"]):
        await js.publish(subject, payload, headers={WORKSPACE_HEADER: "stalled",
                                                    CYCLE_HEADER: f"E {ordinal}"})
    record = {"released": "a", "epoch": "E", "cycles": {"stalled": [0, 2, {}]}}
    await (await bus.claims()).put("claim.test_events.0", json.dumps(record).encode())
    receiver = SlowOthers()
    b = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(), owner="b",
                    retry=FAST)
    task = await running(b)
    try:
        await eventually(lambda: len(receiver.taken) >= backlog + 3, timeout=90)
    finally:
        await stop(task)
    await bus.close()
    assert [p for p in receiver.taken if p.startswith(b"s:")] == [b"s:1", b"s:2", b"s:3"]


async def test_a_held_message_the_stream_aged_out_does_not_stall_the_next_holder(
        prefix: str, box: Box) -> None:
    """Review rcyc2: A holds a waiting workspace's first message (its receiver busy) until the
    stream's max_age removes it, then gives the partition up: its record placed that message
    just below ``accept``, B waited for it for ever and sent every message of the workspace
    round the stream in a busy loop. B now finds it gone from the stream and skips its place."""
    bus = Bus(bus_settings(prefix, partitions=1, batch=5, pack_rows=1, ack_wait_seconds=1.0,
                           max_age_hours=3 / 3600, duplicate_window_seconds=1.0))
    stalled = [f"s:{i}".encode() for i in range(10)]
    await relay(bus, box, stalled, workspace="stalled")
    js = await bus.jetstream()
    stream = naming.stream_name(bus.prefix, TOPIC)

    async def first_gone() -> bool:
        try:
            await js.get_msg(stream, 1)  # s:0, held by A
        except NotFoundError:
            return True
        return False

    a = BusConsumer(bus, TOPIC, Stalled(), box.db, box.dead_letters, ManualClock(), owner="a",
                    retry=FAST)
    task = await running(a)
    try:
        await eventually(lambda: published(bus, 20), timeout=20)  # s:1.. going round
        await eventually(first_gone, timeout=20)  # max_age removed s:0 while A held it
    finally:
        await stop(task)
    receiver = Receiver()  # the workspace's receiver is back
    b = BusConsumer(bus, TOPIC, receiver, box.db, box.dead_letters, ManualClock(), owner="b",
                    retry=FAST)
    task = await running(b)
    try:
        await eventually(lambda: set(receiver.taken) >= set(stalled[1:]), timeout=20)
    finally:
        await stop(task)
    await bus.close()
    assert list(dict.fromkeys(receiver.taken)) == stalled[1:]  # in order; s:0 lost to max_age
