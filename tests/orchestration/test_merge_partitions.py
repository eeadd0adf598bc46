"""Merges across replicas on one PostgreSQL database: a merge concerns two profiles (the
survivor and the merged one), so it waits while an older event of either is being applied by
another replica, and the merged profile's later events wait for it. Otherwise a replica could
enroll the merged profile while another moves its enrollments away, leaving an enrollment (and
its messages) on a retired profile."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from orchestration_support import migrated_database, transactions_on
from sqlalchemy import func, select

from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters.tables import enrollments, inbox, retired_profiles
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
from cjo_orchestration.domain.lifecycle import PROFILE_MERGED
from cjo_orchestration.service_layer import events, journeys
from cjo_orchestration.service_layer.events import ForwardedEvent, InboxRound
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "ws"

# Each "step" ends the profile's enrollment and starts the next one (see test_event_partitions).
STEPS = JourneyGraph(
    trigger=EventTrigger("step"), entry_node_id="mail", re_entry=ReEntry.ALWAYS,
    exit_criteria=(ExitCriterion("step"),),
    nodes=(Node("mail", SendAction("hello", Channel.EMAIL, "done")), Node("done", ExitAction())))


def step(event_id: str, profile_id: str) -> ForwardedEvent:
    return ForwardedEvent(event_id, profile_id, "step", {}, {}, "")


def merge(event_id: str, survivor: str, merged: str) -> ForwardedEvent:
    return ForwardedEvent(event_id, survivor, PROFILE_MERGED, {"merged_profile_id": merged},
                          {}, "")


@pytest.fixture
def replicas(backend: Backend) -> Iterator[list[tuple[Database, Transactions]]]:
    if backend.kind != "postgresql":
        pytest.skip("replicas share PostgreSQL; SQLite runs one process")
    clock = ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC))
    databases = [migrated_database(backend) for _ in range(2)]
    try:
        yield [(db, transactions_on(db, clock))
               for db in databases]
    finally:
        for db in databases:
            db.dispose()


def seqs_of(database: Database) -> dict[str, int]:
    with database.transaction() as session:
        return {r.event_id: r.seq for r in session.execute(select(inbox.c.event_id, inbox.c.seq))}


def test_a_merge_waits_for_the_merged_profiles_older_event_held_elsewhere(
        replicas: list[tuple[Database, Transactions]]) -> None:
    (db_a, tx_a), (db_b, _) = replicas
    tx_a.run_sync(lambda uow: events.receive(uow, WS, [
        step("q-1", "q"), merge("m", "p", "q"), step("q-2", "q"), step("p-1", "p")]))
    seq = seqs_of(db_a)
    with db_a.transaction() as a:
        # Replica A is applying the merged profile's older event...
        assert [e.event_id for e in enrollment_store.pending_events(a, 10, [seq["q-1"]])] \
            == ["q-1"]
        with db_b.transaction() as b:
            # ... so replica B applies neither the merge nor anything after it of p or q.
            assert enrollment_store.pending_events(b, 10) == []


def test_the_merged_profiles_later_events_wait_for_a_merge_held_elsewhere(
        replicas: list[tuple[Database, Transactions]]) -> None:
    (db_a, tx_a), (db_b, _) = replicas
    tx_a.run_sync(lambda uow: events.receive(uow, WS, [
        merge("m", "p", "q"), step("q-1", "q"), step("p-1", "p"), step("r-1", "r")]))
    seq = seqs_of(db_a)
    with db_a.transaction() as a:
        assert [e.event_id for e in enrollment_store.pending_events(a, 10, [seq["m"]])] == ["m"]
        with db_b.transaction() as b:
            # Only the unrelated profile's event: q's and p's wait for the merge.
            assert [e.event_id for e in enrollment_store.pending_events(b, 10)] == ["r-1"]


class OrderedIds:
    def __init__(self) -> None:
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            return f"e{next(self._count):08d}"


async def test_two_event_workers_apply_merges_interleaved_with_the_merged_profiles_events(
        replicas: list[tuple[Database, Transactions]]) -> None:
    pairs = 150
    (db_a, tx_a), _ = replicas
    tx_a.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Steps", STEPS))
    tx_a.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    # Per pair, in order: q steps, p steps, q is merged into p, q (now p) steps again, p steps.
    script = [[step(f"q{i}-1", f"q{i}"), step(f"p{i}-1", f"p{i}"),
               merge(f"m{i}", f"p{i}", f"q{i}"), step(f"q{i}-2", f"q{i}"),
               step(f"p{i}-2", f"p{i}")] for i in range(pairs)]
    order = [i for i in range(pairs) for _ in range(5)]
    random.Random(7).shuffle(order)
    forwarded = [script[i].pop(0) for i in order]
    for start in range(0, len(forwarded), 500):
        chunk = forwarded[start:start + 500]
        tx_a.run_sync(lambda uow, chunk=chunk: events.receive(uow, WS, chunk))

    ids = OrderedIds()

    def pending() -> int:
        with db_a.transaction() as session:
            return int(session.execute(select(func.count()).select_from(inbox).where(
                inbox.c.processed.is_(False))).scalar_one())

    async def work(index: int) -> None:
        db, tx = replicas[index]
        round = InboxRound(tx, 7, ids, max_attempts=5)
        while True:
            done = await round.run()
            if not done.handled and not await db.run(pending):
                return

    await asyncio.wait_for(asyncio.gather(work(0), work(1)), timeout=120)

    with db_a.transaction() as session:
        rows = session.execute(select(enrollments.c.profile_id, enrollments.c.state,
                                      enrollments.c.entry_id)).all()
        retired = set(session.scalars(select(retired_profiles.c.profile_id)))
    assert retired == {f"q{i}" for i in range(pairs)}
    # No enrollment was left on a merged profile (its messages would go out twice).
    assert [r for r in rows if r.profile_id in retired] == []
    # Every step enrolled once; each survivor ends with one active enrollment, its last step's.
    assert sorted(r.entry_id for r in rows) == sorted(
        e.event_id for e in forwarded if e.event_name == "step")
    for i in range(pairs):
        active = [r.entry_id for r in rows if r.profile_id == f"p{i}" and r.state == "active"]
        assert active == [f"p{i}-2"], (i, active)
