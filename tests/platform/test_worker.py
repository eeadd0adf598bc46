"""A polling worker survives failed passes and stops only when the service stops it."""

from __future__ import annotations

import asyncio

import pytest

from cjo_platform.worker import PollingWorker
from support import eventually


class Flaky(PollingWorker):
    def __init__(self) -> None:
        super().__init__(poll_seconds=0.01)
        self.passes = 0

    async def run_once(self) -> bool:
        self.passes += 1
        if self.passes == 1:
            raise asyncio.CancelledError()  # what gRPC raises when a channel closes under a call
        if self.passes == 2:
            raise RuntimeError("database went away")
        return False


async def test_a_failed_pass_is_retried_and_cancellation_stops_the_loop() -> None:
    loop = Flaky()
    task = asyncio.create_task(loop.run())
    deadline = asyncio.get_running_loop().time() + 5
    while loop.passes < 4:
        assert asyncio.get_running_loop().time() < deadline, "the loop stopped retrying"
        await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_wake_runs_a_pass_before_the_poll_interval() -> None:
    loop = Flaky()
    loop.passes = 2  # skip the failures
    loop.poll_seconds = 60
    task = asyncio.create_task(loop.run())
    # The first pass ran; the next one is a minute away unless woken.
    await eventually(lambda: loop.passes == 3)
    loop.wake()
    await eventually(lambda: loop.passes == 4, timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_worker_that_polls_rarely_retries_a_failed_pass_within_a_second() -> None:
    # A forwarder woken by writes may poll once a minute: one database error must not make it
    # wait that minute.
    loop = Flaky()
    loop.passes = 1  # the next pass fails
    loop.poll_seconds = 60
    task = asyncio.create_task(loop.run())
    await eventually(lambda: loop.passes == 3, timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
