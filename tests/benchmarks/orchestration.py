"""Orchestration benchmark: N enrollments whose timers all fall due at once, drained end to end
by one `python -m cjo_orchestration` process (timer fires -> render -> send).

    .venv/bin/python tests/benchmarks/orchestration.py [--sizes 10000,100000]
                                                       [--step-batch N] [--fake-content]
                                                       [--database sqlite|postgresql]
                                                       [--profile] [--py-spy DIR]

For each size, a fresh database (a SQLite file, or a schema in the PostgreSQL at
127.0.0.1:5432) is seeded with a published journey (wait 1 h -> send an
email -> exit) and N enrollments parked at the wait whose timers are all due. Content is the real
content service in this process (the item created and published through its API), unless
--fake-content or it cannot start; delivery is an in-process sink that accepts and counts each
idempotency key (no provider). Identity is an in-process gRPC server answering the step round's
BatchGetProfiles from a dict-like function of the profile id (SeededIdentity: the seeded
address), so each round pays the real call. Prints timer firings/s from the orchestrator's start
to the last enrollment ended (watched through the sink's count first, so the bench does not scan the
enrollments table while the orchestrator drains it), and the orchestrator process's peak resident
memory (VmHWM): it must not grow with N, because workers claim bounded batches; and the p50 /
p90 of the profile read a round makes (timed in the round, logged by the orchestrator when its
step worker stops).

`--profile` adds the CPU (user + system, from /proc, so it holds on a busy machine) per timer
fired from the first send to the last enrollment ended: of the orchestrator process, and of this
process (content, the identity stand-in and the sink). `--py-spy DIR` samples the orchestrator
over the same span into DIR/orchestration-timers-<size>.txt and prints its top functions by own
time (implies --profile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestration"))

from bench_suite import PY_SPY, process_cpu, start_py_spy, stop_py_spy
from orchestration_support import FakeContent, SeededIdentity, fake_server, seeded_email
from test_orchestration_processes import (
    Orchestrator,
    RecordingDelivery,
    ended_count,
    open_db,
    seed,
)

from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2 as content_pb
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.config import Env
from cjo_platform.logging import configure_logging
from support import (
    as_service,
    drop_schemas,
    free_port,
    new_backend,
    postgres_available,
    serving,
    settings_for,
)

# The service's own default (the Orchestrator helper of the tests sets 100).
DEFAULT_STEP_BATCH = load_engine_settings(Env({})).step_batch


@contextmanager
def _closing_channel(target: str) -> Iterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(target)
    try:
        yield channel
    finally:
        # Closed with the event loop; nothing to flush.
        pass


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def start_content(stack: AsyncExitStack, backend: object, fake: bool) -> tuple[str, str]:
    if not fake:
        try:
            from cjo_content.bootstrap import build as build_content

            target = await stack.enter_async_context(serving(build_content(
                settings_for("content", backend, CJO_ANALYTICS_TARGET=f"127.0.0.1:{free_port()}"),
                Env({}))))
            stub = content_grpc.ContentServiceStub(
                stack.enter_context(_closing_channel(target)))
            # The item belongs to the seeded journey's workspace, "ws".
            await stub.CreateContentItem(content_pb.CreateContentItemRequest(
                content_item=content_item_pb2.ContentItem(
                    key="cart", display_name="cart", email=content_item_pb2.EmailTemplate(
                        subject="Your cart, {{ profile.email }}", html="<p>Come back</p>"))),
                metadata=as_service("ws"))
            if hasattr(content_pb, "PublishContentItemRequest"):
                await stub.PublishContentItem(content_pb.PublishContentItemRequest(
                    name="contentItems/cart"), metadata=as_service("ws"))
            return target, "real content service (in this process)"
        except Exception as exc:
            print(f"real content unavailable ({exc!r}); using the stand-in", file=sys.stderr)
    content = FakeContent()
    content.items[("ws", "cart")] = content_item_pb2.ContentItem(
        key="cart", email=content_item_pb2.EmailTemplate(subject="Hi {{ profile.email }}",
                                                         html="<p>Come back</p>"))
    target = await stack.enter_async_context(fake_server(
        content, content_grpc.add_ContentServiceServicer_to_server, free_port()))
    return target, "content stand-in (regex templates, in this process)"


async def run(size: int, step_batch: int | None, fake_content: bool, database: str,
              profile: bool = False, spy_dir: Path | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend(database, Path(tmp))
        db = open_db(backend)
        started = time.perf_counter()
        seed(db, size, timers=True)
        seeded = time.perf_counter() - started
        delivery = RecordingDelivery()
        async with AsyncExitStack() as stack:
            content_target, content_kind = await start_content(stack, backend, fake_content)
            delivery_target = await stack.enter_async_context(fake_server(
                delivery, delivery_grpc.add_DeliveryServiceServicer_to_server, free_port()))
            identity = SeededIdentity(seeded_email)
            identity_target = await stack.enter_async_context(fake_server(
                identity, identity_grpc.add_IdentityServiceServicer_to_server, free_port()))
            targets = {"CJO_CONTENT_TARGET": content_target,
                       "CJO_DELIVERY_TARGET": delivery_target,
                       "CJO_IDENTITY_TARGET": identity_target,
                       "CJO_ANALYTICS_TARGET": f"127.0.0.1:{free_port()}"}
            orchestrator = Orchestrator(
                backend, targets, Path(tmp), "bench",
                {"CJO_ORCHESTRATION_STEP_BATCH": str(step_batch or DEFAULT_STEP_BATCH),
                 "CJO_ORCHESTRATION_LEASE_SECONDS": "60",
                 "CJO_ORCHESTRATION_PEER_TIMEOUT_SECONDS": "10",
                 "CJO_LOG_LEVEL": "info"})
            pid = orchestrator.process.pid
            spy_path = spy_dir / f"orchestration-timers-{size}.txt" if spy_dir else None
            spy = None
            try:
                start = time.perf_counter()
                first_send = 0.0
                # CPU (orchestrator, this process) and sends at the first send seen.
                at_first = (0.0, 0.0, 0)
                # Every send reaches the sink before its enrollment can end; counting the sink
                # costs nothing, counting ended enrollments is a scan, so it waits till then.
                while len(delivery.attempts) < size or ended_count(db) < size:
                    if orchestrator.process.poll() is not None:
                        raise SystemExit(orchestrator.log.read_text()[-4000:])
                    if not first_send and delivery.attempts:
                        first_send = time.perf_counter()
                        at_first = (process_cpu(pid), _own_cpu(), len(delivery.attempts))
                        spy = start_py_spy(pid, spy_path) if spy_path else None
                    await asyncio.sleep(0.1 if len(delivery.attempts) >= size or not first_send
                                        else 0.25)
                end = time.perf_counter()
                at_end = (process_cpu(pid), _own_cpu())
                spied = stop_py_spy(spy, spy_path) if spy and spy_path else ""
                elapsed = end - start
                # Without the process's start (imports, migrations check, connections).
                drained = end - (first_send or start)
                peak = peak_rss_mib(orchestrator.process.pid)
            finally:
                orchestrator.stop()
        reads = profile_reads(orchestrator.log)
        duplicates = sum(n - 1 for n in delivery.attempts.values())
        assert len(delivery.messages) == size, (len(delivery.messages), size)
        print(f"{size:>7,} due timers: {size / elapsed:,.0f} firings/s end to end "
              f"({elapsed:.1f} s incl. process start; {size / drained:,.0f}/s from the first "
              f"send; seeded in {seeded:.1f} s), "
              f"orchestrator peak RSS {peak:.0f} MiB, duplicate send attempts {duplicates}, "
              f"step batch {step_batch or DEFAULT_STEP_BATCH}; {database}; {content_kind}, "
              f"sink delivery; "
              f"profile reads {reads.get('reads', 0):,} ({identity.calls:,} calls): "
              f"p50 {reads.get('p50_ms', float('nan'))} ms, "
              f"p90 {reads.get('p90_ms', float('nan'))} ms per round")
        if profile or spy_dir:
            fired = size - at_first[2]
            mine, ours = ((at_end[i] - at_first[i]) * 1000 / fired for i in (0, 1))
            print(f"{size:>7,} due timers: CPU per timer fired from the first send "
                  f"({fired:,} timers): orchestrator {mine:.3f} ms, this process (content, "
                  f"identity and delivery stand-ins) {ours:.3f} ms")
        if spied:
            print(f"{size:>7,} due timers: py-spy orchestrator ({spied})")
        db.dispose()
        drop_schemas(backend)


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def profile_reads(log: Path) -> dict[str, float]:
    """The step worker's summary of its profile reads, from the orchestrator's JSON log."""
    for line in reversed(log.read_text().splitlines()):
        if "latest profile reads" in line:
            try:
                return dict(json.loads(line))
            except ValueError:
                break
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["10000,100000"],
                        help="e.g. --sizes 10000 100000, or --sizes 10000,100000")
    parser.add_argument("--step-batch", type=int, default=None,
                        help="CJO_ORCHESTRATION_STEP_BATCH (default: the service's, 500)")
    parser.add_argument("--fake-content", action="store_true")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--profile", action="store_true",
                        help="CPU per timer fired, of the orchestrator and of this process")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", dest="spy_dir",
                        help="sample the orchestrator with py-spy into DIR (implies --profile)")
    args = parser.parse_args()
    if args.spy_dir:
        if not PY_SPY:
            parser.error("--py-spy needs py-spy (pip install py-spy)")
        args.spy_dir.mkdir(parents=True, exist_ok=True)
    if args.database == "postgresql" and not postgres_available():
        raise SystemExit("PostgreSQL is not listening on 127.0.0.1:5432")
    configure_logging("bench", fmt="console", level="error")
    for size in (int(s) for s in ",".join(args.sizes).split(",") if s):
        asyncio.run(run(size, args.step_batch, args.fake_content, args.database, args.profile,
                        args.spy_dir))


if __name__ == "__main__":
    main()
