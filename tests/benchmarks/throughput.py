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
`--tracing off` runs the services without an exporter (no span recorded) instead of sending
every span to the benchmark's OTLP receiver; each figure's label names the mode.

`--events 0` / `--signups 0` skip a scenario. With `--profile`, N single-event calls follow the
ingest (`--calls`, from `--concurrency` callers at once, each sending its next call when its
answer came, as many web backends' requests do): calls/s accepted and what one call costs.

`--profile` adds, after each scenario, where its work went per service process: CPU ms (user +
system, from /proc/<pid>/stat, so it holds on a busy machine where wall-clock figures do not),
database commits, statements (round trips) and rows written, per event (ingest) or per journey,
counted inside each process by SQLAlchemy engine events (tests/benchmarks/profile_hook). Idle
polling during the scenario is included; the `idle` line gives its rate per second. With
`--py-spy DIR` (needs py-spy, a dev tool) it also samples every process during each scenario,
writes DIR/<backend>-<scenario>-<service>.txt (collapsed stacks of the samples holding the GIL,
for speedscope or flamegraph) and prints each process's top functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from bench_suite import (
    PY_SPY,
    TRACING,
    Profiler,
    bench_suite,
    percentile,
    settle,
    welcome_journey,
    workspace,
)

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.analytics.v1 import fact_pb2
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo_platform.protobuf import dict_to_struct
from support import eventually, postgres_available

BATCH = 1000


def track(i: int, name: str, profiles: int, run: str) -> event_pb2.Event:
    user = f"u{i % profiles}"
    return event_pb2.Event(
        message_id=f"{run}-{name}-{i}", type=event_pb2.EVENT_TYPE_TRACK, name=name,
        identifiers=[event_pb2.Identifier(type="user_id", value=user)],
        traits=dict_to_struct({"email": f"{user}@example.com", "first_name": f"N{i}"}),
        properties=dict_to_struct({"path": f"/p/{i % 50}", "plan": "pro"}), source="bench")


async def bench(kind: str, events: int, signups: int, bus: str = "none", profile: bool = False,
                spy_dir: Path | None = None, calls: int = 200, concurrency: int = 1,
                tracing: str = "export") -> None:
    async with bench_suite(kind, bus, profile, spy_dir,
                           tracing=tracing) as (suite, profiler, label):
        await run_scenarios(label, suite, events, signups, profiler, calls, concurrency)


async def single_event_calls(identity: identity_service_pb2_grpc.IdentityServiceStub,
                             auth: tuple[tuple[str, str], ...], calls: int,
                             concurrency: int) -> None:
    """``calls`` one-event IngestEvents calls from ``concurrency`` callers at once."""
    numbers = iter(range(calls))

    async def caller() -> None:
        for i in numbers:
            reply = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(
                events=[track(i, "page_viewed", 5000, "single")]), metadata=auth, timeout=120)
            assert reply.results[0].status.code == 0, reply

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def run_scenarios(kind: str, suite: object, events: int, signups: int,
                        profiler: Profiler | None, calls: int = 200,
                        concurrency: int = 1) -> None:
    target = suite.target  # type: ignore[attr-defined]
    channels = {n: grpc.aio.insecure_channel(target(n)) for n in
                ("identity", "content", "orchestration", "analytics")}
    auth = await workspace(channels["identity"])
    identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])

    idle_per_second = 0.0
    if profiler:
        idle_per_second = await profiler.idle()
        before = await profiler.sample()
        profiler.start_spy("ingest")

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
    if events:
        print(f"[{kind}] ingest: {events} events over 5,000 profiles in {elapsed:.2f}s = "
              f"{events / elapsed:,.0f} events/s; 1,000-event batch p50 "
              f"{statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, .99) * 1000:.0f} ms",
              flush=True)
    # With 20 batches p99 is the slowest one: say which it was (the first batches create the
    # profiles; a late one points at the database, e.g. a checkpoint or autovacuum).
    slowest = sorted(range(len(latencies)), key=latencies.__getitem__, reverse=True)[:3]
    if events:
        print(f"[{kind}] slowest batches: " + ", ".join(
            f"#{i + 1} {latencies[i] * 1000:.0f} ms" for i in slowest), flush=True)
    if profiler:
        after = await settle(profiler, idle_per_second)
        await profiler.stop_spy()
        if events:
            profiler.report("ingest (1,000-event batches, no journey)", before, after, events,
                            "event")
    if profiler and calls:
        # One event per call, as a web backend sends them: what one call costs on its own.
        before = await profiler.sample()
        profiler.start_spy("single")
        t0 = time.perf_counter()
        await single_event_calls(identity, auth, calls, concurrency)
        elapsed = time.perf_counter() - t0
        print(f"[{kind}] single-event calls: {calls} from {concurrency} caller(s) at once in "
              f"{elapsed:.2f}s = {calls / elapsed:,.0f} calls/s accepted", flush=True)
        after = await settle(profiler, idle_per_second)
        await profiler.stop_spy()
        if calls:
            profiler.report(f"ingest (single-event calls, {concurrency} at a time, no journey)",
                            before, after, calls, "call")

    if not signups:
        for channel in channels.values():
            await channel.close()
        return

    # 2. journey
    journey = await welcome_journey(channels["content"], channels["orchestration"], auth)

    mail = suite.mail  # type: ignore[attr-defined]
    if profiler:
        sampled = await profiler.sample()
        profiler.start_spy("journey")
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
    if profiler:
        after = await settle(profiler, idle_per_second)
        await profiler.stop_spy()
        profiler.report("journey (sign-up -> email -> analytics)", sampled, after, signups,
                        "journey")
    for channel in channels.values():
        await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--signups", type=int, default=2_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--profile", action="store_true",
                        help="print CPU ms, commits, statements and rows written per event and "
                             "per journey for each service process")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", dest="spy_dir",
                        help="with --profile: sample each process with py-spy into DIR and "
                             "print its top functions")
    parser.add_argument("--calls", type=int, default=200,
                        help="with --profile: single-event calls after the ingest")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="with --profile: single-event callers at once")
    parser.add_argument("--bus", choices=["none", "nats", "both"], default="none",
                        help="the event stream: outbox + gRPC (none), NATS JetStream, or both")
    parser.add_argument("--tracing", choices=TRACING, default="export",
                        help="export: every span sent over OTLP to the benchmark's receiver; "
                             "off: no exporter, no span recorded")
    args = parser.parse_args()
    buses = ["none", "nats"] if args.bus == "both" else [args.bus]
    if args.spy_dir:
        if not PY_SPY:
            parser.error("--py-spy needs py-spy on PATH (pip install py-spy)")
        args.profile = True
        args.spy_dir.mkdir(parents=True, exist_ok=True)
    kinds = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    for kind in kinds:
        if kind == "postgresql" and not postgres_available():
            print("[postgresql] skipped: nothing listens on 127.0.0.1:5432")
            continue
        for bus in buses:
            asyncio.run(bench(kind, args.events, args.signups, bus, args.profile, args.spy_dir,
                              args.calls, args.concurrency, args.tracing))


if __name__ == "__main__":
    main()
