"""A lone event's receipt (HandleEvents' use-case) on a quiet inbox: stored processed in its
insert, its journeys' triggers kept between events while no journey of the workspace changed,
and still right across replicas (a journey published or paused on one is seen by the other's
next event) and for an event deferred behind its profile's step. On a real database (SQLite and
PostgreSQL), the clock by hand, no worker running unless the test runs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from orchestration_support import Ids, RecordingPeers, migrated_database, transactions_on
from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from test_receive_handoff import START, WS, Wakes, inbox_rows

from cjo_orchestration.adapters.journeys import TriggerCache
from cjo_orchestration.adapters.tables import enrollments
from cjo_orchestration.adapters.tables import journeys as journey_table
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    ExitCriterion,
    JourneyGraph,
    JourneyState,
    Node,
    SendAction,
)
from cjo_orchestration.domain.lifecycle import PROFILE_MERGED
from cjo_orchestration.service_layer import events, journeys
from cjo_orchestration.service_layer.events import EventReceiver, InboxRound
from cjo_orchestration.service_layer.handoff import Handoff
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.engine import Database
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.revision_cache import MAX_AGE_SECONDS
from support import Backend

# Watches its profile's events (an exit criterion): a later event of a profile whose step runs
# is deferred behind it.
WELCOME = JourneyGraph(
    trigger=EventTrigger("signed_up"), entry_node_id="mail",
    exit_criteria=(ExitCriterion("unsubscribed"),),
    nodes=(Node("mail", SendAction("welcome", Channel.EMAIL, "done")), Node("done", ExitAction())))
ORDERED = JourneyGraph(
    trigger=EventTrigger("ordered"), entry_node_id="mail",
    nodes=(Node("mail", SendAction("thanks", Channel.EMAIL, "done")), Node("done", ExitAction())))


class Statements:
    """The statements a database ran, as sent."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine
        self.seen: list[str] = []
        sa_event.listen(self.engine, "before_cursor_execute", self._statement)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.seen.append(" ".join(statement.split()))

    def take(self) -> list[str]:
        seen, self.seen = self.seen, []
        return seen

    def close(self) -> None:
        sa_event.remove(self.engine, "before_cursor_execute", self._statement)


async def enrollment_reads(tx: Transactions, receiver: EventReceiver,
                           event: events.ForwardedEvent) -> list[str]:
    """The reads of the enrollments table the receipt of ``event`` sent."""
    statements = Statements(tx.db)
    try:
        await receiver.receive(WS, [event])
        seen = statements.take()
    finally:
        statements.close()
    return [s for s in seen if s.startswith("SELECT") and "FROM enrollments" in s]


def forwarded(event_id: str, profile_id: str, name: str) -> events.ForwardedEvent:
    return events.ForwardedEvent(event_id, profile_id, name, {}, {}, "")


def receiver_on(tx: Transactions, handoff: Handoff | None = None,
                wakes: Wakes | None = None, triggers: TriggerCache | None = None
                ) -> EventReceiver:
    wakes = wakes or Wakes()
    return EventReceiver(tx, Ids(), wakes.events_waiting, wakes.enrolled, apply_limit=500,
                         handoff=handoff, triggers=triggers or TriggerCache())


def enrolled(tx: Transactions) -> list[tuple[str, str]]:
    with tx.db.transaction() as session:
        return sorted((r.journey_id, r.profile_id) for r in session.execute(
            select(enrollments.c.journey_id, enrollments.c.profile_id)))


def states(tx: Transactions) -> dict[str, str]:
    with tx.db.transaction() as session:
        return {r.profile_id: r.state for r in session.execute(
            select(enrollments.c.profile_id, enrollments.c.state))}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    db = migrated_database(backend)
    transactions = transactions_on(db, clock)
    transactions.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Welcome", WELCOME))
    transactions.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    yield transactions
    db.dispose()


async def test_a_lone_event_is_stored_processed_and_reads_its_triggers_once(
        tx: Transactions) -> None:
    receiver = receiver_on(tx)
    statements = Statements(tx.db)
    try:
        assert await receiver.receive(WS, [forwarded("e1", "ada", "signed_up")]) == [True]
        first = statements.take()
        assert await receiver.receive(WS, [forwarded("e2", "bob", "signed_up")]) == [True]
        second = statements.take()
    finally:
        statements.close()
    assert enrolled(tx) == [("j1", "ada"), ("j1", "bob")]
    assert inbox_rows(tx) == {"e1": True, "e2": True}
    # Marked processed in its insert: never updated afterwards.
    assert not [s for s in first + second if s.startswith("UPDATE inbox")]
    # The triggers were read for the first event; the second one found them unchanged.
    assert [s for s in first if "FROM journey_versions" in s]
    assert not [s for s in second if "journey_versions" in s]
    # No profile was ever retired: the receipt's first statement said so.
    assert not [s for s in first + second if s.startswith("SELECT retired_profiles")]


async def test_a_lone_event_for_a_merged_away_profile_reaches_its_survivor(
        tx: Transactions) -> None:
    receiver = receiver_on(tx)
    await receiver.receive(WS, [forwarded("e1", "ada", "signed_up")])
    await receiver.receive(WS, [events.ForwardedEvent(
        "e2", "ada", PROFILE_MERGED, {"merged_profile_id": "ada-old"}, {}, "")])
    assert states(tx) == {"ada": "active"}

    await receiver.receive(WS, [forwarded("e3", "ada-old", "unsubscribed")])
    assert states(tx) == {"ada": "exited"}
    assert inbox_rows(tx) == {"e1": True, "e2": True, "e3": True}


async def test_a_lone_events_reads_bind_no_value_a_partial_index_depends_on(
        tx: Transactions) -> None:
    """SQLite prepares a statement again at every execution when a bound value decides whether
    a partial index applies (``state = ?`` against ``WHERE state = 'active'``): that cost the
    enrollments read of each event more than the read itself. The state goes as a literal."""
    reads = await enrollment_reads(tx, receiver_on(tx), forwarded("e1", "ada", "signed_up"))
    assert reads
    assert not [s for s in reads if "state = ?" in s or "state = %(" in s]


async def test_a_lone_event_reads_its_profiles_enrollments_once(tx: Transactions) -> None:
    """The enrollments its events can change and the history its triggers' entry rules need
    come from one statement: an ended enrollment, which no event can change any more, still
    keeps a journey that never lets a person in again from enrolling her twice."""
    receiver = receiver_on(tx)
    await receiver.receive(WS, [forwarded("e1", "ada", "signed_up")])
    await receiver.receive(WS, [forwarded("e2", "ada", "unsubscribed")])
    assert states(tx) == {"ada": "exited"}
    reads = await enrollment_reads(tx, receiver, forwarded("e3", "ada", "signed_up"))
    assert states(tx) == {"ada": "exited"}  # never re-entered
    assert enrolled(tx) == [("j1", "ada")]
    assert len(reads) == 1, reads


async def test_a_journey_published_or_paused_on_one_replica_is_seen_by_the_others_next_event(
        backend: Backend, clock: ManualClock) -> None:
    databases = [migrated_database(backend) for _ in range(2)]
    try:
        here, there = (transactions_on(db, clock) for db in databases)
        receiver = receiver_on(here)
        await receiver.receive(WS, [forwarded("e1", "ada", "ordered")])
        assert enrolled(here) == []  # no journey listens: that is kept too

        there.run_sync(lambda uow: journeys.create(uow, WS, "j2", "Thanks", ORDERED))
        await receiver.receive(WS, [forwarded("e2", "bob", "ordered")])
        assert enrolled(here) == []  # a draft enrolls nobody

        there.run_sync(lambda uow: journeys.publish(uow, WS, "j2", set()))
        await receiver.receive(WS, [forwarded("e3", "cy", "ordered")])
        assert enrolled(here) == [("j2", "cy")]

        there.run_sync(lambda uow: journeys.pause(uow, WS, "j2"))
        await receiver.receive(WS, [forwarded("e4", "dee", "ordered")])
        assert enrolled(here) == [("j2", "cy")]

        there.run_sync(lambda uow: journeys.resume(uow, WS, "j2"))
        # Another workspace's journeys change nothing here, and its own triggers are its own.
        there.run_sync(lambda uow: journeys.create(uow, "other", "j2", "Thanks", ORDERED))
        await receiver.receive(WS, [forwarded("e5", "eve", "ordered")])
        await receiver.receive("other", [forwarded("e6", "fay", "ordered")])
        assert enrolled(here) == [("j2", "cy"), ("j2", "eve")]
    finally:
        for db in databases:
            db.dispose()


async def test_a_journey_changed_without_moving_the_revision_is_seen_within_the_bound(
        backend: Backend, clock: ManualClock) -> None:
    """A change that does not move the journeys revision (a restore, a fix in SQL, a replica
    on a release from before the revision) reaches the kept triggers once they are
    MAX_AGE_SECONDS old, not never (before: never, until the process restarted)."""
    databases = [migrated_database(backend) for _ in range(2)]
    try:
        here, there = (transactions_on(db, clock) for db in databases)
        there.run_sync(lambda uow: journeys.create(uow, WS, "j2", "Thanks", ORDERED))
        there.run_sync(lambda uow: journeys.publish(uow, WS, "j2", set()))
        now = [1000.0]
        receiver = receiver_on(here, triggers=TriggerCache(monotonic=lambda: now[0]))
        await receiver.receive(WS, [forwarded("e1", "ada", "ordered")])
        assert enrolled(here) == [("j2", "ada")]

        # Paused behind the revision's back, on the other replica's connection.
        with there.db.transaction() as session:
            session.execute(update(journey_table).where(journey_table.c.journey_id == "j2")
                            .values(state=JourneyState.PAUSED.value))
        await receiver.receive(WS, [forwarded("e2", "bob", "ordered")])
        assert enrolled(here) == [("j2", "ada"), ("j2", "bob")]  # kept: the revision is the same
        now[0] += MAX_AGE_SECONDS
        await receiver.receive(WS, [forwarded("e3", "cy", "ordered")])
        assert enrolled(here) == [("j2", "ada"), ("j2", "bob")]
    finally:
        for db in databases:
            db.dispose()


async def test_an_event_deferred_behind_its_profiles_step_stays_in_the_inbox(
        tx: Transactions, clock: ManualClock) -> None:
    handoff, wakes, ids = Handoff(lease_seconds=60), Wakes(), Ids()
    receiver = receiver_on(tx, handoff, wakes)
    await receiver.receive(WS, [forwarded("e1", "ada", "signed_up")])
    handed, held_until = handoff.take(100, clock.now())  # ada's step holds her enrollment

    await receiver.receive(WS, [forwarded("e2", "ada", "unsubscribed")])
    assert inbox_rows(tx) == {"e1": True, "e2": False}
    assert wakes.event_workers == 1

    peers = RecordingPeers("ada")
    settings = load_engine_settings(Env({}))
    await StepRound(tx, peers, settings).run_claimed(handoff.token, handed, held_until)
    applied = await InboxRound(tx, 100, ids, max_attempts=5, triggers=TriggerCache()).run()
    assert (applied.handled, applied.deferred) == (1, 0)
    assert inbox_rows(tx) == {"e1": True, "e2": True}
