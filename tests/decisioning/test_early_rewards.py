"""A conversion that reaches decisioning before its decision's exposure (identity's event and
delivery's SENT fact come on different topics) rewards the decision once it is exposed, when
the event lies inside the window the exposure opens: not dropped, and not learned as a failure
when the window closes. Redelivered, it rewards once; an event rewards one decision per point;
what is kept for decisions never exposed is forgotten after the retention, and with an
erasure."""

from __future__ import annotations

from datetime import timedelta

from outcomes_support import START, running, sent, track
from test_erasure import erased

from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_decisioning.adapters.tables import (
    EXPOSED,
    NOT_REWARDED,
    PENDING,
    REWARDED,
    early_rewards,
)
from cjo_platform.clock import ManualClock
from support import Backend, as_service, eventually

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
GRACE = timedelta(minutes=5)  # CJO_DECISIONING_REWARD_GRACE_SECONDS' default


async def test_a_conversion_before_the_exposure_rewards_it_once(backend: Backend) -> None:
    clock = ManualClock(START)
    async with running(backend, clock) as d:
        await d.point("home", "order_completed", window=DAY)
        await d.decided("d1", "home", "p1")
        await d.decided("d2", "home", "p1", "b")  # a second message of the same person
        reply = await d.events(track("e1", "p1", "order_completed", START + 2 * HOUR))
        assert [(r.status.code, r.duplicate) for r in reply.results] == [(0, False)]
        assert (await d.decision("d1")).outcome == PENDING
        # The event is redelivered; then d1's send (at +1 h) is forwarded, twice.
        await d.events(track("e1", "p1", "order_completed", START + 2 * HOUR))
        await d.facts(sent("m1", "d1", START + HOUR))
        await d.facts(sent("m1", "d1", START + HOUR))
        row = await d.decision("d1")
        assert (row.outcome, row.reward_event_id, row.reward_time) == (
            REWARDED, "e1", START + 2 * HOUR)
        # The event rewarded d1 at this point: d2's later exposure takes nothing.
        await d.facts(sent("m2", "d2", START + HOUR))
        assert (await d.decision("d2")).outcome == EXPOSED
        assert await d.rows(early_rewards) == []

        clock.advance(DAY + 2 * HOUR + GRACE)

        async def learned() -> bool:
            return all([(await d.decision(i)).learned for i in ("d1", "d2")])

        await eventually(learned)
        assert (await d.decision("d1")).outcome == REWARDED
        assert (await d.decision("d2")).outcome == NOT_REWARDED
        model = await d.model("home", "a")
        assert (model.observations, model.rewards) == (1, 1)


async def test_an_early_conversion_rewards_only_inside_the_window_and_by_its_filter(
        backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "order_completed", window=HOUR,
                      filter="event.properties.sku == decision.action")
        await d.decided("d-late", "home", "p1", "a")  # sent after the conversion
        await d.decided("d-old", "home", "p2", "a")  # the conversion came after its window
        await d.decided("d-other", "home", "p3", "b")  # the filter names another action
        await d.decided("d-ok", "home", "p3", "a")
        await d.events(*(track(f"e-{p}", p, "order_completed", START + 2 * HOUR, {"sku": "a"})
                         for p in ("p1", "p2", "p3")))
        assert sorted(r.decision_id for r in await d.rows(early_rewards)) == [
            "d-late", "d-ok", "d-old"]
        await d.facts(sent("m1", "d-late", START + 3 * HOUR, "p1"),
                      sent("m2", "d-old", START, "p2"),
                      sent("m3", "d-other", START + HOUR, "p3"),
                      sent("m4", "d-ok", START + HOUR, "p3"))
        outcomes = {i: (await d.decision(i)).outcome
                    for i in ("d-late", "d-old", "d-other", "d-ok")}
        assert outcomes == {"d-late": EXPOSED, "d-old": EXPOSED, "d-other": EXPOSED,
                            "d-ok": REWARDED}
        assert await d.rows(early_rewards) == []


async def test_an_exposure_recorded_beside_the_kept_event_is_rewarded_before_learning(
        backend: Backend) -> None:
    """On PostgreSQL an event may be kept while another transaction records the exposure (it
    read the decision as pending): the learning worker takes it before the window is learned."""
    clock = ManualClock(START)
    async with running(backend, clock) as d:
        await d.point("home", "order_completed", window=DAY)
        await d.decided("d1", "home", "p1")
        await d.facts(sent("m1", "d1", START + HOUR))
        await d.insert(early_rewards, [{
            "workspace_id": "ws-a", "decision_id": "d1", "event_id": "e1",
            "decision_point": "home", "profile_id": "p1", "event_time": START + 2 * HOUR,
            "expire_time": START + 2 * HOUR + DAY}])

        async def rewarded() -> bool:
            return bool((await d.decision("d1")).outcome == REWARDED)

        await eventually(rewarded)
        assert await d.rows(early_rewards) == []
        clock.advance(2 * DAY)

        async def learned() -> bool:
            return bool((await d.decision("d1")).learned)

        await eventually(learned)
        assert (await d.model("home", "a")).rewards == 1


async def test_events_kept_for_decisions_never_exposed_are_forgotten(backend: Backend) -> None:
    clock = ManualClock(START)
    async with running(backend, clock, CJO_DECISIONING_RECEIVED_RETENTION_HOURS="24") as d:
        await d.point("home", "order_completed", window=HOUR)
        await d.decided("d1", "home", "p1")
        await d.decided("d2", "home", "p2")
        await d.events(track("e1", "p1", "order_completed", START + HOUR),
                       track("e2", "p2", "order_completed", START + HOUR))
        assert len(await d.rows(early_rewards)) == 2
        # An erasure forgets the person's at once.
        await d.events(erased("p2"))
        assert [r.decision_id for r in await d.rows(early_rewards)] == ["d1"]
        listed = await d.stub.ListDecisions(pb.ListDecisionsRequest(profile_id="p2"),
                                            metadata=as_service("ws-a"))
        assert list(listed.decisions) == []
        # The others 24 hours after the latest window that could hold them (+1 h + 1 h).
        clock.advance(25 * HOUR)
        assert len(await d.rows(early_rewards)) == 1

        async def forgotten() -> bool:
            return await d.rows(early_rewards) == []

        clock.advance(2 * HOUR)
        await eventually(forgotten)
