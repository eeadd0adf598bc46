"""The shared limit helpers services check ids, durations and planned instants with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cjo_platform.errors import Violations
from cjo_platform.limits import (
    LATEST_TIME,
    MAX_ID_LENGTH,
    MAX_WINDOW,
    check_duration,
    check_id,
    check_time,
    describe,
)


def _problems(check: object) -> dict[str, str]:
    assert callable(check)
    problems = Violations()
    check(problems)
    return {v.field: v.description for v in problems.items}


def test_ids_are_checked_against_the_shared_length() -> None:
    assert _problems(lambda p: check_id(p, "fact_id", "f" * MAX_ID_LENGTH)) == {}
    assert _problems(lambda p: check_id(p, "fact_id", "f" * (MAX_ID_LENGTH + 1))) == {
        "fact_id": "at most 128 characters"}
    assert _problems(lambda p: check_id(p, "fact_id", "", required=True)) == {
        "fact_id": "is required"}
    assert _problems(lambda p: check_id(p, "fact_id", "")) == {}


def test_durations_are_checked_against_a_window() -> None:
    assert _problems(lambda p: check_duration(p, "window", MAX_WINDOW)) == {}
    assert _problems(lambda p: check_duration(p, "window", timedelta(days=3000 * 365))) == {
        "window": "must be 1 second to 10 years (3,650 days)"}
    assert _problems(lambda p: check_duration(p, "window", timedelta(0))) == {
        "window": "must be 1 second to 10 years (3,650 days)"}
    assert _problems(lambda p: check_duration(p, "window", None)) == {"window": "is required"}
    assert _problems(lambda p: check_duration(p, "window", None, required=False)) == {}
    assert describe(timedelta(days=366)) == "366 days"
    assert describe(timedelta(minutes=90)) == "90 minutes"


def test_planned_instants_lie_in_the_sensible_range() -> None:
    assert _problems(lambda p: check_time(p, "at", LATEST_TIME)) == {}
    assert _problems(lambda p: check_time(p, "at", None)) == {}
    assert _problems(lambda p: check_time(p, "at", datetime(9999, 12, 31, tzinfo=UTC))) == {
        "at": "must be between 1970-01-01 and 2200-01-01"}
