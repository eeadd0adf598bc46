"""A polling worker stops when its task is cancelled, even when the cancellation arrives at the
moment it is woken up, or a library it awaits turns the cancellation into an error of its own.
Either used to leave the worker polling forever ("background task ignored cancellation" at a
service's shutdown)."""

from __future__ import annotations

import asyncio

import pytest

from cjo_platform.worker import PollingWorker


class Idle(PollingWorker):
    """Rounds find nothing to do; counts them."""

    def __init__(self) -> None:
        super().__init__(poll_seconds=0.05)
        self.rounds = 0
        self.waiting = asyncio.Event()

    async def run_once(self) -> bool:
        self.rounds += 1
        self.waiting.set()
        return False


async def stopped(task: asyncio.Task[None]) -> bool:
    """Whether the task ended cancelled within a second (20 poll intervals)."""
    await asyncio.wait({task}, timeout=1.0)
    if not task.done():
        task.cancel()  # one more request, so that the test itself ends
        await asyncio.wait({task}, timeout=1.0)
        return False
    return task.cancelled()


async def test_cancelled_as_it_is_woken_the_worker_stops() -> None:
    worker = Idle()
    task = asyncio.create_task(worker.run())
    await worker.waiting.wait()
    await asyncio.sleep(0)  # the worker now waits for its next round
    # An outbox write wakes the worker in the same loop step in which the service stops it
    # (the sender records its last outcomes while shutting down).
    worker._wake.set()
    task.cancel()
    assert await stopped(task)


class SwallowingClient(PollingWorker):
    """A round awaits a call that answers a cancellation with an error of its own, as a
    grpc.aio call does (AioRpcError CANCELLED) when the task awaiting it is cancelled."""

    def __init__(self) -> None:
        super().__init__(poll_seconds=0.05)
        self.calling = asyncio.Event()

    async def run_once(self) -> bool:
        self.calling.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("call cancelled") from None
        return False


async def test_a_cancellation_turned_into_an_error_still_stops_the_worker() -> None:
    worker = SwallowingClient()
    task = asyncio.create_task(worker.run())
    await worker.calling.wait()
    task.cancel()
    assert await stopped(task)


@pytest.mark.parametrize("rounds", [3])
async def test_an_idle_worker_keeps_polling_until_cancelled(rounds: int) -> None:
    worker = Idle()
    task = asyncio.create_task(worker.run())
    while worker.rounds < rounds:
        await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    assert await stopped(task)
