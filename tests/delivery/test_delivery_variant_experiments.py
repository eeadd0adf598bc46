"""A content-variant A/B test end to end: content assigns each person a variant, delivery sends
it over real SMTP and records an exposure for each SENT message (a suppressed one is none),
and the real analytics service answers GetExperimentResults for `content:{key}`, per-variant
channel performance and ListExperiments."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
from delivery_support import (
    IdentityStandIn,
    SmtpSink,
    delivery_app,
    identity_stand_in,
    send_request,
    smtp_server,
)

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.analytics.v1 import reports_pb2 as rpb
from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as content_pb
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo_analytics.bootstrap import build as build_analytics
from cjo_content.bootstrap import build as build_content
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.experiment_ids import content_experiment_id
from cjo_platform.limits import MAX_ID_LENGTH
from cjo_platform.protobuf import to_timestamp
from support import Backend, as_service, eventually, free_port, serving, settings_for

WS = as_service("ws-a")
EMAIL = common_pb2.CHANNEL_EMAIL
PEOPLE = 40
UNSUBSCRIBED = {"p0", "p1", "p2"}
SENT_AT = datetime(2026, 1, 1, tzinfo=UTC)  # delivery's manual clock
BOUGHT_AT = SENT_AT + timedelta(days=2)


def item() -> item_pb.ContentItem:
    return item_pb.ContentItem(
        key="spring-sale",
        email=item_pb.EmailTemplate(subject="Spring sale", html="<p>Sale</p>"),
        variants=[item_pb.Variant(key="short", weight=1,
                                  email=item_pb.EmailTemplate(subject="Sale!", html="<p>!</p>")),
                  item_pb.Variant(key="long", weight=3)])


async def test_a_content_variant_test_is_read_through_get_experiment_results(
        backend: Backend) -> None:
    smtp_port = free_port()
    content_app = build_content(settings_for("content", backend), Env({}), clock=ManualClock())
    analytics_app = build_analytics(settings_for("analytics", backend), Env({}))
    async with serving(content_app) as content_address, \
            grpc.aio.insecure_channel(content_address) as content_channel, \
            serving(analytics_app) as analytics_address, \
            grpc.aio.insecure_channel(analytics_address) as analytics_channel, \
            identity_stand_in(IdentityStandIn(UNSUBSCRIBED)) as identity:
        content = content_grpc.ContentServiceStub(content_channel)
        analytics = analytics_grpc.AnalyticsServiceStub(analytics_channel)
        created = await content.CreateContentItem(
            content_pb.CreateContentItemRequest(content_item=item()), metadata=WS)
        await content.PublishContentItem(
            content_pb.PublishContentItemRequest(name=created.content_item.name), metadata=WS)
        rendered = {}
        for n in range(PEOPLE):
            reply = await content.RenderContent(content_pb.RenderContentRequest(
                name="contentItems/spring-sale", channel=EMAIL,
                context=content_pb.RenderContext(profile_id=f"p{n}")), metadata=WS)
            rendered[f"p{n}"] = reply.message
        assert {m.variant: m.variant_weight for m in rendered.values()} == {"short": 1, "long": 3}

        with smtp_server(SmtpSink(), smtp_port) as sink:
            app = delivery_app(backend, smtp_port, ManualClock(SENT_AT),
                               analytics=analytics_address,
                               identity=identity)
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.DeliveryServiceStub(ch)
                for profile, message in rendered.items():
                    await stub.SendMessage(send_request(
                        f"k-{profile}", f"{profile}@example.com", profile_id=profile,
                        journey_id="j1", content=message), metadata=WS)
                sent = Counter(m.variant for p, m in rendered.items() if p not in UNSUBSCRIBED)

                async def exposed() -> rpb.GetExperimentResultsResponse | None:
                    if len(sink.received) < sum(sent.values()):
                        return None
                    try:
                        reply = await analytics.GetExperimentResults(
                            rpb.GetExperimentResultsRequest(experiment_id="content:spring-sale",
                                                            control_arm="long"), metadata=WS)
                    except grpc.aio.AioRpcError:
                        return None  # no exposure recorded yet
                    total = sum(a.exposures for a in reply.arms)
                    return reply if total == sum(sent.values()) else None

                results = await eventually(exposed)
        # Only what was sent exposed anyone: the three unsubscribed people were suppressed.
        assert {a.arm: a.exposures for a in results.arms} == dict(sent)
        assert {a.arm: a.expected_share for a in results.arms} == {"long": 0.75, "short": 0.25}

        # Conversions of the exposed people count per variant.
        buyers = sorted(p for p in rendered if p not in UNSUBSCRIBED)[:10]
        await analytics.RecordFacts(analytics_pb.RecordFactsRequest(facts=[
            fact_pb2.Fact(fact_id=f"order-{p}", type=fact_pb2.FACT_TYPE_CONVERTED,
                          profile_id=p, occur_time=to_timestamp(BOUGHT_AT),
                          revenue=20.0, currency="EUR") for p in buyers]), metadata=WS)
        results = await analytics.GetExperimentResults(rpb.GetExperimentResultsRequest(
            experiment_id="content:spring-sale", control_arm="long"), metadata=WS)
        bought = Counter(rendered[p].variant for p in buyers)
        assert {a.arm: (a.conversions, a.revenue) for a in results.arms} == {
            v: (bought[v], 20.0 * bought[v]) for v in sent}

        performance = await analytics.GetChannelPerformance(
            rpb.GetChannelPerformanceRequest(journey="journeys/j1"), metadata=WS)
        assert {v.variant: v.outcomes.sent for v in performance.variants} == dict(sent)
        assert {v.content_key for v in performance.variants} == {"spring-sale"}

        listed = await analytics.ListExperiments(rpb.ListExperimentsRequest(), metadata=WS)
        [experiment] = listed.experiments
        assert (experiment.experiment_id, experiment.kind, experiment.content_key,
                experiment.exposures) == ("content:spring-sale",
                                          rpb.EXPERIMENT_KIND_CONTENT_VARIANT, "spring-sale",
                                          sum(sent.values()))
        assert [(a.arm, a.weight) for a in experiment.arms] == [("long", 3.0), ("short", 1.0)]


async def test_an_item_with_the_longest_key_is_an_experiment_too(backend: Backend) -> None:
    """Content keys go to 128 characters, as many as analytics allows in an experiment id:
    the id derived from a long key still fits, and its exposures are counted and listed."""
    key = "k" * 128
    other = "k" * 127 + "x"  # shares the prefix that a shortened id keeps: another experiment
    smtp_port = free_port()
    content_app = build_content(settings_for("content", backend), Env({}), clock=ManualClock())
    analytics_app = build_analytics(settings_for("analytics", backend), Env({}))
    async with serving(content_app) as content_address, \
            grpc.aio.insecure_channel(content_address) as content_channel, \
            serving(analytics_app) as analytics_address, \
            grpc.aio.insecure_channel(analytics_address) as analytics_channel, \
            identity_stand_in(IdentityStandIn(set())) as identity:
        content = content_grpc.ContentServiceStub(content_channel)
        analytics = analytics_grpc.AnalyticsServiceStub(analytics_channel)
        rendered = []
        for item_key in (key, other):
            long_item = item()
            long_item.key = item_key
            created = await content.CreateContentItem(
                content_pb.CreateContentItemRequest(content_item=long_item), metadata=WS)
            await content.PublishContentItem(content_pb.PublishContentItemRequest(
                name=created.content_item.name), metadata=WS)
            for n in range(4):
                reply = await content.RenderContent(content_pb.RenderContentRequest(
                    name=f"contentItems/{item_key}", channel=EMAIL,
                    context=content_pb.RenderContext(profile_id=f"p{n}")), metadata=WS)
                rendered.append((f"p{n}", reply.message))

        with smtp_server(SmtpSink(), smtp_port):
            app = delivery_app(backend, smtp_port, ManualClock(SENT_AT),
                               analytics=analytics_address, identity=identity)
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.DeliveryServiceStub(ch)
                for n, (profile, message) in enumerate(rendered):
                    await stub.SendMessage(send_request(
                        f"k-{n}", f"{profile}@example.com", profile_id=profile,
                        content=message), metadata=WS)

                async def listed() -> list[rpb.Experiment] | None:
                    reply = await analytics.ListExperiments(rpb.ListExperimentsRequest(),
                                                            metadata=WS)
                    return (list(reply.experiments)
                            if sum(e.exposures for e in reply.experiments) == 8 else None)

                experiments = await eventually(listed)
        ids = [content_experiment_id(k) for k in (key, other)]
        assert all(len(i) <= MAX_ID_LENGTH for i in ids) and ids[0] != ids[1]
        assert sorted((e.experiment_id, e.content_key, e.kind, e.exposures)
                      for e in experiments) == sorted(
            [(ids[0], key, rpb.EXPERIMENT_KIND_CONTENT_VARIANT, 4),
             (ids[1], other, rpb.EXPERIMENT_KIND_CONTENT_VARIANT, 4)])
        results = await analytics.GetExperimentResults(
            rpb.GetExperimentResultsRequest(experiment_id=ids[0]), metadata=WS)
        assert sum(a.exposures for a in results.arms) == 4


def test_content_experiment_ids_fit_the_id_limit() -> None:
    assert content_experiment_id("spring-sale") == "content:spring-sale"
    fits = "a" * (MAX_ID_LENGTH - len("content:"))
    assert content_experiment_id(fits) == f"content:{fits}"  # the longest kept whole
    longer = fits + "b"
    shortened = content_experiment_id(longer)
    assert len(shortened) == MAX_ID_LENGTH
    assert shortened.startswith("content:" + "a" * 103 + "~")
    assert shortened.endswith(hashlib.sha256(longer.encode()).hexdigest()[:16])
    assert content_experiment_id(fits + "c") != shortened
