"""Identity benchmark: ingest with identity resolution and merges.

    .venv/bin/python tests/benchmarks/identity.py [--events 100000] [--profiles 20000]
                                                  [--backend sqlite|postgresql|both]

An in-process identity server (tests/support.serving) forwarding to a recording stand-in for
orchestration (a real gRPC server acknowledging every event). Per person, five events in rounds
spread over the whole run, so that every login MERGES two existing profiles:

  1. identify {user_id, email} (traits)       -> a known profile
  2. page_viewed {anonymous_id}               -> a separate anonymous profile
  3. page_viewed {anonymous_id}
  4. signed_in {user_id, anonymous_id}        -> merge: the anonymous history joins the known one
  5. order_completed {user_id} (revenue)

A computed trait (orders_30d) and one segment are defined, so the golden record, computed traits
and segment membership are maintained on every batch. Prints events/s over the whole run, the
p50/p99 latency of one 1,000-event IngestEvents call, the number of merges, and whether every
accepted event was forwarded exactly once.

With --lapse the clock is a manual one a day after the first events: every order then counts in
orders_30d (each person enters the segment), and after the ingest the clock moves 40 days on
with no new event: the time worker recomputes every profile whose order left the window and
announces its segment_exited; the benchmark prints how long that took (profiles/s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "identity"))

import grpc
from google.protobuf import duration_pb2
from identity_support import Recorder
from sqlalchemy import func, select

from cjo.identity.v1 import event_pb2, identity_settings_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_service_pb2_grpc as pb_grpc
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_identity.adapters.tables import outbox, profile_merges
from cjo_identity.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.logging import configure_logging
from cjo_platform.protobuf import dict_to_struct, to_timestamp
from support import (
    as_service,
    drop_schemas,
    new_backend,
    postgres_available,
    serving,
    settings_for,
)

BATCH = 1000
WS = as_service("bench")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def person_events(p: int, round_: int) -> event_pb2.Event:
    user = event_pb2.Identifier(type="user_id", value=f"u{p}")
    anon = event_pb2.Identifier(type="anonymous_id", value=f"a{p}")
    at = to_timestamp(T0 + timedelta(minutes=round_ * 10, seconds=p % 600))
    if round_ == 0:
        return event_pb2.Event(
            message_id=f"m{p}-0", type=event_pb2.EVENT_TYPE_IDENTIFY, timestamp=at, source="crm",
            identifiers=[user, event_pb2.Identifier(type="email", value=f"P{p}@Example.com")],
            traits=dict_to_struct({"first_name": f"P{p}", "plan": "free"}))
    if round_ in (1, 2):
        return event_pb2.Event(message_id=f"m{p}-{round_}", type=event_pb2.EVENT_TYPE_TRACK,
                               name="page_viewed", identifiers=[anon], timestamp=at,
                               source="web", properties=dict_to_struct({"path": "/"}))
    if round_ == 3:
        return event_pb2.Event(message_id=f"m{p}-3", type=event_pb2.EVENT_TYPE_TRACK,
                               name="signed_in", identifiers=[user, anon], timestamp=at,
                               source="web")
    return event_pb2.Event(message_id=f"m{p}-4", type=event_pb2.EVENT_TYPE_TRACK,
                           name="order_completed", identifiers=[user], timestamp=at,
                           source="web", properties=dict_to_struct({"revenue": 42.0}))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(kind: str, events: int, profiles: int, lapse: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend(kind, Path(tmp))
        recorder = Recorder()
        server = grpc.aio.server()
        orch_grpc.add_OrchestrationServiceServicer_to_server(recorder, server)
        recorder.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        clock = ManualClock(T0 + timedelta(days=1)) if lapse else None
        app = build(settings_for("identity", backend,
                                 CJO_ORCHESTRATION_TARGET=recorder.address), Env({}),
                    clock=clock)
        try:
            async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
                await run(app, pb_grpc.IdentityServiceStub(channel), recorder, kind, events,
                          profiles)
                if clock is not None:
                    await lapses(recorder, kind, clock, profiles)
        finally:
            await server.stop(None)
            drop_schemas(backend)


async def run(app: object, stub: pb_grpc.IdentityServiceStub, recorder: Recorder, kind: str,
              events: int, profiles: int) -> None:
    rounds = max(1, events // profiles)
    await stub.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(computed_traits=[
            identity_settings_pb2.ComputedTrait(
                name="orders_30d", event_name="order_completed",
                aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_COUNT,
                window=duration_pb2.Duration(seconds=30 * 86400))])), metadata=WS)
    await stub.CreateSegment(pb.CreateSegmentRequest(segment=segment_pb2.Segment(
        segment_id="buyers", display_name="Buyers", condition="computed.orders_30d > 0")),
        metadata=WS)
    stream = [person_events(p, r) for r in range(rounds) for p in range(profiles)][:events]
    latencies: list[float] = []
    accepted = 0
    start = time.perf_counter()
    for offset in range(0, len(stream), BATCH):
        began = time.perf_counter()
        reply = await stub.IngestEvents(pb.IngestEventsRequest(
            events=stream[offset:offset + BATCH]), metadata=WS, timeout=300)
        latencies.append(time.perf_counter() - began)
        accepted += sum(1 for r in reply.results if r.status.code == 0 and not r.duplicate)
    elapsed = time.perf_counter() - start

    db = app.db  # type: ignore[attr-defined]

    def counts() -> tuple[int, int]:
        with db.transaction() as session:
            return (int(session.execute(select(func.count()).select_from(profile_merges))
                        .scalar_one()),
                    int(session.execute(select(func.count()).select_from(outbox)).scalar_one()))

    def ingested() -> Counter[str]:
        """Forwarded ingested events by id; identity's own (segment changes, merges) aside."""
        return Counter(e.event_id for e in recorder.events
                       if not e.event.name.startswith("segment_")
                       and e.event.name != "profile_merged")

    deadline = time.perf_counter() + 300
    while len(ingested()) < accepted and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    forwarded = time.perf_counter() - start
    merges, left = await db.run(counts)
    ids = ingested()
    print(f"identity [{kind}]: {len(stream):,} events over {profiles:,} people, "
          f"{merges:,} merges: {len(stream) / elapsed:,.0f} events/s ingested; "
          f"1,000-event batch p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms; all forwarded after "
          f"{forwarded:.1f} s ({len(ids):,} events, each once: "
          f"{set(ids.values()) == {1} and len(ids) == accepted}; outbox left {left})")


async def lapses(recorder: Recorder, kind: str, clock: ManualClock, profiles: int) -> None:
    """Every order leaves its 30-day window with no new event: time until every member's
    segment_exited was forwarded."""
    def entered() -> set[str]:
        return {e.profile_id for e in recorder.events if e.event.name == "segment_entered"}

    while len(entered()) < profiles:  # every person entered (the forwarder caught up)
        await asyncio.sleep(0.2)
    members = entered()
    start = time.perf_counter()
    clock.advance(timedelta(days=40))
    deadline = start + 600
    while time.perf_counter() < deadline:
        exited = {e.profile_id for e in recorder.events if e.event.name == "segment_exited"}
        if exited >= members:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    exits = Counter(e.profile_id for e in recorder.events if e.event.name == "segment_exited")
    print(f"identity lapses [{kind}]: {len(members):,} members left the segment with no new "
          f"event in {elapsed:.1f} s ({len(members) / elapsed:,.0f} profiles/s, recomputed, "
          f"evaluated and forwarded); each once: {set(exits.values()) == {1}}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--profiles", type=int, default=20_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--lapse", action="store_true",
                        help="also time the lapse of every order's 30-day window")
    args = parser.parse_args()
    configure_logging("bench", fmt="console", level="error")
    kinds = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for kind in kinds:
        if kind == "postgresql" and not postgres_available():
            print("identity [postgresql]: skipped, no PostgreSQL on 127.0.0.1:5432")
            continue
        asyncio.run(bench(kind, args.events, args.profiles, args.lapse))


if __name__ == "__main__":
    main()
