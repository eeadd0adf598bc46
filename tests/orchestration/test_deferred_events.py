"""Events that arrive while a step holds their profile wait for the step, and apply as soon as
it ends: the step round that hands the profile back wakes the event workers (the
``orchestration.events`` signal, as bootstrap wires it), instead of the event worker looking
again and again while the step runs. Real SQLite, the real event and step workers and signals;
the peers are a stand-in whose send is held until the test lets it go."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
from orchestration_support import Ids, RecordingPeers, wall_clock_transactions
from sqlalchemy import select

from cjo_orchestration.adapters.peers import SendItem
from cjo_orchestration.adapters.tables import inbox
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    ExitCriterion,
    JourneyGraph,
    Node,
    SendAction,
)
from cjo_orchestration.domain.orders import SendResult
from cjo_orchestration.service_layer import events, journeys
from cjo_orchestration.service_layer.events import EventRound, ForwardedEvent, InboxRound
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_orchestration.workers.events import EventWorker
from cjo_orchestration.workers.steps import StepWorker
from cjo_platform.config import Env
from cjo_platform.db.signals import Signals
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from support import Backend, eventually

WS = "ws"
SIGNAL = "orchestration.events"
LONG_POLL = 60.0
# An exit criterion makes the journey watch its enrollments' events: a profile's events wait
# while a step holds its enrollment.
GRAPH = JourneyGraph(trigger=EventTrigger("signed_up"), entry_node_id="welcome",
                     exit_criteria=(ExitCriterion("unsubscribed"),), nodes=(
                         Node("welcome", SendAction("welcome", Channel.EMAIL, "done")),
                         Node("done", ExitAction())))


class HeldPeers(RecordingPeers):
    """Sends wait until ``release`` is set."""

    def __init__(self, *profile_ids: str) -> None:
        super().__init__(*profile_ids)
        self.sending = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, workspace_id: str, items: Sequence[SendItem]) -> list[SendResult]:
        self.sending.set()
        await self.release.wait()
        return await super().send(workspace_id, items)


class CountedRound(InboxRound):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.rounds = 0

    async def run(self) -> EventRound:
        self.rounds += 1
        return await super().run()


@pytest.fixture
def tx(sqlite_backend: Backend) -> Iterator[Transactions]:
    with wall_clock_transactions(sqlite_backend) as transactions:
        yield transactions


def processed(tx: Transactions, event_id: str) -> bool:
    return bool(tx.run_sync(lambda uow: uow.session.execute(
        select(inbox.c.processed).where(inbox.c.event_id == event_id)).scalar()))


async def test_an_event_deferred_behind_a_running_step_applies_when_the_step_ends(
        tx: Transactions) -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "j1", GRAPH))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    settings = load_engine_settings(Env({"CJO_ORCHESTRATION_POLL_SECONDS": str(LONG_POLL)}))
    signals = Signals(tx.db)

    def events_received(uow: UnitOfWork) -> None:
        signals.send(uow, SIGNAL)

    peers = HeldPeers("ada")
    steps = StepWorker(StepRound(tx, peers, settings, events_waiting=events_received),
                       settings.poll_seconds, lanes=1)
    inbox_round = CountedRound(tx, settings.event_batch, Ids(), settings.event_max_attempts)
    worker = EventWorker(inbox_round, settings.poll_seconds, steps.wake)
    signals.on(SIGNAL, lambda _: worker.wake())

    def receive(event_id: str, name: str) -> None:
        tx.run_sync(lambda uow: (events.receive(uow, WS, [ForwardedEvent(
            event_id, "ada", name, {}, {"email": "ada@example.com"}, "")]),
            events_received(uow)))

    tasks = [asyncio.create_task(t.run()) for t in (signals, steps, worker)]
    try:
        receive("ev-signup", "signed_up")
        await eventually(peers.sending.is_set, timeout=10)  # the step holds ada now
        receive("ev-unsubscribe", "unsubscribed")
        await eventually(lambda: worker.last.deferred == 1, timeout=10)
        rounds = inbox_round.rounds
        await asyncio.sleep(1.0)  # the step still runs: nothing to look at meanwhile
        assert inbox_round.rounds == rounds, "the event worker polled while the step ran"
        assert not processed(tx, "ev-unsubscribe")
        peers.release.set()
        # Far sooner than the poll (60 s): the end of the step woke the event worker.
        await eventually(lambda: processed(tx, "ev-unsubscribe"), timeout=10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [s.content.content_key for s in peers.sent] == ["welcome"]
