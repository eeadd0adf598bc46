"""Orchestration's decisioning client against a real gRPC stand-in of decisioning: what a
BatchDecide and a GetSendTimes carry, and how each answer becomes the step round's vocabulary
(a decision, an item refused for good, an unknown point that is the journey's error, and an
unreachable decisioning that is only waited out)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from orchestration_support import fake_server

from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import action_pb2, decision_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as dpb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dgrpc
from cjo_orchestration.adapters.peers import ChosenAction, DecideItem, DecisionAnswer, Peers
from cjo_orchestration.domain.journeys import Channel
from cjo_orchestration.domain.orders import Rejected, SendTimeFound, Unavailable
from cjo_platform.protobuf import from_timestamp, struct_to_dict, to_timestamp
from support import Backend, free_port, settings_for

NOW = datetime(2026, 6, 1, 9, tzinfo=UTC)


class Decisioning(dgrpc.DecisioningServiceServicer):
    """Knows one point, ``decisionPoints/offer``: the first person gets the spring sale, the
    second nothing, the third is refused; GetSendTimes answers two hours after the earliest."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def BatchDecide(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.decision_point != "decisionPoints/offer":
            await context.abort(grpc.StatusCode.NOT_FOUND, "decision point not found")
        results = [dpb.DecideResult(
            status=status_pb2.Status(code=code_pb2.OK),
            decision=decision_pb2.Decision(decision_id="d1", actions=[decision_pb2.RankedAction(
                action="spring_sale", topic="offers", transactional=True, contents=[
                    action_pb2.ActionContent(channel=common_pb2.CHANNEL_SMS,
                                             content_key="sale-sms"),
                    action_pb2.ActionContent(channel=common_pb2.CHANNEL_EMAIL,
                                             content_key="sale-email")])])),
            dpb.DecideResult(status=status_pb2.Status(code=code_pb2.OK),
                             decision=decision_pb2.Decision(decision_id="d2")),
            dpb.DecideResult(status=status_pb2.Status(code=code_pb2.INVALID_ARGUMENT,
                                                      message="items[2].profile: too deep"))]
        return dpb.BatchDecideResponse(results=results[:len(request.items)])

    async def GetSendTimes(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        when = to_timestamp(from_timestamp(request.earliest_time) + timedelta(hours=2))
        return dpb.GetSendTimesResponse(send_times=[
            dpb.SendTime(profile_id=p, send_time=when, source=dpb.SEND_TIME_SOURCE_PROFILE,
                         observations=3) for p in request.profile_ids])


@pytest.fixture
async def served(sqlite_backend: Backend) -> AsyncIterator[tuple[Decisioning, Peers]]:
    servicer = Decisioning()
    async with fake_server(servicer, dgrpc.add_DecisioningServiceServicer_to_server,
                           free_port()) as target:
        settings = settings_for("orchestration", sqlite_backend,
                                CJO_DECISIONING_TARGET=target)
        yield servicer, Peers(settings, timeout=5.0)


def item(profile_id: str) -> DecideItem:
    return DecideItem(profile_id, {"email": f"{profile_id}@example.com", "plan": "pro"},
                      f"e-{profile_id}:offer:0", "j1", f"e-{profile_id}", "offer")


async def test_batch_decide_carries_the_profile_and_answers_per_person(
        served: tuple[Decisioning, Peers]) -> None:
    servicer, peers = served
    answers = await peers.decide("ws", "offer", Channel.EMAIL, NOW,
                                 [item("ada"), item("bob"), item("cy")])
    assert answers == [
        DecisionAnswer("d1", ChosenAction("spring_sale", ((Channel.SMS, "sale-sms"),
                                                          (Channel.EMAIL, "sale-email")),
                                          "offers", True)),
        DecisionAnswer("d2", None),
        Rejected("decisioning: INVALID_ARGUMENT: items[2].profile: too deep")]
    [request] = servicer.requests
    assert request.decision_point == "decisionPoints/offer"
    assert request.context.channel == common_pb2.CHANNEL_EMAIL
    first = request.items[0]
    assert (first.profile_id, first.request_id) == ("ada", "e-ada:offer:0")
    assert struct_to_dict(first.profile) == {"email": "ada@example.com", "plan": "pro"}
    assert (first.context.journey_id, first.context.enrollment_id, first.context.node_id) == (
        "j1", "e-ada", "offer")
    assert from_timestamp(first.context.time) == NOW


async def test_an_unknown_point_is_the_journeys_error(served: tuple[Decisioning, Peers]) -> None:
    _, peers = served
    answers = await peers.decide("ws", "nope", None, NOW, [item("ada"), item("bob")])
    assert all(isinstance(a, Rejected) and a.journey_error and "NOT_FOUND" in a.detail
               for a in answers)


async def test_an_unreachable_decisioning_is_waited_out(sqlite_backend: Backend) -> None:
    settings = settings_for("orchestration", sqlite_backend,
                            CJO_DECISIONING_TARGET=f"127.0.0.1:{free_port()}")
    peers = Peers(settings, timeout=2.0)
    decided = await peers.decide("ws", "offer", None, NOW, [item("ada")])
    timed = await peers.send_times("ws", None, NOW, timedelta(days=1), ["ada"])
    assert isinstance(decided[0], Unavailable) and isinstance(timed[0], Unavailable)


async def test_send_times_ask_once_for_the_group(served: tuple[Decisioning, Peers]) -> None:
    servicer, peers = served
    answers = await peers.send_times("ws", Channel.EMAIL, NOW, timedelta(hours=12),
                                     ["ada", "bob"])
    assert answers == [SendTimeFound(NOW + timedelta(hours=2), "profile")] * 2
    [request] = servicer.requests
    assert (list(request.profile_ids), request.channel, request.max_delay.ToTimedelta()) == (
        ["ada", "bob"], common_pb2.CHANNEL_EMAIL, timedelta(hours=12))
