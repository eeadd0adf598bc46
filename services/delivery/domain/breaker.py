"""A circuit breaker per provider, driven by the injected clock.

CLOSED: calls go through; ``threshold`` consecutive failures open it. OPEN: calls are refused
(the next provider in the list gets them) until ``cool_down`` has passed; then HALF-OPEN: one
trial call goes through; its success closes the breaker, its failure opens it again. A 429
answer also holds the provider back until its Retry-After has passed.

The state is plain data, so every sender replica can share it (adapters/breaker_store.py
keeps it in the database): the trial is out until ``trial_until`` (a lease, so a sender that
died mid-trial does not hold the provider shut for ever).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# How long a half-open breaker's trial call may take before another caller may try.
TRIAL_LEASE = timedelta(minutes=5)


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cool_down: timedelta = timedelta(seconds=30)
    failures: int = 0
    open_until: datetime | None = None
    trial_until: datetime | None = None

    def allow(self, now: datetime, trial_lease: timedelta = TRIAL_LEASE) -> bool:
        if self.open_until is None:
            return True
        if now < self.open_until or self.trial_under_way(now):
            return False
        self.trial_until = now + trial_lease  # half-open: exactly one call tests the water
        return True

    def trial_under_way(self, now: datetime) -> bool:
        return self.trial_until is not None and now < self.trial_until

    def state(self, now: datetime) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half_open"

    @property
    def clean(self) -> bool:
        """Closed with no failure counted: a success changes nothing."""
        return self.failures == 0 and self.open_until is None and self.trial_until is None

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = None
        self.trial_until = None

    def failed(self, now: datetime) -> None:
        self.failures += 1
        if self.trial_until is not None or self.failures >= self.threshold:
            self.open_until = now + self.cool_down
        self.trial_until = None

    def hold_back(self, until: datetime) -> None:
        """The provider asked to be left alone until ``until`` (429 Retry-After)."""
        if self.open_until is None or self.open_until < until:
            self.open_until = until
        self.trial_until = None
