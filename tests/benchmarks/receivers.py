"""`make bench-receivers`: the receivers of identity's events, in process: CPU per event of a
500-event batch (what identity's forwarder sends per call, its outbox `batch_size`, for each
1,000-event ingest batch) in orchestration's `HandleEvents` and decisioning's `RecordEvents`,
called on the servicers as the forwarder's call reaches them (the batch's validation, parsing,
the use-case's transaction), without gRPC.

    .venv/bin/python tests/benchmarks/receivers.py [--backend sqlite|postgresql] [--batches 10]

Forwarded track events (`validation.py`'s forwarded event: strings, one consent, two
identifiers), no journey listening and no decision point rewarding them. Prints
microseconds of CPU (time.process_time: holds on a busy machine) per event, the best of the
batches, each a batch of new events. Run another checkout's copy with its own interpreter for
that code's figures in the same sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from validation import forwarded_signup

from cjo.decisioning.v1 import decisioning_service_pb2
from cjo.orchestration.v1 import orchestration_service_pb2
from cjo_decisioning.bootstrap import build as build_decisioning
from cjo_orchestration.bootstrap import build as build_orchestration
from cjo_platform.config import Env
from cjo_platform.rpc.auth import acting_for
from support import drop_schemas, new_backend, settings_for

BATCH = 500  # the outbox forwarder's batch_size; also orchestration's EVENT_BATCH


def forwarded(n: int) -> orchestration_service_pb2.ForwardedEvent:
    """The validation benchmark's forwarded event, under a name no journey listens to."""
    item = forwarded_signup(n)
    item.event.name = "page_viewed"
    return item


class Context:
    """What the servicers read of a gRPC context here (nothing)."""

    def invocation_metadata(self) -> tuple[()]:
        return ()


async def per_event(label: str, method: str, call: Callable[[Any, Any], Awaitable[Any]],
                    request: Callable[[list[Any]], Any], batches: int) -> None:
    numbers = iter(range(10**9))
    best = float("inf")
    for round_ in range(batches + 2):  # two warm-up batches
        events = [forwarded(next(numbers)) for _ in range(BATCH)]
        # As the forwarder sends it: the request decoded from its bytes.
        message = request(events)
        message = type(message).FromString(message.SerializeToString())
        start = time.process_time()
        with acting_for("ws", method):
            await call(message, Context())
        spent = time.process_time() - start
        if round_ >= 2:
            best = min(best, spent / BATCH)
    print(f"{label}: {best * 1e6:.1f} us CPU per event (best of {batches} x {BATCH:,})",
          flush=True)


async def main_async(kind: str, batches: int, tmp: Path) -> None:
    backend = new_backend(kind, tmp)
    try:
        orchestration = build_orchestration(settings_for("orchestration", backend), Env({}))
        decisioning = build_decisioning(settings_for("decisioning", backend), Env({}))
        for app in (orchestration, decisioning):
            app.migrate()
        receivers = [
            ("orchestration HandleEvents", orchestration,
             "/cjo.orchestration.v1.OrchestrationService/HandleEvents", "HandleEvents",
             orchestration_service_pb2.HandleEventsRequest),
            ("decisioning RecordEvents", decisioning,
             "/cjo.decisioning.v1.DecisioningService/RecordEvents", "RecordEvents",
             decisioning_service_pb2.RecordEventsRequest)]
        for label, app, method, name, request in receivers:
            call = getattr(app.servicers[0].instance, name)
            await per_event(f"{kind} {label}", method, call,
                            lambda e, r=request: r(events=e), batches)
        for app in (orchestration, decisioning):
            app.db.dispose()
    finally:
        drop_schemas(backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main_async(args.backend, args.batches, Path(tmp)))


if __name__ == "__main__":
    main()
