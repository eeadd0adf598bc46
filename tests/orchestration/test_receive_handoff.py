"""HandleEvents' use-case (EventReceiver) applies the events it stores in the same transaction,
and hands the enrollments that creates, leased, straight to this process's step worker: no
event round and no claim on an event's path. On a real database (SQLite and PostgreSQL), the
clock by hand, no worker running unless the test runs it."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from orchestration_support import Ids, RecordingPeers, migrated_database, transactions_on
from sqlalchemy import select
from test_event_partitions import OrderedIds

from cjo_orchestration.adapters import enrollments as store
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
from cjo_orchestration.service_layer.events import EventReceiver, InboxRound
from cjo_orchestration.service_layer.handoff import Handoff
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from support import Backend

WS = "ws"
START = datetime(2026, 6, 1, 9, tzinfo=UTC)
WELCOME = JourneyGraph(
    trigger=EventTrigger("signed_up"), entry_node_id="mail",
    nodes=(Node("mail", SendAction("welcome", Channel.EMAIL, "done")), Node("done", ExitAction())))


def signed_up(event_id: str, profile_id: str) -> events.ForwardedEvent:
    return events.ForwardedEvent(event_id, profile_id, "signed_up", {}, {}, "")


class Wakes:
    """The receiver's wake-ups, counted: event workers (in the transaction) and step claims."""

    def __init__(self) -> None:
        self.event_workers = 0
        self.step_claims = 0

    def events_waiting(self, uow: UnitOfWork) -> None:
        self.event_workers += 1

    def enrolled(self) -> None:
        self.step_claims += 1


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def tx(backend: Backend, clock: ManualClock) -> Transactions:
    db = migrated_database(backend)
    transactions = transactions_on(db, clock)
    transactions.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Welcome", WELCOME))
    transactions.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    yield transactions
    db.dispose()


def inbox_rows(tx: Transactions) -> dict[str, bool]:
    with tx.db.transaction() as session:
        return {r.event_id: r.processed for r in session.execute(
            select(inbox.c.event_id, inbox.c.processed))}


def leases(tx: Transactions) -> dict[str, tuple[str | None, str]]:
    """Each enrollment's (lease token, state), by profile."""
    with tx.db.transaction() as session:
        return {r.profile_id: (r.lease_token, r.state) for r in session.execute(
            select(enrollments.c.profile_id, enrollments.c.lease_token, enrollments.c.state))}


def settings():  # type: ignore[no-untyped-def]
    return load_engine_settings(Env({}))


async def test_handle_events_applies_what_it_stores_and_hands_the_enrollment_over_leased(
        tx: Transactions, clock: ManualClock) -> None:
    wakes, handoff = Wakes(), Handoff(lease_seconds=60)
    receiver = EventReceiver(tx, Ids(), wakes.events_waiting, wakes.enrolled,
                             apply_limit=500, handoff=handoff)

    assert await receiver.receive(WS, [signed_up("e1", "ada"), signed_up("e1", "ada")]) == [
        True, False]
    # Applied in the receiving transaction: no event round ran, none was woken.
    assert inbox_rows(tx) == {"e1": True}
    assert wakes.event_workers == 0
    # The new enrollment is leased to this process's hand-off, not left for a claim.
    assert leases(tx) == {"ada": (handoff.token, "active")}
    assert wakes.step_claims == 0
    assert tx.run_sync(lambda uow: store.claim_due(
        uow.session, clock.now(), clock.now() + timedelta(seconds=60), "other", 10)) == []

    handed, held_until = handoff.take(100, clock.now())
    assert [e.profile_id for e in handed] == ["ada"] and len(handoff) == 0
    assert held_until == clock.now() + timedelta(seconds=30)
    peers = RecordingPeers("ada")
    await StepRound(tx, peers, settings()).run_claimed(handoff.token, handed, held_until)
    assert [s.profile_id for s in peers.sent] == ["ada"]
    assert leases(tx) == {"ada": (None, "completed")}

    # A repeat is a duplicate: nothing is applied or handed over again.
    assert await receiver.receive(WS, [signed_up("e1", "ada")]) == [False]
    assert handoff.take(100, clock.now()) == ([], None) and len(peers.sent) == 1


async def test_an_event_behind_an_unapplied_one_of_its_profile_waits_for_the_event_round(
        tx: Transactions, clock: ManualClock) -> None:
    tx.run_sync(lambda uow: events.receive(uow, WS, [
        events.ForwardedEvent("e1", "ada", "browsed", {}, {}, "")]))  # not applied yet
    wakes, handoff, ids = Wakes(), Handoff(lease_seconds=60), Ids()
    receiver = EventReceiver(tx, ids, wakes.events_waiting, wakes.enrolled,
                             apply_limit=500, handoff=handoff)

    assert await receiver.receive(WS, [signed_up("e2", "ada"), signed_up("e3", "bob")]) == [
        True, True]
    # Bob's event is applied at once; Ada's would overtake her older event: it waits.
    assert inbox_rows(tx) == {"e1": False, "e2": False, "e3": True}
    assert wakes.event_workers == 1
    assert [e.profile_id for e in handoff.take(100, clock.now())[0]] == ["bob"]

    applied = await InboxRound(tx, 100, ids, max_attempts=5, handoff=handoff).run()
    assert (applied.handled, applied.enrolled, applied.handed_over) == (2, 1, 1)
    assert inbox_rows(tx) == {"e1": True, "e2": True, "e3": True}
    assert [e.profile_id for e in handoff.take(100, clock.now())[0]] == ["ada"]


async def test_a_batch_that_cannot_be_applied_is_stored_for_the_event_round(
        tx: Transactions, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug in applying")

    wakes = Wakes()
    receiver = EventReceiver(tx, Ids(), wakes.events_waiting, wakes.enrolled,
                             apply_limit=500, handoff=Handoff(lease_seconds=60))
    with monkeypatch.context() as patch:
        patch.setattr(events, "apply_events", broken)
        # What the caller is told does not depend on applying: both stored, both new.
        assert await receiver.receive(WS, [signed_up("e1", "ada"), signed_up("e2", "bob")]) \
            == [True, True]
    assert inbox_rows(tx) == {"e1": False, "e2": False}
    assert wakes.event_workers == 1  # the event round applies them
    assert leases(tx) == {}


async def test_handed_enrollments_of_a_process_that_died_are_claimed_when_the_lease_runs_out(
        tx: Transactions, clock: ManualClock) -> None:
    dead = Handoff(lease_seconds=60)  # its step worker never takes what it was given
    receiver = EventReceiver(tx, Ids(), Wakes().events_waiting, Wakes().enrolled,
                             apply_limit=500, handoff=dead)
    await receiver.receive(WS, [signed_up("e1", "ada")])
    peers = RecordingPeers("ada")
    other = StepRound(tx, peers, settings())  # another replica's step round

    assert await other.run() is False and peers.sent == []  # leased: not claimable
    clock.advance(timedelta(seconds=61))
    await other.run()
    assert [s.profile_id for s in peers.sent] == ["ada"]
    assert leases(tx) == {"ada": (None, "completed")}
    # Too late for the dead process's lease: its hand-off would not run it.
    assert dead.take(100, clock.now()) == ([], None)


STEPS = JourneyGraph(
    trigger=EventTrigger("step"), entry_node_id="mail", re_entry=ReEntry.ALWAYS,
    exit_criteria=(ExitCriterion("step"),),
    nodes=(Node("mail", SendAction("hello", Channel.EMAIL, "done")), Node("done", ExitAction())))


async def test_two_replicas_receiving_and_applying_keep_each_profile_in_order(
        backend: Backend) -> None:
    """Two replicas' HandleEvents take turns with the forwarder's batches while both event
    rounds run: every event applied once, each profile's in order (each "step" event ends the
    profile's enrollment and starts the next, so the enrollments' order is the events')."""
    if backend.kind != "postgresql":
        pytest.skip("replicas share PostgreSQL; SQLite runs one process")
    clock = ManualClock(START)
    databases = [migrated_database(backend) for _ in range(2)]
    try:
        replicas = [transactions_on(db, clock) for db in databases]
        replicas[0].run_sync(lambda uow: journeys.create(uow, WS, "j1", "Steps", STEPS))
        replicas[0].run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
        ids = OrderedIds()
        order = [p for p in range(60) for _ in range(6)]
        random.Random(7).shuffle(order)
        seen = [0] * 60
        forwarded = []
        for p in order:
            forwarded.append(events.ForwardedEvent(f"p{p}-{seen[p]}", f"p{p}", "step", {}, {}, ""))
            seen[p] += 1
        handoffs = [Handoff(60), Handoff(60)]
        receivers = [EventReceiver(tx, ids, Wakes().events_waiting, Wakes().enrolled,
                                   apply_limit=500, handoff=handoff)
                     for tx, handoff in zip(replicas, handoffs, strict=True)]
        rounds = [InboxRound(tx, 7, ids, max_attempts=5, handoff=handoff)
                  for tx, handoff in zip(replicas, handoffs, strict=True)]
        steps = [StepRound(tx, RecordingPeers(*(f"p{p}" for p in range(60))), settings())
                 for tx in replicas]
        done = asyncio.Event()

        async def event_round(index: int) -> None:
            while not done.is_set():
                if not (await rounds[index].run()).handled:
                    await asyncio.sleep(0.001)

        async def step_round(index: int) -> None:
            # What the replica's step worker does with the enrollments handed to it.
            while not done.is_set():
                handed, held_until = handoffs[index].take(100, clock.now())
                if handed:
                    await steps[index].run_claimed(handoffs[index].token, handed, held_until)
                else:
                    await asyncio.sleep(0.001)

        workers = [asyncio.create_task(work(i)) for i in range(2)
                   for work in (event_round, step_round)]
        # Small batches, each to one replica or the other, while both event rounds run.
        for n, start in enumerate(range(0, len(forwarded), 5)):
            await receivers[n % 2].receive(WS, forwarded[start:start + 5])

        async def drained() -> None:
            while any(not processed for processed in inbox_rows(replicas[0]).values()):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(drained(), timeout=60)
        done.set()
        await asyncio.gather(*workers)
        with databases[0].transaction() as session:
            rows = session.execute(select(enrollments.c.profile_id, enrollments.c.entry_id)
                                   .order_by(enrollments.c.enrollment_id)).all()
        assert sorted(r.entry_id for r in rows) == sorted(e.event_id for e in forwarded)
        for p in range(60):
            assert [r.entry_id for r in rows if r.profile_id == f"p{p}"] == [
                f"p{p}-{k}" for k in range(6)]
    finally:
        for db in databases:
            db.dispose()
