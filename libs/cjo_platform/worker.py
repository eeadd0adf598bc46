"""Background workers that poll the database: outbox forwarders, journey steps, message sends."""

from __future__ import annotations

import asyncio
import contextlib

from cjo_platform.logging import get_logger

log = get_logger(__name__)


class PollingWorker:
    """Runs :meth:`run_once` in rounds until cancelled: again at once while rounds report more
    work waiting, otherwise after ``poll_seconds`` or as soon as :meth:`wake` is called.

    A failing round (database or peer down, a bug) is logged and retried with exponential
    backoff (from the poll interval or ``first_backoff``, whichever is shorter): a background
    worker must never take its service down, and the work it left is still in the database.
    """

    name = "worker"
    # The first retry after a failed round, at most (then doubling up to ``max_backoff``): a
    # worker that polls rarely (woken by writes) must not wait its whole poll after one error.
    first_backoff = 1.0

    def __init__(self, poll_seconds: float, max_backoff: float = 30.0) -> None:
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Whether this round began without a wake-up (the first round, a poll after
        # ``idle_seconds``, a retry after a failed round): a round may then look for work that
        # no wake-up announced.
        self.polled = True

    def wake(self) -> None:
        """Start the next round now. Safe from any thread; a no-op before the worker runs."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run_once(self) -> bool:
        """Do one round; return True when more work may be waiting."""
        raise NotImplementedError

    def idle_seconds(self) -> float:
        """How long to wait for a wake-up after a round that left no work waiting:
        ``poll_seconds``, or less for a worker that knows when its next work falls due."""
        return self.poll_seconds

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        backoff = min(self.poll_seconds, self.first_backoff)
        while True:
            _raise_if_cancelling(task)
            self._wake.clear()
            try:
                more = await self.run_once()
                backoff = min(self.poll_seconds, self.first_backoff)
            except asyncio.CancelledError as exc:
                if task is None or task.cancelling():
                    raise  # the service is stopping
                # gRPC raises CancelledError for a call cancelled under us (e.g. its channel
                # closed): a failed round, not a reason to stop.
                log.warning("round cancelled; will retry", worker=self.name, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                self.polled = True
                continue
            except Exception as exc:
                # A library may answer our cancellation with an error of its own (grpc.aio: an
                # AioRpcError CANCELLED): then the service is stopping all the same.
                _raise_if_cancelling(task)
                log.warning("round failed; will retry", worker=self.name, error=repr(exc),
                            exc_info=exc, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                self.polled = True
                continue
            if more:
                self.polled = False
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that arrives as the event is set (an outbox write while the service stops).
            self.polled = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_seconds()):
                    await self._wake.wait()
                    self.polled = False


def _raise_if_cancelling(task: asyncio.Task[object] | None) -> None:
    """Stop when the task was asked to stop, even if the request never reached us as a
    CancelledError (a library swallowed it): ``cancelling()`` still counts it."""
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
