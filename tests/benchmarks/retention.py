"""Retention benchmark: how fast the retention worker drains a backlog, and whether its batch
query is served by the age column's index.

    .venv/bin/python tests/benchmarks/retention.py [--rows 100000] [--backend sqlite|postgresql]

Orchestration's real schema (its migrations) gets ``--rows`` processed inbox events and as many
request-log answers, all past their retention, 1,000 to a time (as a batch writes them); the
worker (batches of 1,000 per kind and transaction) runs rounds until nothing is left. Prints
rows per second and, on PostgreSQL, the plan of the inbox kind's window (the next 1,000 rows of
a pass).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retention_support import NOW, service_db
from sqlalchemy import text

from cjo_orchestration.adapters.retention import RULES
from cjo_orchestration.adapters.tables import inbox
from cjo_platform.config import Env
from cjo_platform.logging import configure_logging
from support import drop_schemas, new_backend


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    configure_logging("benchmark", level="warning")
    backend = new_backend(args.backend, Path(tempfile.mkdtemp()))
    try:
        with service_db("orchestration", backend) as db:
            old = NOW - timedelta(days=10)
            requests = db.storage.requests.table
            with db.storage.db.transaction() as session:
                session.execute(inbox.insert(), [
                    {"workspace_id": "w1", "event_id": f"e{i}", "profile_id": "p",
                     "event_name": "", "properties": {}, "traits": {}, "traceparent": "",
                     "receive_time": old + timedelta(seconds=i // 1000), "processed": True,
                     "attempts": 0, "last_error": ""}
                    for i in range(args.rows)])
                session.execute(requests.insert(), [
                    {"workspace_id": "w1", "method": "/m", "request_id": f"r{i}",
                     "request_hash": "h", "response": b"",
                     "create_time": old + timedelta(seconds=i // 1000)}
                    for i in range(args.rows)])
            if args.backend == "postgresql":
                with db.storage.db.transaction() as session:
                    session.execute(text("ANALYZE"))
                    plan = session.execute(text(
                        "EXPLAIN SELECT receive_time, seq FROM inbox WHERE receive_time < now()"
                        " AND processed ORDER BY receive_time, seq LIMIT 1000")).scalars()
                    print("inbox window query plan:\n  " + "\n  ".join(plan))
            worker = db.storage.retention(
                Env({"CJO_ORCHESTRATION_RETENTION_STEPS_DAYS": "0"}), "orchestration", RULES)
            started, rounds = time.perf_counter(), 1
            while await worker.run_once():
                rounds += 1
            took = time.perf_counter() - started
            print(f"{args.backend}: {2 * args.rows:,} rows (inbox + request log) removed in "
                  f"{took:.1f} s, {rounds} rounds: {2 * args.rows / took:,.0f} rows/s")
    finally:
        drop_schemas(backend)


if __name__ == "__main__":
    asyncio.run(main())
