"""Time-decay credit where 2^(-age / half-life) underflows a double (age over ~1,074 half-lives):
a short half-life or old touchpoints must still give the newer touch the larger share, never an
equal split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo_analytics.domain.attribution import MICROS, Conversion, Model, TouchFact, attribute_all
from cjo_analytics.domain.reports import MAX_HALF_LIFE_HOURS

T0 = datetime(2026, 5, 1, tzinfo=UTC)
LOOKBACK = timedelta(days=90)  # the largest lookback a report accepts


def decay_split(hours_before: list[float], half_life_hours: float,
                revenue: float = 100.0) -> list[tuple[str, int, int]]:
    history = [TouchFact(f"m{i}", 1, "j", "c", T0 - timedelta(hours=h))
               for i, h in enumerate(hours_before)]
    history.sort(key=lambda t: t.occur_time)
    result = attribute_all([Conversion("conv", "p1", T0, revenue)], {"p1": history},
                           [Model.TIME_DECAY], LOOKBACK, half_life_hours, keep_conversions=1,
                           start=T0 - timedelta(days=1), end=T0 + timedelta(days=1))
    [(_, credited)] = result.models[0].conversions
    return [(c.touch.message_id, c.share_micros, c.revenue_micros) for c in credited]


def test_a_short_half_life_gives_the_newer_touch_all_the_credit() -> None:
    # 12 hours apart: the older touch's weight is 2^-12 of the newer's with a 1 h half-life
    # (1e6 / 4097 = 244.08 millionths) ...
    assert decay_split([24, 12], 1.0) == [("m0", 244, 24_408), ("m1", 999_756, 99_975_592)]
    # ... and 2^-1200 with 0.01 h (2^-2400 and 2^-1200 from the conversion: both underflowed to
    # 0, which split the credit 500,000 / 500,000).
    assert decay_split([24, 12], 0.01) == [("m0", 0, 0), ("m1", MICROS, 100_000_000)]


@pytest.mark.parametrize("days_before", [45, 46, 60, 89])
def test_old_touchpoints_split_as_they_would_when_young(days_before: int) -> None:
    # Over ~44.75 days (1,074 half-lives of 1 h) every weight measured from the conversion
    # underflowed; only the 12 hours between the touches matter.
    hours = days_before * 24.0
    assert decay_split([hours + 12, hours], 1.0) == decay_split([24, 12], 1.0)


def test_three_old_touches_halve_per_half_life_between_them() -> None:
    # 2, 1 and 0 half-lives older than the newest: weights 1/4, 1/2, 1 -> 1/7, 2/7, 4/7.
    old = 80 * 24.0
    credited = decay_split([old + 2, old + 1, old], 1.0, revenue=70.0)
    assert [r for _, _, r in credited] == [10_000_000, 20_000_000, 40_000_000]
    assert sum(s for _, s, _ in credited) == MICROS


def test_touches_at_the_same_instant_share_equally_at_any_half_life() -> None:
    assert [s for _, s, _ in decay_split([89 * 24.0, 89 * 24.0], 0.01)] == [500_000, 500_000]
    assert [s for _, s, _ in decay_split([30, 0], MAX_HALF_LIFE_HOURS)] == [497_593, 502_407]
