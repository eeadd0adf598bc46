"""Orchestration's lone event: CPU and statements per single-event HandleEvents, in process.

    .venv/bin/python tests/benchmarks/lone_event.py [--events 4000] [--database sqlite|postgresql]

HandleEvents' use-case (EventReceiver, wired as bootstrap wires it: the step worker's hand-off,
the trigger cache) receives one sign-up event per call, each of a new person, on a fresh
database (a SQLite file, or a schema of its own in the PostgreSQL at 127.0.0.1:5432, dropped
afterwards) holding the welcome journey and five other published journeys. No gRPC, no
forwarder (the outbox rows wait for a claim), no step worker: what one event's receipt costs
orchestration itself. Prints the CPU of this process (time.process_time: robust on a busy
machine) per event, the best of the rounds of 500 events (the least disturbed by other
processes), and the statements per event (a counting hook on the engine).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from itertools import count
from pathlib import Path

import sqlalchemy as sa
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cjo_orchestration.adapters
from cjo_orchestration.adapters.journeys import TriggerCache
from cjo_orchestration.adapters.tables import metadata
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    JourneyGraph,
    Node,
    SendAction,
)
from cjo_orchestration.service_layer import journeys
from cjo_orchestration.service_layer.events import EventReceiver, ForwardedEvent
from cjo_orchestration.service_layer.handoff import Handoff
from cjo_platform.clock import SystemClock
from cjo_platform.db.engine import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.migrations import upgrade
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.unit_of_work import Transactions
from support import PG_URL

ROUND = 500
NODES = (Node("mail", SendAction("welcome", Channel.EMAIL, "done")), Node("done", ExitAction()))
TRACEPARENT = f"00-{'a' * 32}-{'b' * 16}-01"


def signup(n: int) -> ForwardedEvent:
    return ForwardedEvent(f"e{n}", f"p{n}", "signed_up", {"plan": "pro"},
                          {"email": f"p{n}@example.com"}, TRACEPARENT)


async def measure(db: Database, events: int) -> None:
    clock = SystemClock()
    tx = Transactions(db, clock, Outbox(metadata.tables["outbox"], clock),
                      RequestLog(metadata.tables["request_log"], clock))
    for journey_id, event_name in [("welcome", "signed_up"),
                                   *((f"other{k}", f"other{k}") for k in range(5))]:
        graph = JourneyGraph(trigger=EventTrigger(event_name), entry_node_id="mail", nodes=NODES)
        tx.run_sync(lambda uow, j=journey_id, g=graph: journeys.create(uow, "ws", j, j, g))
        tx.run_sync(lambda uow, j=journey_id: journeys.publish(uow, "ws", j, set()))
    statements = [0]

    def counted(*_: object) -> None:
        statements[0] += 1

    sa.event.listen(db.engine, "before_cursor_execute", counted)
    handoff = Handoff(60)
    ids = count()
    receiver = EventReceiver(tx, lambda: f"n{next(ids)}", lambda uow: None, lambda: None,
                             apply_limit=500, handoff=handoff, triggers=TriggerCache())
    numbers = count()
    for _ in range(200):  # warm-up: statements compiled, caches filled
        await receiver.receive("ws", [signup(next(numbers))])
    handoff.take(1000, clock.now())
    best = float("inf")
    per_event = 0.0
    for _ in range(max(1, events // ROUND)):
        statements[0] = 0
        start = time.process_time()
        for _ in range(ROUND):
            await receiver.receive("ws", [signup(next(numbers))])
        best = min(best, (time.process_time() - start) / ROUND)
        per_event = statements[0] / ROUND
        handoff.take(1000, clock.now())  # nobody runs them: keep the hand-off small
    print(f"{db.engine.dialect.name}: {best * 1e6:.0f} us CPU per lone event (best of "
          f"{max(1, events // ROUND)} x {ROUND}), {per_event:.2f} statements per event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    migrations = Path(str(cjo_orchestration.adapters.__file__)).parent / "migrations"
    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench{uuid.uuid4().hex[:8]}_orchestration"
        db = Database(f"sqlite:///{tmp}/orchestration.db") if args.database == "sqlite" \
            else Database(PG_URL, schema=schema)
        try:
            upgrade(db, migrations)
            asyncio.run(measure(db, args.events))
        finally:
            db.dispose()
            if args.database == "postgresql":
                engine = sa.create_engine(PG_URL)
                with engine.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                engine.dispose()


if __name__ == "__main__":
    main()
