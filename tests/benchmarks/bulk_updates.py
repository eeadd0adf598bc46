"""Cost of one ``cjo_platform.db.bulk_update`` of a 500-row batch on PostgreSQL by the table's
size: orchestration's step round recording its enrollments (``save_progress``: keys only) and
delivery's send round recording its outcomes (a compared claim number and a fixed status, as
``record_outcomes``), in tables of the services' schemas filled to each size, analyzed or not.

    .venv/bin/python tests/benchmarks/bulk_updates.py --sizes 1000 50000 300000 --fresh 50000 \\
        [--before <another bulk.py>] [--plans]

Each round updates a batch spread over the table (in key order, as callers sort it) in a
transaction it then rolls back, so every round finds the same rows. Prints, per table and size,
the median over ``--rounds`` of the wall time, this process's CPU and the server backend's CPU
(/proc/<pid>/schedstat, PostgreSQL on this machine) per batch, and the plan's join. ``--before``
measures another bulk.py (``git show main:libs/cjo_platform/db/bulk.py > /tmp/bulk_main.py``)
alongside, round for round in the same process, so both see the same machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Column, Integer, MetaData, PrimaryKeyConstraint, String, Table, text
from sqlalchemy.orm import Session

from cjo_delivery.adapters.tables import messages
from cjo_orchestration.adapters.tables import enrollments
from cjo_platform.db import Database, bulk_update
from support import PG_URL

NOW = datetime(2026, 3, 1, tzinfo=UTC)
BATCH = 500
WORKSPACES = 4

Update = Callable[..., int]

# A narrow table (few pages for its rows: a seq scan looks cheap to the planner for longer).
items = Table(
    "items", MetaData(),
    Column("workspace_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("label", String(64), nullable=False),
    PrimaryKeyConstraint("workspace_id", "item_id"),
)

FILL = {
    "enrollments": """INSERT INTO enrollments (workspace_id, enrollment_id, journey_id,
        journey_version, profile_id, state, current_node_id, visits, attempts, last_error,
        step_count, due_time, traits, properties, event_id, traceparent, create_time,
        update_time, entry_id, waiting, exit_reason, entry_properties)
        SELECT 'w' || (i % 4), 'en' || lpad(i::text, 8, '0'), 'j1', 1, 'p' || i, 'active',
        'wait', '{"wait": 1}', 0, '', 2, :now, '{"email": "ann@example.com"}',
        '{"source": "web"}', 'e' || i, '', :now, :now, 'e' || i, true, '', '{}'
        FROM generate_series(1, :size) AS i""",
    "messages": """INSERT INTO messages (workspace_id, message_id, idempotency_key,
        profile_id, address, channel, content, journey_id, enrollment_id, status, attempts,
        error, provider_message_id, lease_until, traceparent, create_time, update_time)
        SELECT 'w' || (i % 4), 'm' || lpad(i::text, 8, '0'), 'k' || i, 'p' || i,
        'p' || i || '@example.com', 'email', '\\x0a0568656c6c6f'::bytea, 'j1', 'en' || i,
        CASE WHEN i % :every = 0 THEN 'sending' ELSE 'sent' END, 1, '', '', :now, '', :now,
        :now FROM generate_series(1, :size) AS i""",
    "items": """INSERT INTO items SELECT 'w' || (i % 4), 'it' || lpad(i::text, 8, '0'), 'sending',
        1, 'old' FROM generate_series(1, :size) AS i""",
}


def enrollment_batch(keys: Sequence[tuple[str, str]]) -> tuple[list[dict[str, Any]],
                                                               dict[str, Any]]:
    """The rows a step round records for enrollments parked at a wait whose timer fired."""
    return [{"workspace_id": w, "enrollment_id": e, "state": "active",
             "current_node_id": "send", "visits": {"wait": 1, "send": 1}, "attempts": 0,
             "last_error": "", "step_count": 3, "due_time": NOW + timedelta(days=1),
             "update_time": NOW, "waiting": False, "exit_reason": "", "wait_deadline": None,
             "lease_until": None, "lease_token": None} for w, e in keys], {}


def message_batch(keys: Sequence[tuple[str, str]]) -> tuple[list[dict[str, Any]],
                                                            dict[str, Any]]:
    """The rows a send round records for messages the provider accepted."""
    return [{"workspace_id": w, "message_id": m, "claim_attempts": 1, "status": "sent",
             "attempts": 1, "next_attempt_time": None, "lease_until": None,
             "provider_message_id": f"pm-{m}", "provider_id": "smtp", "update_time": NOW,
             "sent_time": NOW} for w, m in keys], {
        "match": {"claim_attempts": "attempts"}, "where": {"status": "sending"}}


def item_batch(keys: Sequence[tuple[str, str]]) -> tuple[list[dict[str, Any]],
                                                         dict[str, Any]]:
    """A label and a state for each, compared and conditioned as delivery's outcomes are."""
    return [{"workspace_id": w, "item_id": i, "was": 1, "state": "sent", "label": "new"}
            for w, i in keys], {"match": {"was": "attempts"}, "where": {"state": "sending"}}


CASES: dict[str, tuple[Table, str, Callable[..., Any]]] = {
    "enrollments": (enrollments, "en", enrollment_batch),
    "messages": (messages, "m", message_batch),
    "items": (items, "it", item_batch),
}


def backend_cpu(pid: int) -> float:
    """The server backend's CPU time so far, in seconds (it runs on this machine)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def fill(db: Database, table: Table, size: int, analyze: bool) -> list[tuple[str, str]]:
    """``size`` rows in ``table`` (recreated); returns the keys of a batch spread over them."""
    every = max(1, size // BATCH)
    with db.transaction() as session:
        session.execute(text(f"DROP TABLE IF EXISTS {table.name}"))
    table.create(db.engine)
    with db.transaction() as session:
        if not analyze:  # as a new table is until autovacuum's first pass
            session.execute(text(f"ALTER TABLE {table.name} SET (autovacuum_enabled = false)"))
        session.execute(text(FILL[table.name]), {"size": size, "now": NOW, "every": every})
    if analyze:
        with db.transaction() as session:
            session.execute(text(f"ANALYZE {table.name}"))
    prefix = CASES[table.name][1]
    keys = [(f"w{i % WORKSPACES}", f"{prefix}{i:08d}") for i in range(every, size + 1, every)]
    return sorted(keys[:BATCH])


def join_of(plan: Sequence[str]) -> str:
    """The plan's join and how it reads the table, in a few words."""
    nodes = [line.strip().removeprefix("->  ").split("  (")[0] for line in plan]
    return " / ".join(n for n in nodes if any(
        w in n for w in ("Join", "Nested Loop", "Scan on", "Scan using", "Materialize")))


def measure(db: Database, update: Update, table: Table, rows: list[dict[str, Any]],
            options: dict[str, Any]) -> tuple[float, float, float]:
    """One round: (wall, client CPU, backend CPU) in ms; rolled back."""
    with db.engine.connect() as connection:
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        session = Session(bind=connection)
        with session.begin():
            session.connection()
            server, client, wall = backend_cpu(pid), time.process_time(), time.perf_counter()
            updated = update(session, table, ("workspace_id", table.c[1].key), rows, **options)
            wall, client = time.perf_counter() - wall, time.process_time() - client
            server = backend_cpu(pid) - server
            assert updated == len(rows), (updated, len(rows))
            session.rollback()
    return wall * 1e3, client * 1e3, server * 1e3


def explain(db: Database, update: Update, table: Table, rows: list[dict[str, Any]],
            options: dict[str, Any]) -> list[str]:
    statements: list[tuple[str, Any]] = []
    with db.engine.connect() as connection:
        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if statement.startswith("UPDATE"):
                statements.append((statement, parameters))

        from sqlalchemy import event
        event.listen(connection, "before_cursor_execute", capture)
        session = Session(bind=connection)
        with session.begin():
            update(session, table, ("workspace_id", table.c[1].key), rows, **options)
            session.rollback()
        event.remove(connection, "before_cursor_execute", capture)
        [(statement, parameters)] = statements
        with session.begin():
            cursor = connection.connection.driver_connection.cursor()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = [row[0] for row in cursor.fetchall()]
            session.rollback()
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 50_000, 300_000])
    parser.add_argument("--fresh", type=int, nargs="*", default=[50_000],
                        help="sizes also measured on a table never analyzed")
    parser.add_argument("--tables", nargs="*", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--before", type=Path, help="another bulk.py to measure alongside")
    parser.add_argument("--plans", action="store_true", help="print each whole plan")
    args = parser.parse_args()
    variants: dict[str, Update] = {"after": bulk_update}
    if args.before:
        spec = importlib.util.spec_from_file_location("bulk_before", args.before)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        variants = {"before": module.bulk_update, "after": bulk_update}
    db = Database(PG_URL, schema=f"bench_bulk_updates_{int(time.time())}")
    db.create_schema()
    try:
        print(f"| table | rows | statistics | {' | '.join(variants)} "
              "(ms per batch of 500: wall / client CPU / backend CPU, median) | plans |")
        print("|---|---|---|" + "---|" * len(variants) + "---|")
        for name in args.tables:
            table, _, batch = CASES[name]
            for size, analyzed in [*((s, True) for s in args.sizes),
                                   *((s, False) for s in args.fresh)]:
                rows, options = batch(fill(db, table, size, analyzed))
                figures: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
                for _ in range(args.rounds):
                    for variant, update in variants.items():
                        figures[variant].append(measure(db, update, table, rows, options))
                plans = {v: explain(db, u, table, rows, options) for v, u in variants.items()}
                cells = [" / ".join(f"{statistics.median(f[i] for f in figures[v]):.1f}"
                                    for i in range(3)) for v in variants]
                print(f"| {name} | {size:,} | {'analyzed' if analyzed else 'never'} | "
                      + " | ".join(cells) + " | "
                      + "; ".join(f"{v}: {join_of(p)}" for v, p in plans.items()) + " |",
                      flush=True)
                if args.plans:
                    for variant, plan in plans.items():
                        print(f"{variant}:\n  " + "\n  ".join(plan))
    finally:
        with db.transaction() as session:
            session.execute(text(f'DROP SCHEMA "{db.schema}" CASCADE'))
        db.dispose()


if __name__ == "__main__":
    main()
