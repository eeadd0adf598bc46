"""Definitions read from the database, kept in the process between transactions and checked
against a revision that the caller reads in its own transaction (identity's active segments,
orchestration's journey triggers).

A revision is a number that every committed change of what is kept moves (a counter bumped by
each writer, a sum of per-row revisions): while the revision read in this transaction equals
the one a value was kept with, the value is what the database holds, on any replica, so the
read is skipped. The value is read after the revision, in the same transaction, so it is at
least as new as the revision it is kept with: a change committed in between makes the next
transaction's revision differ, and the value is read once more (never kept under a newer
revision than the one it reflects).

A change that does not move the revision (a replica still running a release from before the
revision, a restore, a fix made by hand in SQL) would otherwise never be seen: a value is
used ``max_age`` seconds at most, counted from before its read, whatever the revision says.

At most ``capacity`` values are kept, the least recently used let go first. One cache per
process and database, shared by its writer threads: every look-up and every keep is under one
lock (an eviction beside a look-up would otherwise break it); the reads of the database go
outside it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# How long a kept value is used at most, revision or not (see the module docstring).
MAX_AGE_SECONDS = 5.0
# Values one cache keeps at most.
CAPACITY = 10_000


class RevisionCache(Generic[K, V]):
    """Values by key, each with the revision it was read at (see the module docstring)."""

    def __init__(self, capacity: int = CAPACITY, max_age: float = MAX_AGE_SECONDS, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self._monotonic = monotonic
        # key -> (revision, monotonic time before its read, value); least recently used first.
        self._values: OrderedDict[K, tuple[int, float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, revisions: Mapping[K, int],
            read: Callable[[Collection[K]], Mapping[K, V]]) -> dict[K, V]:
        """The value of each key of ``revisions``: the one kept at that revision (read in the
        caller's transaction before this call) if it is younger than ``max_age``, otherwise
        ``read`` (in the caller's transaction, after the revisions) for all those keys at once,
        and kept. ``read`` must answer every key it is given."""
        now = self._monotonic()
        found: dict[K, V] = {}
        missing: list[K] = []
        with self._lock:
            for key, revision in revisions.items():
                kept = self._values.get(key)
                if kept is not None and kept[0] == revision and now - kept[1] < self.max_age:
                    self._values.move_to_end(key)
                    found[key] = kept[2]
                else:
                    missing.append(key)
        if not missing:
            return found
        read_now = read(missing)
        with self._lock:
            for key in missing:
                value = found[key] = read_now[key]
                self._values[key] = (revisions[key], now, value)
                self._values.move_to_end(key)
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
        return found

    def keys(self) -> list[K]:
        """The keys kept, least recently used first."""
        with self._lock:
            return list(self._values)
