"""Retention benchmark: how fast the retention worker drains a backlog of each kind, and whether
the inbox kind's batch query is served by the age column's index.

    .venv/bin/python tests/benchmarks/retention.py [--rows 100000] [--backend sqlite|postgresql]

Real schemas (each service's migrations), every row past its retention, 1,000 to a time (as a
batch writes them); the worker (batches of 1,000 per kind and transaction, no rest between
them: ``CJO_<SERVICE>_RETENTION_BUSY_PERCENT=100``) runs rounds until nothing is left:

- orchestration: ``--rows`` processed inbox events and as many request-log answers;
- orchestration: ``--rows`` steps of ``--rows / 5`` finished enrollments, whose copies of the
  person (traits, properties) are emptied by the enrollment_snapshots kind in the same rounds;
- delivery: ``--rows`` final messages whose rendered bodies (4.5 kB each) are blanked, the
  slowest kind (a rewrite: each row is read, decoded and written back).

Prints rows per second per scenario and, on PostgreSQL, the plan of the inbox kind's window (the
next 1,000 rows of a pass).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retention_support import NOW, ServiceDb, service_db
from sqlalchemy import text

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters.retention import RULES as DELIVERY_RULES
from cjo_delivery.adapters.tables import messages
from cjo_orchestration.adapters.retention import RULES as ORCHESTRATION_RULES
from cjo_orchestration.adapters.tables import enrollments, inbox, steps
from cjo_platform.config import Env
from cjo_platform.db.retention import Rule
from cjo_platform.logging import configure_logging
from support import Backend, drop_schemas, new_backend

OLD = NOW - timedelta(days=200)


async def drain(db: ServiceDb, rules: Sequence[Rule], days: dict[str, str]) -> tuple[dict[
        str, int], float, int]:
    """Rows removed per kind, seconds and rounds of a drain to the end."""
    prefix = f"CJO_{db.service.upper()}_RETENTION_"
    env = Env({prefix + "BUSY_PERCENT": "100",
               **{f"{prefix}{kind.upper()}_DAYS": n for kind, n in days.items()}})
    worker = db.storage.retention(env, db.service, rules)
    env.check()
    removed: dict[str, int] = {}
    started, rounds = time.perf_counter(), 1
    while True:
        more = await worker.run_once()
        assert not worker.retention.last.errors, worker.retention.last.errors
        for kind, n in worker.retention.last.removed.items():
            removed[kind] = removed.get(kind, 0) + n
        if not more:
            return removed, time.perf_counter() - started, rounds
        rounds += 1


def report(backend: Backend, what: str, removed: dict[str, int], took: float,
           rounds: int) -> None:
    total = sum(removed.values())
    kinds = ", ".join(f"{k} {n:,}" for k, n in removed.items() if n)
    print(f"{backend.kind}: {what}: {total:,} rows ({kinds}) in {took:.1f} s, {rounds} rounds: "
          f"{total / took:,.0f} rows/s")


async def inbox_and_request_log(backend: Backend, rows: int) -> None:
    with service_db("orchestration", backend) as db:
        requests = db.storage.requests.table
        with db.storage.db.transaction() as session:
            session.execute(inbox.insert(), [
                {"workspace_id": "w1", "event_id": f"e{i}", "profile_id": "p",
                 "event_name": "", "properties": {}, "traits": {}, "traceparent": "",
                 "receive_time": OLD + timedelta(seconds=i // 1000), "processed": True,
                 "attempts": 0, "last_error": ""}
                for i in range(rows)])
            session.execute(requests.insert(), [
                {"workspace_id": "w1", "method": "/m", "request_id": f"r{i}",
                 "request_hash": "h", "response": b"",
                 "create_time": OLD + timedelta(seconds=i // 1000)}
                for i in range(rows)])
        if backend.kind == "postgresql":
            with db.storage.db.transaction() as session:
                session.execute(text("ANALYZE"))
                plan = session.execute(text(
                    "EXPLAIN SELECT receive_time, seq FROM inbox WHERE receive_time < now()"
                    " AND processed ORDER BY receive_time, seq LIMIT 1000")).scalars()
                print("inbox window query plan:\n  " + "\n  ".join(plan))
        report(backend, "inbox + request log",
               *await drain(db, ORCHESTRATION_RULES, {"steps": "0",
                                                      "enrollment_snapshots": "0"}))


async def steps_of_finished_enrollments(backend: Backend, rows: int) -> None:
    with service_db("orchestration", backend) as db:
        with db.storage.db.transaction() as session:
            session.execute(enrollments.insert(), [
                {"workspace_id": "w1", "enrollment_id": f"n{i}", "journey_id": "j",
                 "journey_version": 1, "profile_id": f"p{i}", "state": "completed",
                 "current_node_id": "", "visits": {}, "attempts": 0, "last_error": "",
                 "step_count": 5, "traits": {"email": "ada@example.com", "first_name": "Ada"},
                 "properties": {"order_id": f"o{i}"}, "entry_properties": {"order_id": f"o{i}"},
                 "event_id": "", "traceparent": "", "entry_id": "", "waiting": False,
                 "exit_reason": "completed", "create_time": OLD,
                 "update_time": OLD + timedelta(seconds=i // 1000)}
                for i in range(rows // 5)])
            session.execute(steps.insert(), [
                {"workspace_id": "w1", "enrollment_id": f"n{i // 5}", "step_number": i % 5,
                 "node_id": "n", "visit": 1, "outcome": "succeeded", "detail": "",
                 "time": OLD + timedelta(seconds=i // 1000)}
                for i in range(rows)])
            if backend.kind == "postgresql":
                session.execute(text("ANALYZE"))
        report(backend, "steps + enrollment snapshots",
               *await drain(db, ORCHESTRATION_RULES, {"inbox": "0"}))


async def message_bodies(backend: Backend, rows: int) -> None:
    rendered = common_pb2.RenderedMessage()
    rendered.email.subject = "Welcome"
    rendered.email.html = "<p>" + "x" * 3000 + "</p>"
    rendered.email.text = "x" * 1500
    content = rendered.SerializeToString()
    with service_db("delivery", backend) as db:
        with db.storage.db.transaction() as session:
            session.execute(messages.insert(), [
                {"workspace_id": "w1", "message_id": f"m{i}", "idempotency_key": f"k{i}",
                 "profile_id": "p", "address": "ada@example.com", "channel": "email",
                 "content": content, "journey_id": "", "enrollment_id": "", "status": "sent",
                 "attempts": 1, "error": "", "provider_message_id": "", "traceparent": "",
                 "create_time": OLD + timedelta(seconds=i // 1000), "update_time": OLD}
                for i in range(rows)])
            if backend.kind == "postgresql":
                session.execute(text("ANALYZE"))
        report(backend, "message bodies",
               *await drain(db, DELIVERY_RULES, {"inbox_messages": "0"}))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    configure_logging("benchmark", level="warning")
    backend = new_backend(args.backend, Path(tempfile.mkdtemp()))
    try:
        for scenario in (inbox_and_request_log, steps_of_finished_enrollments, message_bodies):
            await scenario(backend, args.rows)
    finally:
        drop_schemas(backend)


if __name__ == "__main__":
    asyncio.run(main())
