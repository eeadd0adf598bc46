"""Two event workers on one PostgreSQL database (each with its own engine and connection pool,
as two replicas have): every event is applied exactly once, each profile's events in order, and
both workers apply events (different profiles at once). SQLite is the embedded, one-process
store: one event worker, which the other orchestration tests run."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from datetime import UTC, datetime

import pytest
from orchestration_support import migrated_database, transactions_on
from sqlalchemy import func, select

from cjo_orchestration.adapters.tables import enrollments, inbox
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    ExitCriterion,
    JourneyGraph,
    Node,
    ReEntry,
    SendAction,
)
from cjo_orchestration.service_layer import events, journeys
from cjo_orchestration.service_layer.events import InboxRound
from cjo_platform.clock import ManualClock
from support import Backend

WS = "ws"
PROFILES = 200
EVENTS_PER_PROFILE = 10

# Each "step" event ends the profile's enrollment (exit criterion) and starts the next one
# (re-entry always): the enrollments a profile got, in the order they were made, are the order
# its events were applied in.
STEPS = JourneyGraph(
    trigger=EventTrigger("step"), entry_node_id="mail", re_entry=ReEntry.ALWAYS,
    exit_criteria=(ExitCriterion("step"),),
    nodes=(Node("mail", SendAction("hello", Channel.EMAIL, "done")), Node("done", ExitAction())))


class OrderedIds:
    """Enrollment ids in the order they are made, across both workers' threads."""

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            return f"e{next(self._count):08d}"


async def test_two_event_workers_share_the_inbox_by_profile(backend: Backend) -> None:
    if backend.kind != "postgresql":
        pytest.skip("replicas share PostgreSQL; SQLite runs one process")
    clock = ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC))
    databases = [migrated_database(backend) for _ in range(2)]
    try:
        replicas = [transactions_on(db, clock)
                    for db in databases]
        first = replicas[0]
        first.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Steps", STEPS))
        first.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
        # Every profile's events in order, the profiles interleaved at random.
        order = [p for p in range(PROFILES) for _ in range(EVENTS_PER_PROFILE)]
        random.Random(12).shuffle(order)
        seen = [0] * PROFILES
        forwarded = []
        for p in order:
            forwarded.append(events.ForwardedEvent(f"p{p}-{seen[p]}", f"p{p}", "step",
                                                   {"n": seen[p]}, {}, ""))
            seen[p] += 1
        for start in range(0, len(forwarded), 500):
            chunk = forwarded[start:start + 500]
            first.run_sync(lambda uow, chunk=chunk: events.receive(uow, WS, chunk))

        ids = OrderedIds()
        applied = [0, 0]

        def pending() -> int:
            with databases[0].transaction() as session:
                return int(session.execute(select(func.count()).select_from(inbox).where(
                    inbox.c.processed.is_(False))).scalar_one())

        async def work(index: int) -> None:
            round = InboxRound(replicas[index], 50, ids, max_attempts=5)
            while True:
                done = await round.run()
                applied[index] += done.handled
                if not done.handled and not await databases[index].run(pending):
                    return

        await asyncio.wait_for(asyncio.gather(work(0), work(1)), timeout=120)

        with databases[0].transaction() as session:
            rows = session.execute(select(enrollments.c.enrollment_id, enrollments.c.profile_id,
                                          enrollments.c.entry_id, enrollments.c.state)
                                   .order_by(enrollments.c.enrollment_id)).all()
        # Exactly once: one enrollment per event, and every event was counted once.
        assert sorted(r.entry_id for r in rows) == sorted(e.event_id for e in forwarded)
        assert sum(applied) == len(forwarded)
        # In order: each profile's enrollments were made in the order of its events.
        for p in range(PROFILES):
            mine = [r for r in rows if r.profile_id == f"p{p}"]
            assert [r.entry_id for r in mine] == [f"p{p}-{n}" for n in range(EVENTS_PER_PROFILE)]
            assert [r.state for r in mine] == ["exited"] * (EVENTS_PER_PROFILE - 1) + ["active"]
        print(f"events applied per worker: {applied}")
        assert all(count > 0 for count in applied), applied  # both replicas did work
    finally:
        for db in databases:
            db.dispose()
