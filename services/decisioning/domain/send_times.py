"""Best send time: the hour of the day (UTC) a person most often engages, within a window.

A person's opens and clicks per hour are blended with the workspace's (a Dirichlet prior of
the population's shape worth PRIOR_WEIGHT engagements), so one open at 3 a.m. does not pin a
person to 3 a.m. while a habit of many opens at 18:00 wins over the crowd.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

PROFILE = "profile"
POPULATION = "population"
DEFAULT = "default"

PRIOR_WEIGHT = 5.0
"""How many engagements the population's shape is worth against a person's own."""

HOURS = 24


def _hour_counts(hours: Sequence[float], name: str) -> list[float]:
    if len(hours) != HOURS:
        raise ValueError(f"{name}: {HOURS} hourly counts expected")
    return [max(0.0, float(h)) for h in hours]


def best_send_time(profile_hours: Sequence[float], population_hours: Sequence[float],
                   earliest: datetime, max_delay: timedelta) -> tuple[datetime, str, int]:
    """(send time, source, the person's own engagements): the start of the hour with the
    highest blended engagement between `earliest` and `earliest + max_delay`, or `earliest`
    itself when that is its own hour's turn; ties go to the earliest time."""
    if max_delay < timedelta(0):
        raise ValueError("max_delay must not be negative")
    own = _hour_counts(profile_hours, "profile_hours")
    crowd = _hour_counts(population_hours, "population_hours")
    observations, population = int(sum(own)), sum(crowd)
    if observations == 0 and population == 0:
        return earliest, DEFAULT, 0
    shape = [c / population for c in crowd] if population > 0 else [1.0 / HOURS] * HOURS
    if observations > 0:
        # Posterior mean of a Dirichlet(PRIOR_WEIGHT x shape) after the person's counts; the
        # common denominator does not change the order.
        weight = [o + PRIOR_WEIGHT * s for o, s in zip(own, shape, strict=True)]
        source = PROFILE
    else:
        weight, source = shape, POPULATION
    start = earliest.astimezone(UTC)
    latest = start + max_delay
    best_time, best_weight = earliest, weight[start.hour]
    hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while hour <= latest:
        if weight[hour.hour] > best_weight:
            best_time, best_weight = hour, weight[hour.hour]
        hour += timedelta(hours=1)
    return best_time, source, observations
