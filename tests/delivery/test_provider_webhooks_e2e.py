"""What a new team does on day one: point SendGrid's sample Event Webhook at cjo (the five
services as separate processes) and see the bounce on the profile: identity's profile gains an
``email_bounced`` event about the message, and the address is suppressed for the next send."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import grpc
import httpx
import pytest
from provider_webhook_support import fixture, smtp_provider
from test_provider_webhooks import p256, sendgrid_headers

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from suite import running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually, free_port

pytestmark = pytest.mark.e2e


async def test_sendgrid_sample_webhook_puts_the_bounce_on_the_profile(
        backend: Backend, tmp_path: Path) -> None:
    tracking_port = free_port()
    env = {"CJO_DELIVERY_POLL_SECONDS": "0.1",
           "CJO_DELIVERY_TRACKING_PORT": str(tracking_port),
           "CJO_DELIVERY_TRACKING_URL": f"http://127.0.0.1:{tracking_port}",
           "CJO_DELIVERY_TRACKING_SECRET": "t" * 32}
    private, public = p256()
    async with running_suite(backend, tmp_path, extra_env=env) as suite, \
            grpc.aio.insecure_channel(suite.target("identity")) as identity_channel, \
            grpc.aio.insecure_channel(suite.target("delivery")) as delivery_channel, \
            httpx.AsyncClient() as web:
        key = (await ws_grpc.WorkspaceServiceStub(identity_channel).CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id="shop", display_name="Shop"),
            metadata=bearer(SERVICE_TOKEN))).api_key.secret
        auth = bearer(key)
        identity = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
        [result] = (await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(
            events=[event_pb2.Event(
                message_id="signup-1", type=event_pb2.EVENT_TYPE_IDENTIFY,
                identifiers=[event_pb2.Identifier(type="email", value="ada@example.com")])]),
            metadata=auth)).results
        profile_id = result.profile_id
        delivery = pb_grpc.DeliveryServiceStub(delivery_channel)
        provider = (await delivery.CreateProvider(pb.CreateProviderRequest(
            provider=smtp_provider(int(suite.env["CJO_SMTP_PORT"]), webhook_format="sendgrid",
                                   webhook_public_key=public)), metadata=auth)).provider

        async def send(key: str) -> message_pb2.Message:
            name = (await delivery.SendMessage(pb.SendMessageRequest(
                idempotency_key=key,
                recipient=message_pb2.Recipient(profile_id=profile_id,
                                                address="ada@example.com"),
                content=common_pb2.RenderedMessage(
                    channel=common_pb2.CHANNEL_EMAIL, content_key="welcome",
                    email=common_pb2.RenderedEmail(subject="Welcome", text="Hello"))),
                metadata=auth)).message.name
            final = (message_pb2.MESSAGE_STATUS_SENT, message_pb2.MESSAGE_STATUS_SUPPRESSED)

            async def settled() -> message_pb2.Message | None:
                message = (await delivery.GetMessage(pb.GetMessageRequest(name=name),
                                                     metadata=auth)).message
                return message if message.status in final else None

            found: message_pb2.Message = await eventually(settled, timeout=30)
            return found

        message = await send("welcome-1")
        assert message.status == message_pb2.MESSAGE_STATUS_SENT
        [envelope] = suite.mail.envelopes
        smtp_id = message_from_bytes(envelope.content, policy=default)["Message-ID"]
        body = json.dumps(fixture("sendgrid_events.json", email="ada@example.com",
                                  smtp_id=smtp_id)).encode()
        answer = await web.post(provider.status_webhook_url, content=body,
                                headers=sendgrid_headers(private, body, datetime.now(UTC)))
        assert answer.status_code == 200
        message_id = message.name.removeprefix("messages/")

        async def bounce_on_profile() -> bool:
            events = (await identity.ListProfileEvents(
                identity_service_pb2.ListProfileEventsRequest(
                    parent=f"profiles/{profile_id}", page_size=100), metadata=auth)).events
            return any(e.event.name == "email_bounced"
                       and e.event.properties["message_id"] == message_id for e in events)

        await eventually(bounce_on_profile, timeout=30)
        assert (await send("welcome-2")).status == message_pb2.MESSAGE_STATUS_SUPPRESSED
