"""A journey step's BatchDecide carries each person's profile: a call of many large profiles
(each within the limits) passes gRPC's message limit, and went unanswered for every person of
the chunk (Unavailable, waited out for ever). It is made again in halves until each fits. A real
gRPC server plays decisioning, with a 1 MiB receive limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial

import grpc
import pytest
from google.rpc import code_pb2, status_pb2

from cjo.decisioning.v1 import decision_pb2, decisioning_service_pb2, decisioning_service_pb2_grpc
from cjo_orchestration.adapters.peers import DecideItem, DecisionAnswer, Decisioning
from support import Backend, receiving_at_most, settings_for

LIMIT = 1024 * 1024


class Deciding(decisioning_service_pb2_grpc.DecisioningServiceServicer):
    def __init__(self) -> None:
        self.calls: list[int] = []

    async def BatchDecide(self, request: decisioning_service_pb2.BatchDecideRequest,
                          context: grpc.aio.ServicerContext,
                          ) -> decisioning_service_pb2.BatchDecideResponse:
        self.calls.append(len(request.items))
        ok = status_pb2.Status(code=code_pb2.OK)
        return decisioning_service_pb2.BatchDecideResponse(results=[
            decisioning_service_pb2.DecideResult(status=ok, decision=decision_pb2.Decision(
                decision_id=f"d-{item.profile_id}")) for item in request.items])


@pytest.fixture
async def deciding() -> AsyncIterator[tuple[Deciding, str]]:
    servicer = Deciding()
    async with receiving_at_most(LIMIT, partial(
            decisioning_service_pb2_grpc.add_DecisioningServiceServicer_to_server,
            servicer)) as address:
        yield servicer, address


async def test_a_decide_call_too_large_for_one_message_goes_in_halves(
        sqlite_backend: Backend, deciding: tuple[Deciding, str]) -> None:
    servicer, address = deciding
    client = Decisioning(settings_for("orchestration", sqlite_backend,
                                      CJO_DECISIONING_TARGET=address), timeout=10)
    items = [DecideItem(f"p{i}", {"first_name": f"P{i}", "notes": "x" * 200_000},
                        f"r{i}", "j", f"e{i}", "n") for i in range(10)]
    answers = await client.decide("acme", "offers", None, datetime(2026, 3, 1, tzinfo=UTC),
                                  items)
    assert [a.decision_id if isinstance(a, DecisionAnswer) else str(a) for a in answers] == [
        f"d-p{i}" for i in range(10)]
    assert sum(servicer.calls) == 10 and max(servicer.calls) < 10
