"""The HTTP client's call timeouts, kept by slice of time: one timer per slice in which calls
fall due, not one per call.

``asyncio.timeout()`` arms a timer in the loop's heap for every call and cancels it after, with
a context manager around it: ~4.4 us per call on uvloop, a few per cent of the event loop's
CPU per message sent over HTTP. A provider's calls share one timeout, so calls started within a
few milliseconds fall due together: each goes in the bucket of the slice its deadline falls in
(rounded up), and one timer per bucket cancels the calls still under way when it fires. A call
therefore times out at most one slice (:data:`SLICE_SECONDS`) after its deadline, never before.
A call cancelled from outside (its send round stopping) stays cancelled, as with
``asyncio.timeout()``: only the cancellation this module asked for becomes a timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

SLICE_SECONDS = 0.01


class Deadline:
    """One call's deadline: the task it cancels when it passes."""

    __slots__ = ("cancelling", "passed", "slot", "task")

    def __init__(self, task: asyncio.Task[Any], slot: int) -> None:
        self.task = task
        self.slot = slot
        self.cancelling = task.cancelling()  # cancellations asked before this call's own
        self.passed = False

    def timed_out(self) -> bool:
        """Called with the call's CancelledError: whether it is this deadline's doing alone
        (the task's cancellation is then withdrawn, as ``asyncio.timeout()`` does)."""
        return self.passed and self.task.uncancel() <= self.cancelling


class Deadlines:
    """The deadlines of the calls under way on one event loop."""

    def __init__(self, slice_seconds: float = SLICE_SECONDS) -> None:
        self.slice = slice_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        # Slice number -> the deadlines that pass at its end.
        self._due: dict[int, dict[Deadline, None]] = {}

    def start(self, timeout: float) -> Deadline:
        """A deadline ``timeout`` seconds from now for the current task; :meth:`end` it when
        the call is over, however it ended."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests): the old one's timers are gone
            self._loop, self._due = loop, {}
        task = asyncio.current_task(loop)
        assert task is not None, "a call's deadline belongs to a task"
        slot = int((loop.time() + timeout) / self.slice) + 1
        deadline = Deadline(task, slot)
        bucket = self._due.get(slot)
        if bucket is None:
            bucket = self._due[slot] = {}
            loop.call_at(slot * self.slice, self._pass, slot)
        bucket[deadline] = None
        return deadline

    def end(self, deadline: Deadline) -> None:
        bucket = self._due.get(deadline.slot)
        if bucket is not None:
            bucket.pop(deadline, None)

    def _pass(self, slot: int) -> None:
        for deadline in self._due.pop(slot, {}):
            deadline.passed = True
            deadline.task.cancel()
