"""insert_ignore writes what an INSERT ... ON CONFLICT DO NOTHING writes and returns the keys of
the rows that were new, on both backends, whichever way it sends a batch (on PostgreSQL one
``unnest`` statement per batch of rows giving the same columns; otherwise the multi-row INSERT):
defaults filled, JSON, bytes and UTC timestamps round-trip, a key stored already or repeated in
the batch is skipped, and the statement's text does not grow with the batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    select,
    text,
)

from cjo_platform.db import Database, UtcDateTime, insert_ignore
from support import Backend

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
metadata = MetaData()
items = Table(
    "items", metadata,
    Column("key", String(32), primary_key=True),
    Column("label", String(32), nullable=False, default="unnamed"),
    Column("rank", Integer, nullable=False, server_default=text("7")),
    Column("doc", JSON),
    Column("blob", LargeBinary),
    Column("at", UtcDateTime),
    Column("flag", Boolean, nullable=False, default=False),
    Column("score", Float),
)


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/ignore.db")
    database = Database(url, schema=backend.schema_prefix + "ignore")
    database.create_schema()
    metadata.create_all(database.engine)
    yield database
    database.dispose()


def read(db: Database) -> list[tuple[Any, ...]]:
    with db.transaction() as session:
        return [tuple(r) for r in session.execute(select(items).order_by(items.c.key))]


def test_new_rows_are_written_as_an_insert_writes_them(db: Database) -> None:
    east = timezone(timedelta(hours=5))
    with db.transaction() as session:
        new = insert_ignore(session, items, [
            {"key": "a", "doc": {"n": 1.5, "tags": ["x"]}, "blob": b"\x00\\\n\xff",
             "at": AT.astimezone(east), "score": 0.25},
            {"key": "b", "doc": None, "at": None, "blob": None, "score": None},
        ], returning=items.c.key)
    assert sorted(new) == ["a", "b"]
    with db.transaction() as session:
        new = insert_ignore(session, items, [
            {"key": "c", "label": "named", "flag": True},
            {"key": "a", "label": "again", "flag": True},  # stored already
            {"key": "d", "label": "first", "flag": False},
            {"key": "d", "label": "second", "flag": True},  # repeated in the batch
        ], returning=items.c.key)
    assert sorted(new) == ["c", "d"]
    rows = read(db)
    assert rows == [
        ("a", "unnamed", 7, {"n": 1.5, "tags": ["x"]}, b"\x00\\\n\xff", AT, False, 0.25),
        ("b", "unnamed", 7, None, None, None, False, None),
        ("c", "named", 7, None, None, None, True, None),
        ("d", "first", 7, None, None, None, False, None),
    ]
    assert rows[0][5].utcoffset() == timedelta(0)
    with db.transaction() as session:  # a given None is JSON null, as with an INSERT
        assert session.execute(select(items.c.doc.is_(None))
                               .where(items.c.key == "b")).scalar_one() is False


@pytest.mark.parametrize("batch", [1, 3])
def test_returning_several_columns_gives_a_tuple_per_new_row(db: Database, batch: int) -> None:
    with db.transaction() as session:
        insert_ignore(session, items, [{"key": "a"}])
    with db.transaction() as session:
        new = insert_ignore(session, items, [
            {"key": "a", "rank": 9, "at": AT},  # stored already
            *({"key": f"k{i}", "rank": i, "at": AT} for i in range(batch))],
            returning=(items.c.key, items.c.rank, items.c.at))
    assert sorted(new) == [(f"k{i}", i, AT) for i in range(batch)]
    assert all(type(row) is tuple and row[2].utcoffset() == timedelta(0) for row in new)


def test_without_returning(db: Database) -> None:
    with db.transaction() as session:
        assert insert_ignore(session, items, [{"key": "a", "rank": 1},
                                              {"key": "b", "rank": 3}]) == []
    assert [(r[0], r[1], r[2]) for r in read(db)] == [("a", "unnamed", 1), ("b", "unnamed", 3)]


def test_the_statement_does_not_grow_with_the_batch(db: Database) -> None:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    for size in (2, 50, 300):
        with db.transaction() as session:
            insert_ignore(session, items, [{"key": f"{size}-{i}", "at": AT}
                                           for i in range(size)], returning=items.c.key)
    inserts = [s for s in sent if s.lstrip().upper().startswith("INSERT")]
    if db.engine.dialect.name == "postgresql":
        assert len(set(inserts)) == 1, "the same statement text for any number of rows"
    assert len(read(db)) == 352


def test_arrays_go_in_binary_and_odd_values_round_trip(db: Database) -> None:
    """On PostgreSQL each column's array goes in psycopg's binary format (its text format
    quotes and escapes every element in Python: half of orchestration's CPU per batched
    event)."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    odd = ['q"uote', "back\\slash", "{brace},comma", "NULL", "", "ü 😀"]
    event.listen(db.engine, "before_cursor_execute", record)
    with db.transaction() as session:
        new = insert_ignore(session, items, [
            {"key": f"k{i}", "label": label, "doc": {"v": label}, "blob": label.encode(),
             "score": i + 0.5}
            for i, label in enumerate(odd)], returning=items.c.key)
    assert sorted(new) == sorted(f"k{i}" for i in range(len(odd)))
    assert [(r[0], r[1], r[3], r[4], r[7]) for r in read(db)] == [
        (f"k{i}", label, {"v": label}, label.encode(), i + 0.5)
        for i, label in enumerate(odd)]
    if db.engine.dialect.name == "postgresql":
        (insert,) = [s for s in sent if s.lstrip().upper().startswith("INSERT")]
        assert insert.count("%b::") == 6 and "%s" not in insert
