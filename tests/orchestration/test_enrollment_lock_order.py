"""PostgreSQL: every statement that locks several enrollments locks them in (workspace, profile,
enrollment) order: an event round's locked read of its profiles' enrollments (``watched``), a
step round's check of its leases (``still_leased``) and its record (``save_progress``). Before,
the step round locked by enrollment id and the event round by profile, and two replicas'
rounds deadlocked (PostgreSQL broke it after a second; seen 2-3 times per two-replica
end-to-end run).

Each statement runs while another transaction holds the first enrollment in that order: it
must wait there holding none of the others (had it locked one before, a transaction locking
in the shared order would wait for it while holding the first)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from orchestration_support import migrated_database
from sqlalchemy import text
from sqlalchemy.orm import Session

from cjo_orchestration.adapters import enrollments as store
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState
from cjo_platform.db import Database
from support import Backend

NOW = datetime(2026, 3, 1, tzinfo=UTC)
# In (profile, id) order; by id alone Bob's "a1" came first, and "c1" before "z1" on Ada's.
ORDER = [("ada", "c1", "j1"), ("ada", "z1", "j2"), ("bob", "a1", "j1")]
FIRST = ORDER[0][1]
LEASE = NOW + timedelta(minutes=5)


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    if backend.kind != "postgresql":
        pytest.skip("row locks of concurrent writers: PostgreSQL")
    database = migrated_database(backend)
    with database.transaction() as session:
        store.insert_new(session, [
            Enrollment("ws", enrollment_id, journey, 1, profile, EnrollmentState.ACTIVE,
                       "send", NOW, NOW, NOW) for profile, enrollment_id, journey in ORDER])
        assert len(store.claim_due(session, NOW, LEASE, "worker", 10)) == len(ORDER)
    yield database
    database.dispose()


def locked_by_others(db: Database) -> set[str]:
    """The enrollments another transaction holds (each tried with NOWAIT)."""
    held = set()
    with db.engine.connect() as connection:
        for _, enrollment_id, _ in ORDER:
            try:
                with connection.begin():
                    connection.execute(text(
                        "SELECT 1 FROM enrollments WHERE workspace_id = 'ws' AND "
                        "enrollment_id = :id FOR UPDATE NOWAIT"), {"id": enrollment_id})
            except Exception:
                held.add(enrollment_id)
    return held


def waiting(db: Database) -> bool:
    with db.engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")).scalar_one())


@pytest.mark.postgres
@pytest.mark.parametrize("statement", [
    pytest.param(lambda session: store.watched(
        session, [("ws", p) for p, _, _ in reversed(ORDER)], NOW), id="watched"),
    pytest.param(lambda session: store.still_leased(
        session, "worker", [("ws", p, e) for p, e, _ in reversed(ORDER)]), id="still_leased"),
    pytest.param(None, id="save_progress"),
])
def test_a_statement_locking_several_enrollments_locks_them_in_profile_order(
        db: Database, statement: Callable[[Session], Any] | None) -> None:
    rows: list[Enrollment] = []
    if statement is None:  # save_progress: the rows read first, unlocked
        with db.reading() as session:
            rows.extend(e for e, _ in store.watched(
                session, [("ws", p) for p, _, _ in ORDER], NOW))

        def statement(session: Session) -> None:
            store.save_progress(session, [(replace(e, update_time=NOW + timedelta(seconds=1)),
                                           []) for e in reversed(rows)], context=False)

    holding, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_first() -> None:
        with db.transaction() as session:
            session.execute(text("SELECT 1 FROM enrollments WHERE workspace_id = 'ws' AND "
                                 "enrollment_id = :id FOR UPDATE"), {"id": FIRST})
            holding.set()
            done.wait(30)

    def run() -> None:
        try:
            with db.transaction() as session:
                statement(session)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    holder = threading.Thread(target=hold_first)
    holder.start()
    assert holding.wait(10)
    runner = threading.Thread(target=run)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not waiting(db):
            assert time.monotonic() < deadline, "never waited for the first enrollment"
            time.sleep(0.02)
        # Waiting for the first, it holds none of the others.
        assert locked_by_others(db) == {FIRST}
    finally:
        done.set()
        holder.join(30)
        runner.join(30)
    assert not errors
