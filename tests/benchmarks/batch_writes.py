"""CPU per row of the batch writes on the journey path that go through
``cjo_platform.db.insert_ignore`` / ``insert_on_conflict``: orchestration's new enrollments
(``insert_ignore`` with RETURNING, JSON and time columns) and analytics' message rows (the fold's
upsert), in batches as the step and fact rounds write them, in this process (no services).

    .venv/bin/python tests/benchmarks/batch_writes.py --backend all --rows 500 --batches 12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cjo_analytics.adapters import tables as analytics_tables
from cjo_analytics.adapters.repository import _fold_statement
from cjo_orchestration.adapters import tables as orchestration_tables
from cjo_platform.db import Database, insert_ignore, insert_on_conflict
from support import PG_URL

NOW = datetime.now(UTC)


def enrollment_rows(n: int) -> list[dict[str, Any]]:
    return [{
        "workspace_id": "w", "enrollment_id": uuid.uuid4().hex, "journey_id": "j",
        "journey_version": 1, "profile_id": uuid.uuid4().hex, "state": 1,
        "current_node_id": "send", "visits": {"send": 1}, "attempts": 0, "last_error": "",
        "step_count": 0, "due_time": NOW, "lease_until": NOW + timedelta(seconds=30),
        "lease_token": "token", "traits": {"email": "ann@example.com", "name": 'Ann "A"'},
        "properties": {"source": "web"}, "event_id": uuid.uuid4().hex, "entry_id": "e",
        "traceparent": f"00-{'1' * 32}-{'2' * 16}-01", "create_time": NOW, "update_time": NOW,
        "waiting": False, "exit_reason": "", "goal_deadline": None, "goal_time": None,
        "entry_properties": {"source": "web"}} for _ in range(n)]


def message_rows(n: int) -> list[dict[str, Any]]:
    return sorted(({
        "workspace_id": "w", "message_key": uuid.uuid4().hex, "journey_id": "j", "channel": 1,
        "content_key": "welcome", "variant": "", "sent_time": NOW, "delivered_time": None,
        "opened_time": None, "clicked_time": None, "bounced_time": None,
        "unsubscribed_time": None} for _ in range(n)), key=lambda row: row["message_key"])


def measure(db: Database, name: str, rows: Callable[[int], list[dict[str, Any]]],
            write: Callable[[Any, list[dict[str, Any]]], Any], size: int, batches: int) -> None:
    spent, written = 0.0, 0
    for n in range(batches + 2):
        batch = rows(size)
        started = time.process_time()
        with db.transaction() as session:
            write(session, batch)
        if n >= 2:  # the first two warm the caches up
            spent += time.process_time() - started
            written += size
    print(f"[{db.engine.dialect.name}] {name}: {spent / written * 1e6:.1f} us CPU per row "
          f"({batches} batches of {size}, each in its transaction, commit included)",
          flush=True)


def bench(url: str, size: int, batches: int) -> None:
    db = Database(url, schema=f"bench_writes_{uuid.uuid4().hex[:8]}")
    db.create_schema()
    for metadata in (orchestration_tables.metadata, analytics_tables.metadata):
        metadata.create_all(db.engine)
    enrollments, messages = orchestration_tables.enrollments, analytics_tables.messages
    fold = _fold_statement(db.engine.dialect.name)
    try:
        measure(db, "orchestration enrollments, insert_ignore + RETURNING", enrollment_rows,
                lambda s, rows: insert_ignore(s, enrollments, rows,
                                              returning=enrollments.c.enrollment_id),
                size, batches)
        measure(db, "analytics messages, the fold's upsert", message_rows,
                lambda s, rows: insert_on_conflict(s, messages, rows, fold), size, batches)
    finally:
        for metadata in (orchestration_tables.metadata, analytics_tables.metadata):
            metadata.drop_all(db.engine)
        if db.schema:
            with db.engine.begin() as connection:
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE')
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        for kind in (["sqlite", "postgresql"] if args.backend == "all" else [args.backend]):
            bench(f"sqlite:///{data}/writes.db" if kind == "sqlite" else PG_URL, args.rows,
                  args.batches)


if __name__ == "__main__":
    main()
