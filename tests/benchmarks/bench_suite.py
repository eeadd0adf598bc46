"""What the benchmarks that run the whole suite share (throughput.py, latency.py): the suite as
real processes with the counting hook (`--profile`), the per-process CPU / database profiler, the
welcome journey (sign-up -> email) and the event bus streams of a run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2, content_service_pb2, content_service_pb2_grpc
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import (
    journey_pb2,
    orchestration_service_pb2,
    orchestration_service_pb2_grpc,
)
from cjo_platform.protobuf import dict_to_struct
from suite import Suite, running_suite
from support import SERVICE_TOKEN, bearer, drop_schemas, eventually, new_backend

HOOK = Path(__file__).resolve().parent / "profile_hook"
# py-spy as installed in this interpreter's environment, else from PATH
PY_SPY = next((str(p) for p in (Path(sys.executable).parent / "py-spy",) if p.exists()),
              shutil.which("py-spy"))
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """Seconds of user + system CPU process ``pid`` has used (from /proc, so it holds however
    busy the machine is)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_py_spy(pid: int, path: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` (only samples holding the GIL) into ``path``, as collapsed
    stacks (speedscope, flamegraph), until :func:`stop_py_spy`."""
    return subprocess.Popen(
        [str(PY_SPY), "record", "--format", "raw", "--rate", "100", "--nonblocking", "--gil",
         "--pid", str(pid), "--output", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(spy: subprocess.Popen[bytes], path: Path, top: int = 6) -> str:
    """Stop ``spy`` and summarise its samples: their count and the ``top`` functions by own
    time."""
    spy.send_signal(signal.SIGINT)
    spy.wait(60)
    own: Counter[str] = Counter()
    # A frame's name may span lines (a function whose source text py-spy quotes): a sample's
    # line ends at the one that ends with its count.
    pending = ""
    for line in path.read_text().splitlines() if path.exists() else []:
        stack, _, count = (pending + line).rpartition(" ")
        if not count.isdigit():
            pending += line + "\\n"
            continue
        pending = ""
        own[stack.rsplit(";", 1)[-1]] += int(count)
    total = sum(own.values()) or 1
    return f"{total} samples holding the GIL, own time: " + "; ".join(
        f"{frame} {n * 100 / total:.0f}%" for frame, n in own.most_common(top))


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
            out[name] = Sample(process_cpu(pid), counts["commits"],
                               counts["statements"], counts["rows_written"])
        times = os.times()
        out["load generator"] = Sample(times.user + times.system)
        return out

    def start_spy(self, scenario: str) -> None:
        if self.spy_dir is None:
            return
        for name, pid in self.pids().items():
            path = self.spy_dir / f"{self.kind}-{scenario}-{name}.txt"
            self.spies[name] = (start_py_spy(pid, path), path)

    async def stop_spy(self) -> None:
        for name, (proc, path) in self.spies.items():
            summary = await asyncio.to_thread(stop_py_spy, proc, path)
            print(f"[{self.kind}]   py-spy {name} ({summary})", flush=True)
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



def signup(user: str, message_id: str) -> event_pb2.Event:
    """A new person signing up: what the welcome journey sends its email for."""
    return event_pb2.Event(
        message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK, name="signed_up",
        identifiers=[event_pb2.Identifier(type="user_id", value=user)],
        traits=dict_to_struct({"email": f"{user}@example.com", "first_name": user}),
        properties=dict_to_struct({"path": "/welcome", "plan": "pro"}), source="bench")


NATS_URL = "nats://127.0.0.1:4222"


# How the services trace during a run (printed in every figure's label): ``export`` sends every
# span over OTLP to the suite's receiver in the benchmark's process (the suite's default, which
# latency.py's --hops reads); ``off`` sets no exporter, so the services record no span (their
# trace context still flows: cjo_platform.telemetry).
TRACING = ("export", "off")


@contextlib.asynccontextmanager
async def bench_suite(kind: str, bus: str = "none", profile: bool = False,
                      spy_dir: Path | None = None,
                      extra_env: dict[str, str] | None = None, tracing: str = "export",
                      ) -> AsyncIterator[tuple[Suite, Profiler | None, str]]:
    """The suite on a fresh ``kind`` database (``bus`` "nats": the event stream on JetStream,
    streams of the run's own prefix, removed afterwards), tracing as ``tracing`` says (one of
    :data:`TRACING`); with ``profile`` the counting hook in every process and a
    :class:`Profiler`. Yields (suite, profiler, label)."""
    env = {"CJO_LOG_LEVEL": "warning", "CJO_DELIVERY_RETRY_BASE_SECONDS": "1",
           **({"OTEL_EXPORTER_OTLP_ENDPOINT": ""} if tracing == "off" else {}),
           **(extra_env or {})}
    if os.environ.get("CJO_BENCH_STMT_DIR"):  # the hook also writes per-statement counts there
        env["CJO_BENCH_STMT_DIR"] = os.environ["CJO_BENCH_STMT_DIR"]
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    if bus == "nats":
        # Packed as once every service reads packs (the release default is 1: upgrades).
        env.update({"CJO_EVENT_BUS": NATS_URL, "CJO_BUS_PREFIX": prefix,
                    "CJO_BUS_PACK_ROWS": "64"})
    label = (f"{kind}, bus {bus}" if bus != "none" else kind) + f", tracing {tracing}"
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
                yield suite, profiler, label
        finally:
            drop_schemas(backend)
            if bus == "nats":
                await drop_bus_streams(prefix)


async def drop_bus_streams(prefix: str) -> None:
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


async def workspace(channel: grpc.aio.Channel,
                    workspace_id: str = "bench") -> tuple[tuple[str, str], ...]:
    """Create a workspace on identity's ``channel``; return the metadata of its API key."""
    created = await ws_grpc.WorkspaceServiceStub(channel).CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id=workspace_id), metadata=bearer(SERVICE_TOKEN))
    return bearer(created.api_key.secret)


async def welcome_journey(content_channel: grpc.aio.Channel,
                          orchestration_channel: grpc.aio.Channel,
                          auth: tuple[tuple[str, str], ...]) -> journey_pb2.Journey:
    """Publish the welcome email and a journey that sends it on every ``signed_up`` event."""
    content = content_service_pb2_grpc.ContentServiceStub(content_channel)
    await content.CreateContentItem(content_service_pb2.CreateContentItemRequest(
        content_item=content_item_pb2.ContentItem(
            key="welcome", email=content_item_pb2.EmailTemplate(
            subject="Welcome, {{ profile.first_name }}!",
            html="<p>Hi {{ profile.first_name }}, enjoy {{ event.plan }}.</p>"))), metadata=auth)
    await content.PublishContentItem(content_service_pb2.PublishContentItemRequest(
        name="contentItems/welcome"), metadata=auth)
    orchestration = orchestration_service_pb2_grpc.OrchestrationServiceStub(
        orchestration_channel)
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
    return journey
