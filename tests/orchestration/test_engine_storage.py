"""The engine's storage guarantees, on SQLite and PostgreSQL: claimed work is leased to one
worker, a profile holds one active enrollment per journey even when writers race, and inbox
events are stored once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from orchestration_support import migrated_database

from cjo_orchestration.adapters import enrollments as store
from cjo_orchestration.adapters.tables import metadata
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState, Step, StepOutcome
from cjo_orchestration.domain.entry import History
from cjo_platform.db import Database
from support import Backend

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    database = migrated_database(backend)
    assert "enrollments" in metadata.tables
    yield database
    database.dispose()


def enrollment(enrollment_id: str, profile: str = "p1", due: datetime = NOW) -> Enrollment:
    return Enrollment("ws", enrollment_id, "j1", 1, profile, EnrollmentState.ACTIVE, "send", due,
                      NOW, NOW)


def test_a_claimed_enrollment_is_leased_to_one_worker(db: Database) -> None:
    with db.transaction() as session:
        store.insert_new(session, [enrollment("e1", "p1"), enrollment("e2", "p2"),
                                   enrollment("later", "p3", due=NOW + timedelta(hours=1))])
    lease = NOW + timedelta(seconds=60)
    with db.transaction() as session:
        first = store.claim_due(session, NOW, lease, "worker-a", 10)
    with db.transaction() as session:
        second = store.claim_due(session, NOW, lease, "worker-b", 10)
    assert sorted(e.enrollment_id for e in first) == ["e1", "e2"]
    assert second == []  # leased, and "later" is not due

    # Worker A dies; once its lease expires, worker B takes the work over.
    with db.transaction() as session:
        taken = store.claim_due(session, lease, lease + timedelta(seconds=60), "worker-b", 10)
    assert sorted(e.enrollment_id for e in taken) == ["e1", "e2"]
    with db.transaction() as session:
        assert store.still_leased(session, "worker-a", [("ws", "p1", "e1")]) == set()
        assert store.still_leased(session, "worker-b", [("ws", "p1", "e1")]) == {("ws", "e1")}
        done = replace(enrollment("e1"), state=EnrollmentState.COMPLETED, due_time=None,
                       current_node_id="")
        store.save_progress(session, [(done, [Step("send", 0, StepOutcome.SUCCEEDED, "m1",
                                                   NOW)])])
    with db.transaction() as session:
        assert store.get(session, "ws", "j1", "e1").state is EnrollmentState.COMPLETED
        assert [s.detail for s in store.steps_of(session, "ws", ["e1"])["e1"]] == ["m1"]
        # A finished enrollment is never claimed again.
        again = store.claim_due(session, NOW + timedelta(days=1), NOW + timedelta(days=2),
                                "worker-c", 10)
    assert sorted(e.enrollment_id for e in again) == ["e2", "later"]


def test_one_active_enrollment_per_profile_and_journey(db: Database) -> None:
    with db.transaction() as session:
        assert store.insert_new(session, [enrollment("e1")]) == {"e1"}
    # A racing replica's enrollment of the same profile is skipped, not an error.
    with db.transaction() as session:
        assert store.insert_new(session, [enrollment("e2"), enrollment("e3", "p2")]) == {"e3"}
        assert store.active_keys(session, [("ws", "j1", "p1"), ("ws", "j1", "p9")]) == {
            ("ws", "j1", "p1")}


def test_inbox_stores_each_event_once_in_receive_order(db: Database) -> None:
    def row(event_id: str, workspace: str = "ws") -> dict[str, object]:
        return {"workspace_id": workspace, "event_id": event_id, "profile_id": "p1",
                "event_name": "x", "properties": {"a": 1}, "traits": {}, "traceparent": "",
                "receive_time": NOW, "processed": False}

    with db.transaction() as session:
        first = store.receive(session, [row("b"), row("a")])
    assert first.keys() == {("ws", "a"), ("ws", "b")}
    with db.transaction() as session:
        second = store.receive(session, [row("a"), row("c"), row("a", "other")])
        assert second.keys() == {("ws", "c"), ("other", "a")}
        pending = store.pending_events(session, 10)
    assert [(e.workspace_id, e.event_id) for e in pending] == [
        ("ws", "b"), ("ws", "a"), ("ws", "c"), ("other", "a")]
    # Each new event's seq, as stored.
    assert {(e.workspace_id, e.event_id): e.seq for e in pending} == first | second
    assert pending[1].properties == {"a": 1}
    with db.transaction() as session:
        store.mark_processed(session, [e.seq for e in pending[:2]])
    with db.transaction() as session:
        assert [e.event_id for e in store.pending_events(session, 10)] == ["c", "a"]


def test_watched_enrollments_history_and_waits_round_trip(db: Database) -> None:
    waiting = replace(enrollment("w1", "p1", due=NOW + timedelta(hours=1)), waiting=True,
                      goal_deadline=NOW + timedelta(days=3))
    ended = replace(enrollment("old", "p1"), journey_id="j2", state=EnrollmentState.COMPLETED,
                    due_time=None, exit_reason="completed", goal_deadline=NOW + timedelta(days=1),
                    update_time=NOW - timedelta(hours=1))
    expired = replace(enrollment("gone", "p1"), journey_id="j3", state=EnrollmentState.EXITED,
                      due_time=None, goal_deadline=NOW - timedelta(seconds=1))
    other_ws = replace(enrollment("x1", "p1"), workspace_id="ws2")
    with db.transaction() as session:
        store.insert_new(session, [waiting, ended, expired, other_ws, enrollment("p2e", "p2")])
        store.claim_due(session, NOW, NOW + timedelta(days=1), "worker", 10)
    with db.transaction() as session:
        found = store.watched(session, [("ws", "p1")], NOW)
        # Active ones, and ended ones whose goal window is open; only this workspace's.
        assert sorted((e.enrollment_id, leased) for e, leased in found) == [
            ("old", False), ("w1", False)]
        [parked] = [e for e, _ in found if e.enrollment_id == "w1"]
        assert (parked.waiting, parked.goal_deadline) == (True, NOW + timedelta(days=3))
        assert [(e.enrollment_id, leased) for e, leased in
                store.watched(session, [("ws", "p2")], NOW)] == [("p2e", True)]
        history = store.history(session, [("ws", "j1", "p1"), ("ws", "j2", "p1"),
                                           ("ws", "j9", "p1")])
    assert history == {
        ("ws", "j1", "p1"): History(EnrollmentState.ACTIVE, NOW),
        ("ws", "j2", "p1"): History(EnrollmentState.COMPLETED, NOW - timedelta(hours=1))}
    # A parked enrollment is not claimed before its timer is due.
    with db.transaction() as session:
        assert store.claim_due(session, NOW + timedelta(minutes=59), NOW + timedelta(hours=2),
                               "w", 10) == []
        woken = replace(parked, waiting=False, goal_time=NOW, exit_reason="",
                        properties={"total": 5}, event_id="e9")
        store.save_progress(session, [(woken, [Step("wait", 0, StepOutcome.WAITING, "", NOW)])])
    with db.transaction() as session:
        saved = store.get(session, "ws", "j1", "w1")
    assert (saved.waiting, saved.goal_time, saved.properties, saved.event_id, saved.step_count) == (
        False, NOW, {"total": 5}, "e9", 1)
