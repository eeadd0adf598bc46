"""Best send times: a person's own habit, the crowd's while the person has none, the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cjo_decisioning.domain.send_times import best_send_time

DAY = timedelta(days=1)
MORNING = datetime(2026, 3, 2, 7, 40, tzinfo=UTC)


def _hours(**counts: float) -> list[float]:
    """24 hourly counts from h<hour>=count."""
    hours = [0.0] * 24
    for name, count in counts.items():
        hours[int(name[1:])] = count
    return hours


# The crowd engages most at 9:00 UTC, some at 18:00.
CROWD = _hours(h9=500, h18=200, h21=100, h3=10)


def test_a_person_who_opens_at_six_pm_gets_six_pm() -> None:
    assert best_send_time(_hours(h18=12, h9=1), CROWD, MORNING, DAY) == (
        datetime(2026, 3, 2, 18, tzinfo=UTC), "profile", 13)


def test_one_open_does_not_pin_a_person_but_a_habit_does() -> None:
    once = best_send_time(_hours(h3=1), CROWD, MORNING, DAY)
    assert once == (datetime(2026, 3, 2, 9, tzinfo=UTC), "profile", 1)
    habit = best_send_time(_hours(h3=8), CROWD, MORNING, DAY)
    assert habit == (datetime(2026, 3, 3, 3, tzinfo=UTC), "profile", 8)


def test_a_person_without_engagement_gets_the_crowds_hour() -> None:
    assert best_send_time([0] * 24, CROWD, MORNING, DAY) == (
        datetime(2026, 3, 2, 9, tzinfo=UTC), "population", 0)


def test_no_engagement_anywhere_sends_at_the_earliest_time() -> None:
    assert best_send_time([0] * 24, [0] * 24, MORNING, DAY) == (MORNING, "default", 0)


def test_the_maximum_delay_holds() -> None:
    # 18:00 is out of reach within 4 hours: the best hour inside the window, 9:00.
    assert best_send_time(_hours(h18=30), CROWD, MORNING, timedelta(hours=4))[0] == datetime(
        2026, 3, 2, 9, tzinfo=UTC)
    # Nothing better within the window than now: now.
    late = datetime(2026, 3, 2, 19, 10, tzinfo=UTC)
    assert best_send_time(_hours(h18=30), [0] * 24, late, timedelta(hours=5))[0] == late
    assert best_send_time(_hours(h18=30), CROWD, MORNING, timedelta(0))[0] == MORNING
    # A week's reach still finds the habit's next occurrence, not a later one.
    week = best_send_time(_hours(h18=30), CROWD, late, timedelta(days=7))[0]
    assert week == datetime(2026, 3, 3, 18, tzinfo=UTC)


def test_inside_the_best_hour_sends_right_away() -> None:
    now = datetime(2026, 3, 2, 18, 25, tzinfo=UTC)
    assert best_send_time(_hours(h18=30), CROWD, now, DAY) == (now, "profile", 30)


def test_ties_go_to_the_earliest_time_and_other_zones_are_read_in_utc() -> None:
    flat = [1.0] * 24
    assert best_send_time(flat, flat, MORNING, DAY)[0] == MORNING
    paris = MORNING.astimezone(ZoneInfo("Europe/Paris"))
    assert best_send_time(_hours(h18=30), CROWD, paris, DAY)[0] == datetime(
        2026, 3, 2, 18, tzinfo=UTC)
    with pytest.raises(ValueError):
        best_send_time([1.0] * 23, CROWD, MORNING, DAY)
