"""The forwarding watermark's rule (domain.watermarks): a report older than the one held changes
nothing, no workspace's watermark moves back, and a lapsed window is final once its deadline
plus the grace is before the clock and its workspace's watermark (held back at most the
maximum hold; not at all while the stream was never reported)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cjo_decisioning.domain.watermarks import (
    LearningCutoffs,
    Watermark,
    learning_cutoffs,
    merge,
)

T = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
GRACE = 5 * MINUTE
DAY = timedelta(days=1)
LATER = T + DAY  # the receiver's clock


def test_the_first_report_is_taken_as_it_is() -> None:
    report = Watermark(T, {"a": T - MINUTE})
    assert merge(None, report, T) == report


def test_a_report_older_than_the_one_held_changes_nothing() -> None:
    held = Watermark(T, {})
    assert merge(held, Watermark(T - MINUTE, {}), LATER) is None
    assert merge(held, Watermark(T, {}), LATER) == held  # the same report again


def test_a_workspace_s_watermark_never_moves_back() -> None:
    held = Watermark(T, {"a": T - 10 * MINUTE})
    # A later report finds older rows of "a" and "b" (written by transactions that committed
    # after the earlier read): each keeps what it had.
    merged = merge(held, Watermark(T + MINUTE, {"a": T - 20 * MINUTE, "b": T - 30 * MINUTE}),
                   LATER)
    assert merged == Watermark(T + MINUTE, {"a": T - 10 * MINUTE, "b": T})
    # A workspace no longer behind takes the stream's watermark.
    assert merge(merged, Watermark(T + 2 * MINUTE), LATER) == Watermark(T + 2 * MINUTE)
    # One that caught up to the stream's own is not listed.
    assert merge(held, Watermark(T + MINUTE, {"a": T + MINUTE}), LATER) == Watermark(T + MINUTE)


def test_a_report_ahead_of_the_clock_counts_up_to_the_clock() -> None:
    assert merge(None, Watermark(T + DAY), T) == Watermark(T)
    # The true reports after one from a clock that jumped ahead are taken.
    assert merge(Watermark(T), Watermark(T + MINUTE, {"a": T}), T + MINUTE) == Watermark(
        T + MINUTE, {"a": T})


def test_a_stream_never_reported_holds_nothing() -> None:
    assert learning_cutoffs(T, GRACE, None, DAY) == LearningCutoffs(T - GRACE)


def test_a_window_is_final_once_the_grace_before_the_clock_and_its_workspace_s_watermark(
        ) -> None:
    watermark = Watermark(T - 30 * MINUTE, {"late": T - 2 * DAY})
    cutoffs = learning_cutoffs(T, GRACE, watermark, DAY)
    assert cutoffs.of("any") == T - 30 * MINUTE - GRACE
    # Held back at most a day: a watermark that stopped moving does not stall learning forever.
    assert cutoffs.of("late") == T - DAY - GRACE
    # A watermark ahead of the clock (the sender's clock runs fast) holds by the clock alone.
    assert learning_cutoffs(T, GRACE, Watermark(T + DAY), DAY) == LearningCutoffs(T - GRACE)
    # A maximum hold of 0 turns watermarks off.
    assert learning_cutoffs(T, GRACE, watermark, timedelta(0)).of("late") == T - GRACE


def test_a_watermark_not_reported_for_the_maximum_hold_holds_nothing() -> None:
    stuck = Watermark(T, {"a": T - MINUTE}, reported=LATER - DAY / 2)
    gone = Watermark(T, {"a": T - MINUTE}, reported=LATER - DAY - MINUTE)
    # Still reported (its forwarder stuck): held back the maximum hold.
    assert learning_cutoffs(LATER, GRACE, stuck, DAY) == LearningCutoffs(
        T - GRACE, {"a": T - GRACE})
    # Not reported for longer (its sender gone): as if never reported.
    assert learning_cutoffs(LATER, GRACE, gone, DAY) == LearningCutoffs(LATER - GRACE)
