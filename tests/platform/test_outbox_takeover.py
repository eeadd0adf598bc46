"""A forwarder paused past its lease (a GC pause, CPU starvation) finds its rows taken over by
another replica, which sends them: resumed, it sends none of them again from memory (review
rperfj: both replicas sent all 12,000 rows of a burst), and rows it settled, held or
dead-lettered itself are not mistaken for rows taken over. Also the hand-off queue's bound in
payload bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from outbox_support import Box, Rounds, started, stop, two_boxes

from cjo_platform.clock import ManualClock
from cjo_platform.db.outbox import Forwarder, Later, OutboxRow, Refusal
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from support import Backend, eventually

LEASE = timedelta(seconds=60)


@pytest.fixture
def boxes(backend: Backend) -> Iterator[tuple[Box, Box]]:
    with two_boxes(backend) as pair:
        yield pair


def clock_of(box: Box) -> ManualClock:
    clock = box.outbox.clock
    assert isinstance(clock, ManualClock)
    return clock


def rows(workspace: str, count: int, first: int = 0) -> list[bytes]:
    return [f"{workspace}-{n}".encode() for n in range(first, first + count)]


class Receiver:
    """Records what a forwarder sent; its first call waits at the gate (the pause) when
    ``gated``, and runs ``paused`` meanwhile."""

    def __init__(self, gated: bool = False) -> None:
        self.got: list[bytes] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def send(self, workspace: str, batch: Sequence[OutboxRow]) -> None:
        self.entered.set()
        await self.gate.wait()
        self.got.extend(r.payload for r in batch)


async def test_a_claimed_round_paused_past_its_lease_sends_none_of_the_rows_taken_over(
        boxes: tuple[Box, Box]) -> None:
    """A's round (three workspaces, a call each) pauses in its first call past the lease; B
    claims the rows and sends them all. A, resumed, finishes the call under way and then sends
    nothing more of that round (it sent all 30 before), and its next round works as ever."""
    first, second = boxes
    clock = clock_of(first)
    for workspace in ("a", "b", "c"):
        first.queue("t", workspace, rows(workspace, 10))
    a_recv, b_recv = Receiver(gated=True), Receiver()
    a = Forwarder(first.db, first.outbox, "t", a_recv.send, lease=LEASE)
    b = Forwarder(second.db, second.outbox, "t", b_recv.send, lease=LEASE)
    round_a = asyncio.create_task(a.drain_once())
    await asyncio.wait_for(a_recv.entered.wait(), 10)
    clock.advance(LEASE + timedelta(seconds=1))  # A is paused past its lease
    assert await b.drain_once() == 30
    a_recv.gate.set()
    assert await asyncio.wait_for(round_a, 10) == 30  # the round ends without an error
    assert sorted(b_recv.got) == sorted(rows("a", 10) + rows("b", 10) + rows("c", 10))
    assert a_recv.got == rows("a", 10)  # the call under way when it paused, no more
    assert not a._sending and not a._unsettled
    # Nothing is stuck: A's next round claims and sends new rows at once.
    first.queue("t", "b", rows("b", 5, first=10))
    assert await a.drain_once() == 5
    assert a_recv.got[10:] == rows("b", 5, first=10)
    assert first.queued() == 0


async def test_rows_handed_off_and_taken_over_while_paused_leave_the_queue(
        boxes: tuple[Box, Box]) -> None:
    """A hand-off of two calls pauses in its first call, a second unit of work queued behind
    it; B takes all of them over. A, resumed, sends neither the second call nor the queue,
    deletes nothing of B's, fails no round, and takes hand-offs again afterwards."""
    first, second = boxes
    clock = clock_of(first)
    a_recv, b_recv = Receiver(gated=True), Receiver()
    a = Forwarder(first.db, first.outbox, "t", a_recv.send, lease=LEASE, batch_size=100,
                  poll_interval=60)
    b = Forwarder(second.db, second.outbox, "t", b_recv.send, lease=LEASE, hand_off=False)
    rounds = Rounds(a)
    transactions = Transactions(first.db, clock, first.outbox)

    def work(workspace: str, count: int, start: int = 0) -> Any:
        def publish(uow: UnitOfWork) -> None:
            uow.publish("t", workspace, [(p, "") for p in rows(workspace, count, start)])
        return publish

    task = await started(a, rounds)
    try:
        await transactions.run(work("a", 150))  # handed off: two calls (100 + 50)
        await asyncio.wait_for(a_recv.entered.wait(), 10)
        await transactions.run(work("b", 50))  # queued behind the round
        assert len(a._queue) == 50
        clock.advance(LEASE + timedelta(seconds=1))
        assert await b.drain_once() == 200
        a_recv.gate.set()
        await eventually(lambda: rounds.idle() and not a._sending)
        assert a_recv.got == rows("a", 100)
        assert not a._queue and not a._unsettled
        assert sorted(b_recv.got) == sorted(rows("a", 150) + rows("b", 50))
        # Handed off again (no row of the topic left that is not A's), and sent.
        await transactions.run(work("c", 10))
        await eventually(lambda: len(a_recv.got) == 110)
        await eventually(lambda: first.queued() == 0)
    finally:
        await stop(task)
    assert a_recv.got[100:] == rows("c", 10)
    assert rounds.failures == []


async def test_rows_settled_or_held_by_the_forwarder_itself_are_not_taken_for_taken_over(
        boxes: tuple[Box, Box]) -> None:
    """A renewal in the middle of a long round finds gone the rows the round delivered (and
    deleted), dead-lettered and held for later: none of them was taken over, so the round goes
    on."""
    first, _ = boxes
    clock = clock_of(first)
    for workspace in ("a", "b", "c"):
        first.queue("t", workspace, rows(workspace, 10))
    got: list[bytes] = []

    async def send(workspace: str, batch: Sequence[OutboxRow]) -> list[Refusal]:
        # Each call takes 40% of the lease: the third one renews the leases.
        clock.advance(LEASE * 0.4)
        if workspace == "b":
            raise Later("busy")  # held for a retry: in no forwarder's hands
        got.extend(r.payload for r in batch[1:])
        return [Refusal(batch[0], "bad")]  # dead-lettered

    forwarder = Forwarder(first.db, first.outbox, "t", send, lease=LEASE)
    renewals: list[set[int]] = []
    renew = forwarder._renew

    def watched() -> set[int]:
        renewals.append(lost := renew())
        return lost

    forwarder._renew = watched  # type: ignore[method-assign]
    assert await forwarder.drain_once() == 30
    assert renewals == [set()]
    assert got == rows("a", 10)[1:] + rows("c", 10)[1:]
    assert first.queued() == 10  # b's, held
    assert len(first.letters("a")) == len(first.letters("c")) == 1


async def test_the_hand_off_queue_holds_no_more_than_its_payload_bytes(
        boxes: tuple[Box, Box]) -> None:
    """Beside its rows, the queue's bound counts payload bytes (``hand_off_bytes``): a unit of
    work that would take it past them waits for a claim, and order is kept (review rperfj:
    16,000 facts of ids at their limit held ~30 MB per forwarder, queued alone)."""
    first, _ = boxes
    clock = clock_of(first)
    recv = Receiver(gated=True)
    forwarder = Forwarder(first.db, first.outbox, "t", recv.send, batch_size=100,
                          poll_interval=60, hand_off_bytes=1000)
    rounds = Rounds(forwarder)
    transactions = Transactions(first.db, clock, first.outbox)
    payload = bytes(95)

    def work(first_n: int, count: int) -> Any:
        def publish(uow: UnitOfWork) -> None:
            uow.publish("t", "ws", [(payload + n.to_bytes(5), "")
                                    for n in range(first_n, first_n + count)])
        return publish

    task = await started(forwarder, rounds)
    try:
        await transactions.run(work(0, 1))  # taken; its call waits at the gate
        await asyncio.wait_for(recv.entered.wait(), 10)
        await transactions.run(work(1, 6))  # 600 bytes: queued
        await transactions.run(work(7, 5))  # 500 more: past 1,000, left for a claim
        queued, queued_bytes = len(forwarder._queue), forwarder._queued_bytes
        await transactions.run(work(12, 3))  # behind a row waiting for a claim: a claim too
        recv.gate.set()
        await eventually(lambda: len(recv.got) == 15)
        await eventually(lambda: first.queued() == 0)
    finally:
        await stop(task)
    assert (queued, queued_bytes) == (6, 600)
    assert recv.got == [payload + n.to_bytes(5) for n in range(15)]
    assert forwarder._queued_bytes == forwarder._reserved_bytes == 0
    assert rounds.failures == []


def one_call_each(workspace: str, count: int) -> list[bytes]:
    """Rows of 5 bytes: one call each under ``max_call_bytes=10``."""
    return [f"{workspace}-{n:03}".encode() for n in range(count)]


def watch_renewals(forwarder: Forwarder) -> list[set[int]]:
    renewals: list[set[int]] = []
    renew = forwarder._renew

    def watched() -> set[int]:
        renewals.append(lost := renew())
        return lost

    forwarder._renew = watched  # type: ignore[method-assign]
    return renewals


async def test_queued_rows_lapse_during_a_claimed_round_of_16s_calls(
        boxes: tuple[Box, Box]) -> None:
    """Review rrenew: with no pause at all, a claimed round's renewal time was the claim's, so
    rows queued before it (leased at their hand-off) were renewed only when the claim's lease
    was half gone: with 16-s calls (each well under half the lease) they lapsed, another replica
    took them, and this one cut its round as if it had been paused."""
    first, second = boxes
    clock = clock_of(first)
    gate, entered = asyncio.Event(), asyncio.Event()
    log: list[tuple[str, bytes, float]] = []
    b_got: list[bytes] = []

    async def send_b(workspace: str, batch: Sequence[OutboxRow]) -> None:
        b_got.extend(r.payload for r in batch)

    b = Forwarder(second.db, second.outbox, "t", send_b, lease=LEASE, hand_off=False)
    b_claimed: list[int] = []

    async def send(workspace: str, batch: Sequence[OutboxRow]) -> None:
        if workspace == "h":
            entered.set()
            await gate.wait()
        elif workspace == "c":
            clock.advance(timedelta(seconds=16))  # a slow receiver: 16 s per call
            b_claimed.append(await b.drain_once())  # B's poll meanwhile
        log.extend(("A", r.payload, 0.0) for r in batch)

    a = Forwarder(first.db, first.outbox, "t", send, lease=LEASE, batch_size=10,
                  poll_interval=60, max_call_bytes=10)
    renewals = watch_renewals(a)
    rounds = Rounds(a)
    transactions = Transactions(first.db, clock, first.outbox)

    def work(workspace: str, count: int) -> Any:
        def publish(uow: UnitOfWork) -> None:
            uow.publish("t", workspace, [(p, "") for p in one_call_each(workspace, count)])
        return publish

    task = await started(a, rounds)
    try:
        await transactions.run(work("h", 1))  # a hand-off round, in flight at t=0
        await asyncio.wait_for(entered.wait(), 10)
        await transactions.run(work("q", 3))  # queued behind it, leased until t=60
        first.queue("t", "c", one_call_each("c", 3))   # left for a claim (one call per row)
        first.outbox.notify()
        clock.advance(timedelta(seconds=29))
        gate.set()  # the hand-off round ends at t=29; the claim takes c's rows until t=89
        await eventually(lambda: first.queued() == 0)
        await eventually(rounds.idle)
    finally:
        await stop(task)
    assert b_got == [], f"B took over A's queued rows with no pause: {b_got}"
    assert not any(renewals), renewals  # no renewal found rows taken over
