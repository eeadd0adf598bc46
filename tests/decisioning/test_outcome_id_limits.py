"""RecordEvents and RecordMessageFacts take ids as wide as decisioning stores them
(cjo_platform.limits): a longer one fails its own item with INVALID_ARGUMENT naming the field,
and the other items are recorded (on PostgreSQL the whole call failed INTERNAL; SQLite stored
it)."""

from __future__ import annotations

from outcomes_support import START, merged, opened, running, sent, track

from cjo.orchestration.v1.orchestration_service_pb2 import ForwardedEvent
from cjo_decisioning.adapters.tables import engagement_hours, profile_aliases, received
from cjo_platform.limits import MAX_ID_LENGTH
from cjo_platform.rpc.status import field_violations
from support import Backend

LONG = "x" * (MAX_ID_LENGTH + 1)
WIDEST = "w" * MAX_ID_LENGTH
INVALID = 3


def merge(merged_profile_id: str, survivor_profile_id: str) -> ForwardedEvent:
    event = merged(merged_profile_id, survivor_profile_id, START)
    event.event_id = f"merge-{len(merged_profile_id)}"
    return event


async def test_ids_longer_than_storage_fail_their_item_alone(backend: Backend) -> None:
    async with running(backend) as d:
        await d.point("home", "order_completed")
        reply = await d.events(
            track("ok-1", "p1", "order_completed", START),
            track(LONG, "p1", "order_completed", START),
            track("ok-2", LONG, "order_completed", START),
            merge(LONG, "p2"),
            merge(WIDEST, "p3"))
        assert [r.status.code for r in reply.results] == [0, INVALID, INVALID, INVALID, 0]
        assert [list(field_violations(r.status)) for r in reply.results[1:4]] == [
            ["events[1].event_id"], ["events[2].profile_id"],
            ["events[3].event.properties.merged_profile_id"]]
        aliases = await d.rows(profile_aliases)
        assert [(r.profile_id, r.survivor_profile_id) for r in aliases] == [(WIDEST, "p3")]

        bad_decision = sent("m3", LONG, START)
        reply = await d.facts(opened("m1", START, "p1"), opened(LONG, START, "p1"),
                              opened("m2", START, LONG), bad_decision,
                              opened("m4", START, "v" * MAX_ID_LENGTH))
        assert [r.status.code for r in reply.results] == [0, INVALID, INVALID, INVALID, 0]
        assert [list(field_violations(r.status)) for r in reply.results[1:4]] == [
            ["facts[1].fact_id"], ["facts[2].profile_id"], ["facts[3].decision_id"]]
        hours = await d.rows(engagement_hours, engagement_hours.c.profile_id != "")
        assert sorted(h.profile_id for h in hours) == ["p1", "v" * MAX_ID_LENGTH]
        assert len(await d.rows(received)) == 4  # ok-1, the merge, m1 and m4
