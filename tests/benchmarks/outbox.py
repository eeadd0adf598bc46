"""The outbox on its own: units of work that each publish one row to each of ``--topics`` topics
at ``--rate`` per second, forwarded by one running forwarder per topic to a receiver that only
records the rows. Prints, per unit of work, the database commits and statements of the writers
and forwarders together, the process's CPU ms, and p50 / p99 from the start of the unit of work
to its first topic's row at the receiver::

    make bench-outbox ARGS='--backend all --units 500 --rate 100'

What a single event pays at every outbox hop of the suite (identity's ingest publishes to three
topics), without the services around it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event

from cjo_platform.clock import SystemClock
from cjo_platform.db import Database
from cjo_platform.db.dead_letters import DeadLetters, define_dead_letters
from cjo_platform.db.outbox import Forwarder, Outbox, OutboxRow, define_outbox
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import PG_URL


async def measure(url: str, units: int, rate: float, topics: int) -> str:
    metadata = MetaData()
    outbox_table, letters_table = define_outbox(metadata), define_dead_letters(metadata)
    db = Database(url, schema="bench_outbox_" + uuid.uuid4().hex[:8])
    if not db.is_sqlite:
        db.create_schema()
    metadata.create_all(db.engine)
    counts = {"commits": 0, "statements": 0}

    @event.listens_for(db.engine, "commit")
    def committed(conn: Any) -> None:
        counts["commits"] += 1

    @event.listens_for(db.engine, "after_cursor_execute")
    def executed(*args: Any) -> None:
        counts["statements"] += 1

    clock = SystemClock()
    outbox = Outbox(outbox_table, clock, DeadLetters(letters_table, clock))
    transactions = Transactions(db, clock, outbox)
    names = [f"topic-{n}" for n in range(topics)]
    started: dict[bytes, float] = {}
    latencies: list[float] = []

    async def first_topic(workspace: str, rows: Sequence[OutboxRow]) -> None:
        now = time.monotonic()
        latencies.extend(now - started[row.payload] for row in rows)

    async def other_topic(workspace: str, rows: Sequence[OutboxRow]) -> None:
        return None

    forwarders = [Forwarder(db, outbox, name, first_topic if n == 0 else other_topic)
                  for n, name in enumerate(names)]
    tasks = [asyncio.create_task(f.run()) for f in forwarders]
    try:
        await asyncio.sleep(0.3)  # the forwarders' first (idle) rounds
        before, cpu = dict(counts), time.process_time()
        for n in range(units):
            payload = str(n).encode()

            def work(uow: UnitOfWork, payload: bytes = payload) -> None:
                for name in names:
                    uow.publish(name, "ws", [(payload, "")])

            started[payload] = time.monotonic()
            await transactions.run(work)
            await asyncio.sleep(1 / rate)
        while len(latencies) < units:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the delivered rows' deletes
        cpu = time.process_time() - cpu
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not db.is_sqlite:
            db.drop_schema()
        db.dispose()
    latencies.sort()
    per = {key: (counts[key] - before[key]) / units for key in counts}
    return (f"{db.engine.dialect.name:>10}  {per['commits']:7.2f}  {per['statements']:7.2f}  "
            f"{cpu / units * 1000:7.2f}  {latencies[units // 2] * 1000:7.1f}  "
            f"{latencies[min(units - 1, int(units * 0.99))] * 1000:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--topics", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.units} units of work at {args.rate:g}/s, one row to each of {args.topics} "
          "topics; per unit of work:")
    print(f"{'backend':>10}  {'commits':>7}  {'stmts':>7}  {'CPU ms':>7}  {'p50 ms':>7}  "
          f"{'p99 ms':>7}")
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    for backend in backends:
        url = (PG_URL if backend == "postgresql"
               else f"sqlite:///{tempfile.mkdtemp()}/outbox.db")
        print(asyncio.run(measure(url, args.units, args.rate, args.topics)), flush=True)


if __name__ == "__main__":
    main()
