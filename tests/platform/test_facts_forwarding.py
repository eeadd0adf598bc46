"""The facts forwarder against the real analytics service: a fact analytics refuses goes to the
sender's dead letters with analytics' reason, and every other fact, of every workspace, is
counted. Stored facts travel as they are: the request is the rows' bytes, never decoded by the
sender."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from outbox_support import Box, open_box

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo_analytics.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.outbox import OutboxRow
from cjo_platform.facts import FACTS_TOPIC, facts_forwarder
from cjo_platform.forwarding import StoredItems
from cjo_platform.protobuf import to_timestamp
from support import Backend, as_service, eventually, serving, settings_for

WHEN = to_timestamp(datetime(2026, 3, 1, tzinfo=UTC))


@pytest.fixture
def box(backend: Backend) -> Iterator[Box]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/sender.db")
    opened = open_box(url, backend.schema_prefix + "sender", ManualClock(), create=True)
    yield opened
    opened.close()


def fact(fact_id: str, profile: str) -> bytes:
    return fact_pb2.Fact(fact_id=fact_id, type=fact_pb2.FACT_TYPE_JOURNEY_ENTERED,
                         profile_id=profile, journey_id="j1", occur_time=WHEN).SerializeToString()


async def test_a_refused_fact_is_dead_lettered_and_the_rest_are_counted(
        backend: Backend, box: Box) -> None:
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        settings = settings_for("orchestration", backend, CJO_ANALYTICS_TARGET=address)
        forwarder = facts_forwarder(settings, box.db, box.outbox, poll_interval=0.01)
        box.queue(FACTS_TOPIC, "ws-a", [fact("a1", "p1"), fact("", "p2"), fact("a3", "p3")])
        box.queue(FACTS_TOPIC, "ws-b", [fact("b1", "p1")])
        task = asyncio.create_task(forwarder.run())
        try:
            await eventually(lambda: box.queued(FACTS_TOPIC) == 0)
        finally:
            task.cancel()

        async def entered(workspace: str) -> int:
            report = (await stub.GetJourneyReport(
                pb.GetJourneyReportRequest(journey="journeys/j1"),
                metadata=as_service(workspace))).report
            return sum(c.count for c in report.counts)

        assert await entered("ws-a") == 2 and await entered("ws-b") == 1
        [letter] = box.letters("ws-a")
        assert letter.source == "outbox:analytics.facts" and letter.payload == fact("", "p2")
        assert "INVALID_ARGUMENT" in letter.error and "fact_id" in letter.error


def test_stored_items_are_the_request_as_the_peer_decodes_it() -> None:
    service = pb.DESCRIPTOR.services_by_name["AnalyticsService"]
    payloads = [fact("a1", "p1"), fact("a2", "p2" * 100), b""]  # an empty Fact is one too
    rows = [OutboxRow(n, FACTS_TOPIC, "ws-a", payload, "", datetime(2026, 1, 1, tzinfo=UTC))
            for n, payload in enumerate(payloads)]
    encoded = StoredItems(service, "RecordFacts").request(rows)
    assert encoded == pb.RecordFactsRequest(
        facts=[fact_pb2.Fact.FromString(p) for p in payloads]).SerializeToString()
    with pytest.raises(ValueError, match="not a batch method"):
        StoredItems(service, "GetJourneyReport")


async def test_a_fact_that_does_not_decode_is_dead_lettered_alone(
        backend: Backend, box: Box) -> None:
    """The sender does not decode what it sends: analytics refuses the call that carries the
    broken row (REQUEST_NOT_DECODABLE), and the forwarder splits the call down to it."""
    app = build(settings_for("analytics", backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        settings = settings_for("orchestration", backend, CJO_ANALYTICS_TARGET=address)
        forwarder = facts_forwarder(settings, box.db, box.outbox, poll_interval=0.01)
        forwarder.max_attempts = 1
        broken = b"\xff\xff\xff"
        box.queue(FACTS_TOPIC, "ws-a", [fact("a1", "p1"), fact("a2", "p2"), broken,
                                        fact("a4", "p4")])
        task = asyncio.create_task(forwarder.run())
        try:
            await eventually(lambda: box.queued(FACTS_TOPIC) == 0)
        finally:
            task.cancel()
        report = (await stub.GetJourneyReport(
            pb.GetJourneyReportRequest(journey="journeys/j1"),
            metadata=as_service("ws-a"))).report
        assert sum(c.count for c in report.counts) == 3
        [letter] = box.letters("ws-a")
        assert letter.payload == broken and "INVALID_ARGUMENT" in letter.error
