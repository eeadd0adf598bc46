"""What reaches decisioning for an erased person after the erasure (queued before it, on
another topic or partition) brings nothing of them back: an open or click adds no engagement
hours, a merge into them erases the merged profile too, and a merge of an erased id is
ignored."""

from __future__ import annotations

from datetime import timedelta

from outcomes_support import START, merged, opened, running, sent
from test_erasure import erased

from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_decisioning.adapters.tables import engagement_hours, profile_aliases
from support import Backend, as_service

HOUR = timedelta(hours=1)


async def test_facts_arriving_after_an_erasure_bring_nothing_back(backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "order_completed")
        await d.decided("d-late", "home", "late-1")
        await d.facts(opened("m1", START, "p1"), opened("m0", START, "late-1"))
        await d.events(merged("anon-1", "p1", START))
        await d.events(erased("p1"))
        # delivery's opens of p1 and of the id merged into p1, queued before the erasure
        await d.facts(opened("m2", START + 2 * HOUR, "p1"),
                      opened("m3", START + 2 * HOUR, "anon-1"),
                      opened("m4", START + 2 * HOUR, "p2"))
        hours = await d.rows(engagement_hours, engagement_hours.c.profile_id != "")
        assert [(h.profile_id, h.engagements) for h in hours] == [("late-1", 1), ("p2", 1)]
        reply = await d.stub.GetSendTimes(pb.GetSendTimesRequest(
            profile_ids=["p1"], channel=common_pb2.CHANNEL_EMAIL), metadata=as_service("ws-a"))
        assert reply.send_times[0].source != pb.SEND_TIME_SOURCE_PROFILE

        # identity merged late-1 into p1 before erasing p1; the merge comes after the erasure:
        # late-1 is erased too. A merge of the erased p1 into another person is ignored.
        await d.events(merged("late-1", "p1", START + HOUR))
        await d.events(merged("p1", "p3", START + HOUR))
        await d.facts(sent("m5", "d-late", START + 3 * HOUR, "late-1"),
                      opened("m5", START + 3 * HOUR, "late-1"))
        assert (await d.decision("d-late")).profile_id == ""
        hours = await d.rows(engagement_hours, engagement_hours.c.profile_id != "")
        assert [(h.profile_id, h.engagements) for h in hours] == [("p2", 1)]
        aliases = await d.rows(profile_aliases)
        assert sorted((r.profile_id, r.survivor_profile_id) for r in aliases) == [
            ("anon-1", ""), ("late-1", ""), ("p1", "")]
