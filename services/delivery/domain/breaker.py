"""A circuit breaker per provider, driven by the injected clock.

CLOSED: calls go through; ``threshold`` consecutive failures open it. OPEN: calls are refused
(the next provider in the list gets them) until ``cool_down`` has passed; then HALF-OPEN: one
trial call goes through; its success closes the breaker, its failure opens it again. A 429
answer also holds the provider back until its Retry-After has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cool_down: timedelta = timedelta(seconds=30)
    failures: int = 0
    open_until: datetime | None = None
    trial_under_way: bool = False

    def allow(self, now: datetime) -> bool:
        if self.open_until is None:
            return True
        if now < self.open_until or self.trial_under_way:
            return False
        self.trial_under_way = True  # half-open: exactly one call tests the water
        return True

    def state(self, now: datetime) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half_open"

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = None
        self.trial_under_way = False

    def failed(self, now: datetime) -> None:
        self.failures += 1
        if self.trial_under_way or self.failures >= self.threshold:
            self.open_until = now + self.cool_down
        self.trial_under_way = False

    def hold_back(self, until: datetime) -> None:
        """The provider asked to be left alone until ``until`` (429 Retry-After)."""
        if self.open_until is None or self.open_until < until:
            self.open_until = until
        self.trial_under_way = False
