"""Group commit: concurrent submissions of items under one key, arriving within a short window,
are applied in one call of a batch function (one transaction for all of them), and each
submission gets its own slice of the results; a submission to an idle key goes at once.

A commit costs the same round trips, fsync and bookkeeping whether it carries one item or a
thousand; callers that each send one item (a web backend's single-event calls) pay it per
item unless their items share a commit::

    groups = GroupCommit(apply_batch, window=0.002, max_items=1000, split=item_at_fault)
    outcomes = await groups.submit(workspace_id, items)  # len(outcomes) == len(items)

Per key, groups run one after another, in the order their first submission arrived, and a
group's items are in arrival order (a submission's own items stay together, in order); while
one group runs, the next one collects what arrives. Different keys never share a call of
``apply``.

The window is paid only under load: a group opened on a busy key (one of its groups runs,
waits, or ended less than ``window`` ago) starts ``window`` after its first submission at the
earliest, and a pause after the group before it ended, so callers that come back at once
(many callers, each sending its next call when its answer came) meet in one group instead of
splitting into many small ones. The pause after a group matters in a process whose one thread
of Python (the GIL) is the bottleneck: while the group runs, the calls it answered and the
calls arriving wait for the same GIL, so the next group holds only the few parsed meanwhile;
started at once it costs a transaction for those few, the fixed part of its cost (statements,
commit, a forwarder's call) divided by fewer items. The pause lets the process answer and
parse what queued up before the next transaction starts, and lasts as long as the group before
it took (from its start to its answers), ``window`` at the least and :data:`MAX_PAUSE_WINDOWS`
windows at the most, when it answered :data:`MIN_CALLERS_TO_WAIT_FOR` callers or more: a group
that took long under load did so because the process was busy, and the calls behind it need as
long again to be answered and parsed. A group of fewer callers (calls arriving at a moderate
rate on a loaded machine, whose transactions take long for other reasons) pauses ``window``
only: nobody comes back to be waited for, and a longer pause only added its length to the next
calls' latency (review rgroup: p50 at 100 calls/s 11-17 -> 16-42 ms). A fixed pause of a few
ms was a small part of a group's time under load, and groups stayed small (with 64 callers on
one workspace on SQLite, identity's groups and CPU per call: docs/capacity-journal.md). A lone
call's group is quick, so its pause stays near ``window``. A full group (or one closed by an
overflowing submission) never waits. A submission to an idle key (a lone call, calls spaced
wider than the window) starts its group at once,
with whatever the same pass of the event loop brought: it has nobody to wait for.

A failure of ``apply`` is every submission's failure, unless ``split(error)`` says one item may
have caused it (bad data, not a database outage): then each submission of the group is applied
again on its own, so the error reaches only the submissions it belongs to.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

MAX_PAUSE_WINDOWS = 10
"""The longest pause after a busy key's group, in windows (20 ms for identity's 2 ms): a group
slowed by a lock or a database that stalls does not hold the next one back as long again."""

MIN_CALLERS_TO_WAIT_FOR = 8
"""A group answering fewer submissions pauses ``window`` only, however long it took (see the
module's docstring)."""


@dataclass
class _Submission(Generic[R]):
    start: int
    end: int
    answer: asyncio.Future[list[R]]


@dataclass
class _Group(Generic[I, R]):
    items: list[I] = field(default_factory=list)
    submissions: list[_Submission[R]] = field(default_factory=list)
    # Set when the window has passed or the group is full: it may start.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Loop time before which it may not start unless full (see GroupCommit._release).
    not_before: float = float("-inf")
    # Full, or closed by a submission that did not fit: starts as soon as the lane is free.
    closed: bool = False


@dataclass
class _Lane(Generic[I, R]):
    """One key's groups, oldest first; the first runs (or waits for its window), the last
    collects."""

    groups: deque[_Group[I, R]] = field(default_factory=deque)
    # The task that runs them (held: the event loop keeps only a weak reference).
    driver: asyncio.Task[None] | None = None


class GroupCommit(Generic[K, I, R]):
    """Coalesces concurrent :meth:`submit` calls per key into calls of
    ``apply(key, items) -> results`` (one result per item, in order)."""

    def __init__(self, apply: Callable[[K, list[I]], Awaitable[Sequence[R]]], *,
                 window: float, max_items: int,
                 split: Callable[[BaseException], bool] = lambda error: False) -> None:
        self._apply = apply
        self.window = window
        self.max_items = max_items
        self._split = split
        self._lanes: dict[K, _Lane[I, R]] = {}
        # Keys whose last group ended less than ``window`` ago (loop time it ended): still busy.
        self._ended: dict[K, float] = {}

    async def submit(self, key: K, items: Sequence[I]) -> list[R]:
        """The results of ``items`` (applied with others of ``key`` that arrived meanwhile).
        With no window (group commit off), or items that fill a group on their own, they are
        applied alone, straight away."""
        if not items:
            return []
        if self.window <= 0 or len(items) >= self.max_items:
            return await self._apply_alone(key, list(items))
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(key)
        # Idle: nothing of the key runs or waits, and nothing ended within the window.
        idle = lane is None and loop.time() - self._ended.get(key, float("-inf")) >= self.window
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.driver = loop.create_task(self._drive(key, lane))
        group = lane.groups[-1] if lane.groups else None
        # A group that started is no longer in the lane; one that would overflow is closed.
        if group is None or len(group.items) + len(items) > self.max_items:
            if group is not None:
                _close(group)
            group = _Group()
            lane.groups.append(group)
            if idle:
                group.ready.set()  # the driver starts it after this pass of the loop
            else:
                group.not_before = loop.time() + self.window
                loop.call_at(group.not_before, self._release, group)
        answer: asyncio.Future[list[R]] = loop.create_future()
        group.submissions.append(_Submission(len(group.items), len(group.items) + len(items),
                                             answer))
        group.items.extend(items)
        if len(group.items) >= self.max_items:
            _close(group)
        return await answer

    @staticmethod
    def _release(group: _Group[I, R]) -> None:
        """Lets ``group`` start once its ``not_before`` has come (or it is closed)."""
        if group.closed or group.ready.is_set():
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= group.not_before:
            group.ready.set()
        else:  # moved later (the group before it ended) since this call was scheduled
            loop.call_at(group.not_before, GroupCommit._release, group)

    def _pause_after(self, lane: _Lane[I, R], took: float) -> None:
        """A group of ``lane`` just ended, ``took`` seconds after it started: the next one,
        unless closed, starts that long from now at the earliest, within ``window`` and
        :data:`MAX_PAUSE_WINDOWS` windows (see the module's docstring)."""
        if not lane.groups:
            return
        following = lane.groups[0]
        if following.closed:
            return
        loop = asyncio.get_running_loop()
        pause = min(max(took, self.window), self.window * MAX_PAUSE_WINDOWS)
        following.not_before = max(following.not_before, loop.time() + pause)
        following.ready.clear()
        loop.call_at(following.not_before, self._release, following)

    async def _apply_alone(self, key: K, items: list[I]) -> list[R]:
        results = list(await self._apply(key, items))
        if len(results) != len(items):
            raise RuntimeError(f"group commit: {len(results)} results for {len(items)} items")
        return results

    async def _drive(self, key: K, lane: _Lane[I, R]) -> None:
        """Runs the key's groups one after another until none is left."""
        loop = asyncio.get_running_loop()
        try:
            while lane.groups:
                group = lane.groups[0]
                await group.ready.wait()
                lane.groups.popleft()
                started = loop.time()
                await self._run(key, group)
                many = len(group.submissions) >= MIN_CALLERS_TO_WAIT_FOR
                self._pause_after(lane, loop.time() - started if many else 0.0)
        except BaseException as error:
            # Cancelled (the server stops): nobody may wait for a group that will not run.
            for group in lane.groups:
                for submission in group.submissions:
                    _fail(submission, error)
            raise
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]
                self._busy_for_a_window(key)

    def _busy_for_a_window(self, key: K) -> None:
        """The key's last group just ended: a group opened within the window waits for it
        (more calls are likely coming back), one opened later goes at once."""
        loop = asyncio.get_running_loop()
        ended = self._ended[key] = loop.time()

        def forget() -> None:
            if self._ended.get(key) == ended:
                del self._ended[key]
        loop.call_later(self.window, forget)

    async def _run(self, key: K, group: _Group[I, R]) -> None:
        try:
            results = await self._apply_alone(key, group.items)
        except Exception as error:
            if len(group.submissions) == 1 or not self._split(error):
                for submission in group.submissions:
                    _fail(submission, error)
                return
            # Perhaps one item's fault: each submission again on its own, in arrival order.
            for submission in group.submissions:
                try:
                    own = await self._apply_alone(
                        key, group.items[submission.start:submission.end])
                except Exception as own_error:
                    _fail(submission, own_error)
                else:
                    _answer(submission, own)
            return
        except BaseException as error:
            for submission in group.submissions:
                _fail(submission, error)
            raise
        for submission in group.submissions:
            _answer(submission, results[submission.start:submission.end])


def _close(group: _Group[I, R]) -> None:
    group.closed = True
    group.ready.set()


def _answer(submission: _Submission[R], results: list[R]) -> None:
    # A caller that gave up (its deadline passed) no longer waits; its items were applied.
    if not submission.answer.done():
        submission.answer.set_result(results)


def _fail(submission: _Submission[R], error: BaseException) -> None:
    if submission.answer.done():
        return
    if isinstance(error, asyncio.CancelledError):
        submission.answer.cancel()
    else:
        submission.answer.set_exception(error)
