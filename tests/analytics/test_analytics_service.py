"""AnalyticsService over a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc
import pytest
from grpc_status import rpc_status

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.analytics.v1 import reports_pb2 as rpb
from cjo.common.v1 import common_pb2
from cjo_analytics.bootstrap import build
from cjo_platform.config import Env
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, serving, settings_for

WHEN = to_timestamp(datetime(2026, 3, 1, tzinfo=UTC))


def fact(fact_id: str, kind: int, profile: str, journey: str = "j1") -> fact_pb2.Fact:
    return fact_pb2.Fact(fact_id=fact_id, type=kind, profile_id=profile, journey_id=journey,
                         occur_time=WHEN)


async def test_facts_are_recorded_once_and_counted(backend: Backend) -> None:
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        entered = fact_pb2.FACT_TYPE_JOURNEY_ENTERED
        sent = fact_pb2.FACT_TYPE_MESSAGE_SENT
        reply = await stub.RecordFacts(pb.RecordFactsRequest(facts=[
            fact("f1", entered, "p1"), fact("f2", entered, "p2"), fact("f1", entered, "p1"),
            fact("f3", sent, "p1"), fact("", sent, "p1"), fact("f4", sent, "p2", journey="j2"),
        ]), metadata=as_service("ws-a"))
        assert [r.status.code for r in reply.results] == [0, 0, 0, 0, 3, 0]
        assert [r.duplicate for r in reply.results] == [False, False, True, False, False, False]
        assert field_violations(reply.results[4].status) == {"facts[4].fact_id": "is required"}

        again = await stub.RecordFacts(pb.RecordFactsRequest(facts=[fact("f3", sent, "p1")]),
                                       metadata=as_service("ws-a"))
        assert again.results[0].duplicate

        report = (await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="journeys/j1"),
                                              metadata=as_service("ws-a"))).report
        assert [(c.type, c.count, c.profiles) for c in report.counts] == [
            (entered, 2, 2), (sent, 1, 1)]

        other = (await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="journeys/j1"),
                                             metadata=as_service("ws-b"))).report
        assert list(other.counts) == []  # another workspace sees nothing


async def test_concurrent_duplicate_batches_record_each_fact_once(backend: Backend) -> None:
    # RecordFacts has no request_id: the fact ids are its idempotency keys. Forwarders retry
    # a batch whose answer they lost, so the same batch can arrive several times at once.
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        email = common_pb2.CHANNEL_EMAIL
        batch = pb.RecordFactsRequest(facts=[
            fact("in-1", fact_pb2.FACT_TYPE_JOURNEY_ENTERED, "p1"),
            fact("in-2", fact_pb2.FACT_TYPE_JOURNEY_ENTERED, "p2"),
            fact_pb2.Fact(fact_id="sent-1", type=fact_pb2.FACT_TYPE_MESSAGE_SENT,
                          profile_id="p1", journey_id="j1", message_id="m1", channel=email,
                          occur_time=WHEN),
            fact_pb2.Fact(fact_id="open-1", type=fact_pb2.FACT_TYPE_MESSAGE_OPENED,
                          profile_id="p1", journey_id="j1", message_id="m1", channel=email,
                          occur_time=WHEN),
        ])
        answers = await asyncio.gather(*(
            stub.RecordFacts(batch, metadata=as_service("ws-a")) for _ in range(8)))
        assert all(r.status.code == 0 for answer in answers for r in answer.results)
        # Each fact is new in exactly one answer, a duplicate in the seven others.
        for index in range(len(batch.facts)):
            assert sum(not answer.results[index].duplicate for answer in answers) == 1

        report = (await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="journeys/j1"),
                                              metadata=as_service("ws-a"))).report
        assert [(c.type, c.count) for c in report.counts] == [
            (fact_pb2.FACT_TYPE_JOURNEY_ENTERED, 2), (fact_pb2.FACT_TYPE_MESSAGE_SENT, 1),
            (fact_pb2.FACT_TYPE_MESSAGE_OPENED, 1)]
        performance = await stub.GetChannelPerformance(rpb.GetChannelPerformanceRequest(),
                                                       metadata=as_service("ws-a"))
        [by_channel] = performance.channels
        assert (by_channel.outcomes.sent, by_channel.outcomes.opened) == (1, 1)


async def test_bad_requests_name_the_field(sqlite_backend: Backend) -> None:
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.RecordFacts(pb.RecordFactsRequest(), metadata=as_service("ws-a"))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "facts" in field_violations(rpc_status.from_call(empty.value))

        too_many = [fact(f"f{i}", 1, "p") for i in range(1001)]
        with pytest.raises(grpc.aio.AioRpcError) as big:
            await stub.RecordFacts(pb.RecordFactsRequest(facts=too_many),
                                   metadata=as_service("ws-a"))
        assert big.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        with pytest.raises(grpc.aio.AioRpcError) as bad_name:
            await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="j1"),
                                        metadata=as_service("ws-a"))
        assert field_violations(rpc_status.from_call(bad_name.value)) == {
            "journey": "must be journeys/{journey_id}"}


async def test_only_services_may_record_facts(sqlite_backend: Backend) -> None:
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.RecordFacts(pb.RecordFactsRequest(facts=[fact("f", 1, "p")]))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.RecordFacts(pb.RecordFactsRequest(facts=[fact("f", 1, "p")]),
                                   metadata=(("authorization", "Bearer not-the-token"),))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_fact_the_database_cannot_store_fails_alone(backend: Backend) -> None:
    # Before: on PostgreSQL a profile id of 65 to 128 characters failed the whole batch with
    # INTERNAL, and the facts forwarder retried it forever: no later fact of any workspace was
    # counted. Now the others are recorded and the fact answers for itself (or is stored).
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        entered = fact_pb2.FACT_TYPE_JOURNEY_ENTERED
        reply = await stub.RecordFacts(pb.RecordFactsRequest(facts=[
            fact("ok-1", entered, "p1"), fact("long", entered, "p" * 100),
            fact("ok-2", entered, "p2")]), metadata=as_service("ws-a"))
        codes = [r.status.code for r in reply.results]
        assert codes[0] == codes[2] == 0 and codes[1] in (0, 3)
        if codes[1]:
            assert "facts[1]" in field_violations(reply.results[1].status)
        report = (await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="journeys/j1"),
                                              metadata=as_service("ws-a"))).report
        assert [(c.type, c.count) for c in report.counts] == [(entered, 3 if not codes[1] else 2)]
