"""Conversion events reach analytics: the track events a workspace names as conversions are
forwarded as FACT_TYPE_CONVERTED facts with their revenue, through the outbox, once each.

Analytics is the real service, in-process on the same backend; orchestration is the recorder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_status import rpc_status
from identity_support import START, Identity, Recorder, rpc_error
from structlog.testing import capture_logs

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.analytics.v1 import fact_pb2, reports_pb2
from cjo.common.v1 import common_pb2
from cjo.common.v1 import dead_letter_service_pb2_grpc as dl_grpc
from cjo.identity.v1 import event_pb2, identity_service_pb2_grpc, identity_settings_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_analytics.bootstrap import build as build_analytics
from cjo_identity.bootstrap import build as build_identity
from cjo_identity.domain.conversions import ConversionEvent, value_of
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, eventually, serving, settings_for

ORDER = identity_settings_pb2.ConversionEvent(
    event_name="order_completed", revenue_property="total", currency_property="currency",
    currency="EUR")
BOUGHT_AT = START - timedelta(hours=1)
DELIVERED_AT = START - timedelta(hours=2)


@dataclass
class Pair:
    identity: Identity
    analytics: analytics_grpc.AnalyticsServiceStub


@pytest.fixture
async def pair(backend: Backend, recorder: Recorder) -> AsyncIterator[Pair]:
    """The real analytics service, and identity forwarding conversions to it."""
    analytics_app = build_analytics(settings_for("analytics", backend), Env({}))
    async with serving(analytics_app) as analytics_address, \
            grpc.aio.insecure_channel(analytics_address) as analytics_channel:
        clock = ManualClock(START)
        settings = settings_for("identity", backend, CJO_ORCHESTRATION_TARGET=recorder.address,
                                CJO_DECISIONING_TARGET=recorder.address,
                                CJO_ANALYTICS_TARGET=analytics_address)
        app = build_identity(settings, Env({}), clock=clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
            yield Pair(Identity(app, clock, identity_service_pb2_grpc.IdentityServiceStub(channel),
                                ws_grpc.WorkspaceServiceStub(channel),
                                dl_grpc.DeadLetterServiceStub(channel)),
                       analytics_grpc.AnalyticsServiceStub(analytics_channel))


def track(message_id: str, user: str, name: str, **properties: object) -> event_pb2.Event:
    struct = struct_pb2.Struct()
    struct.update(properties)
    return event_pb2.Event(
        message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK, name=name,
        identifiers=[event_pb2.Identifier(type="user_id", value=user)],
        properties=struct, timestamp=to_timestamp(BOUGHT_AT), source="web")


async def attribution(pair: Pair, workspace: str) -> reports_pb2.GetAttributionResponse:
    window = reports_pb2.TimeWindow(start_time=to_timestamp(START - timedelta(days=1)),
                                    end_time=to_timestamp(START + timedelta(days=1)))
    return await pair.analytics.GetAttribution(reports_pb2.GetAttributionRequest(
        window=window, models=[reports_pb2.ATTRIBUTION_MODEL_LAST_TOUCH],
        include_conversions=True), metadata=as_service(workspace))


async def touched(pair: Pair, workspace: str, profile_ids: list[str]) -> None:
    """An email delivered to each profile before it bought, as delivery would record it, so
    analytics attributes (and details) the conversions."""
    reply = await pair.analytics.RecordFacts(analytics_pb.RecordFactsRequest(facts=[
        fact_pb2.Fact(fact_id=f"delivered:{p}", type=fact_pb2.FACT_TYPE_MESSAGE_DELIVERED,
                      profile_id=p, message_id=f"msg-{p}", journey_id="j1",
                      channel=common_pb2.CHANNEL_EMAIL, occur_time=to_timestamp(DELIVERED_AT))
        for p in profile_ids]), metadata=as_service(workspace))
    assert all(r.status.code == 0 for r in reply.results)


async def test_conversion_events_reach_analytics_once_with_their_revenue(pair: Pair) -> None:
    identity = pair.identity
    acme = await identity.new_workspace("acme")
    updated = await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(conversion_events=[ORDER])),
        metadata=acme)
    assert list(updated.settings.conversion_events) == [ORDER]
    stored = await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                       metadata=acme)
    assert list(stored.settings.conversion_events) == [ORDER]

    batch = pb.IngestEventsRequest(events=[
        track("o1", "u1", "order_completed", total=42.5, currency="usd"),
        track("o1", "u1", "order_completed", total=42.5, currency="usd"),  # a repeat
        track("v1", "u1", "page_viewed", total=99),  # not a conversion
        track("o2", "u2", "order_completed", total="not a number"),  # converts, revenue 0
    ])
    with capture_logs() as logs:
        reply = await identity.events.IngestEvents(batch, metadata=acme)
    assert [(r.status.code, r.duplicate) for r in reply.results] == [
        (0, False), (0, True), (0, False), (0, False)]
    u1, u2 = reply.results[0].profile_id, reply.results[3].profile_id
    assert [entry["message_id"] for entry in logs
            if entry["event"] == "conversion recorded with revenue 0"] == ["o2"]
    await touched(pair, "acme", [u1, u2])

    report = await eventually(lambda: _with_conversions(pair, "acme", 2))
    assert isinstance(report, reports_pb2.GetAttributionResponse)
    assert report.conversions == 2
    assert report.attributed_revenue == pytest.approx(42.5)
    detail = {c.profile_id: c for c in report.models[0].conversions}
    assert set(detail) == {u1, u2}
    assert detail[u1].revenue == pytest.approx(42.5)
    assert detail[u1].occur_time.ToDatetime().replace(tzinfo=START.tzinfo) == BOUGHT_AT
    assert detail[u1].fact_id.endswith(reply.results[0].event_id)
    assert detail[u2].revenue == 0
    # Other workspaces see none of it.
    assert (await attribution(pair, "other")).conversions == 0

    # The same batch again: every conversion is a duplicate, nothing more is forwarded.
    again = await identity.events.IngestEvents(batch, metadata=acme)
    assert [r.duplicate for r in again.results] == [True, True, True, True]
    assert await identity.outbox_rows() == 0
    assert (await attribution(pair, "acme")).conversions == 2


async def _with_conversions(pair: Pair, workspace: str, count: int
                            ) -> reports_pb2.GetAttributionResponse | None:
    if await pair.identity.outbox_rows():
        return None
    report = await attribution(pair, workspace)
    return report if report.conversions >= count else None


async def test_workspaces_without_conversion_events_forward_no_facts(
        pair: Pair, recorder: Recorder) -> None:
    identity = pair.identity
    acme = await identity.new_workspace("acme")
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        track("o1", "u1", "order_completed", total=10)]), metadata=acme)
    assert reply.results[0].status.code == 0
    # A touch before the order, so a conversion fact, had one been sent, would be reported.
    await touched(pair, "acme", [reply.results[0].profile_id])
    await eventually(lambda: _drained(identity))
    # The event went to orchestration only (the outbox is read once drained: the forwarders
    # start as soon as the batch commits, so a count before then races them).
    assert [e.event.message_id for e in recorder.events] == ["o1"]
    assert (await attribution(pair, "acme")).conversions == 0


async def _drained(identity: Identity) -> bool:
    return await identity.outbox_rows() == 0


async def test_bad_conversion_events_name_the_field(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    bad = await rpc_error(identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(conversion_events=[
            ORDER,
            identity_settings_pb2.ConversionEvent(event_name="order_completed"),
            identity_settings_pb2.ConversionEvent(event_name="", revenue_property="total"),
            identity_settings_pb2.ConversionEvent(event_name="signup", currency="euro"),
        ])), metadata=acme))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(rpc_status.from_call(bad))) == {
        "settings.conversion_events[1].event_name", "settings.conversion_events[2].event_name",
        "settings.conversion_events[3].currency"}
    kept = await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                     metadata=acme)
    assert list(kept.settings.conversion_events) == []


@pytest.mark.parametrize(("properties", "revenue", "currency", "problem"), [
    ({"total": 42.5, "currency": "usd"}, 42.5, "USD", False),
    ({"total": "19.90"}, 19.9, "EUR", False),
    ({"total": 3}, 3.0, "EUR", False),
    ({}, 0.0, "EUR", True),
    ({"total": "free"}, 0.0, "EUR", True),
    ({"total": True}, 0.0, "EUR", True),
    ({"total": float("nan")}, 0.0, "EUR", True),
    ({"total": 5, "currency": "dollars"}, 5.0, "EUR", False),
])
def test_revenue_and_currency_are_read_from_the_properties(
        properties: dict[str, object], revenue: float, currency: str, problem: bool) -> None:
    definition = ConversionEvent("order_completed", "total", "currency", "EUR")
    value = value_of(definition, properties)
    assert (value.revenue, value.currency, bool(value.problem)) == (
        pytest.approx(revenue), currency, problem)


def test_a_conversion_without_revenue_property_carries_none() -> None:
    value = value_of(ConversionEvent("signup"), {"total": 5})
    assert (value.revenue, value.currency, value.problem) == (0.0, "", "")


async def test_analytics_counts_an_anonymous_exposure_on_the_profile_it_merges_into(
        pair: Pair) -> None:
    """The issue's case through identity's forwarding: exposed while anonymous, logged in (the
    anonymous profile merges into the known one), bought as the known profile."""
    identity = pair.identity
    acme = await identity.new_workspace("acme")
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(conversion_events=[ORDER])),
        metadata=acme)
    known = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        track(f"crm{i}", f"u{i}", "signed_up") for i in range(4)]), metadata=acme)
    visits = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event_pb2.Event(message_id=f"visit{i}", type=event_pb2.EVENT_TYPE_TRACK,
                        name="cart_viewed", timestamp=to_timestamp(BOUGHT_AT),
                        identifiers=[event_pb2.Identifier(type="anonymous_id", value=f"a{i}")])
        for i in range(4)]), metadata=acme)
    anonymous = [r.profile_id for r in visits.results]
    # A journey split exposes the anonymous profiles (as orchestration records it).
    exposed = await pair.analytics.RecordFacts(analytics_pb.RecordFactsRequest(facts=[
        fact_pb2.Fact(fact_id=f"x{i}", type=fact_pb2.FACT_TYPE_NODE_VISITED, profile_id=p,
                      journey_id="j1", node_id="split", experiment_id="j1:split",
                      arm="treatment" if i % 2 else "control", control=i % 2 == 0,
                      occur_time=to_timestamp(BOUGHT_AT - timedelta(minutes=30)))
        for i, p in enumerate(anonymous)]), metadata=as_service("acme"))
    assert all(r.status.code == 0 for r in exposed.results)

    logins = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event_pb2.Event(message_id=f"login{i}", type=event_pb2.EVENT_TYPE_IDENTIFY,
                        timestamp=to_timestamp(BOUGHT_AT - timedelta(minutes=10)),
                        identifiers=[event_pb2.Identifier(type="anonymous_id", value=f"a{i}"),
                                     event_pb2.Identifier(type="user_id", value=f"u{i}")])
        for i in range(4)]), metadata=acme)
    survivors = [r.profile_id for r in logins.results]
    assert survivors == [r.profile_id for r in known.results]  # the known profiles survive
    assert not set(survivors) & set(anonymous)
    # People 1 (treatment) and 2 (control) buy, as their known profile.
    await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        track("o1", "u1", "order_completed", total=30), track("o2", "u2", "order_completed",
                                                               total=12)]), metadata=acme)

    async def results() -> reports_pb2.GetExperimentResultsResponse | None:
        if await identity.outbox_rows():
            return None
        reply = await pair.analytics.GetExperimentResults(
            reports_pb2.GetExperimentResultsRequest(experiment_id="j1:split"),
            metadata=as_service("acme"))
        return reply if sum(a.conversions for a in reply.arms) >= 2 else None

    reply = await eventually(results)
    assert [(a.arm, a.exposures, a.conversions, a.revenue) for a in reply.arms] == [
        ("control", 2, 1, 12.0), ("treatment", 2, 1, 30.0)]
    assert reply.currency == "EUR"
