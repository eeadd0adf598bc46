"""Events accepted while orchestration is dead (SIGKILL, no goodbye) wait in identity's outbox
and, once it is back, each starts its journey exactly once: one email per person, no more."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc, message_pb2
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import (
    enrollment_pb2,
    journey_pb2,
    orchestration_service_pb2,
    orchestration_service_pb2_grpc,
)
from cjo_identity.adapters.tables import outbox
from cjo_platform.db import Database
from cjo_platform.decisioning import DECISIONING_EVENTS_TOPIC
from cjo_platform.protobuf import dict_to_struct
from suite import Suite, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually, settings_for

pytestmark = pytest.mark.e2e

PEOPLE = 6


def signed_up(n: int) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=f"signup-{n}", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
        identifiers=[event_pb2.Identifier(type="user_id", value=f"u-{n}")],
        traits=dict_to_struct({"email": f"person{n}@example.com", "first_name": f"P{n}"}),
        source="web")


def forwarder_failed(suite: Suite) -> bool:
    return any("round failed" in line and "outbox:orchestration.events" in line
               for line in suite.log("identity").splitlines())


async def identity_outbox_rows(backend: Backend) -> int:
    db = Database(settings_for("identity", backend).database_url)
    try:
        def count() -> int:
            with db.transaction() as session:
                # What decisioning is sent (rewards) sends no email: only the other topics
                # count for "nothing left that could send one".
                return int(session.execute(
                    select(func.count()).select_from(outbox)
                    .where(outbox.c.topic != DECISIONING_EVENTS_TOPIC)).scalar_one())
        return await db.run(count)
    finally:
        db.dispose()


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
        # The forwarder tried, failed and backs off; nothing was sent meanwhile.
        await eventually(lambda: forwarder_failed(suite))
        assert suite.mail.envelopes == []

        suite.start("orchestration")
        await suite.wait_ready("orchestration")
        await eventually(lambda: len(suite.mail.envelopes) >= PEOPLE, timeout=60)
        # Settled: identity has nothing left to (re)send, every enrollment ended and every
        # message is final, so nothing can send another email from here on.
        async with grpc.aio.insecure_channel(suite.target("orchestration")) as channel, \
                grpc.aio.insecure_channel(suite.target("delivery")) as delivery_channel:
            orchestration = orchestration_service_pb2_grpc.OrchestrationServiceStub(channel)
            delivery = delivery_service_pb2_grpc.DeliveryServiceStub(delivery_channel)

            async def settled() -> bool:
                enrollments = (await orchestration.ListEnrollments(
                    orchestration_service_pb2.ListEnrollmentsRequest(
                        parent=journey.name, page_size=100), metadata=auth)).enrollments
                messages = (await delivery.ListMessages(delivery_service_pb2.ListMessagesRequest(
                    journey_id=journey.journey_id, page_size=100), metadata=auth)).messages
                return (await identity_outbox_rows(sqlite_backend) == 0
                        and len(enrollments) == PEOPLE
                        and all(e.state == enrollment_pb2.ENROLLMENT_STATE_COMPLETED
                                for e in enrollments)
                        and len(messages) == PEOPLE
                        and all(m.status == message_pb2.MESSAGE_STATUS_SENT for m in messages))

            await eventually(settled, timeout=60)
        recipients = Counter(r for e in suite.mail.envelopes for r in e.rcpt_tos)
        assert recipients == {f"person{n}@example.com": 1 for n in range(PEOPLE)}
