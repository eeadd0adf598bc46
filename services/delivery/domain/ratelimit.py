"""Per-provider rate limits: the generic cell rate algorithm (GCRA) on the injected clock.

A provider configured with ``rate_per_second`` (and optionally ``burst``, default the rate
rounded up, at least 1) takes at most ``burst`` messages at once and ``rate_per_second`` on
average, summed over every sender replica. The whole state of a limit is one instant, the
theoretical arrival time (``tat``): when the provider would have caught up with everything
sent so far at the rate. It lives in the database (adapters/rate_store.py), so replicas
sharing a database share the limit; this module is the arithmetic.

A sender reserves the sends of a whole round at once (``reserve``), hands out the grant one
message at a time (``Grant.take``), and gives back what it did not use (``give_back``), so a
message that went to another provider, or never reached one, does not burn budget. A message
refused for want of a grant gets a turn (``Grant.next_turn``): when the next sends free up,
after the turns already handed out, so a backlog comes back spread at the rate instead of
being claimed and put back every round. A turn is a hint, not a reservation: whoever comes
first takes the send.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_RATE_PER_SECOND = 100_000.0
# The slowest rate: a burst's span (MAX_BURST / rate, ~3 years) must fit a datetime.
MIN_RATE_PER_SECOND = 0.001
MAX_BURST = 100_000
_EPSILON = 1e-6  # times are whole microseconds: room for 0.9999996 sends is room for one


@dataclass(frozen=True)
class RateLimit:
    rate: float  # sends per second
    burst: int  # most sends at once

    def span(self, sends: int) -> timedelta:
        """The time ``sends`` take at the rate, rounded up to the microsecond (so the sum of
        the spans of a round never lets more through than the rate)."""
        return timedelta(microseconds=math.ceil(sends * 1e6 / self.rate))

    def reserve(self, tat: datetime, now: datetime, want: int) -> tuple[int, datetime]:
        """Reserve up to ``want`` sends at ``now``: how many, and the new arrival time."""
        start = max(tat, now)
        room = (now - start).total_seconds() + self.burst / self.rate
        granted = max(0, min(want, math.floor(room * self.rate + _EPSILON)))
        return granted, start + self.span(granted)

    def give_back(self, tat: datetime, now: datetime, unused: int) -> datetime:
        """The arrival time once ``unused`` reserved sends are returned; never before ``now``,
        where the whole burst is free again (time that passed is not banked beyond it)."""
        return max(tat - self.span(unused), now)


@dataclass
class Grant:
    """One round's reservation of one provider's sends."""

    limit: RateLimit
    granted: int
    tat: datetime  # after the reservation
    promised: datetime | None  # the latest turn handed out before this round
    used: int = 0
    refused: int = 0
    last_turn: datetime | None = None  # the latest turn this round handed out
    # No more to be had this round: a reservation came back short (or failed).
    exhausted: bool = False
    failed: bool = False  # reserving failed: nothing granted, no turn known
    top_ups: int = 0

    def add(self, more: Grant) -> None:
        """Merge a later reservation of the same provider in the same round."""
        self.granted += more.granted
        self.tat = more.tat
        if more.promised is not None and (self.promised is None
                                          or more.promised > self.promised):
            self.promised = more.promised
        self.exhausted = self.exhausted or more.exhausted

    def take(self) -> bool:
        """Use one reserved send if one is left."""
        if self.used >= self.granted:
            return False
        self.used += 1
        return True

    def put_back(self) -> None:
        """Return a send taken but not made."""
        self.used -= 1

    @property
    def unused(self) -> int:
        return self.granted - self.used

    def next_turn(self, now: datetime) -> datetime:
        """When a message refused now should come back: the k-th refused message of the round
        is due when the k-th send after the reservation frees up, or k sends' time after the
        latest turn handed out before the round, whichever is later."""
        # Sends free up one by one once the arrival time is less than a burst ahead.
        base = self.tat - self.limit.span(self.limit.burst)
        if self.promised is not None and self.promised > base:
            base = self.promised
        return max(base + self.limit.span(self.refused + 1), now)

    def promise(self, turn: datetime) -> None:
        """Record that a refused message was told to come back at ``turn``."""
        self.refused += 1
        if self.last_turn is None or turn > self.last_turn:
            self.last_turn = turn


def limit_of(config: dict[str, str]) -> RateLimit | None:
    """The limit a provider's (validated) settings ask for; None when it has no rate limit."""
    rate = config.get("rate_per_second")
    if not rate:
        return None
    # A stored rate may predate the floor now enforced on input.
    per_second = max(float(rate), MIN_RATE_PER_SECOND)
    burst = int(config.get("burst") or max(1, math.ceil(per_second)))
    return RateLimit(per_second, burst)


def valid_rate(value: str) -> bool:
    try:
        rate = float(value)
    except ValueError:
        return False
    return math.isfinite(rate) and MIN_RATE_PER_SECOND <= rate <= MAX_RATE_PER_SECOND


def valid_burst(value: str) -> bool:
    return value.isdigit() and 1 <= int(value) <= MAX_BURST
