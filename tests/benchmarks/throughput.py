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
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
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
HOOK = Path(__file__).resolve().parent / "profile_hook"
# py-spy as installed in this interpreter's environment, else from PATH
PY_SPY = next((str(p) for p in (Path(sys.executable).parent / "py-spy",) if p.exists()),
              shutil.which("py-spy"))
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    cpu: float  # seconds of user + system CPU
    commits: int = 0
    statements: int = 0
    rows_written: int = 0


class Profiler:
    """Per-process CPU and database counts, read before and after a scenario."""

    def __init__(self, suite: object, stats_dir: Path, spy_dir: Path | None, kind: str) -> None:
        self.suite = suite
        self.stats_dir = stats_dir
        self.spy_dir = spy_dir
        self.kind = kind
        self.seq: dict[int, int] = {}
        self.spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def pids(self) -> dict[str, int]:
        processes = self.suite.processes  # type: ignore[attr-defined]
        return {name: proc.pid for name, proc in sorted(processes.items())}

    async def sample(self) -> dict[str, Sample]:
        pids = self.pids()
        for pid in pids.values():
            os.kill(pid, signal.SIGUSR1)

        def fresh() -> bool:
            for pid in pids.values():
                path = self.stats_dir / f"{pid}.json"
                if not path.exists() or json.loads(path.read_text())["seq"] <= self.seq.get(pid, 0):
                    return False
            return True

        await eventually(fresh, timeout=30)
        out = {}
        for name, pid in pids.items():
            counts = json.loads((self.stats_dir / f"{pid}.json").read_text())
            self.seq[pid] = counts["seq"]
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = Sample((int(fields[11]) + int(fields[12])) / TICK, counts["commits"],
                               counts["statements"], counts["rows_written"])
        times = os.times()
        out["load generator"] = Sample(times.user + times.system)
        return out

    def start_spy(self, scenario: str) -> None:
        if self.spy_dir is None:
            return
        for name, pid in self.pids().items():
            path = self.spy_dir / f"{self.kind}-{scenario}-{name}.txt"
            self.spies[name] = (subprocess.Popen(
                [str(PY_SPY), "record", "--format", "raw", "--rate", "100", "--nonblocking",
                 "--gil", "--pid", str(pid), "--output", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)

    async def stop_spy(self) -> None:
        for name, (proc, path) in self.spies.items():
            proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(proc.wait, 60)
            own: Counter[str] = Counter()
            for line in path.read_text().splitlines() if path.exists() else []:
                stack, _, count = line.rpartition(" ")
                own[stack.rsplit(";", 1)[-1]] += int(count)
            total = sum(own.values()) or 1
            print(f"[{self.kind}]   py-spy {name} ({total} samples holding the GIL, own time): "
                  + "; ".join(
                f"{frame} {n * 100 / total:.0f}%" for frame, n in own.most_common(6)), flush=True)
        self.spies.clear()

    def report(self, scenario: str, before: dict[str, Sample], after: dict[str, Sample],
               units: float, unit: str) -> None:
        print(f"[{self.kind}] {scenario}: per {unit} ({units:,.0f} {unit}s)", flush=True)
        print(f"[{self.kind}]   {'process':<16} {'CPU ms':>8} {'commits':>8} {'stmts':>8} "
              f"{'rows':>8}", flush=True)
        total = Sample(0.0)
        for name in after:
            a, b = after[name], before[name]
            d = Sample(a.cpu - b.cpu, a.commits - b.commits, a.statements - b.statements,
                       a.rows_written - b.rows_written)
            total = Sample(total.cpu + d.cpu, total.commits + d.commits,
                           total.statements + d.statements, total.rows_written + d.rows_written)
            self._line(name, d, units)
        self._line("all", total, units)

    def _line(self, name: str, d: Sample, units: float) -> None:
        print(f"[{self.kind}]   {name:<16} {d.cpu * 1000 / units:>8.3f} "
              f"{d.commits / units:>8.3f} {d.statements / units:>8.3f} "
              f"{d.rows_written / units:>8.3f}", flush=True)

    async def idle(self, seconds: float = 3.0) -> float:
        """Print what the processes spend per second with nothing to do (polling workers);
        return the services' CPU seconds per second."""
        before = await self.sample()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)  # a fixed window is the measurement itself here
        after = await self.sample()
        elapsed = time.perf_counter() - t0
        self.report("idle", before, after, elapsed, "second")
        return sum(after[n].cpu - before[n].cpu for n in after if n != "load generator") / elapsed


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


async def bench(kind: str, events: int, signups: int, bus: str = "none", profile: bool = False,
                spy_dir: Path | None = None) -> None:
    env = {"CJO_LOG_LEVEL": "warning", "CJO_DELIVERY_RETRY_BASE_SECONDS": "1"}
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    if bus == "nats":
        env.update({"CJO_EVENT_BUS": NATS_URL, "CJO_BUS_PREFIX": prefix})
    label = f"{kind}, bus {bus}" if bus != "none" else kind
    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend(kind, Path(tmp))
        stats_dir = Path(tmp) / "db-stats"
        if profile:
            stats_dir.mkdir()
            env["CJO_BENCH_DB_STATS"] = str(stats_dir)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(HOOK), os.environ.get("PYTHONPATH", "")) if p)
        try:
            async with running_suite(backend, Path(tmp), extra_env=env) as suite:
                profiler = Profiler(suite, stats_dir, spy_dir, label) if profile else None
                await run_scenarios(label, suite, events, signups, profiler)
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


async def settle(profiler: Profiler, idle_per_second: float) -> dict[str, Sample]:
    """Wait until the hand-offs a scenario started are done: a half-second in which the
    services spend no more CPU than idle polling does (plus a margin)."""
    last = await profiler.sample()
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        await asyncio.sleep(0.5)
        now = await profiler.sample()
        spent = sum(now[n].cpu - last[n].cpu for n in now if n != "load generator")
        last = now
        if spent <= max(0.03, 2 * idle_per_second * (time.perf_counter() - t0)):
            break
    return last


async def run_scenarios(kind: str, suite: object, events: int, signups: int,
                        profiler: Profiler | None) -> None:
    target = suite.target  # type: ignore[attr-defined]
    channels = {n: grpc.aio.insecure_channel(target(n)) for n in
                ("identity", "content", "orchestration", "analytics")}
    created = await ws_grpc.WorkspaceServiceStub(channels["identity"]).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="bench"), metadata=bearer(SERVICE_TOKEN))
    auth = bearer(created.api_key.secret)
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
    if profiler:
        after = await settle(profiler, idle_per_second)
        await profiler.stop_spy()
        profiler.report("ingest (1,000-event batches, no journey)", before, after, events,
                        "event")
        # One event per call, as a web backend sends them: what one call costs on its own.
        calls = 200
        before = await profiler.sample()
        for i in range(calls):
            await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(
                events=[track(i, "page_viewed", 5000, "single")]), metadata=auth, timeout=120)
        after = await settle(profiler, idle_per_second)
        profiler.report("ingest (single-event calls, no journey)", before, after, calls, "call")

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
    parser.add_argument("--bus", choices=["none", "nats", "both"], default="none",
                        help="the event stream: outbox + gRPC (none), NATS JetStream, or both")
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
            asyncio.run(bench(kind, args.events, args.signups, bus, args.profile, args.spy_dir))


if __name__ == "__main__":
    main()
