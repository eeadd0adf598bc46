"""The analytics use-cases called directly, in units of work on a temporary SQLite database (no
gRPC): what a report reader would see after facts arrived."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cjo_analytics.adapters.tables import metadata
from cjo_analytics.domain.attribution import MICROS, Model
from cjo_analytics.domain.facts import Fact, FactType
from cjo_analytics.domain.reports import AttributionQuery, FunnelQuery, Granularity, Window
from cjo_analytics.service_layer import facts, reports
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import InvalidArgument

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
WS = "ws-a"
EMAIL, SMS = 1, 2
_ids = itertools.count()


@pytest.fixture
def tx(tmp_path: Path) -> Iterator[Transactions]:
    db = Database(f"sqlite:///{tmp_path}/analytics.db")
    metadata.create_all(db.engine)
    yield Transactions(db, ManualClock(T0))
    db.dispose()


def fact(kind: FactType, profile: str, at: datetime, fact_id: str = "", **fields: Any) -> Fact:
    return Fact(fact_id or f"f{next(_ids)}", kind, profile, fields.pop("journey_id", "j1"),
                fields.pop("enrollment_id", ""), fields.pop("message_id", ""), at, **fields)


def record(tx: Transactions, batch: list[Fact], workspace: str = WS) -> list[bool]:
    return tx.run_sync(lambda uow: facts.record_facts(uow, workspace, batch))


def test_each_fact_counts_once_however_often_it_is_sent(tx: Transactions) -> None:
    entered = fact(FactType.JOURNEY_ENTERED, "p1", T0, "in-1")
    sent = fact(FactType.MESSAGE_SENT, "p1", T0, "sent-1", message_id="m1", channel=EMAIL)
    assert record(tx, [entered, sent, entered]) == [False, False, True]
    assert record(tx, [sent]) == [True]
    assert record(tx, []) == []

    counts = tx.run_sync(lambda uow: reports.journey_report(uow, WS, "j1"))
    assert [(c.type, c.count, c.profiles) for c in counts] == [
        (FactType.JOURNEY_ENTERED, 1, 1), (FactType.MESSAGE_SENT, 1, 1)]
    performance = tx.run_sync(lambda uow: reports.channel_performance(uow, WS, "", None))
    assert [(c, o.sent) for c, o in performance.channels] == [(EMAIL, 1)]
    # Another workspace sees nothing of it.
    assert tx.run_sync(lambda uow: reports.journey_report(uow, "ws-b", "j1")) == []


def test_journey_funnel_counts_entries_conversions_and_nodes(tx: Transactions) -> None:
    record(tx, [
        fact(FactType.JOURNEY_ENTERED, "p1", T0, enrollment_id="e1", journey_version=1),
        fact(FactType.NODE_VISITED, "p1", T0 + timedelta(minutes=1), enrollment_id="e1",
             journey_version=1, node_id="A", visit_sequence=1),
        fact(FactType.NODE_VISITED, "p1", T0 + timedelta(minutes=2), enrollment_id="e1",
             journey_version=1, node_id="B", visit_sequence=2),
        fact(FactType.GOAL_REACHED, "p1", T0 + timedelta(hours=1), enrollment_id="e1",
             journey_version=1, revenue=30.0),
        fact(FactType.JOURNEY_ENTERED, "p2", T0, enrollment_id="e2", journey_version=1),
        fact(FactType.NODE_VISITED, "p2", T0 + timedelta(minutes=1), enrollment_id="e2",
             journey_version=1, node_id="A", visit_sequence=1),
    ])
    window = Window(T0, T0 + timedelta(days=1))
    [funnel] = tx.run_sync(lambda uow: reports.journey_funnel(
        uow, WS, FunnelQuery("j1", 0, Granularity.DAY, window)))
    assert (funnel.version, funnel.entered_profiles, funnel.converted_profiles) == (1, 2, 1)
    assert funnel.conversion_rate == 0.5
    assert funnel.revenue == 30.0
    assert [(n.node_id, n.entered, n.completed, n.in_progress) for n in funnel.nodes] == [
        ("A", 2, 1, 1), ("B", 1, 0, 1)]
    assert [(b.entered, b.conversions) for b in funnel.series] == [(2, 1)]

    with pytest.raises(InvalidArgument) as unknown:
        tx.run_sync(lambda uow: reports.journey_funnel(
            uow, WS, FunnelQuery("nope", 0, None, None)))
    assert unknown.value.reason == "UNKNOWN_JOURNEY"


def test_channel_performance_rolls_variants_up_to_items_and_channels(tx: Transactions) -> None:
    def message(kind: FactType, message_id: str, channel: int, key: str, variant: str,
                at: datetime = T0) -> Fact:
        return fact(kind, "p1", at, message_id=message_id, channel=channel, content_key=key,
                    variant=variant)

    record(tx, [
        message(FactType.MESSAGE_SENT, "m1", EMAIL, "welcome", "a"),
        message(FactType.MESSAGE_DELIVERED, "m1", EMAIL, "welcome", "a"),
        message(FactType.MESSAGE_OPENED, "m1", EMAIL, "welcome", "a"),
        message(FactType.MESSAGE_OPENED, "m1", EMAIL, "welcome", "a"),  # one message opens once
        message(FactType.MESSAGE_SENT, "m2", EMAIL, "welcome", "b"),
        message(FactType.MESSAGE_SENT, "m3", SMS, "reminder", ""),
        message(FactType.MESSAGE_SENT, "m4", SMS, "reminder", "", T0 + timedelta(days=2)),
    ])
    report = tx.run_sync(lambda uow: reports.channel_performance(uow, WS, "", None))
    assert [(c, o.sent, o.opened) for c, o in report.channels] == [(EMAIL, 2, 1), (SMS, 2, 0)]
    assert [(key, o.sent) for key, o in report.content_items] == [
        ((EMAIL, "welcome"), 2), ((SMS, "reminder"), 2)]
    assert [(v.variant, v.outcomes.sent, v.outcomes.opened) for v in report.variants] == [
        ("a", 1, 1), ("b", 1, 0), ("", 2, 0)]
    assert report.variants[0].outcomes.rates()["open_rate"] == 1.0

    first_day = Window(T0, T0 + timedelta(days=1))
    report = tx.run_sync(lambda uow: reports.channel_performance(uow, WS, "j1", first_day))
    assert [(c, o.sent) for c, o in report.channels] == [(EMAIL, 2), (SMS, 1)]


def test_experiment_results_compare_arms_with_the_control(tx: Transactions) -> None:
    batch = []
    for i in range(10):
        arm, control = ("control", True) if i % 2 == 0 else ("treatment", False)
        batch.append(fact(FactType.EXPERIMENT_EXPOSED, f"p{i}", T0, experiment_id="x",
                          arm=arm, control=control, arm_weight=50.0))
    for i in (1, 3, 5, 0):
        batch.append(fact(FactType.CONVERTED, f"p{i}", T0 + timedelta(hours=1), revenue=10.0))
    record(tx, batch)

    results = tx.run_sync(lambda uow: reports.experiment_results(uow, WS, "x", "", {}))
    assert results.control_arm == "control"
    control, treatment = results.arms
    assert (control.counts.arm, control.counts.exposures, control.counts.conversions) == (
        "control", 5, 1)
    assert (treatment.counts.arm, treatment.counts.conversions) == ("treatment", 3)
    assert treatment.comparison is not None
    assert treatment.comparison.absolute_lift == pytest.approx(0.4)
    assert results.sample_ratio is not None and not results.sample_ratio.mismatch

    with pytest.raises(InvalidArgument) as unknown:
        tx.run_sync(lambda uow: reports.experiment_results(uow, WS, "y", "", {}))
    assert unknown.value.reason == "UNKNOWN_EXPERIMENT"
    with pytest.raises(InvalidArgument) as not_an_arm:
        tx.run_sync(lambda uow: reports.experiment_results(uow, WS, "x", "nobody", {}))
    assert [v.field for v in not_an_arm.value.violations] == ["control_arm"]


async def test_attribution_credits_the_touchpoints_before_a_conversion(
        tx: Transactions) -> None:
    record(tx, [
        fact(FactType.MESSAGE_DELIVERED, "p1", T0, message_id="m1", channel=EMAIL,
             content_key="welcome"),
        fact(FactType.MESSAGE_CLICKED, "p1", T0 + timedelta(hours=1), message_id="m2",
             channel=SMS, content_key="reminder"),
        fact(FactType.CONVERTED, "p1", T0 + timedelta(hours=2), revenue=50.0),
        fact(FactType.CONVERTED, "p2", T0 + timedelta(hours=2), revenue=20.0),  # no touches
    ])
    query = AttributionQuery(Window(T0, T0 + timedelta(days=1)),
                             [Model.FIRST_TOUCH, Model.LAST_TOUCH], timedelta(days=30),
                             half_life_hours=168.0, keep_conversions=10)
    result = await reports.attribution(tx, WS, query)
    assert (result.conversions, result.attributed_conversions) == (2, 1)
    assert result.attributed_revenue_micros == 50 * MICROS
    first, last = result.models
    assert {c: credit.revenue_micros for c, credit in first.channels.items()} == {
        EMAIL: 50 * MICROS, SMS: 0}
    assert {c: credit.revenue_micros for c, credit in last.channels.items()} == {
        EMAIL: 0, SMS: 50 * MICROS}
    assert sorted((c.profile_id, len(touches)) for c, touches in last.conversions) == [
        ("p1", 2), ("p2", 0)]  # the unattributed conversion is listed too
    assert (result.unattributed_conversions, result.unattributed_revenue_micros) == (
        1, 20 * MICROS)
