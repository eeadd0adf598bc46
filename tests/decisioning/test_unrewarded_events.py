"""RecordEvents keeps the ids of the events it acts on only (merges, erasures, events a decision
point of the workspace rewards), on both databases: most forwarded events are no point's reward
event, and writing an id row for each was a third of decisioning's CPU per lone event. Those
events change nothing however often they come; the others are still taken once."""

from __future__ import annotations

from datetime import timedelta

from outcomes_support import START, merged, running, sent, track

from cjo_decisioning.adapters.tables import REWARDED, decisions, received
from support import Backend, as_service

HOUR = timedelta(hours=1)


async def test_only_the_events_decisioning_acts_on_leave_their_ids(backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "order_completed", window=2 * HOUR)
        await d.decided("d1", "home", "p1")
        await d.facts(sent("m1", "d1", START + HOUR))
        batch = (track("viewed", "p1", "page_viewed", START + HOUR),
                 track("bought", "p1", "order_completed", START + HOUR),
                 merged("p0", "p1", START + HOUR))
        first = await d.events(*batch)
        again = await d.events(*batch)  # re-sent by the forwarder

        assert [r.duplicate for r in first.results] == [False, False, False]
        # A repeat of an event decisioning acts on is a duplicate; one of an event it does
        # nothing with is taken again, and does nothing again.
        assert [r.duplicate for r in again.results] == [False, True, True]
        ids = sorted(r.source_id for r in await d.rows(received))
        assert ids == ["event:bought", "event:profile_merged:p0:p1", "fact:message_sent:m1"]
        rewarded = await d.decision("d1")
        assert (rewarded.outcome, rewarded.reward_event_id) == (REWARDED, "bought")

        # A workspace without decision points keeps no id of its events at all.
        other = as_service("ws-b")
        reply = await d.events(track("b1", "q1", "order_completed", START), workspace=other)
        assert reply.results[0].status.code == 0
        assert await d.rows(received, received.c.workspace_id == "ws-b") == []
        assert await d.rows(decisions, decisions.c.workspace_id == "ws-b") == []
