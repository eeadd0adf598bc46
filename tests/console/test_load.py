"""What one console page view costs the services: a profile page asks orchestration for the
person's enrollments in one listing across journeys, however many journeys the workspace has,
and a journey's counts are fetched once per cache period however many tabs poll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc

from cjo.orchestration.v1 import enrollment_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_client import Client, Endpoints
from cjo_console.adapters.services import MAX_ENROLLMENTS, Services
from cjo_console.domain.cache import TtlCache


class Orchestration(orch_grpc.OrchestrationServiceServicer):
    """A person with 350 enrollments, listed across journeys 100 to a page."""

    def __init__(self) -> None:
        self.requests: list[orch_pb.ListEnrollmentsRequest] = []

    async def ListEnrollments(self, request: orch_pb.ListEnrollmentsRequest,
                              context: grpc.aio.ServicerContext) -> orch_pb.ListEnrollmentsResponse:
        self.requests.append(request)
        start = int(request.page_token or 0)
        end = min(start + request.page_size, 350)
        return orch_pb.ListEnrollmentsResponse(
            enrollments=[enrollment_pb2.Enrollment(journey_id=f"j{i}", profile_id="p1")
                         for i in range(start, end)],
            next_page_token=str(end) if end < 350 else "")


async def test_a_profile_page_asks_for_the_persons_enrollments_in_one_listing() -> None:
    servicer = Orchestration()
    server = grpc.aio.server()
    orch_grpc.add_OrchestrationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Client(Endpoints({"orchestration": f"127.0.0.1:{port}"}), "key") as client:
            shown = await Services(client).enrollments("p1")
    finally:
        await server.stop(None)
    # The newest MAX_ENROLLMENTS, in pages, never one call per journey.
    assert [e.journey_id for e in shown] == [f"j{i}" for i in range(MAX_ENROLLMENTS)]
    assert [(r.parent, r.profile_id) for r in servicer.requests] == [
        ("journeys/-", "p1")] * 2
    assert [r.page_size for r in servicer.requests] == [100, MAX_ENROLLMENTS - 100]


def test_counts_are_reused_within_the_cache_period_only() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    cache = TtlCache(timedelta(seconds=2), size=2)
    cache.put(("k", "j1"), {"entered": 1}, t0)
    assert cache.get(("k", "j1"), t0 + timedelta(seconds=1.9)) == {"entered": 1}
    assert cache.get(("k", "j1"), t0 + timedelta(seconds=2)) is None
    assert cache.get(("other-key", "j1"), t0) is None  # per key: no workspace sees another's
    cache.put(("k", "j2"), {}, t0)
    cache.put(("k", "j3"), {}, t0)
    assert cache.get(("k", "j1"), t0) is None  # bounded: the oldest went first
