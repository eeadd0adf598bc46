"""Orchestration benchmark: N enrollments whose timers all fall due at once, drained end to end
by one `python -m cjo_orchestration` process (timer fires -> render -> send).

    .venv/bin/python tests/benchmarks/orchestration.py [--sizes 10000,100000]
                                                       [--step-batch 100] [--fake-content]

For each size, a fresh SQLite database is seeded with a published journey (wait 1 h -> send an
email -> exit) and N enrollments parked at the wait whose timers are all due. Content is the real
content service in this process (the item created and published through its API), unless
--fake-content or it cannot start; delivery is an in-process sink that accepts and counts each
idempotency key (no provider). Prints timer firings/s from the orchestrator's start to the last
enrollment ended, and the orchestrator process's peak resident memory (VmHWM): it must not grow
with N, because workers claim bounded batches.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestration"))

from orchestration_support import FakeContent, fake_server
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
from cjo_platform.config import Env
from cjo_platform.logging import configure_logging
from support import as_service, free_port, new_backend, serving, settings_for


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


async def run(size: int, step_batch: int, fake_content: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend("sqlite", Path(tmp))
        db = open_db(backend)
        started = time.perf_counter()
        seed(db, size, timers=True)
        seeded = time.perf_counter() - started
        delivery = RecordingDelivery()
        async with AsyncExitStack() as stack:
            content_target, content_kind = await start_content(stack, backend, fake_content)
            delivery_target = await stack.enter_async_context(fake_server(
                delivery, delivery_grpc.add_DeliveryServiceServicer_to_server, free_port()))
            targets = {"CJO_CONTENT_TARGET": content_target,
                       "CJO_DELIVERY_TARGET": delivery_target,
                       "CJO_ANALYTICS_TARGET": f"127.0.0.1:{free_port()}"}
            orchestrator = Orchestrator(
                backend, targets, Path(tmp), "bench",
                {"CJO_ORCHESTRATION_STEP_BATCH": str(step_batch),
                 "CJO_ORCHESTRATION_LEASE_SECONDS": "60",
                 "CJO_ORCHESTRATION_PEER_TIMEOUT_SECONDS": "10"})
            try:
                start = time.perf_counter()
                while ended_count(db) < size:
                    if orchestrator.process.poll() is not None:
                        raise SystemExit(orchestrator.log.read_text()[-4000:])
                    await asyncio.sleep(0.25)
                elapsed = time.perf_counter() - start
                peak = peak_rss_mib(orchestrator.process.pid)
            finally:
                orchestrator.stop()
        duplicates = sum(n - 1 for n in delivery.attempts.values())
        assert len(delivery.messages) == size, (len(delivery.messages), size)
        print(f"{size:>7,} due timers: {size / elapsed:,.0f} firings/s end to end "
              f"({elapsed:.1f} s incl. process start; seeded in {seeded:.1f} s), "
              f"orchestrator peak RSS {peak:.0f} MiB, duplicate send attempts {duplicates}, "
              f"step batch {step_batch}; {content_kind}, sink delivery")
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--step-batch", type=int, default=100)
    parser.add_argument("--fake-content", action="store_true")
    args = parser.parse_args()
    configure_logging("bench", fmt="console", level="error")
    for size in (int(s) for s in args.sizes.split(",")):
        asyncio.run(run(size, args.step_batch, args.fake_content))


if __name__ == "__main__":
    main()
