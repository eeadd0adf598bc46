"""What one console page view costs the services: a profile page asks orchestration for the
person's enrollments a bounded number of calls at a time (the RPC is per journey), and a
journey's counts are fetched once per cache period however many tabs poll."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc

from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_client import Client, Endpoints
from cjo_console.adapters.services import ENROLLMENT_CONCURRENCY, Services
from cjo_console.domain.cache import TtlCache


class Orchestration(orch_grpc.OrchestrationServiceServicer):
    def __init__(self) -> None:
        self.running = self.peak = self.calls = 0

    async def ListEnrollments(self, request: orch_pb.ListEnrollmentsRequest,
                              context: grpc.aio.ServicerContext) -> orch_pb.ListEnrollmentsResponse:
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.01)  # a call in flight while the others arrive
        self.running -= 1
        return orch_pb.ListEnrollmentsResponse()


async def test_a_profile_page_with_200_journeys_asks_a_bounded_number_at_a_time() -> None:
    servicer = Orchestration()
    server = grpc.aio.server()
    orch_grpc.add_OrchestrationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Client(Endpoints({"orchestration": f"127.0.0.1:{port}"}), "key") as client:
            await Services(client).enrollments("p1", [f"j{i}" for i in range(200)])
    finally:
        await server.stop(None)
    assert servicer.calls == 200
    assert servicer.peak <= ENROLLMENT_CONCURRENCY


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
