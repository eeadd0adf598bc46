"""Journeys' conditions at run time: loaded as published (never refused by a save-time check
added since), missing data and type mismatches do not hold (the rule identity's segments follow
too), other failures are the condition's error, bounded and storable."""

from __future__ import annotations

import pytest

from cjo_orchestration.domain.conditions import (
    MAX_ERROR_DETAIL,
    ConditionError,
    condition_holds,
    error_detail,
)


def test_a_published_condition_is_evaluated_as_saved() -> None:
    # Nested three deep: refused when saved today, evaluated when published before that rule.
    nested = "[1].all(a, [2].all(b, [3].all(c, a + b + c == event.sum)))"
    assert condition_holds(nested, "branch.condition", {"sum": 6}, {}, {})
    assert not condition_holds(nested, "branch.condition", {"sum": 7}, {}, {})


def test_missing_data_and_other_types_do_not_hold_real_errors_raise() -> None:
    for traits in ({}, {"age": None}, {"age": "42"}):
        assert not condition_holds("profile.age > 30", "goal.filter", {}, traits, {})
    with pytest.raises(ConditionError, match=r"goal\.filter"):
        condition_holds("int(profile.zip) > 1", "goal.filter", {}, {"zip": "abc"}, {})
    ones = "[" + ",".join(["1"] * 300) + "]"
    with pytest.raises(ConditionError, match="too costly"):
        condition_holds(f"size({ones}.map(x, {ones}.map(y, [x, y]))) == 0 || event.a == 1",
                        "event_trigger.filter", {"a": 1}, {}, {})


def test_error_details_are_storable() -> None:
    detail = error_detail(ConditionError("f", "x\x00" * MAX_ERROR_DETAIL))
    assert "\x00" not in detail and len(detail) == MAX_ERROR_DETAIL and detail.endswith("…")
