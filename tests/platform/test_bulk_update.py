"""bulk_update writes what one UPDATE per row would write, on both backends (PostgreSQL: ONE
``UPDATE ... FROM unnest(...)`` statement, not a statement per row): JSON (a None is JSON
null, as an UPDATE binds it), UTC timestamps and odd strings round-trip, rows not given are
left as they were, and a column not given keeps its value."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    event,
    insert,
    select,
)
from sqlalchemy.exc import DBAPIError

from cjo_platform.db import Database, UtcDateTime, bulk_update
from support import Backend

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
LATER = AT + timedelta(hours=1)
metadata = MetaData()
people = Table(
    "people", metadata,
    Column("ws", String(16), nullable=False),
    Column("person_id", String(32), nullable=False),
    Column("label", String(64), nullable=False),
    Column("doc", JSON, nullable=True),
    Column("at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("ws", "person_id"),
)
ODD = ['q"uote', "back\\slash", "{brace},comma", "NULL", "", "ü 😀"]


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/bulk_update.db")
    database = Database(url, schema=backend.schema_prefix + "bulk_update")
    database.create_schema()
    metadata.create_all(database.engine)
    with database.transaction() as session:
        session.execute(insert(people), [
            {"ws": ws, "person_id": f"p{i}", "label": "old", "doc": {"n": i}, "at": AT}
            for ws in ("w1", "w2") for i in range(300)])
    yield database
    database.dispose()


def test_the_rows_given_get_their_values_and_no_other_row_changes(db: Database) -> None:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    east = timezone(timedelta(hours=5))
    event.listen(db.engine, "before_cursor_execute", record)
    with db.transaction() as session:
        bulk_update(session, people, ("ws", "person_id"), [
            {"ws": "w1", "person_id": f"p{i}", "label": ODD[i % len(ODD)],
             "doc": None if i % 7 == 0 else {"v": ODD[i % len(ODD)], "i": i},
             "at": LATER.astimezone(east)}
            for i in range(0, 300, 2)])
        bulk_update(session, people, ("ws", "person_id"), [
            {"ws": "w2", "person_id": "p1", "label": "label only"}])
    event.remove(db.engine, "before_cursor_execute", record)
    with db.transaction() as session:
        rows = {(r.ws, r.person_id): r for r in session.execute(select(people))}
        nulls = set(session.execute(select(people.c.person_id).where(
            people.c.doc.is_(None))).scalars())
    assert not nulls, "a None is JSON null, as an UPDATE binds it, not SQL NULL"
    for i in range(300):
        row = rows[("w1", f"p{i}")]
        if i % 2:
            assert (row.label, row.doc, row.at) == ("old", {"n": i}, AT)
        else:
            assert (row.label, row.doc, row.at) == (
                ODD[i % len(ODD)], None if i % 7 == 0 else {"v": ODD[i % len(ODD)], "i": i},
                LATER)
            assert row.at.utcoffset() == timedelta(0)
    assert rows[("w2", "p1")].label == "label only" and rows[("w2", "p1")].doc == {"n": 1}
    assert all(rows[("w2", f"p{i}")].label == "old" for i in range(300) if i != 1)
    if db.engine.dialect.name == "postgresql":
        assert len([s for s in sent if s.lstrip().upper().startswith("UPDATE")]) == 2


def test_a_value_longer_than_its_column_is_refused_not_cut(db: Database) -> None:
    """As a plain UPDATE does on PostgreSQL (SQLite keeps any length): the arrays are cast to
    the unsized type, so the column's own assignment refuses the value."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite does not enforce a string column's length")
    with pytest.raises(DBAPIError, match="too long"), db.transaction() as session:
        bulk_update(session, people, ("ws", "person_id"), [
            {"ws": "w1", "person_id": "p1", "label": "x" * 65}])


def test_compared_values_and_fixed_conditions_pick_the_rows_and_the_count_says_how_many(
        db: Database) -> None:
    """``match`` compares a row's value with a column it does not set (here the label a row
    must still carry while the label itself changes), ``where`` adds one condition for all
    rows; a row whose conditions do not hold is left alone and not counted."""
    with db.transaction() as session:
        bulk_update(session, people, ("ws", "person_id"), [
            {"ws": "w1", "person_id": f"p{i}", "label": "taken"} for i in range(0, 10, 3)])
    with db.transaction() as session:
        updated = bulk_update(session, people, ("ws", "person_id"), [
            {"ws": "w1", "person_id": f"p{i}", "was": "taken" if i % 2 else "old",
             "label": f"new {i}", "at": LATER} for i in range(10)],
            match={"was": "label"}, where={"at": AT})
        # p0, p3, p6, p9 were taken: p3 and p9 match (odd: "taken"); of the others, the even
        # ones match ("old"): p2, p4, p8.
        assert updated == 5
        assert bulk_update(session, people, ("ws", "person_id"), [
            {"ws": "w2", "person_id": "p1", "label": "fixed"}], where={"label": "gone"}) == 0
        assert bulk_update(session, people, ("ws", "person_id"), [
            {"ws": "w2", "person_id": "p2", "label": "counted"}]) == 1
    with db.transaction() as session:
        labels = dict(session.execute(select(people.c.person_id, people.c.label).where(
            people.c.ws == "w1", people.c.person_id.in_([f"p{i}" for i in range(10)]))).all())
        w2 = dict(session.execute(select(people.c.person_id, people.c.label).where(
            people.c.ws == "w2", people.c.person_id.in_(["p1", "p2"]))).all())
    assert labels == {f"p{i}": f"new {i}" if i in (2, 3, 4, 8, 9) else
                      ("taken" if i % 3 == 0 else "old") for i in range(10)}
    assert w2 == {"p1": "old", "p2": "counted"}
