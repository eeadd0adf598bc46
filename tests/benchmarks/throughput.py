"""`make bench`: the suite's throughput through real processes on loopback.

1. ingest: batches of 1,000 track events (no journey listens to them) sent one after another to
   identity; prints events/s and the p50/p99 latency of one 1,000-event batch call.
2. journey: N sign-ups, each a new person, through identity -> orchestration -> content ->
   delivery -> a real SMTP server; prints emails/s from the first event accepted to the last
   email handed to SMTP, and checks analytics counted each entry and send exactly once.

Runs on SQLite and, when it listens on 127.0.0.1:5432, PostgreSQL. Figures depend on the
machine; compare runs made on the same machine in one sitting. `--bus nats` runs the same with
the event stream on NATS JetStream at 127.0.0.1:4222 (CJO_EVENT_BUS; streams of a prefix of the
run's own, removed afterwards); `--bus both` runs each backend both ways, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

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
from cjo_platform.protobuf import dict_to_struct
from suite import running_suite
from support import (
    SERVICE_TOKEN,
    bearer,
    drop_schemas,
    eventually,
    new_backend,
    postgres_available,
)

BATCH = 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def track(i: int, name: str, profiles: int, run: str) -> event_pb2.Event:
    user = f"u{i % profiles}"
    return event_pb2.Event(
        message_id=f"{run}-{name}-{i}", type=event_pb2.EVENT_TYPE_TRACK, name=name,
        identifiers=[event_pb2.Identifier(type="user_id", value=user)],
        traits=dict_to_struct({"email": f"{user}@example.com", "first_name": f"N{i}"}),
        properties=dict_to_struct({"path": f"/p/{i % 50}", "plan": "pro"}), source="bench")


NATS_URL = "nats://127.0.0.1:4222"


async def bench(kind: str, events: int, signups: int, bus: str = "none") -> None:
    env = {"CJO_LOG_LEVEL": "warning", "CJO_DELIVERY_RETRY_BASE_SECONDS": "1"}
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    if bus == "nats":
        env.update({"CJO_EVENT_BUS": NATS_URL, "CJO_BUS_PREFIX": prefix})
    label = f"{kind}, bus {bus}" if bus != "none" else kind
    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend(kind, Path(tmp))
        try:
            async with running_suite(backend, Path(tmp), extra_env=env) as suite:
                await run_scenarios(label, suite, events, signups)
        finally:
            drop_schemas(backend)
            if bus == "nats":
                await drop_bus_streams(prefix)


async def drop_bus_streams(prefix: str) -> None:
    import contextlib

    import nats

    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    for stream in await js.streams_info():
        if stream.config.name.startswith((prefix.upper() + "_", "KV_" + prefix.upper() + "_")):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream.config.name)
    await nc.close()


async def run_scenarios(kind: str, suite: object, events: int, signups: int) -> None:
    target = suite.target  # type: ignore[attr-defined]
    channels = {n: grpc.aio.insecure_channel(target(n)) for n in
                ("identity", "content", "orchestration", "analytics")}
    created = await ws_grpc.WorkspaceServiceStub(channels["identity"]).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="bench"), metadata=bearer(SERVICE_TOKEN))
    auth = bearer(created.api_key.secret)
    identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])

    # 1. ingest
    latencies: list[float] = []
    started = time.perf_counter()
    for start in range(0, events, BATCH):
        batch = [track(i, "page_viewed", 5000, "ingest") for i in range(start, start + BATCH)]
        t0 = time.perf_counter()
        reply = await identity.IngestEvents(
            identity_service_pb2.IngestEventsRequest(events=batch), metadata=auth, timeout=120)
        latencies.append(time.perf_counter() - t0)
        assert all(r.status.code == 0 for r in reply.results)
    elapsed = time.perf_counter() - started
    print(f"[{kind}] ingest: {events} events over 5,000 profiles in {elapsed:.2f}s = "
          f"{events / elapsed:,.0f} events/s; 1,000-event batch p50 "
          f"{statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, .99) * 1000:.0f} ms",
          flush=True)
    # With 20 batches p99 is the slowest one: say which it was (the first batches create the
    # profiles; a late one points at the database, e.g. a checkpoint or autovacuum).
    slowest = sorted(range(len(latencies)), key=latencies.__getitem__, reverse=True)[:3]
    print(f"[{kind}] slowest batches: " + ", ".join(
        f"#{i + 1} {latencies[i] * 1000:.0f} ms" for i in slowest), flush=True)

    # 2. journey
    content = content_service_pb2_grpc.ContentServiceStub(channels["content"])
    await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
        content_item=content_item_pb2.ContentItem(
            key="welcome", email=content_item_pb2.EmailTemplate(
            subject="Welcome, {{ profile.first_name }}!",
            html="<p>Hi {{ profile.first_name }}, enjoy {{ event.plan }}.</p>"))), metadata=auth)
    await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
        name="contentItems/welcome"), metadata=auth)
    orchestration = orchestration_service_pb2_grpc.OrchestrationServiceStub(
        channels["orchestration"])
    journey = (await orchestration.CreateJourney(orchestration_service_pb2.CreateJourneyRequest(
        journey=journey_pb2.Journey(
            display_name="bench", event_trigger=journey_pb2.EventTrigger(event_name="signed_up"),
            entry_node_id="send", nodes=[
                journey_pb2.Node(id="send", send=journey_pb2.SendNode(
                    content_key="welcome", channel=common_pb2.CHANNEL_EMAIL,
                    next_node_id="done")),
                journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])),
        metadata=auth)).journey
    await orchestration.PublishJourney(
        orchestration_service_pb2.PublishJourneyRequest(name=journey.name), metadata=auth)

    mail = suite.mail  # type: ignore[attr-defined]
    before = len(mail.envelopes)
    started = time.perf_counter()
    for start in range(0, signups, BATCH):
        batch = [track(1_000_000 + i, "signed_up", 10**9, "journey")
                 for i in range(start, min(signups, start + BATCH))]
        await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=batch),
                                    metadata=auth, timeout=120)
    await eventually(lambda: len(mail.envelopes) - before >= signups, timeout=600,
                     interval=0.05)
    elapsed = time.perf_counter() - started
    print(f"[{kind}] journey: {signups} sign-ups -> {signups} emails at the SMTP server in "
          f"{elapsed:.2f}s = {signups / elapsed:,.0f} journeys/s end to end", flush=True)

    analytics = analytics_grpc.AnalyticsServiceStub(channels["analytics"])

    async def counted() -> bool:
        report = (await analytics.GetJourneyReport(analytics_pb.GetJourneyReportRequest(
            journey=journey.name), metadata=auth)).report
        counts = {c.type: c.count for c in report.counts}
        return (counts.get(fact_pb2.FACT_TYPE_JOURNEY_ENTERED) == signups
                and counts.get(fact_pb2.FACT_TYPE_MESSAGE_SENT) == signups)

    await eventually(counted, timeout=120)
    assert len(mail.envelopes) - before == signups, "an email was sent twice"
    print(f"[{kind}] analytics counted {signups} entries and {signups} sends; no duplicates",
          flush=True)
    for channel in channels.values():
        await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--signups", type=int, default=2_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--bus", choices=["none", "nats", "both"], default="none",
                        help="the event stream: outbox + gRPC (none), NATS JetStream, or both")
    args = parser.parse_args()
    buses = ["none", "nats"] if args.bus == "both" else [args.bus]
    kinds = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    for kind in kinds:
        if kind == "postgresql" and not postgres_available():
            print("[postgresql] skipped: nothing listens on 127.0.0.1:5432")
            continue
        for bus in buses:
            asyncio.run(bench(kind, args.events, args.signups, bus))


if __name__ == "__main__":
    main()
