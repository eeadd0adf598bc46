"""Early rewards (test_early_rewards) under concurrency and at scale: two exposures recorded at
once take a kept event once; settling a decision that can take no reward leaves the event for
the others; a reward event reads only the latest of a person's pending decisions."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
from outcomes_support import START, Decisioning, decision_row, running, sent, track
from sqlalchemy import text

from cjo_decisioning.adapters import decisions as log
from cjo_decisioning.adapters import outcomes as adapter
from cjo_decisioning.adapters.tables import EXPOSED, REWARDED, decisions, early_rewards
from cjo_decisioning.domain.outcomes import MAX_KEPT_PER_EVENT
from cjo_decisioning.service_layer.exposures import settle_early_rewards
from support import Backend, eventually

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _kept(decision_id: str, event_id: str, at: Any) -> dict[str, Any]:
    return {"workspace_id": "ws-a", "decision_id": decision_id, "event_id": event_id,
            "decision_point": "home", "profile_id": "p1", "event_time": at,
            "expire_time": at + DAY}


async def test_two_exposures_at_once_take_a_kept_event_once(backend: Backend) -> None:
    """Each transaction read the kept events before the other committed, and both decisions
    were rewarded by the same event. (SQLite runs one writer at a time: no interleaving.)"""
    if backend.kind != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL")
    async with running(backend) as d:
        await d.point("home", "order_completed", window=DAY)
        await d.decided("d1", "home", "p1")
        await d.decided("d2", "home", "p1", "b")
        await d.events(track("e1", "p1", "order_completed", START + 2 * HOUR),
                       track("e2", "p1", "order_completed", START + 3 * HOUR))
        assert len(await d.rows(early_rewards)) == 4
        db = d.app.db
        settled, commit, second = threading.Event(), threading.Event(), []

        def expose(session: Any, decision_id: str) -> None:
            log.expose(session, "ws-a", decision_id, START + HOUR, START + HOUR + DAY)
            settle_early_rewards(session, "ws-a", [(decision_id, START + HOUR,
                                                    START + HOUR + DAY)])

        def first() -> None:
            with db.transaction() as session:
                expose(session, "d1")
                settled.set()
                assert commit.wait(30)

        def then() -> None:
            assert settled.wait(30)
            with db.transaction() as session:
                second.append(session.execute(text("SELECT pg_backend_pid()")).scalar())
                expose(session, "d2")

        def waits_on_a_lock() -> bool:
            if not second:
                return False
            with db.transaction() as session:
                return bool(session.execute(text(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :p"),
                    {"p": second[0]}).scalar())

        threads = [threading.Thread(target=first), threading.Thread(target=then)]
        for thread in threads:
            thread.start()
        try:
            await eventually(waits_on_a_lock)  # the second read, then waited on the first
        finally:
            commit.set()
            for thread in threads:
                await asyncio.to_thread(thread.join)
        rewards = {i: ((row := await d.decision(i)).outcome, row.reward_event_id)
                   for i in ("d1", "d2")}
        assert rewards == {"d1": (REWARDED, "e1"), "d2": (REWARDED, "e2")}
        assert await d.rows(early_rewards) == []


async def test_settling_a_rewarded_decision_leaves_the_event_for_the_others(
        backend: Backend) -> None:
    """An event kept for a decision rewarded meanwhile (kept by a transaction that read it
    pending) rewarded nothing there, and was forgotten for every decision."""
    async with running(backend) as d:
        await d.point("home", "order_completed", window=DAY)
        await d.decided("d1", "home", "p1")
        await d.decided("d2", "home", "p1", "b")
        await d.events(track("e1", "p1", "order_completed", START + 2 * HOUR))
        await d.facts(sent("m1", "d1", START + HOUR))
        assert (await d.decision("d1")).outcome == REWARDED
        await d.insert(early_rewards, [_kept(i, "e2", START + 3 * HOUR) for i in ("d1", "d2")])

        async def settled() -> bool:  # by the learning worker
            return [(r.decision_id, r.event_id) for r in await d.rows(early_rewards)] == [
                ("d2", "e2")]

        await eventually(settled)
        await d.facts(sent("m2", "d2", START + HOUR))
        row = await d.decision("d2")
        assert (row.outcome, row.reward_event_id) == (REWARDED, "e2")
        assert await d.rows(early_rewards) == []


async def test_a_reward_event_reads_only_the_latest_pending_decisions(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pending decision of the person was read on each reward event (a person whose
    messages are never sent has months of them); the event is kept for the latest anyway."""
    read: list[str] = []
    built = adapter.PendingDecision

    def counted(decision_id: str, *rest: Any) -> Any:
        read.append(decision_id)
        return built(decision_id, *rest)

    monkeypatch.setattr(adapter, "PendingDecision", counted)
    async with running(backend) as d:
        await d.point("home", "order_completed", window=DAY)
        await _pending(d, [(f"d{i:02}", START - i * HOUR, False) for i in range(30)]
                       + [("d-after", START + 3 * HOUR, False), ("d-learned", START, True)])
        await d.events(track("e1", "p1", "order_completed", START + 2 * HOUR))
        latest = [f"d{i:02}" for i in range(MAX_KEPT_PER_EVENT)]
        assert sorted(r.decision_id for r in await d.rows(early_rewards)) == latest
        assert sorted(read) == latest
        await d.facts(sent("m1", "d00", START + HOUR))
        assert (await d.decision("d00")).outcome == REWARDED
        await d.facts(sent("m2", "d01", START + HOUR))
        assert (await d.decision("d01")).outcome == EXPOSED


async def _pending(d: Decisioning, decided: list[tuple[str, Any, bool]]) -> None:
    await d.insert(decisions, [
        decision_row(decision_id, "home", "p1", decide_time=at,
                     decide_hour=int(at.timestamp()) // 3600, learned=learned)
        for decision_id, at, learned in decided])
