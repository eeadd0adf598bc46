"""Ended enrollments keep the person's copy (traits, event properties, entry properties) only
as long as their steps: then retention empties it, keeping what re-entry, cooldowns and reports
read (state, times, node, exit reason, goal). Active enrollments and ended ones whose goal
window is open (a conversion's filter may read ``journey.entry``) keep theirs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from query_plans import plans
from retention_support import NOW, filled, service_db
from sqlalchemy import select, text

from cjo_orchestration.adapters.retention import RULES
from cjo_orchestration.adapters.tables import enrollments
from cjo_platform.db.retention import remove_batch
from support import Backend

PERSON = {"first_name": "Ada", "email": "ada@example.com"}
EVENT = {"card_last4": "4242"}


def enrollment(enrollment_id: str, state: str, ended_days_ago: int,
               **more: Any) -> dict[str, Any]:
    ended = NOW - timedelta(days=ended_days_ago)
    return filled(enrollments, {
        "workspace_id": "w1", "enrollment_id": enrollment_id, "journey_id": "j",
        "journey_version": 1, "profile_id": f"p-{enrollment_id}", "state": state, "visits": {},
        "traits": PERSON, "properties": EVENT, "entry_properties": EVENT,
        "create_time": ended - timedelta(days=1), "update_time": ended,
        "exit_reason": "completed" if state != "active" else "", **more})


async def test_ended_enrollments_forget_the_person_after_their_steps_days(
        backend: Backend) -> None:
    with service_db("orchestration", backend) as db:
        db.insert(enrollments, [
            enrollment("old", "completed", 91, goal_time=NOW - timedelta(days=95)),
            enrollment("exited", "exited", 400),
            enrollment("recent", "completed", 89),
            enrollment("active", "active", 200, due_time=NOW),
            enrollment("goal-open", "completed", 100,
                       goal_deadline=NOW + timedelta(days=1)),
        ])
        removed = await db.retain(RULES, inbox=0, steps=0)
        assert removed == {"request_log": 0, "enrollment_snapshots": 2}
        c = enrollments.c
        with db.storage.db.transaction() as session:
            left = [tuple(r) for r in session.execute(
                select(c.enrollment_id, c.state, c.traits, c.properties, c.entry_properties,
                       c.update_time, c.exit_reason).order_by(c.enrollment_id))]
        assert left == [
            ("active", "active", PERSON, EVENT, EVENT, NOW - timedelta(days=200), ""),
            ("exited", "exited", {}, {}, {}, NOW - timedelta(days=400), "completed"),
            ("goal-open", "completed", PERSON, EVENT, EVENT, NOW - timedelta(days=100),
             "completed"),
            ("old", "completed", {}, {}, {}, NOW - timedelta(days=91), "completed"),
            ("recent", "completed", PERSON, EVENT, EVENT, NOW - timedelta(days=89),
             "completed"),
        ]
        # Two days on, the goal window closed and "recent" ended 91 days ago: those two go;
        # nothing is rewritten twice.
        db.clock.advance(timedelta(days=2))
        assert await db.retain(RULES, inbox=0, steps=0) == {
            "request_log": 0, "enrollment_snapshots": 2}


async def test_a_pass_walks_only_ended_enrollments_that_hold_a_copy(backend: Backend) -> None:
    [rule] = [r for r in RULES if r.kind == "enrollment_snapshots"]
    with service_db("orchestration", backend) as db:
        with db.storage.db.transaction() as session:
            session.execute(enrollments.insert(), [
                enrollment(f"a{i}", "active", 200, due_time=NOW) for i in range(1500)])
            if not db.storage.db.is_sqlite:
                session.execute(text("ANALYZE enrollments"))
        window, *_ = plans(db.storage.db, lambda s: remove_batch(s, rule, NOW, 90, 1000),
                           "enrollments")
        assert "ix_enrollments_snapshots" in window[1], window
