"""A send node's consent topic and transactional flag: validated like delivery validates them,
kept through every form a journey takes (proto, stored JSON, journey file) and handed to
delivery on whichever channel the send uses. (That delivery then asks consent for the topic,
or skips it for a transactional message, is shown end to end in
tests/e2e/test_journey_consent.py.)"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from orchestration_support import create_content, forwarded, messages, published, running

from cjo.common.v1 import common_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_orchestration import journeyfile
from cjo_orchestration.api.convert import graph_from_proto, node_to_proto
from cjo_orchestration.domain.graph import validate_shape
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    FailurePolicy,
    JourneyGraph,
    Node,
    SendAction,
)
from cjo_platform.limits import MAX_TOPIC_LENGTH
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, eventually

JOURNEY_YAML = """\
display_name: Orders
event_trigger: {event_name: order_completed}
entry_node_id: receipt
nodes:
  - id: receipt
    send:
      content_key: receipt
      channel: CHANNEL_EMAIL
      transactional: true
      next_node_id: news
      on_failure: FAILURE_POLICY_EXIT
  - id: news
    send:
      content_key: news
      channel_preference: [CHANNEL_SMS, CHANNEL_EMAIL]
      topic: newsletter
      on_failure: FAILURE_POLICY_CONTINUE
"""


def test_a_journey_file_carries_topic_and_transactional_through_every_form() -> None:
    journey = journeyfile.parse(JOURNEY_YAML)
    assert journeyfile.problems(journey) == []
    receipt, news = journey.nodes
    assert (receipt.send.transactional, receipt.send.topic) == (True, "")
    assert (news.send.transactional, news.send.topic) == (False, "newsletter")
    # File -> proto -> file, in YAML and in JSON.
    assert journeyfile.parse(journeyfile.dump(journey)) == journey
    assert journeyfile.parse(journeyfile.dump(journey, as_json=True), suffix=".json") == journey
    assert "topic: newsletter" in journeyfile.dump(journey)

    graph = graph_from_proto(journey)
    actions = [node.action for node in graph.nodes]
    assert actions == [
        SendAction("receipt", Channel.EMAIL, "news", transactional=True),
        SendAction("news", None, "", channel_preference=(Channel.SMS, Channel.EMAIL),
                   on_failure=FailurePolicy.CONTINUE, topic="newsletter"),
    ]
    # Domain -> proto, and the stored JSON form a published version keeps.
    assert [node_to_proto(node) for node in graph.nodes] == list(journey.nodes)
    assert JourneyGraph.from_dict(graph.to_dict()) == graph


def test_a_version_stored_before_the_fields_existed_reads_as_before() -> None:
    stored = JourneyGraph(EventTrigger("x"), (Node("a", SendAction("k", Channel.EMAIL)),),
                          "a").to_dict()
    for node in stored["nodes"]:
        del node["action"]["topic"], node["action"]["transactional"]
    (node,) = JourneyGraph.from_dict(stored).nodes
    assert node.action == SendAction("k", Channel.EMAIL)
    assert isinstance(node.action, SendAction)
    assert (node.action.topic, node.action.transactional) == ("", False)


def test_a_topic_is_held_to_delivery_s_limit() -> None:
    def topic_problems(topic: str) -> dict[str, str]:
        graph = JourneyGraph(EventTrigger("x"), (
            Node("a", SendAction("k", Channel.EMAIL, topic=topic)),), "a")
        return {v.field: v.description for v in validate_shape("", graph).items}

    assert MAX_TOPIC_LENGTH == 64  # the width of delivery's messages.topic
    assert topic_problems("n" * MAX_TOPIC_LENGTH) == {}
    assert topic_problems("n" * (MAX_TOPIC_LENGTH + 1)) == {
        "nodes[0].send.topic": "at most 64 characters"}


async def test_sends_reach_delivery_with_their_topic_and_flag(sqlite_backend: Backend) -> None:
    async with running(sqlite_backend) as cluster:
        if "delivery" not in cluster.real:
            pytest.skip("the real delivery service is needed to see what it stored")
        ws = as_service("ws-a")
        stub = cluster.orchestration

        # A bad topic is refused before anything is stored, naming the field in the request.
        bad = journeyfile.parse(JOURNEY_YAML)
        bad.nodes[1].send.topic = "n" * 65
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateJourney(pb.CreateJourneyRequest(journey=bad), metadata=ws)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(rpc_status.from_call(refused.value)) == {
            "journey.nodes[1].send.topic": "at most 64 characters"}
        listed = await stub.ListJourneys(pb.ListJourneysRequest(), metadata=ws)
        assert list(listed.journeys) == []

        await create_content(cluster, "ws-a", "receipt", "Your receipt", "<p>Paid.</p>")
        await create_content(cluster, "ws-a", "news", "News", "<p>News.</p>")
        journey = await published(cluster, "ws-a", journeyfile.parse(JOURNEY_YAML))
        got = (await stub.GetJourney(pb.GetJourneyRequest(name=journey.name),
                                     metadata=ws)).journey
        assert got.nodes[0].send.transactional and got.nodes[1].send.topic == "newsletter"

        # No phone: the newsletter fails over from SMS to email, and keeps its topic there.
        reply = await stub.HandleEvents(pb.HandleEventsRequest(events=[
            forwarded("e1", "ada", "order_completed")]), metadata=ws)
        assert [r.status.code for r in reply.results] == [0]

        async def both() -> list[Any] | None:
            found = await messages(cluster, "ws-a", journey.journey_id)
            return found if len(found) == 2 else None

        found = await eventually(both)
        assert isinstance(found, list)
        by_subject = {m.content.email.subject: m for m in found}
        receipt, news = by_subject["Your receipt"], by_subject["News"]
        assert (receipt.topic, receipt.transactional) == ("", True)
        assert (news.topic, news.transactional) == ("newsletter", False)
        assert news.content.channel == common_pb2.CHANNEL_EMAIL
        assert news.recipient.address == "ada@example.com"
