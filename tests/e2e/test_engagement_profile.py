"""Engagement lands on the profile the message was sent to, through the suite's processes.

Bob shares the family email with Ada (who holds it as an identifier: user_id is limited to one
per profile, so it could not join Bob) and uses a phone whose push token another workspace's
customer also has. A push open (a provider status report by device token) and an email open (the
tracking pixel) of messages sent to Bob are recorded on Bob: not on Ada, the address's owner, not
on a new anonymous profile for the token, and never in the other workspace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx
import pytest
from http_sink import Answer, HttpSink, Request, http_sink
from test_cart_abandonment import FAST, T0, fetch, open_pixel, parsed

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import (
    delivery_service_pb2,
    delivery_service_pb2_grpc,
    message_pb2,
    provider_pb2,
)
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_platform.protobuf import dict_to_struct
from suite import SERVICES, STATE_TIMEOUT, Inbox, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually, free_port

pytestmark = pytest.mark.e2e

TOKEN = "shared-device-token"
FAMILY = "family@example.com"
SENT = message_pb2.MESSAGE_STATUS_SENT


async def test_push_and_email_engagement_land_on_the_profile_the_message_was_sent_to(
        backend: Backend, tmp_path: Path) -> None:
    def fcm(request: Request) -> Answer:
        return Answer(200, {"name": f"projects/shop/messages/{len(request.body)}"})

    tracking_port = free_port()
    env = {**FAST, "CJO_DELIVERY_TRACKING_PORT": str(tracking_port),
           "CJO_DELIVERY_TRACKING_URL": f"http://127.0.0.1:{tracking_port}",
           "CJO_DELIVERY_TRACKING_SECRET": "t" * 32}
    with http_sink(HttpSink(default=fcm)) as push_server:
        async with running_suite(backend, tmp_path, extra_env=env, clock_start=T0) as suite:
            channels = {name: grpc.aio.insecure_channel(suite.target(name))
                        for name in SERVICES}
            try:
                await engage(suite.mail, channels, push_server)
            finally:
                for channel in channels.values():
                    await channel.close()


async def engage(mail: Inbox, channels: dict[str, grpc.aio.Channel],
                 push_server: HttpSink) -> None:
    workspaces = ws_grpc.WorkspaceServiceStub(channels["identity"])
    keys = {}
    for workspace in ("shop", "mall"):
        keys[workspace] = bearer((await workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id=workspace, display_name=workspace),
            metadata=bearer(SERVICE_TOKEN))).api_key.secret)
    identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
    delivery = delivery_service_pb2_grpc.DeliveryServiceStub(channels["delivery"])

    async def identify(workspace: str, user: str, **traits: str) -> str:
        reply = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
            event_pb2.Event(message_id=f"identify-{user}", type=event_pb2.EVENT_TYPE_IDENTIFY,
                            identifiers=[event_pb2.Identifier(type="user_id", value=user)],
                            traits=dict_to_struct(traits), source="app")]),
            metadata=keys[workspace])
        assert reply.results[0].status.code == 0, reply.results[0].status
        return str(reply.results[0].profile_id)

    async def events(workspace: str, profile_id: str) -> list[str]:
        reply = await identity.ListProfileEvents(identity_service_pb2.ListProfileEventsRequest(
            parent=f"profiles/{profile_id}", page_size=100), metadata=keys[workspace])
        return sorted(e.event.name or "identify" for e in reply.events)

    async def profile_count(workspace: str) -> int:
        reply = await identity.ListProfiles(identity_service_pb2.ListProfilesRequest(
            page_size=100), metadata=keys[workspace])
        return len(reply.profiles)

    ada = await identify("shop", "ada", email=FAMILY)
    bob = await identify("shop", "bob", email=FAMILY, push_token=TOKEN)
    cy = await identify("mall", "cy", push_token=TOKEN)
    assert ada != bob
    assert await profile_count("shop") == 2

    provider = (await delivery.CreateProvider(delivery_service_pb2.CreateProviderRequest(
        provider=provider_pb2.Provider(
            channel=common_pb2.CHANNEL_PUSH, kind=provider_pb2.PROVIDER_KIND_FCM_PUSH,
            config={"project_id": "shop", "base_url": push_server.url},
            secrets={"access_token": "ya29.shop-token"})), metadata=keys["shop"])).provider

    async def send(key: str, address: str, content: common_pb2.RenderedMessage) -> str:
        reply = await delivery.SendMessage(delivery_service_pb2.SendMessageRequest(
            idempotency_key=key, journey_id="j1", enrollment_id=f"en-{key}",
            recipient=message_pb2.Recipient(profile_id=bob, address=address),
            content=content), metadata=keys["shop"])
        name = reply.message.name

        async def sent() -> bool:
            got = await delivery.GetMessage(delivery_service_pb2.GetMessageRequest(name=name),
                                            metadata=keys["shop"])
            return got.message.status == SENT
        await eventually(sent, timeout=STATE_TIMEOUT)
        return str(name)

    await send("push-bob", TOKEN, common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_PUSH,
        push=common_pb2.RenderedPush(title="Cart", body="Still there?")))
    await send("mail-bob", FAMILY, common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL, email=common_pb2.RenderedEmail(
            subject="For Bob", html="<p>Hello Bob</p>", text="Hello Bob")))

    # The push provider reports the open by device token; the family's mail client loads the
    # open pixel of Bob's email.
    async with httpx.AsyncClient() as web:
        reported = await web.post(provider.status_webhook_url,
                                  json={"device_token": TOKEN, "status": "opened"})
    assert reported.status_code == 200
    await eventually(lambda: len(mail.envelopes) >= 1, timeout=STATE_TIMEOUT)
    [envelope] = mail.envelopes
    assert await asyncio.to_thread(fetch, open_pixel(parsed(envelope))) == 200

    async def on_bob() -> bool:
        return await events("shop", bob) == ["email_opened", "identify", "push_opened"]
    await eventually(on_bob, timeout=STATE_TIMEOUT)
    assert await events("shop", ada) == ["identify"]
    assert await profile_count("shop") == 2
    assert await events("mall", cy) == ["identify"]
    assert await profile_count("mall") == 1
