"""One journey through the suite's services, as separate processes: an event sent to identity
becomes an email at a real SMTP server, analytics counts it, and one trace spans every service
the step went through."""

from __future__ import annotations

import asyncio
import json
import signal
from email import message_from_bytes, policy
from pathlib import Path

import grpc
import pytest

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.decisioning.v1 import action_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as decisioning_pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as decisioning_grpc
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import (
    journey_pb2,
    orchestration_service_pb2,
    orchestration_service_pb2_grpc,
)
from cjo_platform.protobuf import dict_to_struct
from suite import SERVICES, STATE_TIMEOUT, ReceivedSpan, running_suite
from support import SERVICE_TOKEN, Backend, bearer, eventually

pytestmark = pytest.mark.e2e

SPAN_KIND_SERVER = 2
# The services a send node's step goes through, from the event to the analytics fact.
SEND_PATH = ("identity", "orchestration", "content", "delivery", "analytics")


async def create_workspace(channel: grpc.aio.Channel, workspace_id: str) -> str:
    stub = ws_grpc.WorkspaceServiceStub(channel)
    reply = await stub.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id=workspace_id, display_name=workspace_id),
        metadata=bearer(SERVICE_TOKEN))
    return reply.api_key.secret


async def test_event_to_email_through_five_services(backend: Backend, tmp_path: Path) -> None:
    # Every call logs its line, as a slow one would (by default only failed and slow calls do).
    async with running_suite(backend, tmp_path, extra_env={"CJO_LOG_SLOW_RPC_MS": "0"}) as suite:
        channels = {name: grpc.aio.insecure_channel(suite.target(name)) for name in SERVICES}
        key = await create_workspace(channels["identity"], "acme")
        other_key = await create_workspace(channels["identity"], "globex")
        auth = bearer(key)

        content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(
                key="welcome",
                email=content_item_pb2.EmailTemplate(
                    subject="Welcome, {{ profile.first_name }}!",
                    html="<p>Hi {{ profile.first_name }}, enjoy the {{ event.plan }} plan.</p>")),
            request_id="create-welcome"), metadata=auth)
        await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name="contentItems/welcome", request_id="publish-welcome"), metadata=auth)

        orchestration = orchestration_service_pb2_grpc.OrchestrationServiceStub(
            channels["orchestration"])
        journey = (await orchestration.CreateJourney(orchestration_service_pb2.CreateJourneyRequest(
            journey=journey_pb2.Journey(
                display_name="Welcome",
                event_trigger=journey_pb2.EventTrigger(event_name="signed_up"),
                entry_node_id="welcome",
                nodes=[
                    journey_pb2.Node(id="welcome", send=journey_pb2.SendNode(
                        content_key="welcome", channel=common_pb2.CHANNEL_EMAIL,
                        next_node_id="done")),
                    journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
                ])), metadata=auth)).journey
        await orchestration.PublishJourney(
            orchestration_service_pb2.PublishJourneyRequest(name=journey.name), metadata=auth)

        identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
        ingested = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
            event_pb2.Event(
                message_id="m-1", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
                identifiers=[event_pb2.Identifier(type="user_id", value="u-1")],
                traits=dict_to_struct({"email": "ada@example.com", "first_name": "Ada"}),
                properties=dict_to_struct({"plan": "pro"}), source="web")]), metadata=auth)
        assert ingested.results[0].status.code == 0

        await eventually(lambda: suite.mail.envelopes, timeout=30)
        envelope = suite.mail.envelopes[0]
        assert envelope.rcpt_tos == ["ada@example.com"]
        mail = message_from_bytes(envelope.original_content or envelope.content,
                                  policy=policy.default)
        assert mail["subject"] == "Welcome, Ada!"
        html = mail.get_body(("html",)).get_content()
        assert "Hi Ada, enjoy the pro plan." in html

        analytics = analytics_grpc.AnalyticsServiceStub(channels["analytics"])

        async def counted() -> dict[int, int] | None:
            report = (await analytics.GetJourneyReport(
                analytics_pb.GetJourneyReportRequest(journey=journey.name), metadata=auth)).report
            counts = {c.type: c.count for c in report.counts}
            done = (counts.get(fact_pb2.FACT_TYPE_JOURNEY_ENTERED) == 1
                    and counts.get(fact_pb2.FACT_TYPE_MESSAGE_SENT) == 1)
            return counts if done else None

        await eventually(counted, timeout=30)

        # Another workspace sees none of it, through any service.
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await orchestration.GetJourney(orchestration_service_pb2.GetJourneyRequest(
                name=journey.name), metadata=bearer(other_key))
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await content.GetContentItem(content_service_pb2.GetContentItemRequest(
                name="contentItems/welcome"), metadata=bearer("cjo_nope_nope"))
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # One trace: identity accepted the event, and every service on the send's path served a
        # call in it (decisioning may too: it hears of the event and of the message to learn).
        ingest_span = await eventually(lambda: next(
            (s for s in suite.traces.spans if s.name.endswith("IdentityService/IngestEvents")
             and s.kind == SPAN_KIND_SERVER), None), timeout=STATE_TIMEOUT)

        def services_in_trace() -> set[str] | None:
            found = {s.service for s in suite.traces.spans
                     if s.trace_id == ingest_span.trace_id and s.kind == SPAN_KIND_SERVER}
            return found if found >= {f"cjo-{n}" for n in SEND_PATH} else None

        try:
            await eventually(services_in_trace, timeout=STATE_TIMEOUT)
        except AssertionError:
            seen = sorted({(s.service, s.name) for s in suite.traces.spans
                           if s.trace_id == ingest_span.trace_id})
            raise AssertionError(f"trace {ingest_span.trace_id} holds only {seen}") from None

        # Log lines are JSON carrying the service, the trace and the caller's workspace.
        ingest_logs = [json.loads(line) for line in suite.log("identity").splitlines()
                       if "IdentityService/IngestEvents" in line]
        assert ingest_logs and ingest_logs[0]["workspace"] == "acme"
        assert ingest_logs[0]["service"] == "identity" and ingest_logs[0]["code"] == "OK"
        assert ingest_logs[0]["trace_id"] == ingest_span.trace_id

        for channel in channels.values():
            await channel.close()
        # SIGTERM drains and exits cleanly.
        for name in SERVICES:
            assert await suite.stop(name, signal.SIGTERM) == 0, suite.log(name)


async def test_the_readme_example_runs(sqlite_backend: Backend, tmp_path: Path) -> None:
    """examples/first_journey.py works against a running suite, as the README promises."""
    import os
    import sys

    async with running_suite(sqlite_backend, tmp_path) as suite:
        async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
            key = await create_workspace(channel, "dev")
        env = {**os.environ, "CJO_API_KEY": key,
               **{f"CJO_{n.upper()}_TARGET": suite.target(n) for n in SERVICES}}
        example = Path(__file__).resolve().parents[2] / "examples" / "first_journey.py"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(example), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
        assert proc.returncode == 0, output
        assert "MESSAGE_STATUS_SENT" in output and "Welcome to Acme, Ada!" in output
        assert len(suite.mail.envelopes) == 1


async def test_a_decide_step_is_one_trace(sqlite_backend: Backend, tmp_path: Path) -> None:
    """A decide node's step: orchestration asks decisioning, renders the chosen action's content
    and sends it, each call a child of the step, in that order, in the trace of the event that
    started the journey."""
    async with running_suite(sqlite_backend, tmp_path) as suite:
        channels = {name: grpc.aio.insecure_channel(suite.target(name)) for name in SERVICES}
        auth = bearer(await create_workspace(channels["identity"], "acme"))
        content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
        await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(
                key="offer", email=content_item_pb2.EmailTemplate(
                    subject="An offer for {{ profile.first_name }}", html="<p>10% off</p>"))),
            metadata=auth)
        await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
            name="contentItems/offer"), metadata=auth)
        decisioning = decisioning_grpc.DecisioningServiceStub(channels["decisioning"])
        await decisioning.CreateAction(decisioning_pb.CreateActionRequest(action=action_pb2.Action(
            key="ten_off", contents=[action_pb2.ActionContent(
                channel=common_pb2.CHANNEL_EMAIL, content_key="offer")])), metadata=auth)
        await decisioning.CreateDecisionPoint(decisioning_pb.CreateDecisionPointRequest(
            decision_point=decision_point_pb2.DecisionPoint(
                key="welcome_offer", actions=["ten_off"],
                reward=decision_point_pb2.Reward(event_name="purchase"))), metadata=auth)
        orchestration = orchestration_service_pb2_grpc.OrchestrationServiceStub(
            channels["orchestration"])
        journey = (await orchestration.CreateJourney(orchestration_service_pb2.CreateJourneyRequest(
            journey=journey_pb2.Journey(
                display_name="Offer", event_trigger=journey_pb2.EventTrigger(
                    event_name="signed_up"),
                entry_node_id="offer",
                nodes=[
                    journey_pb2.Node(id="offer", decide=journey_pb2.DecideNode(
                        decision_point="welcome_offer", channel=common_pb2.CHANNEL_EMAIL,
                        next_node_id="done")),
                    journey_pb2.Node(id="done", exit=journey_pb2.ExitNode()),
                ])), metadata=auth)).journey
        await orchestration.PublishJourney(
            orchestration_service_pb2.PublishJourneyRequest(name=journey.name), metadata=auth)

        identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
        await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
            event_pb2.Event(
                message_id="m-1", type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
                identifiers=[event_pb2.Identifier(type="user_id", value="u-1")],
                traits=dict_to_struct({"email": "ada@example.com", "first_name": "Ada"}))]),
            metadata=auth)
        await eventually(lambda: suite.mail.envelopes, timeout=30)

        ingest = await eventually(lambda: next(
            (s for s in suite.traces.spans if s.name.endswith("IdentityService/IngestEvents")
             and s.kind == SPAN_KIND_SERVER), None), timeout=STATE_TIMEOUT)
        assert isinstance(ingest, ReceivedSpan)
        step_calls = ("DecisioningService/BatchDecide", "ContentService/BatchRenderContent",
                      "DeliveryService/BatchSendMessages")

        def step_of(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> str | None:
            """The orchestration step span this call descends from (through its client span)."""
            parent = by_id.get(span.parent_span_id)
            while parent is not None and parent.service == "cjo-orchestration":
                if parent.name == "orchestration.step":
                    return parent.span_id
                parent = by_id.get(parent.parent_span_id)
            return None

        def the_step() -> list[ReceivedSpan] | None:
            """The three calls' server spans once they, and the step they descend from, are in."""
            by_id = {s.span_id: s for s in suite.traces.spans if s.trace_id == ingest.trace_id}
            served = [next((s for s in by_id.values() if s.kind == SPAN_KIND_SERVER
                            and s.name.endswith(call)), None) for call in step_calls]
            if any(s is None for s in served):
                return None
            steps = {step_of(s, by_id) for s in served if s is not None}
            one_step = len(steps) == 1 and None not in steps
            return [s for s in served if s is not None] if one_step else None

        try:
            served = await eventually(the_step, timeout=STATE_TIMEOUT)
        except AssertionError:
            seen = sorted({(s.service, s.name, s.span_id, s.parent_span_id)
                           for s in suite.traces.spans if s.trace_id == ingest.trace_id})
            raise AssertionError(f"trace {ingest.trace_id} holds only {seen}") from None
        assert isinstance(served, list)
        assert [s.service for s in served] == ["cjo-decisioning", "cjo-content", "cjo-delivery"]
        # Decide, then render what was decided, then send it.
        assert served[0].start_unix_nano < served[1].start_unix_nano < served[2].start_unix_nano
        for channel in channels.values():
            await channel.close()
