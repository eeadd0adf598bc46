"""The event round's retries: a database failure counts against no event, an event that fails
backs off (doubling delays) before its next attempt, and an event another replica applied
meanwhile is never counted or given up. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from orchestration_support import Ids, migrated_database, transactions_on
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from cjo_orchestration.adapters import enrollments as store
from cjo_orchestration.adapters.tables import enrollments, inbox, metadata
from cjo_orchestration.domain.journeys import EventTrigger, ExitAction, JourneyGraph, Node, ReEntry
from cjo_orchestration.service_layer import events, journeys
from cjo_orchestration.service_layer.events import ForwardedEvent, InboxRound
from cjo_platform.backoff import RetryPolicy
from cjo_platform.clock import ManualClock
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "ws"
VISITS = JourneyGraph(trigger=EventTrigger("visit"), entry_node_id="done",
                      re_entry=ReEntry.ALWAYS, nodes=(Node("done", ExitAction()),))
BACKOFF = RetryPolicy(base_delay=timedelta(seconds=10), max_delay=timedelta(seconds=60))



@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC))


@pytest.fixture
def tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    db = migrated_database(backend)
    try:
        transactions = transactions_on(db, clock)
        transactions.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Visits", VISITS))
        transactions.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
        yield transactions
    finally:
        db.dispose()


@pytest.fixture
def letters(clock: ManualClock) -> DeadLetters:
    return DeadLetters(metadata.tables["dead_letters"], clock)


def visit(event_id: str, profile_id: str, **properties: Any) -> ForwardedEvent:
    return ForwardedEvent(event_id, profile_id, "visit", properties, {}, "")


def raising(monkeypatch: pytest.MonkeyPatch, error: Exception) -> dict[str, bool]:
    """Applying an event with property ``poison`` raises ``error`` while the switch is on."""
    real = events.apply_events
    switch = {"on": True}

    def apply_events(batch: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        if switch["on"] and any(e.properties.get("poison") for e in batch):
            raise error
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(events, "apply_events", apply_events)
    return switch


def inbox_row(tx: Transactions, event_id: str) -> Any:
    return tx.run_sync(lambda uow: uow.session.execute(
        select(inbox.c.attempts, inbox.c.processed, inbox.c.last_error)
        .where(inbox.c.event_id == event_id)).one())


def enrolled(tx: Transactions) -> list[str]:
    return sorted(tx.run_sync(lambda uow: list(uow.session.scalars(
        select(enrollments.c.entry_id)))))


async def test_a_database_failure_counts_against_no_event(
        tx: Transactions, letters: DeadLetters, monkeypatch: pytest.MonkeyPatch) -> None:
    down = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    switch = raising(monkeypatch, down)
    tx.run_sync(lambda uow: events.receive(uow, WS, [visit("v1", "ada", poison=True)]))
    round = InboxRound(tx, 10, Ids(), max_attempts=2,
                       dead_letter=events.to_dead_letters(letters), backoff=BACKOFF)
    for _ in range(5):  # more rounds than attempts: the worker backs off and retries
        with pytest.raises(OperationalError):
            await round.run()
    assert (inbox_row(tx, "v1").attempts, inbox_row(tx, "v1").processed) == (0, False)
    assert tx.run_sync(lambda uow: letters.list(uow.session, WS)) == []
    switch["on"] = False  # the database is back
    assert (await round.run()).handled == 1
    assert enrolled(tx) == ["v1"]


async def test_a_failing_event_backs_off_before_each_attempt(
        tx: Transactions, clock: ManualClock, letters: DeadLetters,
        monkeypatch: pytest.MonkeyPatch) -> None:
    raising(monkeypatch, RuntimeError("a bug"))
    tx.run_sync(lambda uow: events.receive(uow, WS, [
        visit("v1", "ada", poison=True), visit("v2", "ada"), visit("w1", "bob")]))
    round = InboxRound(tx, 10, Ids(), max_attempts=3,
                       dead_letter=events.to_dead_letters(letters), backoff=BACKOFF)

    async def rounds(n: int) -> int:
        for _ in range(n):  # e.g. woken by every HandleEvents
            await round.run()
        return int(inbox_row(tx, "v1").attempts)

    assert await rounds(5) == 1
    assert enrolled(tx) == ["w1"]  # bob flows; ada's later event waits behind v1
    clock.advance(timedelta(seconds=10))
    assert await rounds(5) == 2
    clock.advance(timedelta(seconds=10))
    assert await rounds(5) == 2  # the second delay is twice the first
    clock.advance(timedelta(seconds=10))
    assert await rounds(5) == 3  # given up: ada's later event flows again
    assert inbox_row(tx, "v1").processed
    assert enrolled(tx) == ["v2", "w1"]
    [letter] = tx.run_sync(lambda uow: letters.list(uow.session, WS))
    assert (letter.item_key, letter.attempts) == ("v1", 3)


def test_an_event_applied_elsewhere_meanwhile_is_never_given_up(
        tx: Transactions, letters: DeadLetters) -> None:
    tx.run_sync(lambda uow: events.receive(uow, WS, [visit("v1", "ada")]))
    [seen] = tx.run_sync(lambda uow: store.pending_events(uow.session, 10))
    # Another replica applies it, then this one's failed attempt is recorded.
    assert tx.run_sync(lambda uow: events.apply_inbox(uow, 10, Ids())).handled == 1
    assert not tx.run_sync(lambda uow: events.fail_event(
        uow, seen, "boom", 1, events.to_dead_letters(letters)))
    assert tx.run_sync(lambda uow: letters.list(uow.session, WS)) == []
    assert (inbox_row(tx, "v1").attempts, inbox_row(tx, "v1").last_error) == (0, "")
