"""The event bus on its own, against the outbox forwarder it replaces: units of work of
``--batch`` rows each (as a 1,000-event ingest writes them) go from an outbox on SQLite to a
receiver that only counts them, either by a forwarder calling the receiver in process (the
database bus without its gRPC call) or by the JetStream relay and a partition consumer, both in
this process (NATS JetStream at 127.0.0.1:4222). Prints, per row and for both together, the
process's CPU µs, the database commits, and the bus messages and receiver calls; ``--cprofile
N`` also prints the N functions with the most own time of the JetStream run::

    make bench-bus ARGS='--rows 20000 --batch 1000 --rounds 2'

What the bus itself costs per row, without the services and the noise of the whole suite
(``make bench-throughput ARGS='... --bus both'`` measures it end to end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nats_support import NATS_URL, nats_listening

from cjo_platform.bus import Bus, BusSettings, naming
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.relay import bus_sender
from cjo_platform.clock import SystemClock
from cjo_platform.db import Database
from cjo_platform.db.dead_letters import DeadLetters, define_dead_letters
from cjo_platform.db.outbox import Forwarder, Outbox, OutboxRow, Refusal, define_outbox
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork

TOPIC = "bench.rows"
PROFILES = 5_000


async def measure(bus_kind: str, rows: int, batch: int, partitions: int,
                  profiler: cProfile.Profile | None) -> dict[str, float]:
    metadata = MetaData()
    outbox_table, letters_table = define_outbox(metadata), define_dead_letters(metadata)
    db = Database(f"sqlite:///{tempfile.mkdtemp()}/bus.db", schema="")
    metadata.create_all(db.engine)
    counts = {"commits": 0}

    @event.listens_for(db.engine, "commit")
    def committed(conn: Any) -> None:
        counts["commits"] += 1

    clock = SystemClock()
    letters = DeadLetters(letters_table, clock)
    outbox = Outbox(outbox_table, clock, letters)
    transactions = Transactions(db, clock, outbox)
    received: list[int] = [0]
    calls: list[int] = [0]
    done = asyncio.Event()

    async def receive(workspace: str, batch_rows: Sequence[OutboxRow]) -> list[Refusal]:
        calls[0] += 1
        received[0] += len(batch_rows)
        if received[0] >= rows:
            done.set()
        return []

    def profile_of(row: OutboxRow) -> str:
        return row.payload.split(b":", 1)[0].decode()

    bus: Bus | None = None
    workers: list[Any] = []
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    if bus_kind == "nats":
        bus = Bus(BusSettings(url=NATS_URL, prefix=prefix, partitions=partitions,
                              pack_rows=64))
        forwarder = Forwarder(db, outbox, TOPIC, bus_sender(bus, "bench", TOPIC,
                                                            ordering_key=profile_of))
        consumer = BusConsumer(bus, TOPIC, receive, db, letters, clock)
        workers = [forwarder.run, consumer.run]
    else:
        forwarder = Forwarder(db, outbox, TOPIC, receive)
        workers = [forwarder.run]
    tasks = [asyncio.create_task(worker()) for worker in workers]
    try:
        if bus_kind == "nats":
            # Every partition claimed and its consumer made before the clock starts.
            while len(consumer.held_partitions()) < partitions:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # the first (idle) rounds
        before = dict(counts)
        sent = 0
        if profiler is not None:
            profiler.enable()
        cpu, started = time.process_time(), time.perf_counter()
        while sent < rows:
            size = min(batch, rows - sent)

            def work(uow: UnitOfWork, start: int = sent, size: int = size) -> None:
                uow.publish(TOPIC, "ws", [(f"p{(start + i) % PROFILES}:{start + i}".encode(), "")
                                          for i in range(size)])

            await transactions.run(work)
            sent += size
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
        messages = 0
        if bus is not None:
            js = await bus.jetstream()
            info = await js.stream_info(naming.stream_name(prefix, TOPIC))
            messages = info.state.last_seq
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if bus is not None:
            js = await bus.jetstream()
            for name in (naming.stream_name(prefix, TOPIC),
                         "KV_" + naming.stream_name(prefix, "claims")):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
            await bus.close()
        db.dispose()
    return {"cpu_us": cpu / rows * 1e6, "commits": (counts["commits"] - before["commits"]) / rows,
            "messages": messages / rows, "calls": calls[0] / rows,
            "rows_per_s": rows / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000, help="rows per unit of work")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="print the N functions with the most own time (JetStream runs)")
    args = parser.parse_args()
    if not nats_listening():
        print("bus: skipped, no NATS server with JetStream at 127.0.0.1:4222")
        return
    print(f"{args.rows} rows in units of work of {args.batch}, {args.partitions} partitions, "
          "one process; per row:")
    print(f"{'bus':>9}  {'CPU µs':>7}  {'commits':>8}  {'messages':>8}  {'calls':>7}  "
          f"{'rows/s':>8}")
    profiler = cProfile.Profile(time.thread_time) if args.cprofile else None
    for _ in range(args.rounds):
        for kind in ("database", "nats"):
            figures = asyncio.run(measure(kind, args.rows, args.batch, args.partitions,
                                          profiler if kind == "nats" else None))
            print(f"{kind:>9}  {figures['cpu_us']:7.1f}  {figures['commits']:8.4f}  "
                  f"{figures['messages']:8.4f}  {figures['calls']:7.4f}  "
                  f"{figures['rows_per_s']:8,.0f}", flush=True)
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.cprofile)
        print(out.getvalue())


if __name__ == "__main__":
    main()
