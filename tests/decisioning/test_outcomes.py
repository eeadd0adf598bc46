"""Outcomes flowing back into decisioning through RecordMessageFacts (delivery) and
RecordEvents (identity), over a real gRPC server on both databases: a SENT message with a
decision id exposes the decision (and spends its action's budget once), a reward event inside
the window rewards the last exposure, a merged profile's decisions follow the person, a failing
reward filter is recorded on its point and stops nothing, and forwarded items are taken once."""

from __future__ import annotations

from datetime import timedelta

from outcomes_support import (
    START,
    WS,
    merged,
    opened,
    running,
    sent,
    track,
)

from cjo.analytics.v1 import fact_pb2
from cjo_decisioning.adapters.tables import (
    EXPOSED,
    PENDING,
    REWARDED,
    actions,
    decision_points,
    engagement_hours,
)
from support import Backend, as_service

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


async def test_a_sent_message_exposes_its_decision_once_and_a_failed_one_does_not(
        backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "order_completed", window=2 * DAY)
        await d.decided("d1", "home", "p1", "a")
        await d.decided("d2", "home", "p2", "a")
        reply = await d.facts(
            sent("m1", "d1", START + HOUR),
            sent("m2", "d2", START + HOUR, "p2", fact_pb2.FACT_TYPE_MESSAGE_FAILED),
            sent("m1", "d1", START + HOUR),  # a repeat in the same call
            sent("m3", "unknown", START + HOUR))  # a decision this workspace never made
        assert [(r.status.code, r.duplicate) for r in reply.results] == [
            (0, False), (0, False), (0, True), (0, False)]
        again = await d.facts(sent("m1", "d1", START + HOUR))  # re-sent by the forwarder
        assert again.results[0].duplicate
        # A second message carrying the same decision is not a second exposure.
        await d.facts(sent("m9", "d1", START + 5 * HOUR))

        first, failed = await d.decision("d1"), await d.decision("d2")
        assert (first.outcome, first.expose_time, first.reward_deadline) == (
            EXPOSED, START + HOUR, START + HOUR + 2 * DAY)
        assert failed.outcome == PENDING and failed.expose_time is None
        [row] = await d.rows(actions, actions.c.key == "a")
        # The budget is reserved when a decision is made (these were inserted, not decided):
        # an exposure spends nothing more.
        assert row.exposures == 0


async def test_a_reward_inside_the_window_rewards_the_last_exposure(backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "order_completed", window=DAY)
        for n, hours in ((1, 1), (2, 3), (3, 30)):
            await d.decided(f"d{n}", "home", "p1", "a" if n != 2 else "b")
            await d.facts(sent(f"m{n}", f"d{n}", START + hours * HOUR))
        await d.decided("late", "home", "p9")
        await d.facts(sent("m-late", "late", START + HOUR, "p9"))

        await d.events(
            track("e1", "p1", "order_completed", START + 4 * HOUR),
            track("e2", "p1", "page_viewed", START + 4 * HOUR),  # not the reward event
            # p9's purchase comes after its window closed: no reward.
            track("e3", "p9", "order_completed", START + HOUR + DAY + HOUR))
        rows = {n: await d.decision(n) for n in ("d1", "d2", "d3", "late")}
        # d1 and d2 were both open; the last exposure (d2) wins, once. d3 was exposed later.
        assert {n: r.outcome for n, r in rows.items()} == {
            "d1": EXPOSED, "d2": REWARDED, "d3": EXPOSED, "late": EXPOSED}
        assert (rows["d2"].reward_time, rows["d2"].reward_event_id) == (
            START + 4 * HOUR, "e1")

        # The next purchase rewards the next open exposure (d3 now, inside its window).
        await d.events(track("e4", "p1", "order_completed", START + 31 * HOUR))
        assert (await d.decision("d3")).outcome == REWARDED
        assert (await d.decision("d1")).outcome == EXPOSED  # its window had closed


async def test_a_merged_profile_s_decision_is_rewarded_by_the_survivor(backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "signed_up")
        await d.decided("d-anon", "home", "anon-1")
        await d.facts(sent("m1", "d-anon", START + HOUR, "anon-1"),
                      opened("m1", START + 2 * HOUR, "anon-1"))
        reply = await d.events(merged("anon-1", "user-1", START + 3 * HOUR),
                               track("e1", "user-1", "signed_up", START + 3 * HOUR))
        assert [r.duplicate for r in reply.results] == [False, False]
        row = await d.decision("d-anon")
        assert (row.outcome, row.reward_event_id) == (REWARDED, "e1")
        # Its engagement is the survivor's now.
        hours = await d.rows(engagement_hours, engagement_hours.c.profile_id != "")
        assert [(h.profile_id, h.hour, h.engagements) for h in hours] == [("user-1", 11, 1)]


async def test_a_failing_reward_filter_is_recorded_on_its_point_and_stops_nothing(
        backend: Backend) -> None:
    async with running(backend) as d:
        # Fails for this event (a division by zero is no missing data), at run time only.
        await d.point("broken", "order_completed",
                      filter="100 / event.properties.items > 1 && decision.action == 'a'")
        await d.point("kept", "order_completed",
                      filter="event.properties.total >= 20.0 && profile.plan == 'pro'")
        await d.decided("d1", "broken", "p1")
        await d.decided("d2", "kept", "p1")
        await d.decided("d3", "kept", "p2")
        await d.facts(sent("m1", "d1", START), sent("m2", "d2", START),
                      sent("m3", "d3", START, "p2"))
        reply = await d.events(
            track("e1", "p1", "order_completed", START + HOUR, {"items": 0, "total": 25.0},
                  {"plan": "pro"}),
            track("e2", "p2", "order_completed", START + HOUR, {"items": 1, "total": 5.0},
                  {"plan": "pro"}))  # under the filter's total: no reward
        assert {r.status.code for r in reply.results} == {0}
        assert [(await d.decision(n)).outcome for n in ("d1", "d2", "d3")] == [
            EXPOSED, REWARDED, EXPOSED]
        points = {p.key: p for p in await d.rows(decision_points)}
        assert points["broken"].error_count == 1
        assert "e1" in points["broken"].last_error
        assert points["broken"].last_error_time == START
        assert points["kept"].error_count == 0


async def test_another_workspace_is_unaffected(backend: Backend) -> None:
    other = as_service("ws-b")
    async with running(backend) as d:
        await d.point("home", "order_completed")
        await d.point("home", "order_completed", workspace_id="ws-b")
        await d.decided("d1", "home", "p1")
        await d.decided("d1", "home", "p1", workspace_id="ws-b")
        await d.facts(sent("m1", "d1", START))
        # The same ids in another workspace are other facts and events.
        reply = await d.facts(sent("m1", "d1", START), workspace=other)
        assert not reply.results[0].duplicate
        await d.events(track("e1", "p1", "order_completed", START + HOUR), workspace=other)
        assert (await d.decision("d1")).outcome == EXPOSED
        assert (await d.decision("d1", "ws-b")).outcome == REWARDED
        reply = await d.events(track("e1", "p1", "order_completed", START + HOUR), workspace=WS)
        assert not reply.results[0].duplicate
        assert (await d.decision("d1")).outcome == REWARDED


async def test_opens_and_clicks_count_per_person_channel_and_hour(backend: Backend) -> None:
    async with running(backend) as d:
        at = START.replace(hour=18)
        click = sent("m1", "", at + timedelta(minutes=5), "p1", fact_pb2.FACT_TYPE_MESSAGE_CLICKED)
        reply = await d.facts(opened("m1", at), click, opened("m2", at, "p2"),
                              opened("m1", at))  # the repeat of the open
        assert [r.duplicate for r in reply.results] == [False, False, False, True]
        rows = {(r.profile_id, r.hour): r.engagements for r in await d.rows(engagement_hours)}
        assert rows == {("p1", 18): 2, ("p2", 18): 1, ("", 18): 3}
