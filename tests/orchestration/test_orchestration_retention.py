"""Orchestration's retention: processed inbox events and the steps of finished enrollments go
after their days; pending events, given-up events a dead letter points at, and active
enrollments' steps stay."""

from __future__ import annotations

from datetime import timedelta

from retention_support import NOW, service_db

from cjo_orchestration.adapters.enrollments import INBOX_SOURCE
from cjo_orchestration.adapters.retention import RULES
from cjo_orchestration.adapters.tables import dead_letters, enrollments, inbox, steps
from support import Backend

OLD, YOUNG = NOW - timedelta(days=8), NOW - timedelta(days=6)


async def test_processed_inbox_events_go_after_seven_days(backend: Backend) -> None:
    with service_db("orchestration", backend) as db:
        db.insert(inbox, [
            *[{"workspace_id": "w1", "event_id": f"old{i}", "profile_id": "p", "properties": {},
               "traits": {}, "receive_time": OLD, "processed": True} for i in range(5)],
            {"workspace_id": "w2", "event_id": "old", "profile_id": "p", "properties": {},
             "traits": {}, "receive_time": OLD, "processed": True},
            {"workspace_id": "w1", "event_id": "young", "profile_id": "p", "properties": {},
             "traits": {}, "receive_time": YOUNG, "processed": True},
            {"workspace_id": "w1", "event_id": "pending", "profile_id": "p", "properties": {},
             "traits": {}, "receive_time": OLD - timedelta(days=30), "processed": False},
            # Given up: its dead letter's replay needs the row.
            {"workspace_id": "w1", "event_id": "given-up", "profile_id": "p", "properties": {},
             "traits": {}, "receive_time": OLD, "processed": True, "last_error": "boom"},
            # Failed once, then applied: nothing points at it.
            {"workspace_id": "w1", "event_id": "recovered", "profile_id": "p",
             "properties": {}, "traits": {}, "receive_time": OLD, "processed": True,
             "last_error": "once"},
        ])
        db.insert(dead_letters, [{"workspace_id": "w1", "source": INBOX_SOURCE,
                                  "item_key": "given-up", "payload": b"", "error": "boom",
                                  "first_failed_time": OLD, "last_failed_time": OLD}])
        assert await db.retain(RULES, steps=0, enrollment_snapshots=0) == {
            "request_log": 0, "inbox": 7}
        assert db.rows(inbox, inbox.c.workspace_id, inbox.c.event_id) == [
            ("w1", "given-up"), ("w1", "pending"), ("w1", "young")]


async def test_steps_of_finished_enrollments_go_after_ninety_days(backend: Backend) -> None:
    with service_db("orchestration", backend) as db:
        enrollment = {"workspace_id": "w1", "journey_id": "j", "journey_version": 1,
                      "profile_id": "p", "visits": {}, "traits": {}, "properties": {},
                      "create_time": NOW, "update_time": NOW}
        db.insert(enrollments, [{**enrollment, "enrollment_id": "done", "state": "completed"},
                                {**enrollment, "enrollment_id": "live", "state": "active",
                                 "profile_id": "q"}])
        db.insert(steps, [
            {"workspace_id": "w1", "enrollment_id": enrollment_id, "step_number": n,
             "node_id": "n", "visit": 1, "outcome": "ok", "time": NOW - timedelta(days=age)}
            for enrollment_id in ("done", "live") for n, age in enumerate([200, 120, 91, 80])])
        assert await db.retain(RULES, inbox=0, enrollment_snapshots=0) == {
            "request_log": 0, "steps": 3}
        assert db.rows(steps, steps.c.enrollment_id, steps.c.step_number) == [
            ("done", 3), ("live", 0), ("live", 1), ("live", 2), ("live", 3)]
