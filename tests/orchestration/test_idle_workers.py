"""Idle workers sleep until the work they know of falls due, however long their poll: a wait's
timer ends on time and the node after a send runs at once, with CJO_ORCHESTRATION_POLL_SECONDS
far longer than either (the poll is only the safety net for work nothing woke them for).
Real SQLite and the real step worker on the system clock; the peers are a stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from orchestration_support import Ids, RecordingPeers, wall_clock_transactions

from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    JourneyGraph,
    Node,
    SendAction,
    WaitAction,
)
from cjo_orchestration.service_layer import enrollment, journeys
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_orchestration.workers.steps import StepWorker
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "ws"
LONG_POLL = 60.0
WAIT = timedelta(seconds=0.5)
# wait 0.5 s -> mail -> mail again -> exit: one timer, then a node due at once after a send.
GRAPH = JourneyGraph(trigger=EventTrigger("signed_up"), entry_node_id="wait", nodes=(
    Node("wait", WaitAction(duration=WAIT, next_node_id="welcome")),
    Node("welcome", SendAction("welcome", Channel.EMAIL, "tips")),
    Node("tips", SendAction("tips", Channel.EMAIL, "done")),
    Node("done", ExitAction())))


@pytest.fixture
def tx(sqlite_backend: Backend) -> Iterator[Transactions]:
    with wall_clock_transactions(sqlite_backend) as transactions:
        yield transactions


async def test_a_timer_fires_when_due_and_the_next_node_runs_at_once_despite_a_long_poll(
        tx: Transactions) -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "j1", GRAPH))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, "j1", Entrant("ada", {"email": "ada@example.com"}, {}), "r-ada", "", Ids()))
    settings = load_engine_settings(Env({"CJO_ORCHESTRATION_POLL_SECONDS": str(LONG_POLL)}))
    peers = RecordingPeers("ada")
    worker = StepWorker(StepRound(tx, peers, settings), settings.poll_seconds, lanes=2)
    started = time.monotonic()
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):  # far below the poll: only the timer can wake it
            while len(peers.sent) < 2:
                await asyncio.sleep(0.01)
        took = time.monotonic() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [s.content.content_key for s in peers.sent] == ["welcome", "tips"]
    assert WAIT.total_seconds() <= took < WAIT.total_seconds() + 3.0
