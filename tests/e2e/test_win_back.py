"""Time alone drives a journey, through the five services as separate processes on one test
clock: a person's only order leaves the 30-day window of `orders_30d` with no new event, so
identity's time worker takes them out of "ordered in the last 30 days", orchestration hears the
segment_exited and a win-back journey mails them at a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.identity.v1 import (
    event_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
    identity_settings_pb2,
    segment_pb2,
)
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import (
    journey_pb2,
    orchestration_service_pb2,
    orchestration_service_pb2_grpc,
)
from cjo_platform.protobuf import dict_to_struct, to_timestamp
from suite import SERVICES, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually, segment_backfilled

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FAST = {"CJO_ORCHESTRATION_POLL_SECONDS": "0.1", "CJO_DELIVERY_POLL_SECONDS": "0.1",
        "CJO_IDENTITY_TIME_POLL_SECONDS": "0.1"}


async def test_a_lapsed_buyer_gets_the_win_back_email_with_no_new_event(
        backend: Backend, tmp_path: Path) -> None:
    async with running_suite(backend, tmp_path, extra_env=FAST, clock_start=T0) as suite:
        channels = {name: grpc.aio.insecure_channel(suite.target(name)) for name in SERVICES}
        key = (await ws_grpc.WorkspaceServiceStub(channels["identity"]).CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id="acme"),
            metadata=bearer(SERVICE_TOKEN))).api_key.secret
        auth = bearer(key)
        identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
        await identity.UpdateIdentitySettings(identity_service_pb2.UpdateIdentitySettingsRequest(
            settings=identity_settings_pb2.IdentitySettings(computed_traits=[
                identity_settings_pb2.ComputedTrait(
                    name="orders_30d", event_name="order_completed",
                    aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_COUNT,
                    window=duration_pb2.Duration(seconds=30 * 86400))])), metadata=auth)

        content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(key="win-back", email=(
                content_item_pb2.EmailTemplate(
                    subject="We miss you, {{ profile.first_name }}",
                    html="<p>Come back for 10% off.</p>")))), metadata=auth)
        await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name="contentItems/win-back"), metadata=auth)
        orchestration = orchestration_service_pb2_grpc.OrchestrationServiceStub(
            channels["orchestration"])
        journey = (await orchestration.CreateJourney(orchestration_service_pb2.CreateJourneyRequest(
            journey=journey_pb2.Journey(
                display_name="Win back",
                event_trigger=journey_pb2.EventTrigger(
                    event_name="segment_exited",
                    filter='event.segment_id == "recent-buyers"'),
                entry_node_id="mail",
                nodes=[journey_pb2.Node(id="mail", send=journey_pb2.SendNode(
                           content_key="win-back", channel=common_pb2.CHANNEL_EMAIL,
                           next_node_id="done")),
                       journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])),
            metadata=auth)).journey
        await orchestration.PublishJourney(orchestration_service_pb2.PublishJourneyRequest(
            name=journey.name), metadata=auth)

        ingested = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
            event_pb2.Event(
                message_id="m-1", type=event_pb2.EVENT_TYPE_TRACK, name="order_completed",
                identifiers=[event_pb2.Identifier(type="user_id", value="u-1")],
                traits=dict_to_struct({"email": "ada@example.com", "first_name": "Ada"}),
                timestamp=to_timestamp(T0), source="web")]), metadata=auth)
        assert ingested.results[0].status.code == 0
        await identity.CreateSegment(identity_service_pb2.CreateSegmentRequest(
            segment=segment_pb2.Segment(segment_id="recent-buyers",
                                        display_name="Ordered in the last 30 days",
                                        condition="computed.orders_30d > 0")), metadata=auth)
        assert (await segment_backfilled(identity, auth, "recent-buyers")).member_count == 1

        suite.advance(timedelta(days=29))  # still inside the window: nothing happens
        profile_id = ingested.results[0].profile_id
        ada = (await identity.GetProfile(identity_service_pb2.GetProfileRequest(
            name=f"profiles/{profile_id}"), metadata=auth)).profile
        assert ada.computed_traits["orders_30d"] == 1 and not suite.mail.envelopes

        suite.advance(timedelta(days=2))  # the order is 31 days old; no new event
        await eventually(lambda: suite.mail.envelopes, timeout=30)
        (envelope,) = suite.mail.envelopes
        assert envelope.rcpt_tos == ["ada@example.com"]
        mail = message_from_bytes(envelope.content, policy=policy.default)
        assert mail["Subject"] == "We miss you, Ada"
        ada = (await identity.GetProfile(identity_service_pb2.GetProfileRequest(
            name=f"profiles/{profile_id}"), metadata=auth)).profile
        assert ada.computed_traits["orders_30d"] == 0 and list(ada.segments) == []
        for channel in channels.values():
            await channel.close()
