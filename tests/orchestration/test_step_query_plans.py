"""The engine's and the scheduler's per-batch queries read only the rows of the batch, on SQLite
and PostgreSQL.

A statement that scans the whole enrollments table makes every batch cost a pass over every
enrollment ever made: timer firings per second then fall as the backlog grows (a row-value
``(workspace_id, enrollment_id) IN (VALUES ...)`` did exactly that on SQLite). Each test runs the
real storage functions, captures the statements they send, and asks the database for its plan of
each one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import query_plans
from orchestration_support import migrated_database
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from cjo_orchestration.adapters import enrollments as store
from cjo_orchestration.adapters import schedules
from cjo_orchestration.adapters.tables import (
    enrollments,
    inbox,
    retired_profiles,
    schedule_occurrences,
)
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState, Step, StepOutcome
from cjo_orchestration.domain.schedule import Occurrence, OccurrenceState
from cjo_platform.db import Database
from support import Backend

NOW = datetime(2026, 3, 1, tzinfo=UTC)
ROWS = 6000  # enough that the planners prefer an index over a scan wherever one applies


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    database = migrated_database(backend)
    # Half ended long ago, half parked at a wait whose timer is due; two workspaces.
    batch = [Enrollment(f"ws{i % 2}", f"en{i:05d}", "j1", 1, f"p{i}",
                        EnrollmentState.ACTIVE if i % 2 else EnrollmentState.COMPLETED,
                        "wait" if i % 2 else "", NOW if i % 2 else None, NOW, NOW,
                        waiting=bool(i % 2), traits={"email": f"p{i}@example.com"})
             for i in range(ROWS)]
    with database.transaction() as session:
        for start in range(0, ROWS, 1000):
            store.insert_new(session, batch[start:start + 1000])
        if not database.is_sqlite:
            session.execute(text("ANALYZE enrollments"))
    yield database
    database.dispose()


def plans(db: Database, work: Callable[[Session], Any],
          table: str = "enrollments") -> list[tuple[str, str]]:
    return query_plans.plans(db, work, table)


def assert_no_table_scan(found: list[tuple[str, str]], table: str = "enrollments") -> None:
    for statement, plan in found:
        scans = [line for line in plan.splitlines()
                 if line.strip() == f"SCAN {table}" or f"Seq Scan on {table}" in line]
        assert not scans, f"scans every row of {table}:\n{statement}\n{plan}"


def test_claiming_and_recording_a_batch_reads_only_that_batch(db: Database) -> None:
    lease = NOW + timedelta(seconds=60)
    claimed: list[Enrollment] = []

    def claim(session: Session) -> None:
        claimed.extend(store.claim_due(session, NOW, lease, "worker", 100))

    assert_no_table_scan(plans(db, claim))
    assert len(claimed) == 100 and {e.workspace_id for e in claimed} == {"ws1"}
    # An idle step worker asks when the next timer falls due (every timer here is due now).
    assert_no_table_scan(plans(db, lambda session: store.next_due(session, NOW)))
    keys = [(e.workspace_id, e.enrollment_id) for e in claimed]

    def check(session: Session) -> None:
        assert store.still_leased(session, "worker", [
            (e.workspace_id, e.profile_id, e.enrollment_id) for e in claimed]) == set(keys)

    assert_no_table_scan(plans(db, check))
    assert_no_table_scan(plans(db, lambda session: store.release(session, "other", [
        (e.workspace_id, e.profile_id, e.enrollment_id) for e in claimed])))
    # Recording the round: test_recording_a_round_probes_each_enrollment_by_its_key.


def test_recording_a_round_probes_each_enrollment_by_its_key(db: Database) -> None:
    """The step round records its batch (the default 500) in one statement on PostgreSQL
    (``UPDATE ... FROM unnest`` of the batch's values, not an UPDATE per enrollment that the
    server parses, plans and runs one by one) that finds each enrollment by the primary key,
    so a round costs the same however many enrollments the table holds: also in a table of a
    few thousand rows like this one, where PostgreSQL hashed the whole table for ``t.key =
    v.key`` (and up to ~90,000 rows; cjo_platform.db.bulk_update probes by construction, see
    tests/platform/test_bulk_update.py for the sizes). SQLite runs one prepared UPDATE per
    enrollment, each a primary-key search, whatever the table's size."""
    lease = NOW + timedelta(seconds=60)
    with db.transaction() as session:
        claimed = store.claim_due(session, NOW, lease, "worker", 500)
    assert len(claimed) == 500
    sent: list[bool] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE ENROLLMENTS"):
            sent.append(executemany)

    def record(session: Session) -> None:
        store.save_progress(session, [
            (replace(e, waiting=False, current_node_id="send", visits={"wait": 1}),
             [Step("wait", 0, StepOutcome.SUCCEEDED, "timer", NOW)]) for e in claimed],
            context=False)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        found = plans(db, record)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert_no_table_scan(found)
    if not db.is_sqlite:
        assert sent == [False], "not one UPDATE for the round"
        [(_, plan)] = found
        assert "Nested Loop" in plan and "Index Scan using enrollments_pkey" in plan, plan
    # Written: the new node, one step more, the lease released; nothing else touched.
    c = enrollments.c
    with db.transaction() as session:
        rows = session.execute(
            select(c.enrollment_id, c.current_node_id, c.waiting, c.visits, c.step_count,
                   c.lease_token, c.traits)
            .where(c.current_node_id == "send")).all()
    assert {r.enrollment_id for r in rows} == {e.enrollment_id for e in claimed}
    assert all(not r.waiting and r.visits == {"wait": 1} and r.step_count == 1
               and r.lease_token is None and r.traits["email"].endswith("@example.com")
               for r in rows)


def test_the_event_worker_reads_only_the_profiles_of_its_events(db: Database) -> None:
    profiles = [(f"ws{i % 2}", f"p{i}") for i in range(0, 200, 3)]
    found: list[Any] = []

    def read(session: Session) -> None:
        found.extend(store.watched(session, profiles, NOW))
        found.append(store.history(session, [(ws, "j1", p) for ws, p in profiles]))
        found.append(store.active_keys(session, [(ws, "j1", p) for ws, p in profiles]))

    assert_no_table_scan(plans(db, read))
    watched, history, active = found[:-2], found[-2], found[-1]
    # Profiles with an odd number are active (and watched); the others ended.
    odd = {(ws, p) for ws, p in profiles if int(p[1:]) % 2}
    assert {(e.workspace_id, e.profile_id) for e, _ in watched} == odd
    assert len(history) == len(profiles)
    assert active == {(ws, "j1", p) for ws, p in odd}

    # One workspace's profiles (a HandleEvents call's): the statement built once.
    one: list[Any] = []
    lone = [(ws, p) for ws, p in profiles if ws == "ws0"]
    assert_no_table_scan(plans(db, lambda session: one.extend(store.watched(session, lone, NOW))))
    assert {(e.workspace_id, e.profile_id) for e, _ in one} == odd & set(lone)
    one.clear()
    assert_no_table_scan(plans(db, lambda session: one.append(
        store.history(session, [(ws, "j1", p) for ws, p in lone]))))
    assert one[0].keys() == {(ws, "j1", p) for ws, p in lone}
    # Both in one statement (every HandleEvents call's).
    one.clear()
    assert_no_table_scan(plans(db, lambda session: one.append(store.watched_and_history(
        session, lone, [(ws, "j1", p) for ws, p in lone], NOW))))
    both_watched, both_history = one[0]
    assert {(e.workspace_id, e.profile_id) for e, _ in both_watched} == odd & set(lone)
    assert both_history.keys() == {(ws, "j1", p) for ws, p in lone}


def test_the_scheduler_claims_and_records_only_its_occurrences(db: Database) -> None:
    """Scheduled occurrences pile up (one per firing, kept for the retention period): claiming
    the due ones, recording a page, the retention sweep and an operator's listing must not read
    them all."""
    rows = [{"workspace_id": f"ws{i % 2}", "journey_id": f"j{i % 300}", "journey_version": 1,
             "fire_time": NOW - timedelta(hours=i), "state": "done" if i >= 20 else "pending",
             "page_token": "", "pages": 1, "enrolled": 0, "not_enrolled": 0, "detail": "",
             "create_time": NOW, "finish_time": NOW - timedelta(hours=i) if i >= 20 else None}
            for i in range(ROWS)]
    with db.transaction() as session:
        session.execute(schedule_occurrences.insert(), rows)
        if not db.is_sqlite:
            session.execute(text("ANALYZE schedule_occurrences"))
    lease = NOW + timedelta(seconds=60)
    claimed: list[Occurrence] = []

    def claim(session: Session) -> None:
        claimed.extend(schedules.claim_due(session, NOW, lease, "worker", 10))

    assert_no_table_scan(plans(db, claim, "schedule_occurrences"), "schedule_occurrences")
    assert_no_table_scan(plans(db, lambda session: schedules.next_due(session, NOW),
                               "schedule_occurrences"), "schedule_occurrences")
    assert len(claimed) == 10 and {o.state for o in claimed} == {OccurrenceState.PENDING}

    def record(session: Session) -> None:
        held = schedules.held(session, claimed[0], "worker")
        assert held is not None
        schedules.save(session, replace(held, pages=2))
        assert schedules.retry_later(session, "worker", claimed[1], lease, "UNAVAILABLE")
        schedules.release(session, "worker", claimed[2:])

    assert_no_table_scan(plans(db, record, "schedule_occurrences"), "schedule_occurrences")
    listed: list[Occurrence] = []

    def list_pages(session: Session) -> None:
        first = schedules.page(session, "ws0", "j0", None, 5, None)
        listed.extend(first)
        listed.extend(schedules.page(session, "ws0", "j0", OccurrenceState.DONE, 5,
                                     (first[-1].fire_time, first[-1].journey_version)))

    # Operators page through a journey's occurrences (ListScheduleOccurrences): the journey
    # index yields them in order and seeks to the cursor; no sort of the journey's history.
    for statement, plan in plans(db, list_pages, "schedule_occurrences"):
        assert "ix_schedule_occurrences_journey" in plan, f"{statement}\n{plan}"
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, f"{statement}\n{plan}"
    # Journey j0 of ws0 holds rows 0, 300, 600, ...: the first pending, the others done.
    assert [o.fire_time for o in listed] == [NOW - timedelta(hours=300 * k) for k in range(10)]
    deleted: list[tuple[int, int]] = []

    def sweep(session: Session) -> None:
        deleted.append(schedules.sweep(session, NOW - timedelta(days=200), 10))

    assert_no_table_scan(plans(db, sweep, "schedule_occurrences"), "schedule_occurrences")
    # Finished over 200 days (4800 hours) ago: rows 4801..5999, of every journey. Ten journeys
    # were swept: all their old rows went (each one's latest is recent, so it stays).
    cutoff = NOW - timedelta(days=200)
    old: Counter[tuple[str, str]] = Counter(
        (r["workspace_id"], r["journey_id"]) for r in rows
        if r["finish_time"] is not None and r["finish_time"] < cutoff)
    with db.transaction() as session:
        c = schedule_occurrences.c
        left = Counter((r.workspace_id, r.journey_id) for r in session.execute(
            select(c.workspace_id, c.journey_id).where(c.finish_time < cutoff)))
        journeys = {(r.workspace_id, r.journey_id) for r in session.execute(
            select(c.workspace_id, c.journey_id).distinct())}
    swept = [key for key in old if key not in left]
    assert len(swept) == 10 and set(left) == set(old) - set(swept)
    assert deleted == [(sum(old[key] for key in swept), 10)]
    assert len(journeys) == 300  # every journey kept its latest occurrence


def test_a_step_handing_profiles_back_asks_only_for_their_pending_events(db: Database) -> None:
    """A step round's record asks whether events of its profiles wait in the inbox (deferred
    behind the step): the processed events, however many, are not read."""
    rows = [{"workspace_id": f"ws{i % 2}", "event_id": f"ev{i}", "profile_id": f"p{i % 500}",
             "event_name": "page_viewed", "properties": {}, "traits": {}, "traceparent": "",
             "receive_time": NOW, "processed": i < ROWS - 3} for i in range(ROWS)]
    with db.transaction() as session:
        session.execute(inbox.insert(), rows)
        if not db.is_sqlite:
            session.execute(text("ANALYZE inbox"))
    # The last three events are pending: profiles p497, p498 and p499.
    waiting = [(f"ws{i % 2}", f"p{i % 500}") for i in range(ROWS - 3, ROWS)]
    others = [(f"ws{i % 2}", f"p{i}") for i in range(100)]
    found: list[bool] = []

    def ask(session: Session) -> None:
        found.append(store.events_pending(session, others))
        found.append(store.events_pending(session, [*others, waiting[1]]))

    assert_no_table_scan(plans(db, ask, "inbox"), "inbox")
    assert found == [False, True]


def test_a_new_workspaces_profiles_are_probed_by_profile(db: Database) -> None:
    """The event worker's reads by profile of a workspace newer than the statistics (a new
    tenant inside big tables, until autovacuum's ANALYZE) each probe the index on
    (workspace_id, profile_id) per profile, not every row of the workspace read through an
    index with the workspace as prefix and filtered by the profiles (a batch's cost then grew
    with the workspace's rows)."""
    with db.transaction() as session:
        session.execute(retired_profiles.insert(), [
            {"workspace_id": "ws0", "profile_id": f"p{i}", "successor_profile_id": "",
             "retire_time": NOW} for i in range(ROWS)])
        if not db.is_sqlite:
            session.execute(text("ANALYZE retired_profiles"))
        # The statistics know ws0 and ws1 only: the newcomer's rows come after them.
        store.insert_new(session, [
            Enrollment("newcomer", f"en{i:05d}", f"j{i % 3}", 1, f"p{i % 1000}",
                       EnrollmentState.ACTIVE if i < 1000 else EnrollmentState.COMPLETED,
                       "wait", NOW, NOW, NOW) for i in range(3000)])
        session.execute(retired_profiles.insert(), [
            {"workspace_id": "newcomer", "profile_id": f"r{i}", "successor_profile_id": "",
             "retire_time": NOW} for i in range(3000)])
    profiles = [("newcomer", f"p{i}") for i in range(0, 200, 3)]
    keys = [(w, "j1", p) for w, p in profiles]
    reads: list[tuple[str, Callable[[Session], Any]]] = [
        ("enrollments", lambda s: store.watched(s, profiles, NOW)),
        ("enrollments", lambda s: store.history(s, keys)),
        ("enrollments", lambda s: store.watched_and_history(s, profiles, keys, NOW)),
        ("retired_profiles", lambda s: store.retired_successors(s, profiles)),
        ("retired_profiles", lambda s: store.receipt(s, "newcomer", [p for _, p in profiles]))]
    filtered = [f"{statement}\n{plan}" for table, read in reads
                for statement, plan in plans(db, read, table)
                if not (db.is_sqlite and "profile_id=?" in plan)
                and not any(re.search(r"\bprofile_id\b", line) for line in plan.splitlines()
                            if "Index Cond" in line)]
    assert not filtered, "\n\n".join(filtered)


def test_a_new_workspaces_pending_events_are_probed_by_profile(db: Database) -> None:
    """Whether events of a step round's profiles wait in the inbox, for a workspace newer than
    the statistics: one probe of the pending events' index on (workspace_id, profile_id) per
    profile, not every pending event (or every event) of the workspace read and filtered by
    the profiles."""
    def events(workspace_id: str, count: int, pending: int) -> list[dict[str, Any]]:
        return [{"workspace_id": workspace_id, "event_id": f"ev{i}", "profile_id": f"p{i % 2000}",
                 "event_name": "page_viewed", "properties": {}, "traits": {}, "traceparent": "",
                 "receive_time": NOW, "processed": i >= pending} for i in range(count)]

    with db.transaction() as session:
        session.execute(inbox.insert(), events("ws0", 20_000, 200))
        if not db.is_sqlite:
            session.execute(text("ANALYZE inbox"))
        # The statistics know ws0 only: a backlog of the newcomer's events waits.
        session.execute(inbox.insert(), events("newcomer", 20_000, 10_000))
    asked = [("newcomer", f"p{i}") for i in range(10_000, 10_200, 2)]
    found: list[bool] = []
    statements = plans(db, lambda s: found.append(store.events_pending(s, asked)), "inbox")
    assert found == [False]
    assert_probed_by(db, statements, "profile_id")


def test_a_new_workspaces_claims_are_leased_checked_and_released_by_key(db: Database) -> None:
    """A step round's lease of the enrollments it claimed, its check that it still holds them
    and a stopping worker's release, for a workspace newer than the statistics: one probe of
    the primary key per enrollment, not every enrollment of the workspace read through
    another index that leads with the workspace (ix_enrollments_watch) and filtered by the
    ids, in every round."""
    with db.transaction() as session:
        store.insert_new(session, [
            Enrollment("newcomer", f"en{i:05d}", f"j{i % 3}", 1, f"p{i % 1000}",
                       EnrollmentState.ACTIVE, "wait", NOW - timedelta(hours=1), NOW, NOW,
                       waiting=True) for i in range(5000)])
    lease = NOW + timedelta(seconds=60)
    claimed: list[Enrollment] = []

    def claim(session: Session) -> None:
        claimed.extend(store.claim_due(session, NOW, lease, "worker", 200))

    found = [(s, p) for s, p in plans(db, claim) if s.lstrip().upper().startswith("UPDATE")]
    assert len(claimed) == 200 and {e.workspace_id for e in claimed} == {"newcomer"}
    with db.transaction() as session:  # the claim's plans ran in a transaction rolled back
        claimed[:] = store.claim_due(session, NOW, lease, "worker", 200)
    keys = [(e.workspace_id, e.enrollment_id) for e in claimed]
    held: list[set[tuple[str, str]]] = []
    found += plans(db, lambda session: held.append(store.still_leased(session, "worker", [
        (e.workspace_id, e.profile_id, e.enrollment_id) for e in claimed])))
    assert held == [set(keys)]
    found += plans(db, lambda session: store.release(session, "worker", [
        (e.workspace_id, e.profile_id, e.enrollment_id) for e in claimed]))
    assert len(found) == 3
    assert_probed_by(db, found, "enrollment_id")


def assert_probed_by(db: Database, found: list[tuple[str, str]], key: str) -> None:
    """Each statement searches an index by the workspace and ``key`` (SQLite), or has ``key``
    in an index condition (PostgreSQL): a probe per key, not a filter over the workspace."""
    for statement, plan in found:
        if db.is_sqlite:
            assert f"(workspace_id=? AND {key}=?)" in plan, f"{statement}\n{plan}"
        else:
            assert any(re.search(rf"\b{key}\b", line) for line in plan.splitlines()
                       if "Index Cond" in line), f"{statement}\n{plan}"
