"""What one ingest transaction costs in identity's process, without gRPC: CPU per event of
``ingest_events`` for groups of N events (a group commit of N single-event calls).

    make bench-ingest_groups ARGS='--sizes 1,25,1000 --backend both'

A warm workspace of 2,500 profiles; each event is a known person's track event with two traits
(an email, which links, and a changing first name), the shape of the throughput benchmark's
single-event calls. Prints the statements sent per group too. CPU is the process's (all
threads: the database thread pool included), so the figure holds on a busy machine where
wall-clock times do not. PostgreSQL (127.0.0.1:5432,
database ``test``) runs in a schema of its own, dropped first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cjo_identity.adapters.tables import metadata, outbox, request_log
from cjo_identity.domain.events import Event, EventType, parse_event
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer import ingest
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from support import postgres_available

START = datetime(2026, 1, 1, tzinfo=UTC)
LATER = START + timedelta(minutes=1)
PEOPLE = 2500
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "bench_ingest_groups"
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def event(i: int, run: str, at: datetime = START) -> Event:
    user = f"u{i % PEOPLE}"
    return parse_event(message_id=f"{run}-{i}", event_type=EventType.TRACK, name="page_viewed",
                       identifiers=(("user_id", user),),
                       properties={"path": f"/p/{i % 50}", "plan": "pro"},
                       traits={"email": f"{user}@example.com", "first_name": f"N{i}"},
                       timestamp=at, source="bench", now=at)


def open_db(kind: str) -> Database:
    if kind == "sqlite":
        return Database(f"sqlite:///{tempfile.mkdtemp()}/identity.db")
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    engine.dispose()
    return Database(PG_URL, schema=SCHEMA)


async def bench(kind: str, sizes: list[int], events: int) -> None:
    db = open_db(kind)
    metadata.create_all(db.engine)
    clock = ManualClock(START)
    tx = Transactions(db, clock, Outbox(outbox, clock), RequestLog(request_log, clock))
    settings = IdentitySettings()
    for start in range(0, PEOPLE, 500):
        await ingest.ingest_events(tx, "ws", [event(i, "warm") for i in range(start, start + 500)],
                                   settings, TRACE)
    sent = 0
    statements = [0]

    def count(*_: object) -> None:
        statements[0] += 1

    sa.event.listen(db.engine, "before_cursor_execute", count)
    for size in sizes:
        groups = max(1, events // size)
        statements[0] = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for g in range(groups):
            # Later than the warm-up's: no edge moves, as for a known person's next event.
            batch = [event(sent + g * size + i, "run", LATER) for i in range(size)]
            await ingest.ingest_events(tx, "ws", batch, settings, [TRACE] * size)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sent += groups * size
        print(f"[{kind}] groups of {size:>5}: {cpu * 1000 / (groups * size):.3f} ms CPU per "
              f"event, {cpu * 1000 / groups:.2f} ms per group ({groups} groups, wall "
              f"{wall * 1000 / groups:.2f} ms per group; {statements[0] / groups:.1f} statements "
              f"per group)", flush=True)
    sa.event.remove(db.engine, "before_cursor_execute", count)
    close_db(kind, db)


def close_db(kind: str, db: Database) -> None:
    """Drop what :func:`open_db` made (PostgreSQL's schema) and close the engine."""
    if kind == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    db.dispose()


def backends(choice: str) -> list[str]:
    """The databases of ``--backend`` (sqlite, postgresql or both) that can run here."""
    found = []
    for kind in ["sqlite", "postgresql"] if choice == "both" else [choice]:
        if kind == "postgresql" and not postgres_available():
            print("[postgresql] skipped: nothing listens on 127.0.0.1:5432")
            continue
        found.append(kind)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,25,1000",
                        help="events per group (transaction), comma-separated")
    parser.add_argument("--events", type=int, default=2500, help="events per size")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for kind in backends(args.backend):
        asyncio.run(bench(kind, sizes, args.events))


if __name__ == "__main__":
    main()
