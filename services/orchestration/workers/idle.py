"""How long an idle worker may sleep: until its next known due time, at most its poll."""

from __future__ import annotations

from datetime import datetime


def seconds_until(due: datetime | None, now: datetime, longest: float) -> float:
    """Seconds from ``now`` to ``due`` (0 when past), at most ``longest``; ``longest`` when
    nothing is due."""
    if due is None:
        return longest
    return min(max((due - now).total_seconds(), 0.0), longest)
