"""Attribution models on hand-worked cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo_analytics.domain.attribution import (
    Conversion,
    Model,
    TouchFact,
    allocate,
    attribute_all,
    conversion_probability,
    removal_effects,
    transition_counts,
)

EMAIL, SMS, PUSH = 1, 2, 3
T0 = datetime(2026, 3, 10, 12, tzinfo=UTC)
LOOKBACK = timedelta(days=30)


def touch(message: str, channel: int, hours_before: float, journey: str = "j1",
          content: str = "") -> TouchFact:
    return TouchFact(message, channel, journey, content or f"c-{message}",
                     T0 - timedelta(hours=hours_before))


def run(model: Model, history: list[TouchFact], revenue: float = 100.0,
        half_life_hours: float = 168.0) -> list[tuple[str, float, float]]:
    history = sorted(history, key=lambda t: t.occur_time)
    result = attribute_all([Conversion("conv", "p1", T0, revenue)], {"p1": history}, [model],
                           LOOKBACK, half_life_hours, keep_conversions=10)
    [(_, credited)] = result.models[0].conversions
    return [(c.touch.message_id, c.share_micros / 1e6, c.revenue_micros / 1e6)
            for c in credited]


def test_single_touch_takes_all_credit_in_every_model() -> None:
    for model in Model:
        assert run(model, [touch("m1", EMAIL, 5)]) == [("m1", 1.0, 100.0)], model


def test_first_and_last_touch_break_ties_by_message_id() -> None:
    same_time = [touch("m-b", SMS, 10), touch("m-a", EMAIL, 10), touch("m-c", PUSH, 2)]
    assert [c[1] for c in run(Model.FIRST_TOUCH, same_time)] == [1.0, 0.0, 0.0]
    assert run(Model.FIRST_TOUCH, same_time)[0][0] == "m-a"
    tied_last = [touch("m-b", SMS, 1), touch("m-a", EMAIL, 1)]
    assert run(Model.LAST_TOUCH, tied_last) == [("m-a", 0.0, 0.0), ("m-b", 1.0, 100.0)]


def test_linear_splits_exactly_with_the_remainder_to_the_earliest() -> None:
    credited = run(Model.LINEAR, [touch("m1", EMAIL, 3), touch("m2", SMS, 2),
                                  touch("m3", PUSH, 1)])
    assert credited == [("m1", 0.333334, 33.333334), ("m2", 0.333333, 33.333333),
                        ("m3", 0.333333, 33.333333)]
    assert round(sum(c[2] for c in credited) * 1e6) == 100_000_000


def test_time_decay_halves_credit_per_half_life() -> None:
    credited = run(Model.TIME_DECAY, [touch("m1", EMAIL, 48), touch("m2", SMS, 24),
                                      touch("m3", PUSH, 0)], revenue=70.0, half_life_hours=24)
    assert [c[2] for c in credited] == [10.0, 20.0, 40.0]


def test_position_based_is_40_20_40_and_50_50_for_two() -> None:
    four = run(Model.POSITION_BASED, [touch(f"m{i}", EMAIL, 10 - i) for i in range(4)])
    assert [c[2] for c in four] == [40.0, 10.0, 10.0, 40.0]
    two = run(Model.POSITION_BASED, [touch("m1", EMAIL, 2), touch("m2", SMS, 1)])
    assert [c[2] for c in two] == [50.0, 50.0]
    three = run(Model.POSITION_BASED, [touch(f"m{i}", EMAIL, 10 - i) for i in range(3)])
    assert [c[2] for c in three] == [40.0, 20.0, 40.0]


def test_touchpoints_respect_the_lookback_and_count_a_message_once() -> None:
    history = [touch("old", EMAIL, 30 * 24 + 1), touch("m1", EMAIL, 5), touch("m1", EMAIL, 4),
               touch("now", SMS, 0), touch("later", PUSH, -1)]
    assert run(Model.LINEAR, history) == [("m1", 0.5, 50.0), ("now", 0.5, 50.0)]


def test_markov_removal_effects_match_the_hand_computed_chain() -> None:
    # start->EMAIL 2, start->SMS 1; EMAIL->conv 1, EMAIL->SMS 1; SMS->conv 1, SMS->null 1.
    # P(conv) = 2/3 * (1/2 + 1/2 * 1/2) + 1/3 * 1/2 = 2/3.
    # Without EMAIL: 1/3 * 1/2 = 1/6 -> effect 3/4. Without SMS: 2/3 * 1/2 = 1/3 -> effect 1/2.
    paths = [([EMAIL], True), ([EMAIL, SMS], True), ([SMS], False)]
    assert conversion_probability(transition_counts(paths)) == pytest.approx(2 / 3)
    assert removal_effects(paths) == pytest.approx({EMAIL: 0.75, SMS: 0.5})


def test_data_driven_splits_by_removal_effect_over_all_paths() -> None:
    history = {
        "p1": [touch("a1", EMAIL, 3)],
        "p2": [touch("b1", EMAIL, 3), touch("b2", SMS, 2)],
        "p3": [touch("c1", SMS, 3)],  # never converts: the null path
    }
    conversions = [Conversion("x1", "p1", T0, 10.0), Conversion("x2", "p2", T0, 100.0)]
    result = attribute_all(conversions, history, [Model.DATA_DRIVEN, Model.LINEAR], LOOKBACK,
                           168.0, keep_conversions=10)
    assert result.attributed_conversions == 2
    data_driven, linear = result.models
    # Effects 0.75 (email) and 0.5 (sms): p2's 100 splits 60/40.
    assert {k: (v.conversions_micros, v.revenue_micros)
            for k, v in data_driven.channels.items()} == {
        EMAIL: (1_600_000, 70_000_000), SMS: (400_000, 40_000_000)}
    assert {k: v.revenue_micros for k, v in linear.channels.items()} == {
        EMAIL: 60_000_000, SMS: 50_000_000}
    for model in result.models:
        for sums in (model.channels, model.journeys, model.content_items):
            assert sum(c.revenue_micros for c in sums.values()) == 110_000_000
            assert sum(c.conversions_micros for c in sums.values()) == 2_000_000


def test_conversion_without_touchpoints_is_counted_but_not_attributed() -> None:
    result = attribute_all([Conversion("x", "p9", T0, 5.0)], {}, [Model.LINEAR], LOOKBACK, 168.0)
    assert (result.conversions, result.attributed_conversions) == (1, 0)
    assert dict(result.models[0].channels) == {}


def test_allocate_always_adds_up() -> None:
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(7, [0, 0]) == [4, 3]
    assert allocate(1_000_000, [0.1, 0.2, 0.3, 0.4]) == [100_000, 200_000, 300_000, 400_000]
    assert sum(allocate(99_999_999, [1 / 3, 1 / 7, 0.9, 2.2])) == 99_999_999
