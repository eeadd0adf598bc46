"""A time limit for CPU work that writes nothing and calls no clock: a template's render.

python-liquid limits loop iterations, output size, local variables and context depth, but not
time, and a loop of filters over a large string (``split`` / ``join``) runs for minutes while
writing nothing, so a check on output alone never fires. Each guarded call registers its
thread and deadline here; one daemon thread per process wakes every ``interval`` seconds and
raises a private exception in a thread whose call is overdue (``PyThreadState_SetAsyncExc``:
delivered at the thread's next bytecode, so after at most one C-level call such as one
``split`` of a large string). :meth:`Watchdog.call` turns it into :class:`DeadlinePassed`.

The exception can never escape a guarded call into its caller's code (a thread pool, the
event loop): it is raised at most once per call, only while the call is registered, and under
the same lock that unregisters the call and clears one still pending.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import TypeVar

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
    __slots__ = ("deadline", "fired", "thread")

    def __init__(self, thread: int, deadline: float) -> None:
        self.thread = thread
        self.deadline = deadline
        self.fired = False


class Watchdog:
    """Interrupts guarded calls that run past their deadline; one per process is enough."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._calls: dict[int, _Call] = {}  # thread id -> its guarded call
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def call(self, work: Callable[[], T], seconds: float) -> T:
        """``work()``, or :class:`DeadlinePassed` once it has run ``seconds`` (give or take
        ``interval`` and one C-level call)."""
        guarded = _Call(threading.get_ident(), time.monotonic() + seconds)
        try:
            try:
                self._add(guarded)
                return work()
            finally:
                self._remove(guarded)
        except _Overdue:
            # Delivered in work() or in the finally above (maybe before it unregistered):
            # it is raised once per call, so unregistering again here cannot be interrupted.
            self._remove(guarded)
            raise DeadlinePassed from None

    def _add(self, guarded: _Call) -> None:
        with self._lock:
            self._calls[guarded.thread] = guarded
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="cjo-render-watchdog",
                                                daemon=True)
                self._thread.start()

    def _remove(self, guarded: _Call) -> None:
        with self._lock:
            if self._calls.get(guarded.thread) is guarded:
                del self._calls[guarded.thread]
            if guarded.fired:
                _raise_in(guarded.thread, None)

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self._lock:
                for guarded in self._calls.values():
                    if not guarded.fired and now >= guarded.deadline:
                        guarded.fired = True
                        _raise_in(guarded.thread, _Overdue)


WATCHDOG = Watchdog()
"""The process's watchdog; its thread starts with the first guarded call."""
