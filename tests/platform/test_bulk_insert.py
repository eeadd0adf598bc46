"""bulk_insert (COPY on PostgreSQL, executemany elsewhere) writes what an INSERT would write, on
both backends and on both of its paths: defaults filled, JSON and UTC timestamps round-trip, the
service's schema is the one written to, a duplicate key is an IntegrityError (the unit of
work's conflict retry relies on it) and leaves nothing of the failed transaction, and rows may
give different columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from cjo_platform.clock import ManualClock
from cjo_platform.db import Database, UtcDateTime
from cjo_platform.db.bulk import bulk_insert
from cjo_platform.db.outbox import Outbox, define_outbox
from support import Backend

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
metadata = MetaData()
things = Table(
    "things", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("key", String(32), nullable=False, unique=True),
    Column("label", String(32), nullable=False, default="unnamed"),
    Column("rank", Integer, nullable=False, server_default=text("7")),
    Column("note", String(32)),
    Column("doc", JSON),
    Column("blob", LargeBinary),
    Column("at", UtcDateTime),
)

# Both paths on every backend: executemany below the threshold, COPY on PostgreSQL above it.
PATHS = [pytest.param(10_000, id="executemany"), pytest.param(1, id="copy")]


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/bulk.db")
    database = Database(url, schema=backend.schema_prefix + "bulk")
    database.create_schema()
    metadata.create_all(database.engine)
    yield database
    database.dispose()


def write(db: Database, rows: list[dict[str, Any]], threshold: int) -> None:
    with db.transaction() as session:
        bulk_insert(session, things, rows, copy_threshold=threshold)


def read(db: Database) -> list[dict[str, Any]]:
    with db.transaction() as session:
        return [dict(r._mapping) for r in session.execute(select(things).order_by(things.c.id))]


@pytest.mark.parametrize("threshold", PATHS)
def test_defaults_json_and_timestamps_read_back_as_written(db: Database, threshold: int) -> None:
    east = timezone(timedelta(hours=5))
    write(db, [
        {"key": "a", "doc": {"path": "/", "n": 1.5, "tags": ["x"]}, "blob": b"\x00\\\n\xff",
         "at": AT.astimezone(east)},
        {"key": "b", "doc": None, "at": AT},
        {"key": "c", "label": "named", "rank": 3, "note": "tab\there", "doc": [1, "two"]},
    ], threshold)
    rows = read(db)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)  # ids in row order
    assert [(r["key"], r["label"], r["rank"], r["note"], r["doc"], r["blob"], r["at"])
            for r in rows] == [
        ("a", "unnamed", 7, None, {"path": "/", "n": 1.5, "tags": ["x"]}, b"\x00\\\n\xff", AT),
        # A given None is JSON null (as with SQLAlchemy's JSON type), read back as None...
        ("b", "unnamed", 7, None, None, None, AT),
        ("c", "named", 3, "tab\there", [1, "two"], None, None),
    ]
    assert rows[0]["at"].utcoffset() == timedelta(0)  # stored as UTC, whatever zone was given
    with db.transaction() as session:
        # ...and is stored as JSON null, not SQL NULL, while a row lacking the column has SQL NULL.
        nulls = dict(session.execute(select(things.c.key, things.c.doc.is_(None))).all())
    assert nulls == {"a": False, "b": False, "c": False}
    write(db, [{"key": "d"}], threshold)
    with db.transaction() as session:
        assert session.execute(select(things.c.doc.is_(None))
                               .where(things.c.key == "d")).scalar_one() is True


@pytest.mark.parametrize("threshold", PATHS)
def test_times_read_back_to_the_microsecond_at_the_edges_of_the_range(
        db: Database, threshold: int) -> None:
    """COPY sends a time column as text, made once per distinct moment: every moment comes
    back as the same UTC instant, the first and last a datetime holds and sub-second ones too,
    repeated or not, given in any zone."""
    west = timezone(-timedelta(hours=9, minutes=30))
    moments = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, UTC),
               AT + timedelta(microseconds=5), AT.astimezone(west), AT, AT]
    write(db, [{"key": f"t{n}", "at": at} for n, at in enumerate(moments)], threshold)
    assert [r["at"] for r in read(db)] == moments


@pytest.mark.parametrize("threshold", PATHS)
def test_a_naive_timestamp_is_refused_as_by_an_insert(db: Database, threshold: int) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        write(db, [{"key": "a", "at": datetime(2026, 3, 1)}], threshold)
    assert read(db) == []


@pytest.mark.parametrize("threshold", PATHS)
def test_a_duplicate_key_is_an_integrity_error_and_nothing_stays(db: Database,
                                                                 threshold: int) -> None:
    write(db, [{"key": "a"}], threshold)
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.execute(insert(things).values(key="before"))  # same transaction, rolled back
        bulk_insert(session, things, [{"key": "b"}, {"key": "c"}, {"key": "a"}],
                    copy_threshold=threshold)
    assert [r["key"] for r in read(db)] == ["a"]


@pytest.mark.parametrize("threshold", PATHS)
def test_rows_with_different_columns_are_normalised_in_order(db: Database,
                                                            threshold: int) -> None:
    write(db, [
        {"key": "a", "label": "first", "rank": 1, "note": "n"},
        {"key": "b"},  # label: Python default; rank: server default; note: NULL
        {"key": "c", "rank": 2, "doc": {"k": 1}},
        {"key": "d"},
        {"key": "e", "id": 1000, "rank": 5},
    ], threshold)
    rows = read(db)
    assert [(r["key"], r["label"], r["rank"], r["note"], r["doc"]) for r in rows] == [
        ("a", "first", 1, "n", None), ("b", "unnamed", 7, None, None),
        ("c", "unnamed", 2, None, {"k": 1}), ("d", "unnamed", 7, None, None),
        ("e", "unnamed", 5, None, None)]
    assert rows[-1]["id"] == 1000
    assert rows[0]["id"] < rows[1]["id"] < rows[2]["id"] < rows[3]["id"]


def test_an_unknown_column_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="no column"):
        write(db, [{"key": "a", "colour": "red"}], 1)


@pytest.mark.parametrize("threshold", PATHS)
def test_the_table_is_written_in_the_schema_an_insert_would_use(
        backend: Backend, db: Database, threshold: int) -> None:
    """The service's search_path, and a schema named on the table, translated like an INSERT."""
    if backend.kind != "postgresql":
        pytest.skip("SQLite has no schemas")
    own = MetaData(schema="logical")
    table = Table("things", own, Column("key", String(32), primary_key=True),
                  Column("at", UtcDateTime))
    other = backend.schema_prefix + "other"
    with db.engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{other}"'))
        own.create_all(conn.execution_options(schema_translate_map={"logical": other}))
    write(db, [{"key": "in-service-schema"}], threshold)
    with db.transaction() as session:
        session.connection(execution_options={"schema_translate_map": {"logical": other}})
        bulk_insert(session, table, [{"key": "translated", "at": AT}], copy_threshold=threshold)
    with db.engine.connect() as conn:
        service = conn.execute(text(f'SELECT key FROM "{db.schema}".things')).scalars().all()
        translated = conn.execute(text(f'SELECT key, at FROM "{other}".things')).all()
        conn.execute(text(f'DROP SCHEMA "{other}" CASCADE'))
        conn.commit()
    assert service == ["in-service-schema"]
    assert translated == [("translated", AT)]


def test_outbox_rows_keep_the_order_of_their_payloads(db: Database) -> None:
    """Enough payloads to take the COPY path on PostgreSQL: ids follow the payloads' order,
    which is the order the forwarder sends them in."""
    table = define_outbox(MetaData())
    table.create(db.engine)
    outbox = Outbox(table, ManualClock(AT))
    payloads = [(f"{n}\n\\".encode(), f"00-{n}") for n in range(50)]
    with db.transaction() as session:
        outbox.add(session, "t", "ws", payloads[:1])
        outbox.add(session, "t", "ws", payloads[1:])
    with db.transaction() as session:
        stored = session.execute(select(table.c.payload, table.c.traceparent, table.c.create_time)
                                 .order_by(table.c.id)).all()
    assert [(p, t) for p, t, _ in stored] == payloads
    assert {c for _, _, c in stored} == {AT}


@pytest.mark.parametrize("threshold", PATHS)
def test_a_callable_default_is_called_per_row_as_by_an_insert(db: Database,
                                                              threshold: int) -> None:
    numbers = iter(range(100))
    table = Table("counted", MetaData(), Column("key", String(32), primary_key=True),
                  Column("number", Integer, default=lambda: next(numbers)))
    table.create(db.engine)
    with db.transaction() as session:
        bulk_insert(session, table, [{"key": k} for k in "abc"], copy_threshold=threshold)
        bulk_insert(session, table, [{"key": "d", "number": 50}, {"key": "e"}],
                    copy_threshold=threshold)
    with db.transaction() as session:
        assert session.execute(select(table).order_by(table.c.key)).all() == [
            ("a", 0), ("b", 1), ("c", 2), ("d", 50), ("e", 3)]


def statistics(db: Database) -> tuple[float, int]:
    """``things``' row estimate (-1: never analyzed) and the columns the planner has
    statistics of."""
    with db.transaction() as session:
        return (float(session.execute(text(
                    "SELECT reltuples FROM pg_class WHERE oid = to_regclass('things')"))
                    .scalar_one()),
                int(session.execute(text(
                    "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() "
                    "AND tablename = 'things'")).scalar_one()))


def test_a_table_bulk_loaded_before_it_had_statistics_has_them_once_committed(
        db: Database) -> None:
    """The planner has a young table's statistics from its first bulk load on (not from
    autovacuum's first pass, a minute or more later): a look-up that probes an index per key
    is planned as one, not as a filter over every row of the index it guessed was small."""
    if db.is_sqlite:
        pytest.skip("SQLite's planner reads no statistics unless asked (ANALYZE)")
    assert statistics(db)[0] < 0
    with db.transaction() as session:
        bulk_insert(session, things, [{"key": f"k{i}"} for i in range(50)], copy_threshold=1)
        assert statistics(db)[0] < 0  # not before the commit
    rows, columns = statistics(db)
    assert rows == 50 and columns > 0


def test_a_failed_analyze_after_the_commit_fails_nothing(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite's planner reads no statistics unless asked (ANALYZE)")

    def refuse(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("ANALYZE"):
            raise RuntimeError("analyze refused")

    event.listen(db.engine, "before_cursor_execute", refuse)
    try:
        write(db, [{"key": "a"}, {"key": "b"}], 1)
    finally:
        event.remove(db.engine, "before_cursor_execute", refuse)
    assert [r["key"] for r in read(db)] == ["a", "b"]
    assert statistics(db)[0] < 0
    write(db, [{"key": "c"}, {"key": "d"}], 1)  # tried again: the table is still young
    assert statistics(db)[0] == 4


def test_an_analyze_that_skipped_a_locked_table_is_tried_again(db: Database) -> None:
    """ANALYZE (SKIP_LOCKED) of a table another transaction holds (autovacuum, a manual
    ANALYZE or VACUUM) only warns: the table still has no statistics, so the next bulk load
    must analyze it, not take it as analyzed."""
    if db.is_sqlite:
        pytest.skip("SQLite's planner reads no statistics unless asked (ANALYZE)")
    with db.engine.connect() as holder:
        # The lock ANALYZE takes; the COPY's ROW EXCLUSIVE does not conflict with it.
        holder.execute(text("LOCK TABLE things IN SHARE UPDATE EXCLUSIVE MODE"))
        write(db, [{"key": "a"}, {"key": "b"}], 1)
        assert statistics(db)[0] < 0  # skipped: the lock is held
        holder.rollback()
    write(db, [{"key": "c"}, {"key": "d"}], 1)
    assert statistics(db)[0] == 4
