"""An idle worker sleeps until the next work it knows of, at most its poll: the step worker until
the next timer, the scheduler until the next occurrence, the event worker until a failed event's
retry. A round learns that time in the transaction of its claim, at the claim's own clock
reading: read again after the claim (time passes while it runs), work falling due in between
would be neither claimed nor next, and the worker would sleep its whole poll past it. A fake
clock moves on during the claim's statement. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from orchestration_support import Ids, RecordingPeers, clocked_transactions
from test_event_retries import BACKOFF, VISITS, raising, visit

from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters import schedules as schedule_store
from cjo_orchestration.adapters.tables import metadata
from cjo_orchestration.domain.journeys import (
    EventTrigger,
    ExitAction,
    JourneyGraph,
    Node,
    Schedule,
    TriggerKind,
    WaitAction,
)
from cjo_orchestration.service_layer import enrollment, events, journeys
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.events import InboxRound
from cjo_orchestration.service_layer.schedules import ScheduleRound
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_orchestration.workers.events import EventWorker
from cjo_orchestration.workers.schedules import ScheduleWorker
from cjo_orchestration.workers.steps import StepWorker
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "ws"
START = datetime(2026, 6, 1, 9, tzinfo=UTC)
POLL = 60.0
SETTINGS = load_engine_settings(Env({"CJO_ORCHESTRATION_POLL_SECONDS": str(POLL)}))
# How long the claim's statement takes on the fake clock.
CLAIM_TAKES = timedelta(milliseconds=2)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    with clocked_transactions(backend, clock) as transactions:
        yield transactions


def slow_claim(monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
               clock: ManualClock) -> None:
    """``module.name`` (a claim's statement) takes CLAIM_TAKES of the clock's time."""
    real: Callable[..., Any] = getattr(module, name)

    def claim(*args: Any, **kwargs: Any) -> Any:
        claimed = real(*args, **kwargs)
        clock.advance(CLAIM_TAKES)
        return claimed

    monkeypatch.setattr(module, name, claim)


async def test_a_timer_falling_due_during_the_claim_is_the_next_one(
        tx: Transactions, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    wait = timedelta(seconds=5)
    graph = JourneyGraph(trigger=EventTrigger("signed_up"), entry_node_id="wait", nodes=(
        Node("wait", WaitAction(duration=wait, next_node_id="done")),
        Node("done", ExitAction())))
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "j1", graph))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, "j1", Entrant("ada", {}, {}), "r-ada", "", Ids()))
    worker = StepWorker(StepRound(tx, RecordingPeers("ada"), SETTINGS), POLL, lanes=1)
    assert await worker.run_once() is False  # the wait node: due again at START + wait
    clock.set(START + wait - CLAIM_TAKES / 2)
    slow_claim(monkeypatch, enrollment_store, "claim_due", clock)
    assert await worker.run_once() is False  # not due yet at the claim; due right after it
    assert worker.round.next_due() == START + wait
    assert worker.idle_seconds() == 0.0


async def test_an_occurrence_falling_due_during_the_claim_is_the_next_one(
        tx: Transactions, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    fire = START + timedelta(hours=1)
    graph = JourneyGraph(
        trigger=EventTrigger(kind=TriggerKind.SCHEDULED, segment_id="everyone",
                             schedule=Schedule(at=fire)),
        entry_node_id="done", nodes=(Node("done", ExitAction()),))
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "j1", graph))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    worker = ScheduleWorker(ScheduleRound(tx, SETTINGS, audience=None, new_id=Ids()),
                            POLL, wake_steps=lambda: None)  # type: ignore[arg-type]
    clock.set(fire - CLAIM_TAKES / 2)
    slow_claim(monkeypatch, schedule_store, "claim_due", clock)
    assert await worker.run_once() is False  # not due yet at the claim; due right after it
    assert worker.next_due == fire
    assert worker.idle_seconds() == 0.0


@pytest.fixture
def visits(tx: Transactions) -> Transactions:
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Visits", VISITS))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    return tx


def event_worker(tx: Transactions, clock: ManualClock) -> EventWorker:
    letters = DeadLetters(metadata.tables["dead_letters"], clock)
    round = InboxRound(tx, 10, Ids(), max_attempts=3,
                       dead_letter=events.to_dead_letters(letters), backoff=BACKOFF)
    return EventWorker(round, POLL, wake_steps=lambda: None)


async def test_a_failed_event_is_retried_when_due_not_at_the_poll(
        visits: Transactions, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    raising(monkeypatch, RuntimeError("a bug"))
    visits.run_sync(lambda uow: events.receive(uow, WS, [visit("v1", "ada", poison=True)]))
    worker = event_worker(visits, clock)
    assert await worker.run_once() is False  # v1 failed, applied alone: it backs off
    assert worker.last.next_retry == START + BACKOFF.base_delay
    assert worker.idle_seconds() == BACKOFF.base_delay.total_seconds()


async def test_an_event_due_again_during_the_claim_is_the_next_retry(
        visits: Transactions, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    switch = raising(monkeypatch, RuntimeError("a bug"))
    visits.run_sync(lambda uow: events.receive(uow, WS, [visit("v1", "ada", poison=True)]))
    worker = event_worker(visits, clock)
    await worker.run_once()  # v1 failed: due again at START + base delay
    switch["on"] = False
    clock.set(START + BACKOFF.base_delay - CLAIM_TAKES / 2)
    slow_claim(monkeypatch, enrollment_store, "pending_events", clock)
    assert await worker.run_once() is False  # not due yet at the claim; due right after it
    assert worker.last.next_retry == START + BACKOFF.base_delay
    assert worker.idle_seconds() == 0.0


async def test_an_event_due_again_while_a_failed_round_falls_back_is_the_next_retry(
        visits: Transactions, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # The round's fallback (one transaction per profile after the batch failed) takes time
    # too: its next retry is read at the claim's clock reading, not after the fallback.
    raising(monkeypatch, RuntimeError("a bug"))
    visits.run_sync(lambda uow: events.receive(uow, WS, [visit("v1", "ada", poison=True)]))
    worker = event_worker(visits, clock)
    await worker.run_once()  # v1 failed: due again at START + base delay
    clock.set(START + BACKOFF.base_delay - timedelta(milliseconds=1))
    visits.run_sync(lambda uow: events.receive(uow, WS, [visit("v2", "bob", poison=True)]))
    group = InboxRound._apply_group

    async def slow_group(self: InboxRound, events: Any) -> Any:
        try:
            return await group(self, events)
        finally:
            clock.advance(timedelta(milliseconds=2))

    monkeypatch.setattr(InboxRound, "_apply_group", slow_group)
    await worker.run_once()  # v2 fails, the round falls back; v1 falls due meanwhile
    assert worker.last.next_retry == START + BACKOFF.base_delay
    assert worker.idle_seconds() == 0.0
