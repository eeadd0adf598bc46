"""The learning worker: rewarded decisions and lapsed windows update their action's model,
each decision exactly once, even with two replicas learning from one PostgreSQL database; a
point that is gone marks its decisions learned and stops nothing, a transient database error
loses nothing; the injected clock decides when a window lapsed (after a grace for rewards
forwarded late)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from outcomes_support import START, WS, decision_row, running, sent, track
from sqlalchemy.exc import OperationalError

from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_decisioning.adapters.tables import (
    EXPOSED,
    NOT_REWARDED,
    REWARDED,
    decision_points,
    decisions,
    models,
    received,
)
from cjo_decisioning.domain.features import Features
from cjo_decisioning.domain.model import ActionModel, mean_propensities
from cjo_decisioning.service_layer import learning
from cjo_platform.clock import ManualClock
from support import Backend, eventually

HOUR = timedelta(hours=1)
GRACE = timedelta(minutes=5)  # CJO_DECISIONING_REWARD_GRACE_SECONDS' default
# Outcomes are learned once their window closed GRACE ago (rewards with their failures).


async def test_a_reward_is_learned_with_its_window_s_failures_once_the_window_closes(
        backend: Backend) -> None:
    """Rewards are known at once, failures only when the window closes: learning the rewards
    first feeds the sequential Laplace update one-sided batches that it does not compose (the
    benchmark's bandit collapsed onto one action). A reward is learned when its window closes,
    with the failures beside it, and the model's rate lands near what was observed."""
    clock = ManualClock(START)
    async with running(backend, clock) as d:
        await d.point("home", "order_completed", window=2 * HOUR)
        for i in range(40):
            await d.decided(f"d{i}", "home", f"p{i}", "a",
                            features={"i": [0, 7], "v": [1.0, 1.0]})
        await d.facts(*(sent(f"m{i}", f"d{i}", START, f"p{i}") for i in range(40)))
        assert await d.model("home", "a") is None  # an exposure alone teaches nothing
        await d.events(*(track(f"e{i}", f"p{i}", "order_completed", START + HOUR)
                         for i in range(4)))
        assert (await d.decision("d0")).outcome == REWARDED
        clock.advance(HOUR)  # the rewards are in, the window still open: nothing learned
        await asyncio.sleep(0.2)  # a few of the learner's 0.05 s polls
        assert await d.model("home", "a") is None
        assert not (await d.decision("d0")).learned

        clock.advance(HOUR + GRACE + timedelta(seconds=1))

        async def learned() -> bool:
            row = await d.model("home", "a")
            return row is not None and row.observations == 40

        await eventually(learned)
        row = await d.model("home", "a")
        assert (row.observations, row.rewards) == (40, 4)
        assert (await d.decision("d0")).outcome == REWARDED
        assert (await d.decision("d9")).outcome == NOT_REWARDED
        model = ActionModel.from_bytes(row.mean, row.precision)
        prior = ActionModel.prior(0.05)
        assert model.mean[8] == prior.mean[8]  # features never seen stay at the prior
        # 4 of 40 converted: the model's rate for these people is near 10%, not pinned at
        # either end as when rewards and failures were learned in separate batches.
        [[rate]] = mean_propensities([model], [Features(np.array([0, 7]), np.array([1.0, 1.0]))])
        assert 0.04 < rate < 0.25, rate


async def test_a_lapsed_window_is_learned_as_a_failure_when_the_clock_says_so(
        backend: Backend) -> None:
    clock = ManualClock(START)
    async with running(backend, clock) as d:
        await d.point("home", "order_completed", window=2 * HOUR)
        await d.decided("d1", "home", "p1", "a")
        await d.decided("d2", "home", "p2", "a")
        await d.facts(sent("m1", "d1", START), sent("m2", "d2", START + HOUR, "p2"))
        # d1's window lapsed (and its grace), d2's is open
        clock.advance(2 * HOUR + GRACE + timedelta(seconds=1))

        async def lapsed() -> bool:
            return bool((await d.decision("d1")).learned)

        await eventually(lapsed)
        first, second = await d.decision("d1"), await d.decision("d2")
        assert (first.outcome, first.learned) == (NOT_REWARDED, True)
        assert (second.outcome, second.learned) == (EXPOSED, False)
        row = await d.model("home", "a")
        assert (row.version, row.observations, row.rewards) == (1, 1, 0)
        # A purchase after the lapse rewards nothing: the decision's outcome is settled.
        await d.events(track("e1", "p1", "order_completed", START + 2 * HOUR))
        assert (await d.decision("d1")).outcome == NOT_REWARDED


async def test_a_conversion_inside_the_window_forwarded_late_still_rewards(
        backend: Backend) -> None:
    clock = ManualClock(START)
    async with running(backend, clock) as d:
        await d.point("home", "order_completed", window=HOUR)
        # "old" lapsed long ago: once it is learned, a round ran with the clock below.
        # (Decided before it was sent: an exposure is never earlier than its decision.)
        await d.decided("old", "home", "p0", "a", decide_time=START - 3 * HOUR)
        await d.decided("late", "home", "p1", "a")
        await d.decided("after", "home", "p2", "a")
        await d.facts(sent("m0", "old", START - 2 * HOUR, "p0"), sent("m1", "late", START),
                      sent("m2", "after", START, "p2"))
        # 61 minutes on: both windows closed a minute ago, inside the grace.
        clock.advance(HOUR + timedelta(minutes=1))

        async def old_learned() -> bool:
            return bool((await d.decision("old")).learned)

        await eventually(old_learned)
        assert (await d.decision("late")).outcome == EXPOSED
        # The person converted at 59 minutes, forwarded only now: a reward. A purchase after
        # the window (62 minutes) still rewards nothing: the grace does not widen the window.
        await d.events(track("e1", "p1", "order_completed", START + timedelta(minutes=59)),
                       track("e2", "p2", "order_completed", START + timedelta(minutes=62)))
        assert (await d.decision("late")).outcome == REWARDED
        assert (await d.decision("after")).outcome == EXPOSED
        clock.advance(GRACE)

        async def after_lapsed() -> bool:
            return bool((await d.decision("after")).learned)

        await eventually(after_lapsed)
        assert (await d.decision("after")).outcome == NOT_REWARDED
        row = await d.model("home", "a")
        assert (row.observations, row.rewards) == (3, 1)


async def test_a_transient_database_error_leaves_the_decisions_to_a_later_round(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(START)
    failures: list[str] = []
    save_model = learning.models.save_model

    def flaky_save(*args: Any, **kwargs: Any) -> None:
        if not failures:  # the connection drops once, as in a database restart
            failures.append("dropped")
            raise OperationalError("UPDATE models", {}, Exception("server closed the connection"))
        save_model(*args, **kwargs)

    monkeypatch.setattr(learning.models, "save_model", flaky_save)
    async with running(backend, clock, CJO_DECISIONING_LEARN_LEASE_SECONDS="1") as d:
        await d.point("home", "order_completed")
        await d.decided("d1", "home", "p1", "a")
        await d.facts(sent("m1", "d1", START))
        await d.events(track("e1", "p1", "order_completed", START + HOUR))
        clock.advance(timedelta(days=7) + GRACE + timedelta(seconds=1))
        await eventually(lambda: failures)
        clock.advance(timedelta(seconds=2))  # the failed round's lease runs out

        async def learned() -> bool:
            return bool((await d.decision("d1")).learned)

        await eventually(learned)
        row = await d.model("home", "a")
        assert (row.observations, row.rewards) == (1, 1)  # learned, not thrown away
        [point] = await d.rows(decision_points)
        assert point.error_count == 0


async def test_a_point_deleted_and_created_again_starts_afresh(backend: Backend) -> None:
    clock = ManualClock(START)
    async with running(backend, clock) as d:
        await d.point("home", "order_completed", window=HOUR)
        await d.decided("old", "home", "p1", "a")
        await d.facts(sent("m1", "old", START))
        await d.stub.DeleteDecisionPoint(pb.DeleteDecisionPointRequest(
            name="decisionPoints/home"), metadata=WS)
        await d.point("home", "order_completed", window=HOUR)
        await d.decided("new", "home", "p2", "a")
        await d.facts(sent("m2", "new", START, "p2"))
        # The new point's reward event rewards its own decision, not the old point's.
        await d.events(track("e1", "p1", "order_completed", START + timedelta(minutes=5)),
                       track("e2", "p2", "order_completed", START + timedelta(minutes=5)))
        clock.advance(HOUR + GRACE + timedelta(seconds=1))

        async def new_learned() -> bool:
            return bool((await d.decision("new")).learned)

        await eventually(new_learned)
        old = await d.decision("old")
        assert (old.outcome, old.learned) == (EXPOSED, True)
        row = await d.model("home", "a")
        assert (row.observations, row.rewards) == (1, 1)  # the new decision alone


async def test_a_deleted_point_s_decisions_are_marked_learned_and_others_learn(
        backend: Backend) -> None:
    clock = ManualClock(START)
    async with running(backend, clock) as d:
        await d.point("gone", "order_completed", window=HOUR)
        await d.point("home", "order_completed")
        await d.decided("d1", "gone", "p1", "a")
        await d.decided("d2", "home", "p1", "b")
        await d.facts(sent("m1", "d1", START), sent("m2", "d2", START))

        def delete_point() -> None:
            with d.app.db.transaction() as session:
                session.execute(decision_points.delete().where(
                    decision_points.c.key == "gone"))
        await d.app.db.run(delete_point)
        clock.advance(2 * HOUR)  # d1's window lapses, its point gone
        await d.events(track("e1", "p1", "order_completed", START + HOUR))
        clock.advance(timedelta(days=7) + GRACE + timedelta(seconds=1))

        async def both() -> bool:
            return all([(await d.decision(i)).learned for i in ("d1", "d2")])

        await eventually(both)
        assert await d.model("gone", "a") is None
        assert (await d.decision("d1")).outcome == NOT_REWARDED
        row = await d.model("home", "b")
        assert (row.observations, row.rewards) == (1, 1)


async def test_features_the_model_cannot_read_fail_their_group_alone(backend: Backend) -> None:
    clock = ManualClock(START)
    async with running(backend, clock) as d:
        await d.point("home", "order_completed")
        await d.decided("bad", "home", "p1", "a", features={"i": [0, 1 << 40], "v": [1.0, 1.0]})
        await d.decided("good", "home", "p2", "b")
        await d.facts(sent("m1", "bad", START), sent("m2", "good", START, "p2"))
        await d.events(track("e1", "p1", "order_completed", START + HOUR),
                       track("e2", "p2", "order_completed", START + HOUR))
        clock.advance(timedelta(days=7) + GRACE + timedelta(seconds=1))

        async def both() -> bool:
            return all([(await d.decision(i)).learned for i in ("bad", "good")])

        await eventually(both)
        assert (await d.model("home", "b")).rewards == 1
        [point] = await d.rows(decision_points)
        assert point.error_count == 1 and "learning a" in point.last_error


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_two_replicas_learn_each_decision_exactly_once(backend: Backend) -> None:
    count = 3000
    env = {"CJO_DECISIONING_LEARN_BATCH": "100"}
    async with running(backend, **env) as first, running(backend, **env) as second:
        await first.point("home", "order_completed", actions_=("a", "b", "c"))
        rng = np.random.default_rng(7)
        rows = []
        for n in range(count):
            rewarded = bool(rng.random() < 0.3)
            rows.append(decision_row(
                f"d{n:05}", "home", f"p{n}", "abc"[n % 3],
                features={"i": [0, int(rng.integers(1, 4096))], "v": [1.0, 1.0]},
                outcome=REWARDED if rewarded else EXPOSED, expose_time=START,
                reward_deadline=START + HOUR, reward_time=START if rewarded else None))
        # Every window lapses at once under the replicas' clocks.
        for replica in (first, second):
            replica.clock.advance(2 * HOUR)
        # Both replicas' learners poll every 0.05 s and claim batches of 100.
        await first.insert(decisions, rows)

        async def done() -> bool:
            left = await first.rows(decisions.c.decision_id, decisions.c.learned.is_(False))
            return not left

        await eventually(done, timeout=120)
        found = await first.rows(models)
        assert sum(m.observations for m in found) == count
        assert sum(m.rewards for m in found) == sum(
            1 for r in rows if r["outcome"] == REWARDED)


async def test_forwarded_ids_are_forgotten_after_the_retention(backend: Backend) -> None:
    clock = ManualClock(START)
    async with running(backend, clock, CJO_DECISIONING_RECEIVED_RETENTION_HOURS="24") as d:
        # Events a point rewards: only those leave their ids (the others change nothing).
        await d.point("home", "order_completed", window=HOUR)
        await d.events(*(track(f"old{i}", "p1", "order_completed", START) for i in range(5)))
        clock.advance(23 * HOUR)
        await d.events(track("recent", "p1", "order_completed", START + 23 * HOUR))
        # Inside the retention a re-sent id is still a duplicate.
        again = await d.events(track("old0", "p1", "order_completed", START))
        assert again.results[0].duplicate
        clock.advance(2 * HOUR)  # the five old ids are 25 hours old, "recent" 2

        async def pruned() -> list[str]:
            rows = await d.rows(received)
            return sorted(r.source_id for r in rows) if len(rows) == 1 else []

        assert await eventually(pruned) == ["event:recent"]
