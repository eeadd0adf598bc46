"""Experiments count people: exposures and conversions of profiles identity merged meet on the
survivor (whatever order the merges and facts arrive in), a journey split counts conversions
only inside the goal's window, revenue per exposed person is compared by Welch's test, and
ListExperiments names every experiment. Over a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status
from scipy import stats

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.analytics.v1 import reports_pb2 as rpb
from cjo_analytics.bootstrap import build
from cjo_platform.config import Env
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, serving, settings_for

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
WS = as_service("ws-a")
SPLIT = "j1:split"
_ids = itertools.count()

EXPOSED = fact_pb2.FACT_TYPE_NODE_VISITED
CONVERTED = fact_pb2.FACT_TYPE_CONVERTED
MERGED = fact_pb2.FACT_TYPE_PROFILE_MERGED


def at(hours: float) -> Any:
    return to_timestamp(T0 + timedelta(hours=hours))


def exposure(profile: str, arm: str, hours: float = 0.0, **fields: Any) -> fact_pb2.Fact:
    return fact_pb2.Fact(fact_id=f"x{next(_ids)}", type=EXPOSED, profile_id=profile,
                         journey_id="j1", node_id="split", occur_time=at(hours),
                         experiment_id=fields.pop("experiment_id", SPLIT), arm=arm,
                         control=arm == "control", arm_weight=50.0, **fields)


def conversion(profile: str, hours: float, revenue: float = 0.0,
               currency: str = "EUR") -> fact_pb2.Fact:
    return fact_pb2.Fact(fact_id=f"c{next(_ids)}", type=CONVERTED, profile_id=profile,
                         occur_time=at(hours), revenue=revenue, currency=currency)


def merge(merged: str, survivor: str, hours: float) -> fact_pb2.Fact:
    return fact_pb2.Fact(fact_id=f"identity.merge:{merged}:{survivor}", type=MERGED,
                         profile_id=merged, survivor_profile_id=survivor, occur_time=at(hours))


def person_facts(arm: str, i: int, how: str, revenue: float) -> list[fact_pb2.Fact]:
    """One person of ``arm``: exposed, and converted (revenue > 0) or not, under ids that
    identity merges in one of several ways."""
    anon, device, known = f"anon-{arm}{i}", f"device-{arm}{i}", f"known-{arm}{i}"
    buys = [conversion(known, 2, revenue)] if revenue else []
    if how == "same id":
        return [exposure(known, arm), *([conversion(known, 2, revenue)] if revenue else [])]
    if how == "merged before buying":
        return [exposure(anon, arm), merge(anon, known, 1), *buys]
    if how == "merge arrives last":
        return [exposure(anon, arm), *buys, merge(anon, known, 1)]
    if how == "chain, newest merge first":  # anon -> device -> known, told backwards
        return [exposure(anon, arm), *buys, merge(device, known, 1.5), merge(anon, device, 1)]
    assert how == "chain, oldest merge first"
    return [merge(anon, device, 1), exposure(anon, arm), merge(device, known, 1.5), *buys]


WAYS = ["merged before buying", "merge arrives last", "chain, newest merge first",
        "chain, oldest merge first"]


def split_test() -> tuple[list[fact_pb2.Fact], dict[str, list[float]]]:
    """The issue's case: 100 people per arm, 57 of treatment and 43 of control buy; 40 and 30
    of the buyers were exposed anonymously and bought after logging in (a merge). Returns the
    facts and each arm's revenue per exposed person (hand-worked: the expected answer)."""
    facts: list[fact_pb2.Fact] = []
    revenues: dict[str, list[float]] = {"treatment": [], "control": []}
    for arm, buyers, anonymous in (("treatment", 57, 40), ("control", 43, 30)):
        for i in range(100):
            revenue = float(10 + (i * 7) % 45) if i < buyers else 0.0
            how = WAYS[i % 4] if i < anonymous else "same id"
            facts += person_facts(arm, i, how, revenue)
            revenues[arm].append(revenue)
        # Non-buyers who bought only BEFORE their exposure: not a conversion of the experiment.
        facts.append(conversion(f"anon-{arm}99", -1, 500.0))
    # A person exposed under both ids (anonymous in treatment first, known in control later):
    # counted once, in the arm of the first exposure, which is treatment person 0.
    facts += [exposure("known-treatment0", "control", 0.5)]
    return facts, revenues


async def record(stub: pb_grpc.AnalyticsServiceStub, facts: list[fact_pb2.Fact]) -> None:
    for start in range(0, len(facts), 1000):
        reply = await stub.RecordFacts(pb.RecordFactsRequest(facts=facts[start:start + 1000]),
                                       metadata=WS)
        assert all(r.status.code == 0 for r in reply.results), reply


async def test_an_experiment_counts_conversions_of_merged_profiles_on_the_survivor(
        backend: Backend) -> None:
    facts, revenues = split_test()
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        await record(stub, facts)
        results = await stub.GetExperimentResults(
            rpb.GetExperimentResultsRequest(experiment_id=SPLIT), metadata=WS)
        control, treatment = results.arms
        assert [(a.arm, a.exposures, a.conversions) for a in results.arms] == [
            ("control", 100, 43), ("treatment", 100, 57)]
        assert treatment.revenue == pytest.approx(sum(revenues["treatment"]))
        assert control.revenue == pytest.approx(sum(revenues["control"]))
        assert treatment.revenue_per_exposure == pytest.approx(np.mean(revenues["treatment"]))
        assert results.currency == "EUR" and not results.currency_warning

        # Revenue per exposed person against scipy's Welch test of the hand-worked samples.
        welch = stats.ttest_ind(revenues["treatment"], revenues["control"], equal_var=False)
        low, high = welch.confidence_interval(0.95)
        assert treatment.revenue_per_exposure_lift == pytest.approx(
            np.mean(revenues["treatment"]) - np.mean(revenues["control"]))
        assert treatment.revenue_p_value == pytest.approx(welch.pvalue, rel=1e-8)
        assert treatment.revenue_degrees_of_freedom == pytest.approx(welch.df, rel=1e-10)
        assert (treatment.revenue_per_exposure_lift_ci.lower,
                treatment.revenue_per_exposure_lift_ci.upper) == pytest.approx((low, high))
        assert control.revenue_p_value == 0.0  # no comparison for the control itself

        # Reports by person agree: 200 people entered, however many ids they used.
        report = (await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="journeys/j1"),
                                              metadata=WS)).report
        [visits] = [c for c in report.counts if c.type == EXPOSED]
        assert (visits.count, visits.profiles) == (201, 200)

        # Attribution hands the survivor's id to the models, with the merged ids' conversions.
        attribution = await stub.GetAttribution(rpb.GetAttributionRequest(
            window=rpb.TimeWindow(start_time=at(1.9), end_time=at(3)),
            models=[rpb.ATTRIBUTION_MODEL_LAST_TOUCH], include_conversions=True), metadata=WS)
        assert attribution.conversions == 100
        assert {c.profile_id for c in attribution.models[0].conversions} <= {
            f"known-{arm}{i}" for arm in ("treatment", "control") for i in range(100)}


async def test_merges_in_any_order_give_the_same_people(backend: Backend) -> None:
    # The same facts, in reverse: every merge arrives before what it merges was ever seen.
    facts, _ = split_test()
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        await record(stub, facts[::-1])
        results = await stub.GetExperimentResults(
            rpb.GetExperimentResultsRequest(experiment_id=SPLIT), metadata=WS)
        # Reversed, the known id's control exposure (0.5 h) is still later than the anonymous
        # treatment one (0 h): the first exposure wins by time, not by arrival.
        assert [(a.arm, a.exposures, a.conversions) for a in results.arms] == [
            ("control", 100, 43), ("treatment", 100, 57)]


async def test_a_journey_split_counts_conversions_inside_the_goal_window(
        backend: Backend) -> None:
    deadline = at(24)  # entry + a 24-hour goal window
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        await record(stub, [
            exposure("p1", "treatment", conversion_deadline=deadline),
            exposure("p2", "treatment", conversion_deadline=deadline),
            exposure("p3", "control", conversion_deadline=deadline),
            exposure("p4", "control"),  # no goal: no end to its window
            conversion("p1", 23, 10.0),   # inside
            conversion("p2", 25, 99.0),   # a day late: not this experiment's
            conversion("p3", 24, 7.0),    # at the deadline: inside
            conversion("p4", 500, 5.0),
        ])
        results = await stub.GetExperimentResults(
            rpb.GetExperimentResultsRequest(experiment_id=SPLIT), metadata=WS)
        assert [(a.arm, a.conversions, a.revenue) for a in results.arms] == [
            ("control", 2, 12.0), ("treatment", 1, 10.0)]


def purchase(profile: str, event_id: str, hours: float, revenue: float, *, goal_of: str = "",
             converted: bool = True) -> list[fact_pb2.Fact]:
    """One purchase event as analytics receives it: identity's CONVERTED fact (at the event's
    time) and, when it is also the goal of ``goal_of``'s journey enrollment, orchestration's
    GOAL_REACHED (a minute later, when the step round ran), both with the event's revenue."""
    facts = []
    if converted:
        facts.append(fact_pb2.Fact(
            fact_id=f"identity.conversion:{event_id}", type=CONVERTED, profile_id=profile,
            occur_time=at(hours), revenue=revenue, currency="EUR", source_event_id=event_id))
    if goal_of:
        facts.append(fact_pb2.Fact(
            fact_id=f"goal:{goal_of}", type=fact_pb2.FACT_TYPE_GOAL_REACHED,
            profile_id=goal_of.removeprefix("e-"), journey_id="j1", enrollment_id=goal_of,
            occur_time=at(hours + 1 / 60), revenue=revenue, currency="EUR",
            source_event_id=event_id))
    return facts


async def test_a_purchase_that_is_a_goal_and_a_conversion_counts_once(
        backend: Backend) -> None:
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        await record(stub, [
            exposure("t1", "treatment"), exposure("t2", "treatment"),
            exposure("anon-t3", "treatment"), exposure("c1", "control"),
            exposure("c2", "control"),
            # t1: one purchase, both the journey's goal and a workspace conversion.
            *purchase("t1", "ev1", 2, 30.0, goal_of="e-t1"),
            # t2: a purchase that is only a conversion, then one that is both.
            *purchase("t2", "ev2", 2, 20.0), *purchase("t2", "ev3", 3, 5.0, goal_of="e-t2"),
            # t3 entered anonymously: the goal is the anonymous enrollment's, the conversion
            # the known profile's; one person, one purchase.
            merge("anon-t3", "known-t3", 1),
            *purchase("known-t3", "ev5", 2, 40.0),
            *purchase("anon-t3", "ev5", 2, 40.0, goal_of="e-anon-t3", converted=False),
            *purchase("c1", "ev4", 2, 10.0, goal_of="e-c1"),
        ])
        results = await stub.GetExperimentResults(
            rpb.GetExperimentResultsRequest(experiment_id=SPLIT), metadata=WS)
        # Hand-worked, each purchase once: treatment 30, 20 + 5, 40; control 10, 0.
        treatment_people, control_people = [30.0, 25.0, 40.0], [10.0, 0.0]
        control, treatment = results.arms
        assert [(a.arm, a.exposures, a.conversions, a.revenue) for a in results.arms] == [
            ("control", 2, 1, 10.0), ("treatment", 3, 3, 95.0)]
        assert treatment.revenue_per_exposure == pytest.approx(95.0 / 3)
        assert control.revenue_per_exposure == pytest.approx(5.0)
        welch = stats.ttest_ind(treatment_people, control_people, equal_var=False)
        assert treatment.revenue_p_value == pytest.approx(welch.pvalue, rel=1e-8)
        assert treatment.revenue_degrees_of_freedom == pytest.approx(welch.df, rel=1e-10)

        # Attribution lists each purchase once, as its earliest fact, with its revenue once.
        attribution = await stub.GetAttribution(rpb.GetAttributionRequest(
            window=rpb.TimeWindow(start_time=at(0), end_time=at(10)),
            models=[rpb.ATTRIBUTION_MODEL_LAST_TOUCH], include_conversions=True), metadata=WS)
        assert attribution.conversions == 5
        assert sorted((c.fact_id, c.profile_id, c.revenue)
                      for c in attribution.models[0].conversions) == [
            ("identity.conversion:ev1", "t1", 30.0), ("identity.conversion:ev2", "t2", 20.0),
            ("identity.conversion:ev3", "t2", 5.0), ("identity.conversion:ev4", "c1", 10.0),
            ("identity.conversion:ev5", "known-t3", 40.0)]

        # The journey report counts the journey's own goal: three enrollments reached it.
        funnel = await stub.GetJourneyFunnel(
            rpb.GetJourneyFunnelRequest(journey="journeys/j1"), metadata=WS)
        [version] = funnel.versions
        assert (version.converted_profiles, version.revenue) == (4, 85.0)


async def test_mixed_currencies_are_named_not_converted(sqlite_backend: Backend) -> None:
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        await record(stub, [exposure("p1", "treatment"), exposure("p2", "control"),
                            conversion("p1", 1, 10.0, "EUR"), conversion("p2", 1, 12.0, "USD")])
        results = await stub.GetExperimentResults(
            rpb.GetExperimentResultsRequest(experiment_id=SPLIT), metadata=WS)
        assert results.currency == ""
        assert "EUR, USD" in results.currency_warning


async def test_list_experiments_names_splits_and_content_tests(backend: Backend) -> None:
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        content = dict(type=fact_pb2.FACT_TYPE_EXPERIMENT_EXPOSED, journey_id="j2",
                       experiment_id="content:welcome", content_key="welcome")
        await record(stub, [
            exposure("anon", "treatment", 1), exposure("known", "control", 2),
            merge("anon", "known", 3), exposure("p2", "treatment", 5),
            fact_pb2.Fact(fact_id="v1", profile_id="p1", occur_time=at(4), arm="a",
                          arm_weight=3, **content),
            fact_pb2.Fact(fact_id="v2", profile_id="p2", occur_time=at(6), arm="b",
                          arm_weight=1, **content),
        ])
        first = await stub.ListExperiments(rpb.ListExperimentsRequest(page_size=1),
                                           metadata=WS)
        [test] = first.experiments  # ordered by id: "content:..." before "j1:..."
        assert (test.experiment_id, test.kind, test.content_key, test.journey_id) == (
            "content:welcome", rpb.EXPERIMENT_KIND_CONTENT_VARIANT, "welcome", "")
        assert [(a.arm, a.weight) for a in test.arms] == [("a", 3.0), ("b", 1.0)]
        assert (test.first_exposure_time, test.last_exposure_time, test.exposures) == (
            at(4), at(6), 2)
        second = await stub.ListExperiments(
            rpb.ListExperimentsRequest(page_size=1, page_token=first.next_page_token),
            metadata=WS)
        [split] = second.experiments
        assert (split.experiment_id, split.kind, split.journey_id, split.node_id,
                split.exposures) == (SPLIT, rpb.EXPERIMENT_KIND_JOURNEY_SPLIT, "j1", "split", 2)
        assert [(a.arm, a.control, a.weight) for a in split.arms] == [
            ("control", True, 50.0), ("treatment", False, 50.0)]
        assert (split.first_exposure_time, split.last_exposure_time) == (at(1), at(5))
        assert second.next_page_token == ""
        everything = await stub.ListExperiments(rpb.ListExperimentsRequest(), metadata=WS)
        assert [e.experiment_id for e in everything.experiments] == ["content:welcome", SPLIT]
        other = await stub.ListExperiments(rpb.ListExperimentsRequest(),
                                           metadata=as_service("ws-b"))
        assert list(other.experiments) == []

        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.ListExperiments(rpb.ListExperimentsRequest(page_token="%%"),
                                       metadata=WS)
        assert set(field_violations(rpc_status.from_call(bad.value))) == {"page_token"}
        with pytest.raises(grpc.aio.AioRpcError) as negative:
            await stub.ListExperiments(rpb.ListExperimentsRequest(page_size=-1), metadata=WS)
        assert set(field_violations(rpc_status.from_call(negative.value))) == {"page_size"}


async def test_a_merge_fact_names_its_survivor(sqlite_backend: Backend) -> None:
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        reply = await stub.RecordFacts(pb.RecordFactsRequest(facts=[
            merge("a", "", 1), merge("a", "a", 1), merge("a", "b", 1),
            fact_pb2.Fact(fact_id="x", type=CONVERTED, profile_id="a", occur_time=at(1),
                          survivor_profile_id="b")]), metadata=WS)
        assert [r.status.code for r in reply.results] == [3, 3, 0, 3]
        assert [set(field_violations(r.status)) for r in reply.results] == [
            {"facts[0].survivor_profile_id"}, {"facts[1].survivor_profile_id"}, set(),
            {"facts[3].survivor_profile_id"}]


async def test_a_purchase_across_a_window_s_start_counts_in_one_window_whatever_the_models(
        backend: Backend) -> None:
    """Review rhunt2: identity's conversion carries the purchase event's time, orchestration's
    goal the time it applied it; with the first before a window's start and the second inside,
    the purchase counted in both adjacent windows, and in the later one only when the
    data-driven model was not asked for (its conversions were read from the window's start)."""
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        await record(stub, [
            fact_pb2.Fact(fact_id="identity.conversion:ev1", type=CONVERTED, profile_id="p1",
                          occur_time=at(23.8), revenue=10.0, source_event_id="ev1"),
            fact_pb2.Fact(fact_id="goal:e1", type=fact_pb2.FACT_TYPE_GOAL_REACHED,
                          profile_id="p1", journey_id="j1", enrollment_id="e1",
                          occur_time=at(24.1), revenue=10.0, source_event_id="ev1")])

        async def conversions(start: float, end: float, *models: int) -> int:
            reply = await stub.GetAttribution(rpb.GetAttributionRequest(
                window=rpb.TimeWindow(start_time=at(start), end_time=at(end)),
                models=models), metadata=WS)
            return reply.conversions

        last, data_driven = rpb.ATTRIBUTION_MODEL_LAST_TOUCH, rpb.ATTRIBUTION_MODEL_DATA_DRIVEN
        assert (await conversions(0, 24, last), await conversions(24, 48, last),
                await conversions(24, 48, last, data_driven)) == (1, 0, 0)


async def test_a_purchase_sent_later_than_the_lookback_counts_in_one_window(
        backend: Backend) -> None:
    """Review rmine: an event sent late (an SDK's offline queue, a nightly import) puts its
    identity fact (the event's time) more than the lookback before its goal fact (when
    orchestration applied it): the purchase counted in both windows. Earlier facts of the
    window's converting people are looked up by profile, whatever their age."""
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        await record(stub, [
            fact_pb2.Fact(fact_id="identity.conversion:ev1", type=CONVERTED, profile_id="p1",
                          occur_time=at(-30), revenue=10.0, source_event_id="ev1"),
            fact_pb2.Fact(fact_id="goal:e1", type=fact_pb2.FACT_TYPE_GOAL_REACHED,
                          profile_id="p1", journey_id="j1", enrollment_id="e1",
                          occur_time=at(0.5), revenue=10.0, source_event_id="ev1")])

        async def conversions(start: float, end: float, lookback: int) -> int:
            reply = await stub.GetAttribution(rpb.GetAttributionRequest(
                window=rpb.TimeWindow(start_time=at(start), end_time=at(end)),
                models=[rpb.ATTRIBUTION_MODEL_LAST_TOUCH], lookback_days=lookback), metadata=WS)
            return reply.conversions

        for lookback in (1, 2):
            assert (await conversions(-48, -24, lookback),
                    await conversions(0, 24, lookback)) == (1, 0), lookback
