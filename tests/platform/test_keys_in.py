"""cjo_platform.db.keys_in: rows by a key of several columns (strings, integers, times), any
number of keys in one statement whose keys are one parameter per column, each key one probe of
the primary key, on SQLite and PostgreSQL; in a SELECT (locking or not), an UPDATE and a DELETE.

An OR of ``a = ? AND ... AND d IN (...)`` per leading value failed on SQLite past ~1,000
distinct leading values ("Expression tree is too large (maximum depth 1000)") and cost
PostgreSQL seconds of planning (delivery's rate limits and breakers of a round's workspaces,
orchestration's enrollments of an event's journeys, journey versions, occurrences).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import query_plans
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    insert,
    select,
    text,
    update,
)

from cjo_platform.db import Database, UtcDateTime, keys_in
from support import Backend

metadata = MetaData()
occurrences = Table(
    "occurrences", metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("journey_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("fire_time", UtcDateTime, nullable=False),
    Column("note", String(64), nullable=False),
    PrimaryKeyConstraint("workspace_id", "journey_id", "version", "fire_time"),
)
c = occurrences.c
# A string last: what keys_in asked before.
KEY = (c.workspace_id, c.version, c.fire_time, c.journey_id)
AT = datetime(2026, 3, 1, 9, tzinfo=UTC)
WORKSPACES = 2000


def _row(i: int) -> tuple[str, int, datetime, str]:
    return (f"ws{i:05d}", i % 3 + 1, AT + timedelta(seconds=i % 11, microseconds=i), f"j{i % 7}")


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/keys_in.db")
    database = Database(url, schema=backend.schema_prefix + "keys_in")
    database.create_schema()
    metadata.create_all(database.engine)
    with database.transaction() as session:
        session.execute(insert(occurrences), [
            {"workspace_id": w, "journey_id": j, "version": v, "fire_time": t, "note": ""}
            for w, v, t, j in map(_row, range(WORKSPACES * 10))])
        if not database.is_sqlite:
            session.execute(text("ANALYZE occurrences"))
    yield database
    database.dispose()


def _found(db: Database, keys: list[Any]) -> set[tuple[Any, ...]]:
    with db.transaction() as session:
        rows = session.execute(select(*KEY).where(keys_in(session, KEY, keys))
                               .order_by(*KEY).with_for_update()).all()
    assert len(rows) == len(set(map(tuple, rows)))  # each row once, whatever the repeats
    return {tuple(r) for r in rows}


def test_rows_of_1500_workspaces_are_found_locked_changed_and_deleted_at_once(
        db: Database) -> None:
    keys = [_row(i) for i in range(0, 3000, 2)]  # 1,500 workspaces, times to the microsecond
    absent = [("ws99999", 1, AT, "j1"), (keys[0][0], keys[0][1], AT - timedelta(1), keys[0][3])]
    assert _found(db, [*keys, *keys[:10], *absent]) == set(keys)
    with db.transaction() as session:
        changed = session.execute(update(occurrences).where(keys_in(session, KEY, keys))
                                  .values(note="x"))
        assert changed.rowcount == len(keys)
        gone = session.execute(delete(occurrences).where(
            keys_in(session, KEY, keys[:1200]), c.note == "x"))
        assert gone.rowcount == 1200
    assert _found(db, keys) == set(keys[1200:])
    assert _found(db, []) == set()


@pytest.mark.parametrize("count", [3, 1500])
def test_each_key_is_a_probe_of_the_primary_key(db: Database, count: int) -> None:
    keys = [_row(i) for i in range(0, 2 * count, 2)]
    found = query_plans.plans(db, lambda s: s.execute(
        select(c.note).where(keys_in(s, KEY, keys)).with_for_update()).all(), "occurrences")
    [(statement, plan)] = found
    assert "Seq Scan" not in plan and "SCAN occurrences" not in plan, (statement, plan)
    for column in ("workspace_id", "journey_id", "version", "fire_time"):
        assert query_plans.probed_by(db, plan, column), (statement, plan)
