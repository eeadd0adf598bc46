"""What one 1,000-event batch costs in identity's process, without gRPC: CPU per event of
the request's parse (the shared item checks and ``event_from_proto``, as ``IngestEvents``
runs them) and of ``ingest_events`` (the transaction, its outbox rows included), the
throughput benchmark's ingest scenario in process.

    make bench-ingest_batches ARGS='--batches 20 --backend both'

A warm workspace of 5,000 profiles; each event is a known person's track event whose
``first_name`` trait changes (and an email trait, which links), two properties. CPU is the
process's (all threads; the collector set as in every service), so the figure holds on a busy
machine where wall-clock times do not; the median batch is printed, and the best. Run it with
another checkout's interpreter for that code's figures in the same sitting.
PostgreSQL (127.0.0.1:5432, database ``test``) runs in a schema of its own, dropped first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_groups import TRACE, backends, close_db, open_db
from throughput import BATCH, track

from cjo.identity.v1 import identity_service_pb2
from cjo_identity.adapters.tables import metadata, outbox, request_log
from cjo_identity.api.convert import event_from_proto
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest
from cjo_platform.clock import ManualClock
from cjo_platform.collector import collect_rarely
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.rpc.batch import BatchAnswer

START = datetime(2026, 1, 1, tzinfo=UTC)
PEOPLE = 5000


def request(first: int, run: str) -> bytes:
    data: bytes = identity_service_pb2.IngestEventsRequest(
        events=[track(i, "page_viewed", PEOPLE, run) for i in range(first, first + BATCH)]
    ).SerializeToString()
    return data


async def bench(kind: str, batches: int) -> None:
    db = open_db(kind)
    metadata.create_all(db.engine)
    clock = ManualClock(START)
    tx = Transactions(db, clock, Outbox(outbox, clock), RequestLog(request_log, clock))
    settings = IdentitySettings()

    async def send(data: bytes) -> tuple[float, float]:
        """The CPU seconds of the parse and of the transaction."""
        started = time.process_time()
        req = identity_service_pb2.IngestEventsRequest.FromString(data)
        answer = BatchAnswer(req.events, "events", "identity.cjo",
                             identity_service_pb2.IngestEventResult)
        parsed = answer.parse(partial(event_from_proto, now=clock.now(), settings=settings))
        assert len(parsed) == BATCH
        parse_done = time.process_time()
        await ingest.ingest_events(tx, "ws", [e for _, e in parsed], settings, TRACE)
        return parse_done - started, time.process_time() - parse_done

    for start in range(0, PEOPLE, BATCH):  # every person known, once
        await send(request(start, "warm"))
    requests = [request(b * BATCH, f"run{b}") for b in range(batches)]
    clock.advance(timedelta(minutes=1))
    took: list[tuple[float, float]] = []
    for data in requests:
        clock.advance(timedelta(seconds=1))
        took.append(await send(data))
        with db.engine.begin() as conn:  # the forwarders' share is not measured here
            conn.execute(outbox.delete())
    # The median batch: a busy machine's other work lands in a few of them.
    parse, apply = (median(t[n] for t in took) * 1000 / BATCH for n in (0, 1))
    best = min(p + a for p, a in took) * 1000 / BATCH
    print(f"[{kind}] {batches} batches of {BATCH}: CPU per event, median batch "
          f"{parse + apply:.4f} ms (parse {parse:.4f}, ingest_events {apply:.4f}); "
          f"best batch {best:.4f} ms", flush=True)
    close_db(kind, db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="measured batches")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    collect_rarely()  # as every service process does
    for kind in backends(args.backend):
        asyncio.run(bench(kind, args.batches))


if __name__ == "__main__":
    main()
