"""PostgreSQL: every statement that locks several enrollments locks them in (workspace, profile,
enrollment) order, compared byte by byte (Python's order of the strings, whatever the
database's collation): an event round's locked read of its profiles' enrollments (``watched``),
a step round's check of its leases (``still_leased``), its record (``save_progress``) and its
release (``release``). Before, the step round locked by enrollment id and the event round by
profile, and two replicas' rounds deadlocked (PostgreSQL broke it after a second; seen 2-3
times per two-replica end-to-end run); and under a database collation other than C ("ada"
before "Bob") the database's order and Python's differed.

Each statement runs while another transaction holds the first enrollment in that order: it
must wait there holding none of the others (had it locked one before, a transaction locking
in the shared order would wait for it while holding the first)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from orchestration_support import migrated_database
from sqlalchemy.orm import Session

import cjo_orchestration.adapters
from cjo_orchestration.adapters import enrollments as store
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from support import PG_URL, Backend

NOW = datetime(2026, 3, 1, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)
# (profile, enrollment, journey) in byte order; stored in another order (bob's first, Ada's z1
# before her c1), so neither an id order nor the index's order of a profile's rows is it.
ORDER = [("Bob", "x1", "j1"), ("ada", "c1", "j1"), ("ada", "z1", "j2")]
STORED = [ORDER[0], ORDER[2], ORDER[1]]
# A database whose default collation puts "ada" before "Bob" (as the stock postgres image's
# en_US.utf8 does).
ICU_DATABASE = "cjo_test_collation_en"


def enrolled(database: Database) -> Database:
    with database.transaction() as session:
        store.insert_new(session, [
            Enrollment("ws", enrollment_id, journey, 1, profile, EnrollmentState.ACTIVE,
                       "send", NOW, NOW, NOW) for profile, enrollment_id, journey in STORED])
        assert len(store.claim_due(session, NOW, LEASE, "worker", 10)) == len(ORDER)
    return database


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    if backend.kind != "postgresql":
        pytest.skip("row locks of concurrent writers: PostgreSQL")
    database = enrolled(migrated_database(backend))
    yield database
    database.dispose()


@pytest.fixture
def icu_db(backend: Backend) -> Iterator[Database]:
    if backend.kind != "postgresql":
        pytest.skip("a database collation: PostgreSQL")
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if not connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                      {"name": ICU_DATABASE}).first():
                try:
                    connection.execute(sa.text(
                        f"CREATE DATABASE {ICU_DATABASE} TEMPLATE template0 LOCALE_PROVIDER icu "
                        "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"))
                except sa.exc.DBAPIError as exc:
                    pytest.skip(f"no ICU collation on this server: {exc.orig}")
    finally:
        admin.dispose()
    url = PG_URL.rsplit("/", 1)[0] + "/" + ICU_DATABASE
    database = Database(url, schema=backend.schema_prefix + "orchestration")
    upgrade(database, Path(str(cjo_orchestration.adapters.__file__)).parent / "migrations")
    with database.reading() as session:
        assert session.execute(sa.text("SELECT 'ada' < 'Bob'")).scalar_one()
    try:
        yield enrolled(database)
    finally:
        with database.engine.begin() as connection:
            connection.execute(sa.text(
                f'DROP SCHEMA IF EXISTS "{backend.schema_prefix}orchestration" CASCADE'))
        database.dispose()


def locked_by_others(db: Database) -> set[str]:
    """The enrollments another transaction holds (each tried with NOWAIT)."""
    held = set()
    with db.engine.connect() as connection:
        for _, enrollment_id, _ in ORDER:
            try:
                with connection.begin():
                    connection.execute(sa.text(
                        "SELECT 1 FROM enrollments WHERE workspace_id = 'ws' AND "
                        "enrollment_id = :id FOR UPDATE NOWAIT"), {"id": enrollment_id})
            except sa.exc.OperationalError:
                held.add(enrollment_id)
    return held


def waiting(db: Database, pid: int) -> bool:
    with db.engine.connect() as connection:
        return bool(connection.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid "
            "AND wait_event_type = 'Lock'"), {"pid": pid}).scalar_one())


def progress(rows: list[Enrollment]) -> list[tuple[Enrollment, list[Any]]]:
    return [(replace(e, update_time=NOW + timedelta(seconds=1)), []) for e in reversed(rows)]


STATEMENTS: dict[str, Callable[[Session, list[Enrollment]], Any]] = {
    "watched": lambda session, _: store.watched(
        session, [("ws", p) for p, _, _ in reversed(ORDER)], NOW),
    "watched, several workspaces": lambda session, _: store.watched(
        session, [("ws", p) for p, _, _ in reversed(ORDER)] + [("other", "ada")], NOW),
    "still_leased": lambda session, _: store.still_leased(
        session, "worker", [("ws", p, e) for p, e, _ in reversed(ORDER)]),
    "save_progress": lambda session, rows: store.save_progress(
        session, progress(rows), context=False),
    "release": lambda session, _: store.release(
        session, "worker", [("ws", p, e) for p, e, _ in reversed(ORDER)]),
}


def assert_locks_in_order(db: Database, statement: Callable[[Session, list[Enrollment]], Any]
                          ) -> None:
    with db.reading() as session:
        rows = [e for e, _ in store.watched(session, [("ws", p) for p, _, _ in ORDER], NOW)]
    first = ORDER[0][1]
    holding, done = threading.Event(), threading.Event()
    pid: list[int] = []
    errors: list[BaseException] = []

    def hold_first() -> None:
        with db.transaction() as session:
            session.execute(sa.text("SELECT 1 FROM enrollments WHERE workspace_id = 'ws' AND "
                                    "enrollment_id = :id FOR UPDATE"), {"id": first})
            holding.set()
            done.wait(30)

    def run() -> None:
        try:
            with db.transaction() as session:
                pid.append(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
                statement(session, rows)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    holder = threading.Thread(target=hold_first)
    holder.start()
    assert holding.wait(10)
    runner = threading.Thread(target=run)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not (pid and waiting(db, pid[0])):
            assert time.monotonic() < deadline, "never waited for the first enrollment"
            time.sleep(0.02)
        # Waiting for the first, it holds none of the others.
        assert locked_by_others(db) == {first}
    finally:
        done.set()
        holder.join(30)
        runner.join(30)
    assert not errors


@pytest.mark.postgres
@pytest.mark.parametrize("name", list(STATEMENTS))
def test_a_statement_locking_several_enrollments_locks_them_in_profile_order(
        db: Database, name: str) -> None:
    assert_locks_in_order(db, STATEMENTS[name])


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["watched", "still_leased"])
def test_the_order_is_bytewise_under_any_database_collation(icu_db: Database,
                                                            name: str) -> None:
    assert_locks_in_order(icu_db, STATEMENTS[name])
