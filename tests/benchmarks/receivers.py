"""`make bench-receivers`: the receivers of identity's events, in process: CPU per event of a
500-event batch (what identity's forwarder sends per call, its outbox `batch_size`, for each
1,000-event ingest batch) in orchestration's `HandleEvents` and decisioning's `RecordEvents`,
called on the servicers as the forwarder's call reaches them (the batch's validation, parsing,
the use-case's transaction), without gRPC.

    .venv/bin/python tests/benchmarks/receivers.py [--backend sqlite|postgresql] [--batches 10]

Track events of known people, as `throughput.py`'s ingest sends them (a changing first name,
two string properties), no journey listening and no decision point rewarding them. Prints
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
from google.protobuf import timestamp_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import decisioning_service_pb2
from cjo.identity.v1 import consent_pb2, event_pb2
from cjo.orchestration.v1 import orchestration_service_pb2
from cjo_decisioning.bootstrap import build as build_decisioning
from cjo_orchestration.bootstrap import build as build_orchestration
from cjo_platform.config import Env
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.auth import acting_for
from support import drop_schemas, new_backend, settings_for

BATCH = 500  # the outbox forwarder's batch_size; also orchestration's EVENT_BATCH
TRACEPARENT = f"00-{'a' * 32}-{'b' * 16}-01"


def forwarded(n: int) -> orchestration_service_pb2.ForwardedEvent:
    person = f"p_{n % 5000:08d}"
    traits = {"email": f"{person}@example.com", "first_name": f"N{n}"}
    identifiers = [event_pb2.Identifier(type="user_id", value=person)]
    item = orchestration_service_pb2.ForwardedEvent(
        event_id=f"ev_{n:012d}", profile_id=person, traceparent=TRACEPARENT,
        event=event_pb2.Event(
            message_id=f"m{n}", type=event_pb2.EVENT_TYPE_TRACK, name="page_viewed",
            identifiers=identifiers, traits=dict_to_struct(traits),
            properties=dict_to_struct({"path": f"/p/{n % 50}", "plan": "pro"}),
            timestamp=timestamp_pb2.Timestamp(seconds=1_796_000_000 + n), source="bench",
            profile_id=person),
        profile_traits=dict_to_struct(traits),
        consents=[consent_pb2.Consent(
            channel=common_pb2.CHANNEL_EMAIL, topic="news", source="web",
            state=consent_pb2.CONSENT_STATE_SUBSCRIBED,
            update_time=timestamp_pb2.Timestamp(seconds=1_790_000_000))],
        identifiers=identifiers)
    item.computed_traits.SetInParent()  # identity sets it, empty or not
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
        servicer = orchestration.servicers[0].instance
        await per_event(f"{kind} orchestration HandleEvents",
                        "/cjo.orchestration.v1.OrchestrationService/HandleEvents",
                        servicer.HandleEvents,
                        lambda e: orchestration_service_pb2.HandleEventsRequest(events=e),
                        batches)
        servicer = decisioning.servicers[0].instance
        await per_event(f"{kind} decisioning RecordEvents",
                        "/cjo.decisioning.v1.DecisioningService/RecordEvents",
                        servicer.RecordEvents,
                        lambda e: decisioning_service_pb2.RecordEventsRequest(events=e),
                        batches)
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
