"""One retry policy for everything that tries again later: a step, a message, a peer call."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff, capped, bounded in attempts, optionally jittered.

    ``jitter`` is the random share of each delay: 0 waits exactly ``base * 2**(n-1)`` (capped);
    0.5 is "equal jitter" (half fixed, half random), so a peer that comes back is not hit by every
    waiting item in the same instant, yet no retry comes almost at once."""

    max_attempts: int = 5
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=5)
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        # Doubling stops at the cap, so any attempt number (a retry that never gives up) is safe:
        # timedelta overflows long before 2 ** attempt does.
        ceiling = self.base_delay
        for _ in range(max(attempt - 1, 0)):
            if ceiling >= self.max_delay:
                break
            ceiling *= 2
        ceiling = min(ceiling, self.max_delay)
        if not self.jitter:
            return ceiling
        fixed = ceiling * (1.0 - self.jitter)
        share: float = (rng or random).random()
        return fixed + (ceiling - fixed) * share

    def exhausted(self, attempts: int) -> bool:
        """True when ``attempts`` tries have failed and no more may follow."""
        return attempts >= self.max_attempts
