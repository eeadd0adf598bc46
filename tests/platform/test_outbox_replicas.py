"""Replicas share one outbox: each row is forwarded once, by one of them, every workspace's rows
in order; a replica that dies mid-batch leaves its rows to the others once its lease ran out."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from outbox_replica import received, received_metadata
from outbox_support import Box, two_boxes
from sqlalchemy import func, select

from cjo_platform.clock import ManualClock
from cjo_platform.db.outbox import Forwarder, OutboxRow
from support import PG_URL, Backend, eventually

WORKSPACES = [f"ws-{n}" for n in range(8)]
ROWS = 2000
HERE = Path(__file__).parent


@pytest.fixture
def boxes(backend: Backend) -> Iterator[tuple[Box, Box]]:
    with two_boxes(backend) as pair:
        yield pair


def fill(box: Box) -> dict[str, list[int]]:
    """ROWS rows spread over the workspaces, interleaved as traffic would be."""
    sent: dict[str, list[int]] = {w: [] for w in WORKSPACES}
    for start in range(0, ROWS, 100):
        for n in range(start, start + 100):
            sent[WORKSPACES[n * 7 % len(WORKSPACES)]].append(n)
        with box.db.transaction() as session:
            for n in range(start, start + 100):
                box.outbox.add(session, "t", WORKSPACES[n * 7 % len(WORKSPACES)],
                               [(str(n).encode(), "")])
    return sent


async def test_two_forwarders_send_each_row_once_in_order(boxes: tuple[Box, Box]) -> None:
    got: list[tuple[str, str, int]] = []

    def receiver(name: str) -> object:
        async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
            await asyncio.sleep(0.002)  # a peer's round trip: the other replica claims meanwhile
            got.extend((name, workspace, int(r.payload)) for r in rows)
        return send

    sent = fill(boxes[0])
    forwarders = [Forwarder(box.db, box.outbox, "t", receiver(name),  # type: ignore[arg-type]
                            batch_size=50, poll_interval=0.01)
                  for name, box in zip(("one", "two"), boxes, strict=True)]
    tasks = [asyncio.create_task(f.run()) for f in forwarders]
    try:
        await eventually(lambda: boxes[0].queued() == 0, timeout=60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    counts = Counter(n for _, _, n in got)
    assert len(counts) == ROWS and set(counts.values()) == {1}  # every row, once
    for workspace in WORKSPACES:
        assert [n for _, w, n in got if w == workspace] == sent[workspace]
    by_replica = Counter(name for name, _, _ in got)
    assert by_replica["one"] > 0 and by_replica["two"] > 0, by_replica


async def test_a_dead_replicas_rows_are_sent_by_another_after_its_lease(
        boxes: tuple[Box, Box]) -> None:
    first, second = boxes
    clock = first.outbox.clock
    assert isinstance(clock, ManualClock)
    got: list[tuple[str, int]] = []

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        got.extend((workspace, int(r.payload)) for r in rows)

    first.queue("t", "ws-a", [b"1", b"2", b"3"])
    first.queue("t", "ws-b", [b"4"])
    dead = Forwarder(first.db, first.outbox, "t", send, lease=timedelta(seconds=30))
    alive = Forwarder(second.db, second.outbox, "t", send, lease=timedelta(seconds=30))
    # The first replica claims the rows and dies before sending them.
    assert len(await first.db.run(dead._claim)) == 4
    first.queue("t", "ws-a", [b"5"])
    first.queue("t", "ws-c", [b"6"])

    # Its rows are not sent twice while its lease holds, nor overtaken by their workspace's
    # newer rows; other workspaces are not held up.
    assert await alive.drain_once() == 1
    assert got == [("ws-c", 6)]
    clock.advance(timedelta(seconds=31))
    assert await alive.drain_once() == 5
    assert sorted(got) == [("ws-a", 1), ("ws-a", 2), ("ws-a", 3), ("ws-a", 5), ("ws-b", 4),
                           ("ws-c", 6)]
    assert [n for w, n in got if w == "ws-a"] == [1, 2, 3, 5]
    assert first.queued() == 0


def replica(backend: Backend, name: str, lease: float, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "outbox_replica.py"), PG_URL,
         backend.schema_prefix + "outbox", name, str(lease), mode],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])})


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


@pytest.mark.e2e
async def test_two_replica_processes_forward_each_row_once(backend: Backend,
                                                           boxes: tuple[Box, Box]) -> None:
    if backend.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database")
    box = boxes[0]
    received_metadata.create_all(box.db.engine)
    sent = fill(box)
    processes = [replica(backend, name, 30, "run") for name in ("one", "two")]
    try:
        await eventually(lambda: box.queued() == 0, timeout=120, interval=0.2)
    finally:
        for process in processes:
            stop(process)
    with box.db.transaction() as session:
        rows = session.execute(select(received.c.replica, received.c.workspace_id,
                                      received.c.payload).order_by(received.c.seq)).all()
    counts = Counter(int(r.payload) for r in rows)
    assert len(counts) == ROWS and set(counts.values()) == {1}
    for workspace in WORKSPACES:
        assert [int(r.payload) for r in rows if r.workspace_id == workspace] == sent[workspace]
    by_replica = Counter(r.replica for r in rows)
    assert by_replica["one"] > 0 and by_replica["two"] > 0, by_replica


@pytest.mark.e2e
async def test_a_killed_replica_process_rows_are_sent_by_the_other(
        backend: Backend, boxes: tuple[Box, Box]) -> None:
    if backend.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database")
    box = boxes[0]
    received_metadata.create_all(box.db.engine)
    box.queue("t", "ws-a", [str(n).encode() for n in range(10)])
    hanging = replica(backend, "dies", 2, "hang")
    try:
        assert hanging.stdout is not None
        line = await asyncio.to_thread(hanging.stdout.readline)
        assert line.strip() == "claimed"
    finally:
        stop(hanging)  # killed mid-batch: nothing of its own cleans up
    survivor = replica(backend, "lives", 2, "run")
    try:
        await eventually(lambda: box.queued() == 0, timeout=30, interval=0.2)
    finally:
        stop(survivor)
    with box.db.transaction() as session:
        rows = session.execute(select(received.c.replica, received.c.payload)
                               .order_by(received.c.seq)).all()
        total = session.execute(select(func.count()).select_from(received)).scalar_one()
    assert [r.payload for r in rows] == [str(n) for n in range(10)] and total == 10
    assert {r.replica for r in rows} == {"lives"}


async def test_a_long_round_keeps_its_rows(boxes: tuple[Box, Box]) -> None:
    first, second = boxes
    clock = first.outbox.clock
    assert isinstance(clock, ManualClock)
    stolen: list[int] = []

    async def steal(workspace: str, rows: Sequence[OutboxRow]) -> None:
        stolen.extend(int(r.payload) for r in rows)

    other = Forwarder(second.db, second.outbox, "t", steal, lease=timedelta(seconds=30))
    sent: list[int] = []

    async def slow(workspace: str, rows: Sequence[OutboxRow]) -> None:
        clock.advance(timedelta(seconds=20))  # each call takes 20 s, the lease is 30 s
        await other.drain_once()  # the other replica tries meanwhile
        sent.extend(int(r.payload) for r in rows)

    for n, workspace in enumerate(["ws-a", "ws-b", "ws-c"], start=1):
        first.queue("t", workspace, [str(n).encode()])
    await Forwarder(first.db, first.outbox, "t", slow, lease=timedelta(seconds=30)).drain_once()
    assert sent == [1, 2, 3] and stolen == []


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["write", "linger"], ids=["in-flight", "lingering"])
async def test_a_killed_replicas_handed_off_rows_are_sent_by_the_other_after_its_lease(
        backend: Backend, boxes: tuple[Box, Box], mode: str) -> None:
    if backend.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database")
    box = boxes[0]
    received_metadata.create_all(box.db.engine)
    # The replica writes its rows itself: they are handed to its own forwarder (inserted
    # leased to it, no claim), which dies before the receiver answered (or, lingering, before
    # it even sent them).
    writer = replica(backend, "dies", 2, mode)
    try:
        assert writer.stdout is not None
        line = await asyncio.to_thread(writer.stdout.readline)
        assert line.strip() == "written"
        table = box.outbox.table
        with box.db.transaction() as session:
            owners = session.execute(select(table.c.lease_owner)).scalars().all()
        assert len(owners) == 10 and None not in owners and len(set(owners)) == 1
    finally:
        stop(writer)  # killed mid-round: nothing of its own cleans up
    survivor = replica(backend, "lives", 2, "run")
    try:
        await eventually(lambda: box.queued() == 0, timeout=30, interval=0.2)
    finally:
        stop(survivor)
    with box.db.transaction() as session:
        rows = session.execute(select(received.c.replica, received.c.payload)
                               .order_by(received.c.seq)).all()
    assert [r.payload for r in rows] == [str(n) for n in range(10)]
    assert {r.replica for r in rows} == {"lives"}
