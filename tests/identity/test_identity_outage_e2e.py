"""Events accepted while orchestration is dead (SIGKILL, no goodbye) wait in identity's outbox
and, once it is back, each starts its journey exactly once: one email per person, no more."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import (
    journey_pb2,
    orchestration_service_pb2,
    orchestration_service_pb2_grpc,
)
from cjo_platform.protobuf import dict_to_struct
from suite import running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually

pytestmark = pytest.mark.e2e

PEOPLE = 6


def signed_up(n: int) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=f"signup-{n}", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
        identifiers=[event_pb2.Identifier(type="user_id", value=f"u-{n}")],
        traits=dict_to_struct({"email": f"person{n}@example.com", "first_name": f"P{n}"}),
        source="web")


async def test_events_survive_an_orchestration_crash(sqlite_backend: Backend,
                                                     tmp_path: Path) -> None:
    async with running_suite(sqlite_backend, tmp_path) as suite, \
            grpc.aio.insecure_channel(suite.target("identity")) as id_channel, \
            grpc.aio.insecure_channel(suite.target("content")) as content_channel:
        key = (await ws_grpc.WorkspaceServiceStub(id_channel).CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id="acme"),
            metadata=bearer(SERVICE_TOKEN))).api_key.secret
        auth = bearer(key)
        content = content_service_pb2_grpc.ContentServiceStub(content_channel)
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(
                key="welcome", email=content_item_pb2.EmailTemplate(
                    subject="Welcome, {{ profile.first_name }}!", html="<p>Hi</p>")),
            request_id="create-welcome"), metadata=auth)
        await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name="contentItems/welcome", request_id="publish-welcome"), metadata=auth)
        async with grpc.aio.insecure_channel(suite.target("orchestration")) as channel:
            orchestration = orchestration_service_pb2_grpc.OrchestrationServiceStub(channel)
            journey = (await orchestration.CreateJourney(
                orchestration_service_pb2.CreateJourneyRequest(journey=journey_pb2.Journey(
                    display_name="Welcome",
                    event_trigger=journey_pb2.EventTrigger(event_name="signed_up"),
                    entry_node_id="welcome",
                    nodes=[
                        journey_pb2.Node(id="welcome", send=journey_pb2.SendNode(
                            content_key="welcome", channel=common_pb2.CHANNEL_EMAIL,
                            next_node_id="done")),
                        journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
                    ])), metadata=auth)).journey
            await orchestration.PublishJourney(orchestration_service_pb2.PublishJourneyRequest(
                name=journey.name), metadata=auth)

        assert await suite.stop("orchestration", signal.SIGKILL) == -signal.SIGKILL
        identity = identity_service_pb2_grpc.IdentityServiceStub(id_channel)
        for start in range(0, PEOPLE, 3):  # two batches while orchestration is dead
            reply = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(
                events=[signed_up(n) for n in range(start, start + 3)]), metadata=auth)
            assert {r.status.code for r in reply.results} == {0}
        await asyncio.sleep(0.5)  # the forwarder tries, fails and backs off
        assert suite.mail.envelopes == []

        suite.start("orchestration")
        await suite.wait_ready("orchestration")
        await eventually(lambda: len(suite.mail.envelopes) >= PEOPLE, timeout=60)
        await asyncio.sleep(1)  # anything sent twice would arrive by now
        recipients = Counter(r for e in suite.mail.envelopes for r in e.rcpt_tos)
        assert recipients == {f"person{n}@example.com": 1 for n in range(PEOPLE)}
