"""The injected clock. Nothing in cjo reads the wall clock directly, so tests can run a month of
journey time in milliseconds and put a daylight-saving change wherever they need one."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to. Thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)


# How often, at most, a FileOffsetClock looks at its file: after moving the offset, a test
# waits at least this long before every process reads the new time.
TEST_CLOCK_RECHECK_SECONDS = 0.05


class FileOffsetClock:
    """The wall clock plus an offset that a test moves forward by rewriting a file.

    For end-to-end tests only: five service processes cannot share a :class:`ManualClock`, but
    they can all read one file (``CJO_TEST_CLOCK_FILE``). The file holds the offset in seconds
    (a decimal number; empty or missing means 0). ``now()`` is called on hot paths, so the file
    is looked at (one ``stat``) at most every ``recheck_seconds`` and read only when its
    modification time, inode or size changed. A file caught half-written keeps the last offset;
    writers should use :func:`set_test_clock_offset`, which replaces the file atomically.
    """

    def __init__(self, path: Path, *, base: Clock | None = None,
                 recheck_seconds: float = TEST_CLOCK_RECHECK_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._base = base or SystemClock()
        self._recheck = recheck_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._signature: tuple[int, int, int] | None = None
        self._checked: float | None = None

    @property
    def offset(self) -> timedelta:
        with self._lock:
            self._refresh()
            return self._offset

    def now(self) -> datetime:
        with self._lock:
            self._refresh()
            offset = self._offset
        return self._base.now() + offset

    def _refresh(self) -> None:
        tick = self._monotonic()
        if self._checked is not None and tick - self._checked < self._recheck:
            return
        self._checked = tick
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._signature, self._offset = None, timedelta(0)
            return
        signature = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if signature == self._signature:
            return
        try:
            text = self.path.read_text(encoding="ascii").strip()
            seconds = float(text) if text else 0.0
        except (OSError, ValueError):
            return  # keep the last offset; the next look will see the finished file
        if not math.isfinite(seconds):
            return
        self._signature, self._offset = signature, timedelta(seconds=seconds)


def read_test_clock_offset(path: Path) -> timedelta:
    """The offset a :class:`FileOffsetClock` on ``path`` applies (0 without a file)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return timedelta(0)
    return timedelta(seconds=float(text)) if text else timedelta(0)


def set_test_clock_offset(path: Path, offset: timedelta) -> None:
    """Move every :class:`FileOffsetClock` reading ``path`` to wall clock + ``offset``. The file
    is replaced atomically, so a reader never sees half a number."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(f"{offset.total_seconds():.6f}\n", encoding="ascii")
    os.replace(scratch, path)


def advance_test_clock(path: Path, delta: timedelta) -> timedelta:
    """Add ``delta`` to the offset in ``path``; returns the new offset."""
    offset = read_test_clock_offset(path) + delta
    set_test_clock_offset(path, offset)
    return offset
