"""The fast check every recorded fact takes (``is_valid``) says exactly what ``validate_fact``
says: a fact it passes has no problem, and every problem makes it fail (then the full check
names the fields)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace
from datetime import UTC, datetime

import pytest

from cjo.analytics.v1 import fact_pb2
from cjo_analytics.api.convert import to_fact
from cjo_analytics.domain.facts import Fact, FactType, is_valid, validate_fact
from cjo_platform.limits import MAX_ID_LENGTH, MAX_PROFILE_ID_LENGTH
from cjo_platform.protobuf import to_timestamp

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


def test_a_fact_from_the_wire_has_every_field_of_fact_and_equals_one_built_by_fact() -> None:
    """to_fact builds the Fact without its __init__ (see convert.to_fact): it must give every
    field of Fact, nothing else, with the values the constructor would hold."""
    wire = fact_pb2.Fact(
        fact_id="f1", type=fact_pb2.FACT_TYPE_EXPERIMENT_EXPOSED, profile_id="p1",
        journey_id="j1", enrollment_id="e1", message_id="m1",
        occur_time=to_timestamp(datetime(2026, 3, 1, 9, 30, 1, 250000, tzinfo=UTC)),
        journey_version=3, node_id="split", channel=2, content_key="welcome", variant="b",
        experiment_id="x", arm="a", control=True, arm_weight=40.0, revenue=9.5, currency="EUR",
        exit_reason="completed",
        conversion_deadline=to_timestamp(datetime(2026, 3, 8, tzinfo=UTC)),
        visit_sequence=4, source_event_id="ev")
    fact = to_fact(wire)
    assert set(vars(fact)) == {f.name for f in fields(Fact)}
    built = Fact("f1", FactType.EXPERIMENT_EXPOSED, "p1", "j1", "e1", "m1",
                 datetime(2026, 3, 1, 9, 30, 1, 250000, tzinfo=UTC), journey_version=3,
                 node_id="split", channel=2, content_key="welcome", variant="b",
                 experiment_id="x", arm="a", control=True, arm_weight=40.0, revenue=9.5,
                 currency="EUR", exit_reason="completed",
                 conversion_deadline=datetime(2026, 3, 8, tzinfo=UTC), visit_sequence=4,
                 source_event_id="ev")
    assert fact == built
    assert hash(fact) == hash(built)
    with pytest.raises(FrozenInstanceError):
        fact.fact_id = "other"  # type: ignore[misc]
    bare = to_fact(fact_pb2.Fact(fact_id="f2", type=fact_pb2.FACT_TYPE_JOURNEY_ENTERED,
                                 profile_id="p1", occur_time=wire.occur_time))
    assert bare == Fact("f2", FactType.JOURNEY_ENTERED, "p1", "", "", "", built.occur_time)
