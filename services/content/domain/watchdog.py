"""A time limit for CPU work that writes nothing and calls no clock: a template's render.

python-liquid limits loop iterations, output size, local variables and context depth, but not
time, and a loop of filters over a large string (``split`` / ``join``) runs for minutes while
writing nothing, so a check on output alone never fires. Each guarded call registers its
thread and deadline here; one daemon thread per process wakes at the nearest deadline and
raises a private exception in a thread whose call is overdue (``PyThreadState_SetAsyncExc``:
delivered at the thread's next bytecode, so after at most one C-level call such as one
``split`` of a large string). :meth:`Watchdog.call` turns it into :class:`DeadlinePassed`.

The exception can never escape a guarded call into its caller's code (a thread pool, the
event loop): it is raised only while the call is registered, and under the same lock that
unregisters the call and clears one still pending.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlinePassed(Exception):
    """A guarded call ran past its deadline and was interrupted."""


class _Overdue(BaseException):
    # BaseException, so that no ``except Exception`` on the way swallows it.
    pass


def _raise_in(thread: int, exception: type[BaseException] | None) -> None:
    # ``None`` is passed as NULL: clears an exception set but not yet delivered.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), None if exception is None else ctypes.py_object(exception))


class _Call:
    __slots__ = ("deadline", "fired", "fired_at", "removing", "thread")

    def __init__(self, thread: int, deadline: float) -> None:
        self.thread = thread
        self.deadline = deadline
        self.fired = False
        self.fired_at = -math.inf  # when it was last fired at
        # Set (a plain attribute store, where no interrupt is delivered) as the call starts to
        # unregister: never fired at from then on.
        self.removing = False


class Watchdog:
    """Interrupts guarded calls that run past their deadline; one per process is enough.

    Its thread sleeps until the nearest deadline (at least ``resolution``), indefinitely
    while no call is registered: a call registered with a nearer deadline than the one it
    sleeps to wakes it, so short limits (the event loop's) hold as well as long ones, and a
    stream of calls within their limits wakes it about once per limit. A call still
    registered after it fired is fired at again every ``interval``: an interrupt delivered
    inside a finalizer (``__del__``, a weakref callback) is swallowed there."""

    def __init__(self, interval: float = 0.1, resolution: float = 0.001) -> None:
        self.interval = interval
        self.resolution = resolution
        self._calls: dict[int, _Call] = {}  # thread id -> its guarded call
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._sleeps_until = math.inf  # when the thread wakes next (inf: idle)
        self._thread: threading.Thread | None = None

    def call(self, work: Callable[..., T], seconds: float, *args: Any) -> T:
        """``work(*args)``, or :class:`DeadlinePassed` once it has run ``seconds`` (give or
        take ``resolution`` and one C-level call)."""
        guarded = _Call(threading.get_ident(), time.monotonic() + seconds)
        try:
            try:
                self._add(guarded)
                return work(*args)
            finally:
                guarded.removing = True  # first: no interrupt is delivered before it
                self._remove(guarded)
        except _Overdue:
            # Delivered in work() or in the finally above (maybe before it unregistered). Once
            # ``removing`` is set the watchdog fires no more: at most one fire set before it
            # (pending) and one decided before it but made after are delivered, the second
            # at the latest in the first _remove below, so the retry completes; no statement
            # here outside a try checks for interrupts (no loop: a backward jump does).
            guarded.removing = True
            try:
                self._remove(guarded)
            except _Overdue:
                self._remove(guarded)
            raise DeadlinePassed from None

    def _add(self, guarded: _Call) -> None:
        with self._lock:
            self._calls[guarded.thread] = guarded
            if guarded.deadline < self._sleeps_until:
                self._sleeps_until = guarded.deadline
                self._wake.set()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._watch, daemon=True,
                                                    name="cjo-render-watchdog")
                    self._thread.start()

    def _remove(self, guarded: _Call) -> None:
        with self._lock:
            if self._calls.get(guarded.thread) is guarded:
                del self._calls[guarded.thread]
            if guarded.fired:
                _raise_in(guarded.thread, None)

    def _watch(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                until = self._fire(time.monotonic())
                self._sleeps_until = until
            if until == math.inf:
                self._wake.wait()
            else:
                self._wake.wait(max(until - time.monotonic(), self.resolution))

    def _fire(self, now: float) -> float:
        """Fire at the overdue calls not fired at for ``interval`` and not unregistering (under
        the lock); returns when to wake next."""
        until = math.inf
        for guarded in self._calls.values():
            if guarded.removing:
                continue
            if now >= guarded.deadline:
                if now >= guarded.fired_at + self.interval:
                    guarded.fired, guarded.fired_at = True, now
                    _raise_in(guarded.thread, _Overdue)
                until = min(until, guarded.fired_at + self.interval)
            else:
                until = min(until, guarded.deadline)
        return until


WATCHDOG = Watchdog()
"""The process's watchdog; its thread starts with the first guarded call."""
