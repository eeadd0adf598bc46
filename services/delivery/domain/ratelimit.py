"""Per-provider rate limits: a token bucket driven by the injected clock.

A provider configured with ``rate_per_second`` (and optionally ``burst``, default the rate
rounded up, at least 1) takes at most ``burst`` messages at once and ``rate_per_second`` on
average. The bucket lives in the sender process: with N sender replicas each one enforces the
whole rate, so configure rate/N per provider when running N replicas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_RATE_PER_SECOND = 100_000.0
MAX_BURST = 100_000
_EPSILON = 1e-9  # float sums of refills must not leave a token at 0.9999999


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    burst: int  # most tokens held
    tokens: float = -1.0  # -1: full on first use
    updated: datetime | None = None
    promised: datetime | None = None  # the latest turn handed to a refused message

    def _refill(self, now: datetime) -> None:
        if self.updated is None or self.tokens < 0:
            self.tokens = float(self.burst)
        elif now > self.updated:
            elapsed = (now - self.updated).total_seconds()
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now

    def wait(self, now: datetime) -> timedelta:
        """How long until a token is there; zero when one is there now."""
        self._refill(now)
        if self.tokens >= 1.0 - _EPSILON:
            return timedelta(0)
        # Rounded up to the microsecond, so coming back at now + wait always finds the token.
        return timedelta(microseconds=math.ceil((1.0 - self.tokens) / self.rate * 1e6))

    def next_turn(self, now: datetime) -> datetime:
        """When a message refused now should come back: when the next token comes, or one
        token's time after the turn last handed out, so a backlog comes back spread at the
        rate instead of all at once (and is not claimed and put back again and again). A turn
        is a hint, not a reservation: whoever comes first takes the token."""
        due = now + self.wait(now)
        if self.promised is not None and self.promised >= due:
            due = self.promised + timedelta(microseconds=math.ceil(1e6 / self.rate))
        return due

    def promise(self, turn: datetime) -> None:
        """Record that a refused message was told to come back at ``turn``."""
        if self.promised is None or turn > self.promised:
            self.promised = turn

    def take(self, now: datetime) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens < 1.0 - _EPSILON:
            return False
        self.tokens = max(self.tokens - 1.0, 0.0)
        return True


def bucket_of(config: dict[str, str]) -> TokenBucket | None:
    """The bucket a provider's (validated) settings ask for; None when it has no rate limit."""
    rate = config.get("rate_per_second")
    if not rate:
        return None
    per_second = float(rate)
    burst = int(config.get("burst") or max(1, math.ceil(per_second)))
    return TokenBucket(per_second, burst)


def valid_rate(value: str) -> bool:
    try:
        rate = float(value)
    except ValueError:
        return False
    return math.isfinite(rate) and 0 < rate <= MAX_RATE_PER_SECOND


def valid_burst(value: str) -> bool:
    return value.isdigit() and 1 <= int(value) <= MAX_BURST
