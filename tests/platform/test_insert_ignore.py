"""insert_ignore writes what an INSERT ... ON CONFLICT DO NOTHING writes and returns the keys of
the rows that were new, on both backends, whichever way it sends a batch (on PostgreSQL one
``unnest`` statement per batch of rows giving the same columns, its arrays in binary; on
SQLite multi-row VALUES bound by column; otherwise the multi-row INSERT):
defaults filled, JSON, bytes and UTC timestamps round-trip, a key stored already or repeated in
the batch is skipped, and the statement's text does not grow with the batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import psycopg.types.array
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
    case,
    event,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from cjo_platform.db import Database, UtcDateTime, insert_ignore, insert_on_conflict
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


def test_a_batch_past_one_statement_returns_every_new_row(db: Database) -> None:
    """More rows than SQLite takes in one multi-row VALUES (its parameter limit, 1,000 rows):
    every chunk's new rows come back, a key stored already or repeated across chunks is
    skipped."""
    with db.transaction() as session:
        insert_ignore(session, items, [{"key": "k1500", "rank": -1}])
    keys = [f"k{i}" for i in range(2_500)] + ["k10", "k2400"]  # repeated past the chunk
    with db.transaction() as session:
        new = insert_ignore(session, items, [{"key": key, "rank": i, "at": AT, "doc": {"i": i}}
                                             for i, key in enumerate(keys)],
                            returning=(items.c.key, items.c.rank))
    assert sorted(new) == sorted((f"k{i}", i) for i in range(2_500) if i != 1500)
    with db.transaction() as session:
        assert session.execute(select(items.c.rank).where(items.c.key == "k1500")
                               ).scalar_one() == -1
        assert session.execute(select(items.c.doc).where(items.c.key == "k2400")
                               ).scalar_one() == {"i": 2400}


def test_the_values_are_bound_a_column_at_a_time(db: Database,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's values go to the driver as bound by ``bulk._bound`` (a bind processor per
    column), not through SQLAlchemy's executemany (a parameter dict built, processed and
    checked per row: most of a batch insert's CPU on SQLite; one row too), and on PostgreSQL
    not as arrays in psycopg's text format."""
    compiled: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT") and context.compiled is not None:
            compiled.append(statement)

    escaped = 0
    text_dump = psycopg.types.array.ListDumper.dump

    def counted(self: Any, obj: Any) -> Any:
        nonlocal escaped
        escaped += 1
        return text_dump(self, obj)

    monkeypatch.setattr(psycopg.types.array.ListDumper, "dump", counted)
    event.listen(db.engine, "before_cursor_execute", record)
    with db.transaction() as session:
        new = insert_ignore(session, items, [
            {"key": f"k{i}", "doc": {"quote": '"', "i": i}, "label": 'say "hi"', "at": AT,
             "blob": b"\\", "flag": True, "score": 0.5} for i in range(50)],
            returning=items.c.key)
        if db.engine.dialect.name == "sqlite":  # one row on PostgreSQL: a prepared INSERT
            insert_ignore(session, items, [{"key": "single", "at": AT}])
    assert sorted(new) == sorted(f"k{i}" for i in range(50))
    assert compiled == []
    assert escaped == 0


def _upsert(db: Database, set_: Any) -> Any:
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    statement = insert(items)
    return statement.on_conflict_do_update(index_elements=["key"],
                                           set_=set_(statement.excluded))


def test_insert_on_conflict_runs_the_statements_conflict_clause(db: Database) -> None:
    """An upsert built once by the caller: new rows inserted, stored ones updated by its SET
    clause (which may read the stored row), the rows bound as insert_ignore binds them; a
    clause with parameters of its own goes through the statement as it is."""
    bigger = _upsert(db, lambda excluded: {"rank": case((excluded.rank > items.c.rank,
                                                         excluded.rank), else_=items.c.rank),
                                           "at": excluded.at})
    compiled: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, context, many: compiled.append(
                     statement) if context.compiled is not None else None)
    with db.transaction() as session:
        insert_on_conflict(session, items, [{"key": "a", "rank": 5, "at": AT},
                                            {"key": "b", "rank": 1, "at": None}], bigger)
    with db.transaction() as session:
        insert_on_conflict(session, items, [{"key": "a", "rank": 3, "at": None},
                                            {"key": "b", "rank": 4, "at": AT},
                                            {"key": "c", "rank": 2, "at": AT}], bigger)
    assert not [s for s in compiled if s.lstrip().upper().startswith("INSERT")]
    assert [(r[0], r[2], r[5]) for r in read(db)] == [("a", 5, None), ("b", 4, AT),
                                                      ("c", 2, AT)]
    labelled = _upsert(db, lambda excluded: {"label": "seen twice"})
    with db.transaction() as session:
        insert_on_conflict(session, items, [{"key": "a"}, {"key": "d"}], labelled)
    assert [(r[0], r[1]) for r in read(db)] == [("a", "seen twice"), ("b", "unnamed"),
                                                ("c", "unnamed"), ("d", "unnamed")]


def test_a_key_longer_than_its_column_is_refused_not_cut(db: Database) -> None:
    """As a plain INSERT does on PostgreSQL (SQLite keeps any length): cut to 32 characters, two
    keys sharing their first 32 would collide and the second row would be dropped unseen."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite does not enforce a string column's length")
    with pytest.raises(DBAPIError, match="too long"), db.transaction() as session:
        insert_ignore(session, items, [{"key": "k" * 32 + "a"}, {"key": "k" * 32 + "b"}])
