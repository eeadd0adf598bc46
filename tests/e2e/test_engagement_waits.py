"""Engagement waits tied to the journey's own message, through the five services as separate
processes: three journeys each email bob and wait a day for `email_opened`; bob's mail client
loads the open pixel of journey A's email (delivery -> identity -> orchestration). A's wait
moves, B's does not (another journey's email), C's does (`any_message`)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from test_cart_abandonment import FAST, T0, email_template, fetch, open_pixel, parsed

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_platform.protobuf import dict_to_struct
from suite import SERVICES, STATE_TIMEOUT, Suite, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually, free_port

pytestmark = pytest.mark.e2e

COMPLETED = enrollment_pb2.ENROLLMENT_STATE_COMPLETED
WAITING = enrollment_pb2.STEP_OUTCOME_WAITING
JOURNEYS = {"a": False, "b": False, "c": True}  # journey id: any_message


def email_then_wait_for_open(journey_id: str, any_message: bool) -> journey_pb2.Journey:
    n = journey_pb2.Node
    return journey_pb2.Journey(
        display_name=f"Journey {journey_id}",
        event_trigger=journey_pb2.EventTrigger(event_name="cart_updated"),
        entry_node_id="email",
        nodes=[
            n(id="email", send=journey_pb2.SendNode(
                content_key=f"mail_{journey_id}", channel=common_pb2.CHANNEL_EMAIL,
                next_node_id="wait_open")),
            n(id="wait_open", wait=journey_pb2.WaitNode(event=journey_pb2.EventWait(
                event_name="email_opened", timeout=duration_pb2.Duration(seconds=86400),
                event_next_node_id="opened", any_message=any_message))),
            n(id="opened", exit=journey_pb2.ExitNode()),
        ])


async def test_an_open_moves_the_wait_of_the_journey_that_sent_the_email(
        backend: Backend, tmp_path: Path) -> None:
    tracking_port = free_port()
    env = {**FAST, "CJO_DELIVERY_TRACKING_PORT": str(tracking_port),
           "CJO_DELIVERY_TRACKING_URL": f"http://127.0.0.1:{tracking_port}",
           "CJO_DELIVERY_TRACKING_SECRET": "t" * 32}
    async with running_suite(backend, tmp_path, extra_env=env, clock_start=T0) as suite:
        channels = {name: grpc.aio.insecure_channel(suite.target(name)) for name in SERVICES}
        try:
            await three_journeys(suite, channels)
        finally:
            for channel in channels.values():
                await channel.close()


async def three_journeys(suite: Suite, channels: dict[str, grpc.aio.Channel]) -> None:
    key = (await ws_grpc.WorkspaceServiceStub(channels["identity"]).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="shop", display_name="Shop"),
        metadata=bearer(SERVICE_TOKEN))).api_key.secret
    auth = bearer(key)
    content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
    orchestration = orch_grpc.OrchestrationServiceStub(channels["orchestration"])
    names: dict[str, str] = {}  # journey letter: resource name
    for journey_id, any_message in JOURNEYS.items():
        item = content_item_pb2.ContentItem(
            key=f"mail_{journey_id}", email=email_template(f"From {journey_id}", "Hello"))
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=item, request_id=f"create-{journey_id}"), metadata=auth)
        await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name=f"contentItems/{item.key}", request_id=f"publish-{journey_id}"), metadata=auth)
        created = (await orchestration.CreateJourney(orch_pb.CreateJourneyRequest(
            journey=email_then_wait_for_open(journey_id, any_message)), metadata=auth)).journey
        await orchestration.PublishJourney(orch_pb.PublishJourneyRequest(name=created.name),
                                           metadata=auth)
        names[journey_id] = created.name

    identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
    reply = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
        event_pb2.Event(
            message_id="cart-bob", type=event_pb2.EVENT_TYPE_TRACK, name="cart_updated",
            identifiers=[event_pb2.Identifier(type="user_id", value="bob")],
            traits=dict_to_struct({"email": "bob@example.com", "first_name": "Bob"}),
            source="web")]), metadata=auth)
    assert reply.results[0].status.code == 0, reply.results[0].status

    async def enrollments() -> dict[str, enrollment_pb2.Enrollment]:
        found: dict[str, enrollment_pb2.Enrollment] = {}
        for journey_id, name in names.items():
            listed = await orchestration.ListEnrollments(orch_pb.ListEnrollmentsRequest(
                parent=name, page_size=10), metadata=auth)
            for enrollment in listed.enrollments:  # bob's only
                found[journey_id] = enrollment
        return found

    async def settled(check: Any) -> dict[str, enrollment_pb2.Enrollment]:
        async def ok() -> dict[str, enrollment_pb2.Enrollment] | None:
            found = await enrollments()
            return found if len(found) == len(JOURNEYS) and check(found) else None
        try:
            return await eventually(ok, timeout=STATE_TIMEOUT)  # type: ignore[return-value]
        except AssertionError:
            raise AssertionError(f"enrollments did not settle: {await enrollments()}\n"
                                 + suite.log("orchestration")[-3000:]) from None

    def parked(e: enrollment_pb2.Enrollment) -> bool:
        return bool(e.steps) and e.steps[-1].node_id == "wait_open" and (
            e.steps[-1].outcome == WAITING)

    await eventually(lambda: len(suite.mail.envelopes) >= len(JOURNEYS), timeout=STATE_TIMEOUT)
    mails = {str(parsed(e)["subject"]): parsed(e) for e in suite.mail.envelopes}
    assert set(mails) == {f"From {j}, Bob" for j in JOURNEYS}
    await settled(lambda f: all(parked(e) for e in f.values()))

    # Bob opens journey A's email: the open reaches every journey's wait for email_opened.
    assert await asyncio.to_thread(fetch, open_pixel(mails["From a, Bob"])) == 200
    found = await settled(lambda f: f["a"].state == COMPLETED and f["c"].state == COMPLETED)
    for journey_id in ("a", "c"):
        assert [s.detail for s in found[journey_id].steps if s.node_id == "wait_open"][-1] == (
            "event email_opened")
    # The same event round decided B's wait: it is another journey's email.
    assert parked(found["b"]), found["b"]

    # Bob opens B's email too: now B moves.
    assert await asyncio.to_thread(fetch, open_pixel(mails["From b, Bob"])) == 200
    await settled(lambda f: f["b"].state == COMPLETED)
    assert suite.now() - T0 < timedelta(hours=1)  # no timeout was involved
