"""A small time-bounded cache of answers this console process already fetched."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any


class TtlCache:
    """Keeps each answer for ``ttl`` and at most ``size`` answers (the oldest dropped first)."""

    def __init__(self, ttl: timedelta, size: int = 1000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[Any, tuple[datetime, Any]] = OrderedDict()

    def get(self, key: Any, now: datetime) -> Any | None:
        found = self._items.get(key)
        if found is None or found[0] <= now:
            return None
        return found[1]

    def put(self, key: Any, value: Any, now: datetime) -> None:
        self._items[key] = (now + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
