"""The outbox on its own: units of work that each publish ``--rows`` rows (one by default) to each
of ``--topics`` topics at ``--rate`` per second, forwarded by one running forwarder per topic to a
receiver that only records the rows. Prints, per unit of work, the database commits and
statements of the writers and forwarders together, the process's CPU ms, p50 / p99 from the
start of the unit of work to its first topic's rows at the receiver, and the CPU per row::

    make bench-outbox ARGS='--backend all --units 500 --rate 100'
    make bench-outbox ARGS='--units 100 --rate 20 --rows 100'   # batches of 100 rows per topic

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


async def measure(url: str, units: int, rate: float, topics: int, rows: int) -> str:
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
            payloads = [f"{n}-{k}".encode() for k in range(rows)]

            def work(uow: UnitOfWork, payloads: list[bytes] = payloads) -> None:
                for name in names:
                    uow.publish(name, "ws", [(payload, "") for payload in payloads])

            started.update(dict.fromkeys(payloads, time.monotonic()))
            await transactions.run(work)
            await asyncio.sleep(1 / rate)
        while len(latencies) < units * rows:
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
    done = len(latencies)
    return (f"{db.engine.dialect.name:>10}  {per['commits']:7.2f}  {per['statements']:7.2f}  "
            f"{cpu / units * 1000:7.2f}  {latencies[done // 2] * 1000:7.1f}  "
            f"{latencies[min(done - 1, int(done * 0.99))] * 1000:7.1f}  "
            f"{cpu / (units * rows * topics) * 1e6:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--topics", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1,
                        help="rows each unit of work publishes to each topic")
    args = parser.parse_args()
    print(f"{args.units} units of work at {args.rate:g}/s, {args.rows} row(s) to each of "
          f"{args.topics} topics; per unit of work (latencies per row), and CPU per row:")
    print(f"{'backend':>10}  {'commits':>7}  {'stmts':>7}  {'CPU ms':>7}  {'p50 ms':>7}  "
          f"{'p99 ms':>7}  {'CPU us/row':>10}")
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    for backend in backends:
        url = (PG_URL if backend == "postgresql"
               else f"sqlite:///{tempfile.mkdtemp()}/outbox.db")
        print(asyncio.run(measure(url, args.units, args.rate, args.topics, args.rows)),
              flush=True)


if __name__ == "__main__":
    main()
