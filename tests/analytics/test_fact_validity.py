"""The fast check every recorded fact takes (``is_valid``) says exactly what ``validate_fact``
says: a fact it passes has no problem, and every problem makes it fail (then the full check
names the fields)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from cjo_analytics.domain.facts import Fact, FactType, is_valid, validate_fact
from cjo_platform.limits import MAX_ID_LENGTH, MAX_PROFILE_ID_LENGTH

GOOD = Fact("f1", FactType.MESSAGE_SENT, "p1", "j1", "e1", "m1",
            datetime(2026, 3, 1, tzinfo=UTC), journey_version=2, node_id="send", channel=1,
            content_key="welcome", variant="a", experiment_id="x", arm="b", arm_weight=1.0,
            revenue=9.5, currency="EUR", visit_sequence=1, source_event_id="ev")
LONG = "x" * (MAX_ID_LENGTH + 1)

CASES = [
    GOOD,
    replace(GOOD, experiment_id="", arm=""),
    replace(GOOD, fact_id=""),
    replace(GOOD, fact_id=LONG),
    replace(GOOD, profile_id=""),
    replace(GOOD, profile_id="p" * (MAX_PROFILE_ID_LENGTH + 1)),
    replace(GOOD, profile_id="p" * MAX_PROFILE_ID_LENGTH),
    *(replace(GOOD, **{name: LONG}) for name in (
        "journey_id", "node_id", "content_key", "variant", "experiment_id", "arm",
        "exit_reason", "enrollment_id", "message_id", "source_event_id")),
    *(replace(GOOD, **{name: "y" * MAX_ID_LENGTH}) for name in ("journey_id", "arm")),
    replace(GOOD, journey_version=-1),
    replace(GOOD, visit_sequence=-1),
    replace(GOOD, arm=""),
    replace(GOOD, revenue=-1.0),
    replace(GOOD, revenue=float("nan")),
    replace(GOOD, revenue=float("inf")),
    replace(GOOD, arm_weight=-0.5),
    replace(GOOD, arm_weight=float("nan")),
    replace(GOOD, currency="EURO"),
    replace(GOOD, survivor_profile_id="p2"),
    replace(GOOD, type=FactType.PROFILE_MERGED, survivor_profile_id="p2"),
    replace(GOOD, type=FactType.PROFILE_MERGED, survivor_profile_id=""),
    replace(GOOD, type=FactType.PROFILE_MERGED, survivor_profile_id="p1"),
    replace(GOOD, type=FactType.PROFILE_MERGED,
            survivor_profile_id="s" * (MAX_PROFILE_ID_LENGTH + 1)),
]


@pytest.mark.parametrize("fact", CASES)
def test_the_fast_check_agrees_with_the_full_one(fact: Fact) -> None:
    assert is_valid(fact) == (not validate_fact(fact))


def test_the_cases_hold_both_answers() -> None:
    assert {is_valid(f) for f in CASES} == {True, False}
