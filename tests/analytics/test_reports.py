"""Report RPCs over a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.analytics.v1 import reports_pb2 as rpb
from cjo.common.v1 import common_pb2
from cjo_analytics.bootstrap import build
from cjo_analytics.domain.stats import probability_b_beats_a, two_proportion_p_value
from cjo_platform.config import Env
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.status import error_reason, field_violations
from support import Backend, as_service, serving, settings_for

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
WS = as_service("ws-a")
F = fact_pb2
EMAIL, SMS = common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_SMS
_ids = itertools.count()


def fact(kind: int, profile: str, at: datetime, fact_id: str = "", **fields: Any) -> F.Fact:
    return F.Fact(fact_id=fact_id or f"f{next(_ids)}", type=kind, profile_id=profile,
                  occur_time=to_timestamp(at), **fields)


@pytest.fixture
async def stub(backend: Backend) -> AsyncIterator[pb_grpc.AnalyticsServiceStub]:
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        yield pb_grpc.AnalyticsServiceStub(channel)


async def record(stub: pb_grpc.AnalyticsServiceStub, facts: list[F.Fact],
                 workspace: tuple[tuple[str, str], ...] = WS) -> pb.RecordFactsResponse:
    reply = await stub.RecordFacts(pb.RecordFactsRequest(facts=facts), metadata=workspace)
    assert all(r.status.code == 0 for r in reply.results), reply
    return reply


async def invalid(call: Any, request: Any) -> tuple[dict[str, str], str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(request, metadata=WS)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error.value)
    return field_violations(status), error_reason(status)


def journey_facts(e: str, profile: str, version: int, start: datetime, nodes: list[str],
                  exit_reason: str = "", revenue: float = 0.0) -> list[F.Fact]:
    """The facts orchestration publishes: entered, an arrival at each node (numbered), a goal,
    an exit at the last node."""
    common = {"journey_id": "j1", "enrollment_id": e, "journey_version": version}
    out = [fact(F.FACT_TYPE_JOURNEY_ENTERED, profile, start, f"{e}-in", **common)]
    for i, node in enumerate(nodes):
        out.append(fact(F.FACT_TYPE_NODE_VISITED, profile, start + timedelta(minutes=i + 1),
                        f"{e}-v{i}", node_id=node, visit_sequence=i + 1, **common))
    end = start + timedelta(hours=1)
    if revenue:
        out.append(fact(F.FACT_TYPE_GOAL_REACHED, profile, end, f"{e}-goal", revenue=revenue,
                        currency="EUR", **common))
    if exit_reason:
        out.append(fact(F.FACT_TYPE_JOURNEY_EXITED, profile, end, f"{e}-out",
                        exit_reason=exit_reason, node_id=nodes[-1] if nodes else "", **common))
    return out


async def test_journey_funnel_counts_nodes_conversions_and_series(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    day2 = T0 + timedelta(days=1)
    e3 = journey_facts("e3", "p3", 1, day2, ["A", "B"])
    await record(stub, [
        *journey_facts("e1", "p1", 1, T0, ["A", "B"], "completed", revenue=50.0),
        *journey_facts("e2", "p2", 1, T0, ["A"], "exit_criteria"),
        *[f for f in e3 if f.fact_id != "e3-v0"],  # its visit of A arrives late
        *journey_facts("e4", "p4", 1, day2, ["A"]),
        *journey_facts("e5", "p5", 2, day2, ["A"]),
    ])
    late_and_repeated = [f for f in e3 if f.fact_id == "e3-v0"] + journey_facts(
        "e1", "p1", 1, T0, ["A", "B"], "completed", revenue=50.0)
    reply = await stub.RecordFacts(pb.RecordFactsRequest(facts=late_and_repeated), metadata=WS)
    assert [r.duplicate for r in reply.results] == [False] + [True] * 5

    window = rpb.TimeWindow(start_time=to_timestamp(datetime(2026, 3, 1, tzinfo=UTC)),
                            end_time=to_timestamp(datetime(2026, 3, 4, tzinfo=UTC)))
    funnel = await stub.GetJourneyFunnel(rpb.GetJourneyFunnelRequest(
        journey="journeys/j1", granularity=rpb.GRANULARITY_DAY, window=window), metadata=WS)
    v1, v2 = funnel.versions
    assert (v1.journey_version, v1.entered_profiles, v1.converted_profiles, v1.exited) == (
        1, 4, 1, 2)
    assert v1.conversion_rate == pytest.approx(0.25)
    assert v1.revenue == pytest.approx(50.0)
    assert [(n.node_id, n.entered, n.completed, n.in_progress, n.dropped) for n in v1.nodes] == [
        ("A", 4, 2, 1, 1), ("B", 2, 1, 1, 0)]
    assert [(b.entered, b.conversions, b.revenue, b.exited) for b in v1.series] == [
        (2, 1, 50.0, 2), (2, 0, 0.0, 0), (0, 0, 0.0, 0)]
    assert v1.series[1].start_time.ToDatetime(UTC) == datetime(2026, 3, 2, tzinfo=UTC)
    assert [(n.node_id, n.entered, n.in_progress) for n in v2.nodes] == [("A", 1, 1)]

    only_v2 = await stub.GetJourneyFunnel(rpb.GetJourneyFunnelRequest(
        journey="journeys/j1", journey_version=2), metadata=WS)
    assert [v.journey_version for v in only_v2.versions] == [2]
    assert list(only_v2.versions[0].series) == []

    hourly = await stub.GetJourneyFunnel(rpb.GetJourneyFunnelRequest(
        journey="journeys/j1", journey_version=1, granularity=rpb.GRANULARITY_HOUR,
        window=rpb.TimeWindow(start_time=to_timestamp(T0),
                              end_time=to_timestamp(T0 + timedelta(hours=3)))), metadata=WS)
    assert [(b.entered, b.conversions, b.exited) for b in hourly.versions[0].series] == [
        (2, 0, 0), (0, 1, 2), (0, 0, 0)]

    # Another workspace has no such journey.
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.GetJourneyFunnel(rpb.GetJourneyFunnelRequest(journey="journeys/j1"),
                                    metadata=as_service("ws-b"))
    assert field_violations(rpc_status.from_call(other.value)) == {
        "journey": "no facts were recorded for this journey"}


async def test_the_node_funnel_classifies_each_enrollment_at_each_node_it_entered(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    """Every fact at the same instant, as within one walk: only visit_sequence orders them."""
    def at(e: str, kind: int, node: str, key: str, **fields: Any) -> F.Fact:
        return fact(kind, f"p-{e}", T0, f"{e}-{key}", journey_id="j1", enrollment_id=e,
                    journey_version=1, node_id=node, **fields)

    def visit(e: str, node: str, sequence: int) -> F.Fact:
        return at(e, F.FACT_TYPE_NODE_VISITED, node, f"v{sequence}", visit_sequence=sequence)

    def exit_at(e: str, node: str, reason: str) -> F.Fact:
        return at(e, F.FACT_TYPE_JOURNEY_EXITED, node, "out", exit_reason=reason)

    await record(stub, [
        # e1 loops A -> B -> A and waits at A again: in progress at A, completed B.
        visit("e1", "A", 1), visit("e1", "B", 2), visit("e1", "A", 3),
        # e2's send at A fails, it moves on (CONTINUE), a control arm ends it at B.
        visit("e2", "A", 1), at("e2", F.FACT_TYPE_NODE_FAILED, "A", "fail"),
        visit("e2", "B", 2), exit_at("e2", "B", "control"),
        # e3 reaches the goal at A (exit_on_goal): completed there.
        visit("e3", "A", 1), exit_at("e3", "A", "goal_reached"),
        # e4's send at A fails and ends it there.
        visit("e4", "A", 1), at("e4", F.FACT_TYPE_NODE_FAILED, "A", "fail"),
        exit_at("e4", "A", "failed"),
        # e5 is merged away while at B: its person carries on in the surviving enrollment.
        visit("e5", "A", 1), visit("e5", "B", 2), exit_at("e5", "B", "merged"),
        # e6 meets an exit criterion at B: a drop.
        visit("e6", "A", 1), visit("e6", "B", 2), exit_at("e6", "B", "exit_criteria"),
    ])
    funnel = await stub.GetJourneyFunnel(rpb.GetJourneyFunnelRequest(journey="journeys/j1"),
                                         metadata=WS)
    [v1] = funnel.versions
    # (node, entered, in_progress, completed, failed, dropped, held_out), worked out from the
    # paths: A: e1 in progress; e3 (goal), e5, e6 (left) completed; e2 (CONTINUE), e4 failed.
    # B: e1 left it (completed); e2 held out (control); e6 dropped; e5 (merged) not counted.
    assert [(n.node_id, n.entered, n.in_progress, n.completed, n.failed, n.dropped, n.held_out)
            for n in v1.nodes] == [("A", 6, 1, 3, 2, 0, 0), ("B", 3, 0, 1, 0, 1, 1)]
    assert all(n.entered == n.in_progress + n.completed + n.failed + n.dropped + n.held_out
               for n in v1.nodes)
    assert v1.exited == 5


async def test_facts_recorded_before_arrivals_were_counted_read_as_documented(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    """Old orchestration recorded a visit when an enrollment LEFT a node (no visit_sequence)
    and exits naming no node, with reasons "goal" and "exit_criterion:<event>"."""
    def old(e: str, kind: int, minute: int, **fields: Any) -> F.Fact:
        return fact(kind, f"p-{e}", T0 + timedelta(minutes=minute), f"{e}-{minute}",
                    journey_id="j1", enrollment_id=e, journey_version=1, **fields)

    await record(stub, [
        old("o1", F.FACT_TYPE_NODE_VISITED, 1, node_id="A"),
        old("o1", F.FACT_TYPE_NODE_VISITED, 2, node_id="B"),
        old("o1", F.FACT_TYPE_JOURNEY_EXITED, 3, exit_reason="goal"),
        old("o2", F.FACT_TYPE_NODE_VISITED, 1, node_id="A"),
        old("o2", F.FACT_TYPE_JOURNEY_EXITED, 2, exit_reason="exit_criterion:order"),
        # Active across the upgrade: left A before it, then ended at C under the new code
        # (whose arrival at C was never recorded: it stood there when the upgrade came).
        old("u1", F.FACT_TYPE_NODE_VISITED, 1, node_id="A"),
        old("u1", F.FACT_TYPE_JOURNEY_EXITED, 5, node_id="C", exit_reason="exit_criteria"),
    ])
    funnel = await stub.GetJourneyFunnel(rpb.GetJourneyFunnelRequest(journey="journeys/j1"),
                                         metadata=WS)
    [v1] = funnel.versions
    # An old visit is an enrollment that entered and left the node: completed. Old exits name
    # no node: they count in `exited` only. u1's exit names C: entered and dropped there.
    assert [(n.node_id, n.entered, n.in_progress, n.completed, n.failed, n.dropped)
            for n in v1.nodes] == [("A", 3, 0, 3, 0, 0), ("B", 1, 0, 1, 0, 0),
                                   ("C", 1, 0, 0, 0, 1)]
    assert v1.exited == 3


async def test_funnel_rejects_bad_windows_naming_the_field(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    await record(stub, journey_facts("e1", "p1", 1, T0, ["A"]))
    funnel = stub.GetJourneyFunnel
    ts = to_timestamp
    backwards = rpb.TimeWindow(start_time=ts(T0), end_time=ts(T0))
    violations, _ = await invalid(funnel, rpb.GetJourneyFunnelRequest(
        journey="journeys/j1", granularity=rpb.GRANULARITY_DAY, window=backwards))
    assert violations == {"window.end_time": "must be after start_time"}
    violations, _ = await invalid(funnel, rpb.GetJourneyFunnelRequest(
        journey="journeys/j1", granularity=rpb.GRANULARITY_HOUR))
    assert violations == {"window": "is required"}
    too_long = rpb.TimeWindow(start_time=ts(T0), end_time=ts(T0 + timedelta(days=60)))
    violations, _ = await invalid(funnel, rpb.GetJourneyFunnelRequest(
        journey="journeys/j1", granularity=rpb.GRANULARITY_HOUR, window=too_long))
    assert "must hold at most 1000 buckets" in violations["window"]
    ancient = rpb.TimeWindow(start_time=ts(datetime(1990, 1, 1, tzinfo=UTC)), end_time=ts(T0))
    violations, _ = await invalid(funnel, rpb.GetJourneyFunnelRequest(
        journey="journeys/j1", granularity=rpb.GRANULARITY_DAY, window=ancient))
    assert set(violations) == {"window.start_time", "window"}
    violations, _ = await invalid(funnel, rpb.GetJourneyFunnelRequest(
        journey="journeys/j1", granularity=7, window=too_long))
    assert violations == {"granularity": "is not a known granularity"}
    violations, reason = await invalid(funnel, rpb.GetJourneyFunnelRequest(
        journey="journeys/nope"))
    assert (violations, reason) == ({"journey": "no facts were recorded for this journey"},
                                    "UNKNOWN_JOURNEY")


async def test_channel_performance_counts_unique_messages(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    welcome = {"journey_id": "j1", "channel": EMAIL, "content_key": "welcome"}
    await record(stub, [
        fact(F.FACT_TYPE_MESSAGE_SENT, "p1", T0, message_id="m1", variant="A", **welcome),
        fact(F.FACT_TYPE_MESSAGE_DELIVERED, "p1", T0, message_id="m1", variant="A", **welcome),
        fact(F.FACT_TYPE_MESSAGE_OPENED, "p1", T0, message_id="m1"),  # attributes from m1
        fact(F.FACT_TYPE_MESSAGE_OPENED, "p1", T0, message_id="m1"),  # a second open
        fact(F.FACT_TYPE_MESSAGE_CLICKED, "p1", T0, message_id="m1"),
        fact(F.FACT_TYPE_MESSAGE_SENT, "p2", T0, message_id="m2", variant="B", **welcome),
        fact(F.FACT_TYPE_MESSAGE_BOUNCED, "p2", T0, message_id="m2", variant="B", **welcome),
        fact(F.FACT_TYPE_MESSAGE_SENT, "p3", T0, message_id="m3", journey_id="j2", channel=SMS,
             content_key="reminder"),
        fact(F.FACT_TYPE_MESSAGE_DELIVERED, "p3", T0, message_id="m3"),
        fact(F.FACT_TYPE_MESSAGE_UNSUBSCRIBED, "p3", T0 + timedelta(days=2), message_id="m3"),
    ])
    await record(stub, [fact(F.FACT_TYPE_MESSAGE_SENT, "p9", T0, message_id="m9", channel=EMAIL,
                             content_key="welcome")], workspace=as_service("ws-b"))
    report = await stub.GetChannelPerformance(rpb.GetChannelPerformanceRequest(), metadata=WS)
    by_channel = {c.channel: c.outcomes for c in report.channels}
    email = by_channel[EMAIL]
    assert (email.sent, email.delivered, email.opened, email.clicked, email.bounced,
            email.unsubscribed) == (2, 1, 1, 1, 1, 0)
    assert (email.delivery_rate, email.open_rate, email.click_to_open_rate,
            email.bounce_rate) == (0.5, 1.0, 1.0, 0.5)
    sms = by_channel[SMS]
    assert (sms.sent, sms.delivered, sms.unsubscribed, sms.unsubscribe_rate) == (1, 1, 1, 1.0)
    assert [(c.content_key, c.outcomes.sent) for c in report.content_items] == [
        ("welcome", 2), ("reminder", 1)]
    assert [(v.variant, v.outcomes.sent, v.outcomes.opened, v.outcomes.bounced)
            for v in report.variants if v.content_key == "welcome"] == [
        ("A", 1, 1, 0), ("B", 1, 0, 1)]

    j2 = await stub.GetChannelPerformance(rpb.GetChannelPerformanceRequest(
        journey="journeys/j2", window=rpb.TimeWindow(
            start_time=to_timestamp(T0), end_time=to_timestamp(T0 + timedelta(days=1)))),
        metadata=WS)
    assert [(c.channel, c.outcomes.sent, c.outcomes.unsubscribed) for c in j2.channels] == [
        (SMS, 1, 0)]
    violations, _ = await invalid(stub.GetChannelPerformance, rpb.GetChannelPerformanceRequest(
        window=rpb.TimeWindow(start_time=to_timestamp(T0))))
    assert "window.end_time" in violations


def days_from(start: datetime, days: int) -> rpb.TimeWindow:
    return rpb.TimeWindow(start_time=to_timestamp(start),
                          end_time=to_timestamp(start + timedelta(days=days)))


async def test_outcomes_before_attributes_across_batches(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    opened = [fact(F.FACT_TYPE_MESSAGE_OPENED, "p1", T0 + timedelta(days=1), "o1",
                   message_id="m1"),
              fact(F.FACT_TYPE_MESSAGE_OPENED, "p1", T0 + timedelta(days=3), "o2",
                   message_id="m1")]
    await record(stub, opened)  # no attributes yet: the message's channel is unknown
    await record(stub, [fact(F.FACT_TYPE_MESSAGE_SENT, "p1", T0, "s1", message_id="m1",
                             journey_id="j1", channel=EMAIL, content_key="welcome",
                             variant="A")])
    await record(stub, opened)  # a redelivered batch
    # A late fact of an earlier open moves the first open back in time.
    await record(stub, [fact(F.FACT_TYPE_MESSAGE_OPENED, "p1", T0 + timedelta(hours=2), "o0",
                             message_id="m1")])

    report = await stub.GetChannelPerformance(rpb.GetChannelPerformanceRequest(
        journey="journeys/j1"), metadata=WS)
    assert [(c.channel, c.outcomes.sent, c.outcomes.opened) for c in report.channels] == [
        (EMAIL, 1, 1)]
    assert [(v.content_key, v.variant) for v in report.variants] == [("welcome", "A")]

    first_day = await stub.GetChannelPerformance(rpb.GetChannelPerformanceRequest(
        window=days_from(T0, 1)), metadata=WS)
    assert [(c.outcomes.sent, c.outcomes.opened) for c in first_day.channels] == [(1, 1)]
    # The message was first opened on day one: later days count no open for it.
    later = await stub.GetChannelPerformance(rpb.GetChannelPerformanceRequest(
        window=days_from(T0 + timedelta(days=1), 5)), metadata=WS)
    assert [(c.outcomes.sent, c.outcomes.opened) for c in later.channels] == []


async def test_experiment_results_per_arm_with_statistics(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    facts: list[F.Fact] = []
    for i in range(200):
        arm, control = ("holdout", True) if i % 2 else ("treatment", False)
        profile = f"x{i}"
        facts.append(fact(F.FACT_TYPE_EXPERIMENT_EXPOSED, profile, T0, experiment_id="split1",
                          arm=arm, control=control, arm_weight=50))
        # A later fact of another arm does not move the profile.
        facts.append(fact(F.FACT_TYPE_EXPERIMENT_EXPOSED, profile, T0 + timedelta(hours=1),
                          experiment_id="split1", arm="treatment", arm_weight=50))
        converts = i % 10 == 0  # only even ids (treatment) end in 0
        if converts:
            facts.append(fact(F.FACT_TYPE_CONVERTED, profile, T0 + timedelta(hours=2),
                              revenue=10.0))
        if i == 1:  # converted before exposure: not a conversion of the experiment
            facts.append(fact(F.FACT_TYPE_CONVERTED, profile, T0 - timedelta(hours=1),
                              revenue=99.0))
    for start in range(0, len(facts), 1000):
        await record(stub, facts[start:start + 1000])

    reply = await stub.GetExperimentResults(rpb.GetExperimentResultsRequest(
        experiment_id="split1"), metadata=WS)
    assert reply.control_arm == "holdout"
    control, treatment = reply.arms
    assert (control.arm, control.exposures, control.conversions, control.revenue) == (
        "holdout", 100, 0, 0.0)
    assert (treatment.arm, treatment.exposures, treatment.conversions, treatment.revenue) == (
        "treatment", 100, 20, 200.0)
    assert treatment.absolute_lift == pytest.approx(0.2)
    assert treatment.p_value == pytest.approx(two_proportion_p_value(0, 100, 20, 100))
    assert treatment.probability_to_beat_control == pytest.approx(
        probability_b_beats_a(0, 100, 20, 100))
    assert treatment.absolute_lift_ci.lower < 0.2 < treatment.absolute_lift_ci.upper
    assert not reply.sample_ratio.mismatch and reply.sample_ratio.p_value == pytest.approx(1.0)
    assert reply.incrementality.incremental_conversions == pytest.approx(20.0)
    assert reply.incrementality.incrementality == pytest.approx(1.0)

    skewed = await stub.GetExperimentResults(rpb.GetExperimentResultsRequest(
        experiment_id="split1", expected_weights={"holdout": 1, "treatment": 9}), metadata=WS)
    assert skewed.sample_ratio.mismatch
    assert "sample ratio mismatch" in skewed.sample_ratio.warning
    assert [a.expected_share for a in skewed.arms] == [pytest.approx(0.1), pytest.approx(0.9)]

    violations, reason = await invalid(stub.GetExperimentResults,
                                       rpb.GetExperimentResultsRequest(experiment_id="split2"))
    assert (set(violations), reason) == ({"experiment_id"}, "UNKNOWN_EXPERIMENT")
    violations, _ = await invalid(stub.GetExperimentResults, rpb.GetExperimentResultsRequest(
        experiment_id="split1", expected_weights={"a": -1}))
    assert violations == {"expected_weights[a]": "must be a positive weight"}
    with pytest.raises(grpc.aio.AioRpcError) as isolated:
        await stub.GetExperimentResults(rpb.GetExperimentResultsRequest(experiment_id="split1"),
                                        metadata=as_service("ws-b"))
    assert isolated.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_attribution_credits_touchpoints_and_adds_up(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    conversion_at = T0 + timedelta(days=3)
    await record(stub, [
        fact(F.FACT_TYPE_MESSAGE_DELIVERED, "p1", T0, message_id="m1", channel=EMAIL,
             journey_id="j1", content_key="welcome"),
        fact(F.FACT_TYPE_MESSAGE_OPENED, "p1", T0 + timedelta(hours=1), message_id="m1",
             channel=EMAIL, journey_id="j1", content_key="welcome"),
        fact(F.FACT_TYPE_MESSAGE_CLICKED, "p1", T0 + timedelta(days=2), message_id="m2",
             channel=SMS, journey_id="j2", content_key="promo"),
        fact(F.FACT_TYPE_MESSAGE_SENT, "p1", T0, message_id="m3", channel=SMS),  # not a touch
        fact(F.FACT_TYPE_CONVERTED, "p1", conversion_at, "buy1", revenue=100.0),
        fact(F.FACT_TYPE_GOAL_REACHED, "p2", conversion_at, "goal2"),  # no touchpoint
    ])
    # The same conversion again, and one in another workspace: neither counts.
    await record(stub, [fact(F.FACT_TYPE_CONVERTED, "p1", conversion_at, "buy1", revenue=100.0)])
    await record(stub, [fact(F.FACT_TYPE_CONVERTED, "p1", conversion_at, "other", revenue=7.0),
                        fact(F.FACT_TYPE_MESSAGE_DELIVERED, "p1", T0, message_id="m1",
                             channel=EMAIL)], workspace=as_service("ws-b"))
    window = rpb.TimeWindow(start_time=to_timestamp(T0),
                            end_time=to_timestamp(T0 + timedelta(days=7)))
    reply = await stub.GetAttribution(rpb.GetAttributionRequest(
        window=window, include_conversions=True, models=[
            rpb.ATTRIBUTION_MODEL_FIRST_TOUCH, rpb.ATTRIBUTION_MODEL_LINEAR,
            rpb.ATTRIBUTION_MODEL_DATA_DRIVEN]), metadata=WS)
    assert (reply.conversions, reply.attributed_conversions, reply.attributed_revenue) == (
        2, 1, 100.0)
    assert (reply.unattributed_conversions, reply.unattributed_revenue) == (1, 0.0)
    first, linear, data_driven = reply.models
    assert [(c.channel, c.revenue) for c in first.channels] == [(EMAIL, 100.0), (SMS, 0.0)]
    assert [(c.key, c.conversions, c.revenue) for c in linear.journeys] == [
        ("j1", 0.5, 50.0), ("j2", 0.5, 50.0)]
    assert [(c.key, c.revenue) for c in linear.content_items] == [
        ("promo", 50.0), ("welcome", 50.0)]
    conversion, unattributed = linear.conversions
    assert (unattributed.fact_id, list(unattributed.touchpoints)) == ("goal2", [])
    assert [(t.message_id, t.share) for t in conversion.touchpoints] == [("m1", 0.5), ("m2", 0.5)]
    assert conversion.touchpoints[0].occur_time.ToDatetime(UTC) == T0
    assert sum(c.revenue for c in data_driven.channels) == pytest.approx(100.0, abs=1e-9)

    short = await stub.GetAttribution(rpb.GetAttributionRequest(
        window=window, lookback_days=1, models=[rpb.ATTRIBUTION_MODEL_LAST_TOUCH]), metadata=WS)
    assert [(c.channel, c.revenue) for c in short.models[0].channels] == [(SMS, 100.0)]


async def test_attribution_lists_unattributed_conversions_and_ignores_other_windows(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    # The three paths worked by hand in test_attribution.py (removal effects EMAIL 3/8, SMS
    # 3/4, PUSH 1/2), plus a conversion with no touchpoint. Workspace ws-b has the same
    # behaviour in the window and more history outside it. Before: ws-b's q, who converted
    # before the window, counted as a non-converting path (EMAIL, SMS) and moved the credit;
    # the unattributed conversion was not listed.
    push = common_pb2.CHANNEL_PUSH
    start, end = T0 + timedelta(days=40), T0 + timedelta(days=42)
    hour, day = timedelta(hours=1), timedelta(days=1)

    def touch(profile: str, message: str, channel: int, at: datetime) -> F.Fact:
        return fact(F.FACT_TYPE_MESSAGE_DELIVERED, profile, at, message_id=message,
                    channel=channel, journey_id="j1", content_key=f"c-{message}")

    def converted(profile: str, fact_id: str, at: datetime, revenue: float) -> F.Fact:
        return fact(F.FACT_TYPE_CONVERTED, profile, at, fact_id, revenue=revenue)

    in_window = [
        touch("a", "a1", EMAIL, start + hour), touch("a", "a2", SMS, start + 2 * hour),
        converted("a", "xa", start + 5 * hour, 90.0),
        touch("b", "b1", SMS, start + hour), touch("b", "b2", push, start + 2 * hour),
        touch("c", "c1", push, start + 3 * hour), converted("c", "xc", start + 6 * hour, 30.0),
        converted("d", "xd", start + 7 * hour, 20.0),  # no touchpoint at all
    ]
    outside = [
        touch("q", "q1", EMAIL, start - 10 * day), touch("q", "q2", SMS, start - 5 * day),
        converted("q", "xq", start - 2 * day, 50.0),
        touch("a", "a0", push, start - 40 * day),
        converted("b", "xb-old", start - 45 * day, 10.0),
        touch("e", "e1", EMAIL, end + hour), converted("e", "xe", end + 2 * hour, 10.0),
    ]
    await record(stub, in_window)
    await record(stub, [F.Fact(**{**{f.name: v for f, v in x.ListFields()},
                                  "fact_id": f"b-{x.fact_id}"}) for x in in_window] + outside,
                 workspace=as_service("ws-b"))
    request = rpb.GetAttributionRequest(
        window=rpb.TimeWindow(start_time=to_timestamp(start), end_time=to_timestamp(end)),
        include_conversions=True, models=[rpb.ATTRIBUTION_MODEL_DATA_DRIVEN])
    for workspace in ("ws-a", "ws-b"):
        reply = await stub.GetAttribution(request, metadata=as_service(workspace))
        assert (reply.conversions, reply.attributed_conversions, reply.attributed_revenue,
                reply.unattributed_conversions, reply.unattributed_revenue) == (
            3, 2, 120.0, 1, 20.0), workspace
        [data_driven] = reply.models
        assert [(c.channel, c.conversions, c.revenue) for c in data_driven.channels] == [
            (EMAIL, 0.333333, 30.0), (SMS, 0.666667, 60.0), (push, 1.0, 30.0)], workspace
        assert [(c.fact_id.removeprefix("b-"), [(t.message_id, t.share)
                                                for t in c.touchpoints])
                for c in data_driven.conversions] == [
            ("xa", [("a1", 0.333333), ("a2", 0.666667)]), ("xc", [("c1", 1.0)]),
            ("xd", [])], workspace


async def test_attribution_rejects_bad_parameters_naming_the_field(
        stub: pb_grpc.AnalyticsServiceStub) -> None:
    ok_window = rpb.TimeWindow(start_time=to_timestamp(T0),
                               end_time=to_timestamp(T0 + timedelta(days=1)))
    call = stub.GetAttribution
    violations, _ = await invalid(call, rpb.GetAttributionRequest(
        window=ok_window, models=[rpb.ATTRIBUTION_MODEL_LINEAR, 42]))
    assert violations == {"models[1]": "is not a known model"}
    violations, _ = await invalid(call, rpb.GetAttributionRequest(window=ok_window))
    assert violations == {"models": "at least one model is required"}
    violations, _ = await invalid(call, rpb.GetAttributionRequest(
        window=ok_window, lookback_days=91, half_life_hours=-1,
        models=[rpb.ATTRIBUTION_MODEL_TIME_DECAY]))
    assert set(violations) == {"lookback_days", "half_life_hours"}
    violations, _ = await invalid(call, rpb.GetAttributionRequest(
        models=[rpb.ATTRIBUTION_MODEL_LINEAR]))
    assert violations == {"window": "is required"}
    violations, _ = await invalid(call, rpb.GetAttributionRequest(
        models=[rpb.ATTRIBUTION_MODEL_LINEAR], window=rpb.TimeWindow(
            start_time=to_timestamp(T0), end_time=to_timestamp(T0 + timedelta(days=400)))))
    assert violations == {"window": "must span at most 366 days"}


async def test_recording_rejects_bad_fact_fields(stub: pb_grpc.AnalyticsServiceStub) -> None:
    reply = await stub.RecordFacts(pb.RecordFactsRequest(facts=[
        fact(F.FACT_TYPE_EXPERIMENT_EXPOSED, "p1", T0, experiment_id="e"),
        fact(F.FACT_TYPE_CONVERTED, "p1", T0, revenue=-5),
        fact(F.FACT_TYPE_CONVERTED, "p1", T0, revenue=5),
    ]), metadata=WS)
    assert [field_violations(r.status) for r in reply.results] == [
        {"facts[0].arm": "is required when experiment_id is set"},
        {"facts[1].revenue": "must be a finite amount, 0 or more"}, {}]
