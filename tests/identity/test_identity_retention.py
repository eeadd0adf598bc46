"""Identity's retention: events are kept forever unless CJO_IDENTITY_RETENTION_EVENTS_DAYS says
otherwise (computed traits, segments and backfills read old events)."""

from __future__ import annotations

from datetime import timedelta

from retention_support import NOW, service_db

from cjo_identity.adapters.retention import RULES
from cjo_identity.adapters.tables import events
from support import Backend


async def test_events_are_kept_forever_unless_a_limit_is_set(backend: Backend) -> None:
    with service_db("identity", backend) as db:
        db.insert(events, [
            {"workspace_id": w, "event_id": f"e{age}", "message_id": f"m{age}", "profile_id": "p",
             "type": "track", "identifiers": [], "properties": {}, "traits": {},
             "timestamp": NOW - timedelta(days=age), "receive_time": NOW - timedelta(days=age)}
            for w in ("w1", "w2") for age in (1, 399, 401, 3000)])
        assert await db.retain(RULES) == {"request_log": 0}
        assert len(db.rows(events, events.c.event_id)) == 8
        assert await db.retain(RULES, events=400) == {"request_log": 0, "events": 4}
        assert db.rows(events, events.c.workspace_id, events.c.event_id) == [
            ("w1", "e1"), ("w1", "e399"), ("w2", "e1"), ("w2", "e399")]
