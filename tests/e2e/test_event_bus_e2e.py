"""The suite with JetStream as its event stream (CJO_EVENT_BUS), as separate processes: an event
ingested in identity reaches orchestration through the bus and a journey sends its email, whose
open reaches identity through the bus too; an
orchestration killed mid-stream and a broker restarted mid-stream lose nothing and send nothing
twice (emails counted at a real SMTP server).

The shared server at 127.0.0.1:4222 gets a stream prefix unique to each test; the broker
restart runs a private ``nats-server`` of its own, which only that test may kill."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest
from nats_support import NATS_URL, TEST_STREAM_BYTES, PrivateNats, nats_listening
from test_cart_abandonment import fetch, open_pixel, parsed

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.analytics.v1 import fact_pb2
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
from cjo_platform.bus import naming
from cjo_platform.protobuf import dict_to_struct
from suite import Suite, free_port, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not nats_listening(), reason="no NATS server with JetStream at 127.0.0.1:4222")]

TOPIC = "orchestration.events"
# The topics on the bus, each a stream of its own.
TOPICS = ("orchestration.events", "analytics.facts", "decisioning.facts", "decisioning.events",
          "identity.events", "delivery.erasures")


def bus_env(url: str, prefix: str) -> dict[str, str]:
    # A short ack_wait so a killed consumer's messages come back within seconds.
    return {"CJO_EVENT_BUS": url, "CJO_BUS_PREFIX": prefix, "CJO_BUS_PARTITIONS": "4",
            "CJO_BUS_ACK_WAIT_SECONDS": "2", "CJO_BUS_MAX_BYTES": str(TEST_STREAM_BYTES)}


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await drop_streams(NATS_URL, name)


async def drop_streams(url: str, prefix: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for stream in (*(naming.stream_name(prefix, topic) for topic in TOPICS),
                   "KV_" + naming.stream_name(prefix, "claims")):
        with contextlib.suppress(Exception):  # not created by this test
            await js.delete_stream(stream)
    await nc.close()


async def stream_last_seq(url: str, prefix: str, topic: str = TOPIC) -> int:
    """How many messages the topic's stream ever stored (work queues drop the acked ones)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(naming.stream_name(prefix, topic))
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def welcome_journey(suite: Suite) -> list[tuple[str, str]]:
    """A workspace whose journey emails everyone who signs up; returns the API key metadata."""
    async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
        reply = await ws_grpc.WorkspaceServiceStub(channel).CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id="acme", display_name="acme"),
            metadata=bearer(SERVICE_TOKEN))
    auth = bearer(reply.api_key.secret)
    async with grpc.aio.insecure_channel(suite.target("content")) as channel:
        content = content_service_pb2_grpc.ContentServiceStub(channel)
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(
                key="welcome", email=content_item_pb2.EmailTemplate(
                    subject="Welcome {{ profile.first_name }}",
                    html="<p>Hi {{ profile.first_name }}</p>")),
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
                nodes=[journey_pb2.Node(id="welcome", send=journey_pb2.SendNode(
                           content_key="welcome", channel=common_pb2.CHANNEL_EMAIL,
                           next_node_id="done")),
                       journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])),
            metadata=auth)).journey
        await orchestration.PublishJourney(
            orchestration_service_pb2.PublishJourneyRequest(name=journey.name), metadata=auth)
    return auth


async def sign_up(suite: Suite, auth: list[tuple[str, str]], users: range) -> None:
    """One single-event IngestEvents call per user (each a sign-up with an email address)."""
    async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        for user in users:
            reply = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
                event_pb2.Event(
                    message_id=f"m-{user}", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
                    identifiers=[event_pb2.Identifier(type="user_id", value=f"u-{user}")],
                    traits=dict_to_struct({"email": f"u{user}@example.com",
                                           "first_name": f"U{user}"}))]), metadata=auth)
            assert reply.results[0].status.code == 0, reply.results[0].status


async def journey_counts(suite: Suite, auth: list[tuple[str, str]],
                         expected: int) -> dict[int, int]:
    """Entries and sends analytics counted for the workspace's journey, once each reached
    ``expected`` (a count that merely stopped changing for a poll may still be short: on a
    loaded machine a fact's forwarding can take longer than the poll's half second)."""
    async with grpc.aio.insecure_channel(suite.target("orchestration")) as channel:
        journeys = await orchestration_service_pb2_grpc.OrchestrationServiceStub(
            channel).ListJourneys(orchestration_service_pb2.ListJourneysRequest(),
                                  metadata=auth)
    name = journeys.journeys[0].name
    wanted = (fact_pb2.FACT_TYPE_JOURNEY_ENTERED, fact_pb2.FACT_TYPE_MESSAGE_SENT)
    async with grpc.aio.insecure_channel(suite.target("analytics")) as channel:
        analytics = analytics_grpc.AnalyticsServiceStub(channel)

        async def counted() -> dict[int, int] | None:
            report = (await analytics.GetJourneyReport(analytics_pb.GetJourneyReportRequest(
                journey=name), metadata=auth)).report
            counts = {c.type: c.count for c in report.counts if c.type in wanted}
            return counts if all(counts.get(t, 0) >= expected for t in wanted) else None

        found = await eventually(counted, timeout=60, interval=0.5)
        assert isinstance(found, dict)
        return found


def mailed(suite: Suite) -> Counter[str]:
    return Counter(rcpt for envelope in suite.mail.envelopes for rcpt in envelope.rcpt_tos)


def everyone_once(suite: Suite, users: range) -> bool:
    return set(mailed(suite)) == {f"u{u}@example.com" for u in users}


async def test_an_event_reaches_the_journey_through_jetstream(
        backend: Backend, tmp_path: Path, prefix: str) -> None:
    url = NATS_URL
    tracking_port = free_port()
    tracking = {"CJO_DELIVERY_TRACKING_PORT": str(tracking_port),
                "CJO_DELIVERY_TRACKING_URL": f"http://127.0.0.1:{tracking_port}",
                "CJO_DELIVERY_TRACKING_SECRET": "t" * 32}
    async with running_suite(backend, tmp_path,
                             extra_env={**bus_env(url, prefix), **tracking}) as suite:
        auth = await welcome_journey(suite)
        await sign_up(suite, auth, range(3))
        await eventually(lambda: everyone_once(suite, range(3)), timeout=60)
        await asyncio.sleep(1)  # a second email, had one been sent, would be in by now
        assert mailed(suite) == Counter({f"u{u}@example.com": 1 for u in range(3)})
        # The events went through the stream (identity published, orchestration acked).
        assert await stream_last_seq(url, prefix) >= 3
        # Facts too: analytics counts each entry and send once, from the facts stream.
        analytics = await journey_counts(suite, auth, expected=3)
        assert analytics == {fact_pb2.FACT_TYPE_JOURNEY_ENTERED: 3,
                             fact_pb2.FACT_TYPE_MESSAGE_SENT: 3}
        assert await stream_last_seq(url, prefix, "analytics.facts") >= 6
        # U0 opens the email: delivery -> identity through the bus (identity.events).
        [mail] = [parsed(e) for e in suite.mail.envelopes if "u0@example.com" in e.rcpt_tos]
        assert await asyncio.to_thread(fetch, open_pixel(mail)) == 200
        async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
            identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
            profile = (await identity.LookupProfile(identity_service_pb2.LookupProfileRequest(
                identifier=event_pb2.Identifier(type="email", value="u0@example.com")),
                metadata=auth)).profile

            async def opened() -> bool:
                events = (await identity.ListProfileEvents(
                    identity_service_pb2.ListProfileEventsRequest(parent=profile.name),
                    metadata=auth)).events
                return any(e.event.source == "cjo-delivery" for e in events)
            await eventually(opened, timeout=60, interval=0.2)
        assert await stream_last_seq(url, prefix, "identity.events") >= 1


async def test_a_consumer_killed_mid_stream_loses_and_repeats_nothing(
        sqlite_backend: Backend, tmp_path: Path, prefix: str) -> None:
    url = NATS_URL
    users = range(60)
    async with running_suite(sqlite_backend, tmp_path,
                             extra_env=bus_env(url, prefix)) as suite:
        auth = await welcome_journey(suite)
        sending = asyncio.create_task(sign_up(suite, auth, users))
        await eventually(lambda: len(mailed(suite)) >= 5, timeout=60)
        await suite.stop("orchestration", signal.SIGKILL)
        suite.start("orchestration")
        await suite.wait_ready("orchestration")
        await sending
        await eventually(lambda: everyone_once(suite, users), timeout=90)
        await asyncio.sleep(2)
        assert mailed(suite) == Counter({f"u{u}@example.com": 1 for u in users})
        # They came by the bus (packed: a relay round's events of a partition in one message,
        # some of them handed out again after the kill, each applied once).
        assert await stream_last_seq(url, prefix) >= 1


@pytest.mark.parametrize("pack_rows", ["1", "64"])
async def test_a_broker_restarted_mid_stream_loses_and_repeats_nothing(
        sqlite_backend: Backend, tmp_path: Path, private_nats: PrivateNats,
        pack_rows: str) -> None:
    users = range(45)
    env = {**bus_env(private_nats.url, "cjo"), "CJO_BUS_PACK_ROWS": pack_rows}
    async with running_suite(sqlite_backend, tmp_path, extra_env=env) as suite:
        auth = await welcome_journey(suite)
        await sign_up(suite, auth, range(0, 15))
        await eventually(lambda: len(mailed(suite)) >= 3, timeout=60)
        private_nats.kill()  # mid-stream: some of the first 15 are still on their way
        await sign_up(suite, auth, range(15, 30))  # identity's outbox keeps them meanwhile
        await asyncio.sleep(1)
        private_nats.start()
        await sign_up(suite, auth, range(30, 45))
        await eventually(lambda: everyone_once(suite, users), timeout=120)
        await asyncio.sleep(2)
        assert mailed(suite) == Counter({f"u{u}@example.com": 1 for u in users})
        # Every event through the restarted broker, each stored once (the stream survived);
        # packed, a round's events of a partition share a message.
        stored = await stream_last_seq(private_nats.url, "cjo")
        assert stored == len(users) if pack_rows == "1" else 1 <= stored <= len(users)

