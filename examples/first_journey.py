"""Your first journey: welcome new sign-ups by email.

Run it against the suite started by `make run`, with the API key that `make run` printed:

    CJO_API_KEY=cjo_... .venv/bin/python examples/first_journey.py

It creates an email template, publishes a journey "on signed_up -> send the welcome email",
sends one signed_up event for a new person, and waits until delivery has sent the email.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import grpc
from google.protobuf import struct_pb2

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc, message_pb2
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.orchestration.v1 import (
    journey_pb2,
    orchestration_service_pb2,
    orchestration_service_pb2_grpc,
)


def target(service: str, port: int) -> str:
    return os.environ.get(f"CJO_{service.upper()}_TARGET", f"127.0.0.1:{port}")


def struct(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


async def main() -> None:
    api_key = os.environ.get("CJO_API_KEY")
    if not api_key:
        sys.exit("set CJO_API_KEY to the key `make run` printed")
    auth = (("authorization", f"Bearer {api_key}"),)
    identity = identity_service_pb2_grpc.IdentityServiceStub(
        grpc.aio.insecure_channel(target("identity", 50051)))
    content = content_service_pb2_grpc.ContentServiceStub(
        grpc.aio.insecure_channel(target("content", 50052)))
    orchestration = orchestration_service_pb2_grpc.OrchestrationServiceStub(
        grpc.aio.insecure_channel(target("orchestration", 50053)))
    delivery = delivery_service_pb2_grpc.DeliveryServiceStub(
        grpc.aio.insecure_channel(target("delivery", 50054)))

    # 1. Content: an email template in Liquid, published (journeys render published versions).
    #    `request_id` makes re-running this script safe.
    try:
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(
                key="welcome-email",
                display_name="Welcome email",
                email=content_item_pb2.EmailTemplate(
                    subject="Welcome to Acme, {{ profile.first_name | default: 'friend' }}!",
                    html=("<h1>Hi {{ profile.first_name }}!</h1>"
                          "<p>Thanks for choosing the {{ event.plan }} plan.</p>"))),
            request_id="example-welcome-email"), metadata=auth)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
        name="contentItems/welcome-email", request_id="example-publish-welcome-email"),
        metadata=auth)
    print("content:  contentItems/welcome-email")

    # 2. A journey: on `signed_up`, send the welcome email, then exit. With the same request ids,
    #    a second run of this script finds the journey it made the first time.
    journey = (await orchestration.CreateJourney(orchestration_service_pb2.CreateJourneyRequest(
        journey=journey_pb2.Journey(
            display_name="Welcome new sign-ups",
            event_trigger=journey_pb2.EventTrigger(event_name="signed_up"),
            entry_node_id="send-welcome",
            nodes=[
                journey_pb2.Node(id="send-welcome", send=journey_pb2.SendNode(
                    content_key="welcome-email", channel=common_pb2.CHANNEL_EMAIL,
                    next_node_id="done")),
                journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
            ]),
        request_id="example-welcome-journey"), metadata=auth)).journey
    journey = (await orchestration.PublishJourney(orchestration_service_pb2.PublishJourneyRequest(
        name=journey.name, request_id="example-welcome-journey-v1"), metadata=auth)).journey
    print(f"journey:  {journey.name} published as version {journey.published_version}")

    # 3. An event: somebody signs up on the web site.
    user_id = f"user-{uuid.uuid4().hex[:8]}"
    result = (await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
        event_pb2.Event(
            message_id=str(uuid.uuid4()), type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
            identifiers=[event_pb2.Identifier(type="user_id", value=user_id)],
            traits=struct(email=f"{user_id}@example.com", first_name="Ada"),
            properties=struct(plan="pro"), source="web")]), metadata=auth)).results[0]
    if result.status.code:
        sys.exit(f"event rejected: {result.status.message}")
    print(f"event:    signed_up for profiles/{result.profile_id}")

    # 4. The journey runs on its own; wait for delivery to report the email sent.
    for _ in range(100):
        messages = (await delivery.ListMessages(delivery_service_pb2.ListMessagesRequest(
            profile_id=result.profile_id), metadata=auth)).messages
        if messages and messages[0].status == message_pb2.MESSAGE_STATUS_SENT:
            message = messages[0]
            print(f"message:  {message.name} {message_pb2.MessageStatus.Name(message.status)}"
                  f" to {message.recipient.address}")
            print(f"subject:  {message.content.email.subject}")
            print(f"body:     {' '.join(message.content.email.text.split())}")
            return
        await asyncio.sleep(0.2)
    sys.exit("the email was not sent within 20 seconds; see the service logs")


if __name__ == "__main__":
    asyncio.run(main())
