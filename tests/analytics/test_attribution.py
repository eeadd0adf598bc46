"""Attribution models on hand-worked cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo_analytics.domain.attribution import (
    MICROS,
    Conversion,
    Model,
    TouchFact,
    allocate,
    attribute_all,
    conversion_probability,
    markov_paths,
    removal_effects,
    transition_counts,
)

EMAIL, SMS, PUSH = 1, 2, 3
T0 = datetime(2026, 3, 10, 12, tzinfo=UTC)
LOOKBACK = timedelta(days=30)
START, END = T0 - timedelta(days=1), T0 + timedelta(days=1)
"""The report's window; its span for the data-driven model is [START - LOOKBACK, END)."""


def touch(message: str, channel: int, hours_before: float, journey: str = "j1",
          content: str = "") -> TouchFact:
    return TouchFact(message, channel, journey, content or f"c-{message}",
                     T0 - timedelta(hours=hours_before))


def run(model: Model, history: list[TouchFact], revenue: float = 100.0,
        half_life_hours: float = 168.0) -> list[tuple[str, float, float]]:
    history = sorted(history, key=lambda t: t.occur_time)
    result = attribute_all([Conversion("conv", "p1", T0, revenue)], {"p1": history}, [model],
                           LOOKBACK, half_life_hours, keep_conversions=10, start=START, end=END)
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
                           168.0, keep_conversions=10, start=START, end=END)
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
    result = attribute_all([Conversion("x", "p9", T0, 5.0)], {}, [Model.LINEAR], LOOKBACK, 168.0,
                           start=START, end=END)
    assert (result.conversions, result.attributed_conversions) == (1, 0)
    assert (result.unattributed_conversions, result.unattributed_revenue_micros) == (1, 5 * MICROS)
    assert dict(result.models[0].channels) == {}


def test_every_conversion_is_listed_in_time_order_unattributed_ones_with_no_touchpoint() -> None:
    # Before: only conversions with a touchpoint were listed, although the reply promised
    # "empty when none was found".
    history = {"p1": [touch("m1", EMAIL, 3)],
               "p3": [touch("stale", SMS, 31 * 24)]}  # older than the lookback: no touchpoint
    conversions = [Conversion("late", "p1", T0, 10.0),
                   Conversion("early", "p2", T0 - timedelta(hours=1), 7.0),
                   Conversion("also", "p3", T0, 3.0)]
    result = attribute_all(conversions, history, [Model.LAST_TOUCH, Model.DATA_DRIVEN],
                           LOOKBACK, 168.0, keep_conversions=10, start=START, end=END)
    assert (result.conversions, result.attributed_conversions,
            result.unattributed_conversions) == (3, 1, 2)
    assert (result.attributed_revenue_micros, result.unattributed_revenue_micros) == (
        10 * MICROS, 10 * MICROS)
    for model in result.models:
        assert [(c.fact_id, [t.touch.message_id for t in touches])
                for c, touches in model.conversions] == [
            ("early", []), ("also", []), ("late", ["m1"])]
        assert {k: v.conversions_micros for k, v in model.channels.items()} == {EMAIL: MICROS}
    listed_two = attribute_all(conversions, history, [Model.LINEAR], LOOKBACK, 168.0,
                               keep_conversions=2, start=START, end=END)
    assert [c.fact_id for c, _ in listed_two.models[0].conversions] == ["early", "also"]


def test_conversions_outside_the_window_are_not_credited() -> None:
    history = {"p1": [touch("m1", EMAIL, 30 * 24)]}
    before = Conversion("before", "p1", START - timedelta(hours=1), 4.0)
    after = Conversion("after", "p1", END, 4.0)  # the window's end is excluded
    result = attribute_all([before, after], history, [Model.LINEAR], LOOKBACK, 168.0,
                           start=START, end=END)
    assert (result.conversions, result.attributed_conversions) == (0, 0)


def test_markov_paths_are_cut_by_conversions_and_bounded_by_the_span() -> None:
    hour = timedelta(hours=1)
    history = {
        # One path per conversion, with the touches since the previous one; a touch at the
        # instant of a conversion goes before it; a message counts once per path (m2 opened
        # twice before c1) and again on the next path when it is engaged again after c1.
        "p1": [touch("m1", EMAIL, 10), touch("m2", SMS, 9), touch("m2", SMS, 8),
               touch("m3", PUSH, 5), touch("m2", SMS, 4), touch("m4", EMAIL, 2),
               touch("m5", PUSH, 1)],
        # Touches up to a conversion before the window belong to it: no path; those after it
        # make a null path; those before the span are not read.
        "p2": [TouchFact("old", EMAIL, "j1", "c", START - LOOKBACK - hour),
               TouchFact("q1", SMS, "j1", "c", START - 3 * 24 * hour),
               TouchFact("q2", PUSH, "j1", "c", START + hour)],
        # Never converted: one null path; a touch at the window's end is not read.
        "p3": [touch("n1", SMS, 6), TouchFact("n2", EMAIL, "j1", "c", END)],
    }
    conversions = [
        Conversion("c1", "p1", T0 - timedelta(hours=5), 1.0),
        Conversion("c2", "p1", T0 - timedelta(hours=2), 1.0),
        Conversion("c2-again", "p1", T0 - timedelta(hours=2), 1.0),  # nothing new: no path
        Conversion("q", "p2", START - 2 * 24 * hour, 1.0),
        Conversion("after", "p3", END, 1.0),  # after the window: p3 did not convert in it
    ]
    assert markov_paths(conversions, history, START, END, LOOKBACK) == [
        ([EMAIL, SMS, PUSH], True), ([SMS, EMAIL], True), ([PUSH], False),
        ([PUSH], False), ([SMS], False)]


def test_markov_removal_effects_of_three_paths_worked_by_hand() -> None:
    # Paths: a: EMAIL -> SMS -> conversion (revenue 90); b: SMS -> PUSH -> null;
    # c: PUSH -> conversion (revenue 30).
    # Transitions: start -> EMAIL 1/3, SMS 1/3, PUSH 1/3; EMAIL -> SMS 1; SMS -> conversion 1/2,
    # PUSH 1/2; PUSH -> conversion 1/2, null 1/2.
    # P(conv | PUSH) = 1/2; P(conv | SMS) = 1/2 + 1/2 * 1/2 = 3/4; P(conv | EMAIL) = 3/4.
    # P(conv) = 1/3 * (3/4 + 3/4 + 1/2) = 2/3.
    # Without EMAIL: 1/3 * (0 + 3/4 + 1/2) = 5/12 -> effect 1 - (5/12) / (2/3) = 3/8.
    # Without SMS: EMAIL and SMS lead nowhere: 1/3 * 1/2 = 1/6 -> effect 1 - 1/4 = 3/4.
    # Without PUSH: SMS -> 1/2, EMAIL -> 1/2: 1/3 * (1/2 + 1/2) = 1/3 -> effect 1/2.
    # a's conversion splits 3/8 : 3/4 = 1/3 : 2/3 (EMAIL 0.333333 + SMS 0.666667 by largest
    # remainder; revenue 30 + 60); c's goes all to PUSH (1 conversion, 30).
    history = {
        "a": [touch("a1", EMAIL, 5), touch("a2", SMS, 4)],
        "b": [touch("b1", SMS, 5), touch("b2", PUSH, 4)],
        "c": [touch("c1", PUSH, 3)],
    }
    conversions = [Conversion("xa", "a", T0, 90.0), Conversion("xc", "c", T0, 30.0)]
    paths = markov_paths(conversions, history, START, END, LOOKBACK)
    assert paths == [([EMAIL, SMS], True), ([SMS, PUSH], False), ([PUSH], True)]
    assert conversion_probability(transition_counts(paths)) == pytest.approx(2 / 3)
    assert removal_effects(paths) == pytest.approx({EMAIL: 3 / 8, SMS: 3 / 4, PUSH: 1 / 2})
    result = attribute_all(conversions, history, [Model.DATA_DRIVEN], LOOKBACK, 168.0,
                           start=START, end=END)
    assert {k: (v.conversions_micros, v.revenue_micros)
            for k, v in result.models[0].channels.items()} == {
        EMAIL: (333_333, 30 * MICROS), SMS: (666_667, 60 * MICROS), PUSH: (MICROS, 30 * MICROS)}


def data_driven_credit(conversions: list[Conversion], history: dict[str, list[TouchFact]]
                       ) -> dict[int, tuple[int, int]]:
    result = attribute_all(conversions, history, [Model.DATA_DRIVEN], LOOKBACK, 168.0,
                           start=START, end=END)
    return {k: (v.conversions_micros, v.revenue_micros)
            for k, v in result.models[0].channels.items()}


def test_identical_behaviour_in_the_window_gets_identical_markov_credit() -> None:
    # Before: a profile that converted before the window counted as a non-converting path, so
    # its old touches lowered the removal effect of their channels in this window.
    history = {
        "a": [touch("a1", EMAIL, 5), touch("a2", SMS, 4)],
        "b": [touch("b1", SMS, 5), touch("b2", PUSH, 4)],
        "c": [touch("c1", PUSH, 3)],
    }
    conversions = [Conversion("xa", "a", T0, 90.0), Conversion("xc", "c", T0, 30.0)]
    day = timedelta(days=1)
    with_history = {
        # a was touched long before the span.
        "a": [TouchFact("a0", PUSH, "j1", "c", START - LOOKBACK - day), *history["a"]],
        "b": history["b"],
        "c": history["c"],
        # q converted before the window, after touches inside the span.
        "q": [TouchFact("q1", SMS, "j1", "c", START - 10 * day),
              TouchFact("q2", SMS, "j1", "c", START - 5 * day)],
        # r was only touched before the span and never converted.
        "r": [TouchFact("r1", EMAIL, "j1", "c", START - 2 * LOOKBACK)],
    }
    more_conversions = [
        Conversion("xq", "q", START - 2 * day, 50.0),
        Conversion("xb-long-ago", "b", START - LOOKBACK - day, 50.0),
        *conversions,
        Conversion("xb-after", "b", END + day, 50.0),
    ]
    expected = {EMAIL: (333_333, 30 * MICROS), SMS: (666_667, 60 * MICROS),
                PUSH: (MICROS, 30 * MICROS)}
    assert data_driven_credit(conversions, history) == expected
    assert data_driven_credit(more_conversions, with_history) == expected


def test_allocate_always_adds_up() -> None:
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(7, [0, 0]) == [4, 3]
    assert allocate(1_000_000, [0.1, 0.2, 0.3, 0.4]) == [100_000, 200_000, 300_000, 400_000]
    assert sum(allocate(99_999_999, [1 / 3, 1 / 7, 0.9, 2.2])) == 99_999_999
