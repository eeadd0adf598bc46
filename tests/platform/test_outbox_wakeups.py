"""A row goes as soon as it is written, not at the next poll: every hand-off of the outbox wakes
the forwarder at once, also across replicas, and a burst of writes goes in a few calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
from outbox_support import Box, two_boxes

from cjo_platform.db.outbox import Forwarder, OutboxRow
from support import Backend, eventually

POLL = 60.0  # seconds: longer than any test waits, so only a wake-up can move a row


@pytest.fixture
def boxes(backend: Backend) -> Iterator[tuple[Box, Box]]:
    with two_boxes(backend) as pair:
        yield pair


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_row_another_replica_wrote_while_its_workspace_was_in_flight_goes_at_once(
        backend: Backend, boxes: tuple[Box, Box]) -> None:
    if backend.kind == "sqlite":
        pytest.skip("one process per SQLite database: every write wakes its only forwarder")
    first, second = boxes
    got: list[bytes] = []
    sending = asyncio.Event()
    release = asyncio.Event()

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        sending.set()
        await release.wait()  # the first replica's call is slow
        got.extend(r.payload for r in rows)

    first_forwarder = Forwarder(first.db, first.outbox, "t", send, poll_interval=POLL)
    second_forwarder = Forwarder(second.db, second.outbox, "t", send, poll_interval=POLL)
    rounds = 0
    second_round = second_forwarder.run_once

    async def counted() -> bool:
        nonlocal rounds
        more = await second_round()
        rounds += 1
        return more

    second_forwarder.run_once = counted  # type: ignore[method-assign]
    first.queue("t", "ws", [b"1"])
    tasks = [asyncio.create_task(first_forwarder.run())]
    await asyncio.wait_for(sending.wait(), 10)
    # The second replica writes a row of the workspace the first one is sending: its own
    # forwarder wakes, finds the workspace in flight, leaves the row and sleeps.
    second.queue("t", "ws", [b"2"])
    second.outbox.notify()
    tasks.append(asyncio.create_task(second_forwarder.run()))
    await eventually(lambda: rounds >= 1)
    release.set()
    try:
        await eventually(lambda: got == [b"1", b"2"], timeout=5)
        await eventually(lambda: first.queued() == 0)
    finally:
        await stop(*tasks)


async def test_a_write_wakes_the_forwarder_and_a_burst_goes_in_a_few_calls(
        boxes: tuple[Box, Box]) -> None:
    box, _ = boxes
    calls: list[int] = []
    got: list[bytes] = []
    first_call = asyncio.Event()
    release = asyncio.Event()

    async def send(workspace: str, rows: Sequence[OutboxRow]) -> None:
        calls.append(len(rows))
        first_call.set()
        await release.wait()
        got.extend(r.payload for r in rows)

    forwarder = Forwarder(box.db, box.outbox, "t", send, poll_interval=POLL)
    task = asyncio.create_task(forwarder.run())
    try:
        await eventually(lambda: forwarder._loop is not None)  # idle, waiting for a wake-up
        # 50 single-row transactions, each committed and announced as a service does.
        for n in range(50):
            box.queue("t", "ws", [str(n).encode()])
            box.outbox.notify()
            if n == 0:
                await asyncio.wait_for(first_call.wait(), 10)  # the first went at once
        release.set()
        await eventually(lambda: len(got) == 50, timeout=5)
        assert got == [str(n).encode() for n in range(50)]
        assert len(calls) <= 3, calls  # the first row alone, then what piled up meanwhile
    finally:
        await stop(task)
