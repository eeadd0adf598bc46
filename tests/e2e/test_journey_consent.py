"""Consent on journey sends, through the five services as separate processes and a real SMTP
server: a send node's topic is checked against what the person said in identity, and a
transactional send node reaches a person who unsubscribed.

One journey on order_completed: a newsletter (topic "newsletter"), then an offer (topic
"offers"), then a receipt (transactional). Ada subscribed to email but unsubscribed from the
newsletter; Bob unsubscribed from email altogether. Ada gets the offer and the receipt, Bob only
the receipt; every suppressed send shows SUPPRESSED with its reason, and both journeys run to
the end (a suppressed send is not a failed step). The public SendMessage keeps the same rules.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc, message_pb2
from cjo.identity.v1 import consent_pb2, event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2, orchestration_service_pb2
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_platform.protobuf import dict_to_struct
from suite import SERVICES, STATE_TIMEOUT, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually

pytestmark = pytest.mark.e2e

FAST = {"CJO_ORCHESTRATION_POLL_SECONDS": "0.1", "CJO_DELIVERY_POLL_SECONDS": "0.1"}
EMAIL = common_pb2.CHANNEL_EMAIL
SENT = message_pb2.MESSAGE_STATUS_SENT
SUPPRESSED = message_pb2.MESSAGE_STATUS_SUPPRESSED
COMPLETED = enrollment_pb2.ENROLLMENT_STATE_COMPLETED
SUCCEEDED = enrollment_pb2.STEP_OUTCOME_SUCCEEDED
FINAL = {SENT, SUPPRESSED, message_pb2.MESSAGE_STATUS_FAILED,
         message_pb2.MESSAGE_STATUS_DELIVERED, message_pb2.MESSAGE_STATUS_BOUNCED}

SUBJECTS = {"news": "Our newsletter", "offers": "An offer for you", "receipt": "Your receipt"}


def send_node(node_id: str, next_id: str, *, topic: str = "",
              transactional: bool = False) -> journey_pb2.Node:
    return journey_pb2.Node(id=node_id, send=journey_pb2.SendNode(
        content_key=node_id, channel=EMAIL, next_node_id=next_id, topic=topic,
        transactional=transactional))


JOURNEY = journey_pb2.Journey(
    display_name="After an order",
    event_trigger=journey_pb2.EventTrigger(event_name="order_completed"),
    entry_node_id="news",
    nodes=[send_node("news", "offers", topic="newsletter"),
           send_node("offers", "receipt", topic="offers"),
           send_node("receipt", "done", transactional=True),
           journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])


def track(message_id: str, user: str, name: str, **properties: Any) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK, name=name,
        identifiers=[event_pb2.Identifier(type="user_id", value=user)],
        traits=dict_to_struct({"email": f"{user}@example.com", "first_name": user.title()}),
        properties=dict_to_struct(properties), source="web")


async def test_journey_sends_keep_each_persons_consent(sqlite_backend: Backend,
                                                       tmp_path: Path) -> None:
    async with running_suite(sqlite_backend, tmp_path, extra_env=FAST) as suite:
        channels = {name: grpc.aio.insecure_channel(suite.target(name)) for name in SERVICES}
        try:
            await run(suite, channels)
        finally:
            for channel in channels.values():
                await channel.close()


async def run(suite: Any, channels: dict[str, grpc.aio.Channel]) -> None:
    key = (await ws_grpc.WorkspaceServiceStub(channels["identity"]).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="shop", display_name="Shop"),
        metadata=bearer(SERVICE_TOKEN))).api_key.secret
    auth = bearer(key)

    content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
    for item_key, subject in SUBJECTS.items():
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(key=item_key, email=(
                content_item_pb2.EmailTemplate(subject=subject,
                                               html="<p>Hi {{ profile.first_name }}</p>"))),
            request_id=f"create-{item_key}"), metadata=auth)
        await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name=f"contentItems/{item_key}", request_id=f"publish-{item_key}"), metadata=auth)

    orchestration = orch_grpc.OrchestrationServiceStub(channels["orchestration"])
    created = (await orchestration.CreateJourney(orchestration_service_pb2.CreateJourneyRequest(
        journey=JOURNEY), metadata=auth)).journey
    journey = (await orchestration.PublishJourney(orchestration_service_pb2.PublishJourneyRequest(
        name=created.name), metadata=auth)).journey
    assert journey.nodes[0].send.topic == "newsletter" and journey.nodes[2].send.transactional

    # What each person said, before they order.
    identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
    said = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
        track("ada-in", "ada", "subscribed", channel="email"),
        track("ada-out", "ada", "unsubscribed", channel="email", topic="newsletter"),
        track("bob-out", "bob", "unsubscribed", channel="email"),
    ]), metadata=auth)
    assert [r.status.code for r in said.results] == [0, 0, 0]
    ids = {"ada": said.results[0].profile_id, "bob": said.results[2].profile_id}

    async def allowed() -> list[bool]:
        reply = await identity.BatchCheckConsent(identity_service_pb2.BatchCheckConsentRequest(
            queries=[consent_pb2.ConsentQuery(profile_id=ids[user], channel=EMAIL, topic=topic)
                     for user, topic in (("ada", "newsletter"), ("ada", "offers"),
                                         ("bob", "offers"), ("bob", ""))]),
            metadata=(*bearer(SERVICE_TOKEN), ("x-cjo-workspace", "shop")))
        return [r.decision.allowed for r in reply.results]

    await eventually(lambda: _equal(allowed(), [False, True, False, False]), timeout=STATE_TIMEOUT)

    ordered = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
        track("ada-order", "ada", "order_completed"),
        track("bob-order", "bob", "order_completed")]), metadata=auth)
    assert [r.status.code for r in ordered.results] == [0, 0]

    delivery = delivery_service_pb2_grpc.DeliveryServiceStub(channels["delivery"])

    async def journey_messages() -> list[message_pb2.Message] | None:
        listed = await delivery.ListMessages(delivery_service_pb2.ListMessagesRequest(
            journey_id=journey.journey_id, page_size=100), metadata=auth)
        found = list(listed.messages)
        return found if len(found) == 6 and all(m.status in FINAL for m in found) else None

    try:
        found = await eventually(journey_messages, timeout=30)
    except AssertionError:
        raise AssertionError("journey messages did not settle\n"
                             + suite.log("orchestration")[-3000:]
                             + suite.log("delivery")[-3000:]) from None
    assert isinstance(found, list)
    users = {pid: user for user, pid in ids.items()}
    outcome = {(users[m.recipient.profile_id], m.content.content_key): m for m in found}
    assert {k: m.status for k, m in outcome.items()} == {
        ("ada", "news"): SUPPRESSED, ("ada", "offers"): SENT, ("ada", "receipt"): SENT,
        ("bob", "news"): SUPPRESSED, ("bob", "offers"): SUPPRESSED, ("bob", "receipt"): SENT,
    }
    assert outcome[("ada", "news")].topic == "newsletter"
    assert outcome[("ada", "receipt")].transactional
    for suppressed in ("ada", "news"), ("bob", "news"), ("bob", "offers"):
        assert outcome[suppressed].error.startswith("no consent: unsubscribed"), suppressed
    # Only what was sent reached the SMTP server.
    assert Counter((tuple(e.rcpt_tos), _subject(e)) for e in suite.mail.envelopes) == {
        (("ada@example.com",), SUBJECTS["offers"]): 1,
        (("ada@example.com",), SUBJECTS["receipt"]): 1,
        (("bob@example.com",), SUBJECTS["receipt"]): 1,
    }

    # A suppressed send is not a failed step: both journeys ran to the end.
    listed = await orchestration.ListEnrollments(orchestration_service_pb2.ListEnrollmentsRequest(
        parent=journey.name), metadata=auth)
    for enrollment in listed.enrollments:
        got = (await orchestration.GetEnrollment(orchestration_service_pb2.GetEnrollmentRequest(
            name=enrollment.name), metadata=auth)).enrollment
        assert got.state == COMPLETED
        assert [(s.node_id, s.outcome) for s in got.steps if s.node_id != "done"] == [
            ("news", SUCCEEDED), ("offers", SUCCEEDED), ("receipt", SUCCEEDED)]

    # The public SendMessage keeps the same rules.
    rendered = outcome[("ada", "offers")].content

    async def direct(key: str, user: str, **flags: Any) -> message_pb2.Message:
        name = (await delivery.SendMessage(delivery_service_pb2.SendMessageRequest(
            idempotency_key=key, content=rendered, recipient=message_pb2.Recipient(
                profile_id=ids[user], address=f"{user}@example.com"), **flags),
            metadata=auth)).message.name

        async def final() -> message_pb2.Message | None:
            message = (await delivery.GetMessage(delivery_service_pb2.GetMessageRequest(
                name=name), metadata=auth)).message
            return message if message.status in FINAL else None

        done = await eventually(final, timeout=STATE_TIMEOUT)
        assert isinstance(done, message_pb2.Message)
        return done

    assert (await direct("d1", "ada", topic="newsletter")).status == SUPPRESSED
    assert (await direct("d2", "ada", topic="offers")).status == SENT
    assert (await direct("d3", "bob", transactional=True)).status == SENT
    assert (await direct("d4", "bob")).status == SUPPRESSED
    assert len(suite.mail.envelopes) == 5


async def _equal(answer: Any, expected: object) -> bool:
    return bool(await answer == expected)


def _subject(envelope: Any) -> str:
    from email import message_from_bytes, policy

    mail = message_from_bytes(envelope.original_content or envelope.content,
                              policy=policy.default)
    return str(mail["subject"])
