"""Engine and unit of work. Services use synchronous SQLAlchemy in a worker thread pool, so the
gRPC event loop never blocks on the database and domain code stays plain, testable Python."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import os
import select as io_select
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import postgres
from psycopg.adapt import Dumper
from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.sqltypes import NullType

from cjo_platform.db.bulk import _NONE, _bind, _bound, _scalar_default, _table_name, array_of
from cjo_platform.db.json_columns import decode_json, encode_json
from cjo_platform.db.planning import planned_each_run

P = ParamSpec("P")
T = TypeVar("T")


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


async def _in_thread(executor: ThreadPoolExecutor, call: Callable[[], T]) -> T:
    """``call()`` on ``executor``, in a copy of this task's contextvars (trace, log context)."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(ctx.run, call))


def _check_idle_connection(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    """A pooled PostgreSQL connection checked out: refused (the pool opens a new one in its
    place) when the server has ended it, seen without a round trip. An idle connection's socket
    has nothing to read; when the server ends it (``pg_terminate_backend``, a restart or
    failover, ``idle_session_timeout``), its last message (a FATAL error) and the end of the
    stream are there to read. ``pool_pre_ping`` asked with a ``SELECT 1`` instead: a round trip
    per unit of work, every service's share of the database's work. What this cannot see (a
    connection cut without a word, or ended after this look) fails the unit of work's first
    statement, which :class:`~cjo_platform.db.unit_of_work.Transactions` runs again."""
    try:
        socket = dbapi_conn.pgconn.socket
    except psycopg.OperationalError as exc:  # closed on our side
        raise DisconnectionError("the connection is closed") from exc
    idle = io_select.poll()
    idle.register(socket, io_select.POLLIN | io_select.POLLPRI)
    if idle.poll(0):
        raise DisconnectionError("the server ended the connection while it was idle")


class Database:
    """One service's database: an engine bound to the service's own schema (PostgreSQL) or file
    (SQLite), a session factory, and a thread pool to run units of work off the event loop."""

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 8) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.schema = None if self.is_sqlite else schema
        self.engine = self._create_engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer; serialising our own threads avoids lock contention entirely.
        self._executor = ThreadPoolExecutor(
            max_workers=1 if self.is_sqlite else pool_size, thread_name_prefix="db"
        )
        # Reads outside a transaction (see :meth:`reading`): PostgreSQL in autocommit (no BEGIN
        # and COMMIT round trips); SQLite as it is (pysqlite begins a transaction before a
        # write only), on a thread of their own for a database file: in WAL mode a read runs
        # beside the writer instead of waiting in line behind every write transaction.
        self._reads = sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if not self.is_sqlite else self.engine, expire_on_commit=False)
        in_memory = self.is_sqlite and url.split("///", 1)[-1] in ("", ":memory:", url)
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-read") \
            if self.is_sqlite and not in_memory else self._executor

    def _create_engine(self, url: str, pool_size: int) -> Engine:
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                   json_serializer=encode_json, json_deserializer=decode_json)

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            return engine
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        connect_args = {}
        if self.schema:
            # libpq's options replace the URL's ?options= and PGOPTIONS: keep theirs too.
            given = make_url(url).query.get("options") or os.environ.get("PGOPTIONS", "")
            connect_args["options"] = " ".join(
                [*([given] if isinstance(given, str) and given else []),
                 f"-csearch_path={self.schema}"])
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size,
                               connect_args=connect_args,
                               json_serializer=encode_json, json_deserializer=decode_json)
        event.listen(engine, "checkout", _check_idle_connection)
        event.listen(engine, "do_execute", planned_each_run)
        return engine

    def create_schema(self) -> None:
        if self.schema:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # CREATE SCHEMA IF NOT EXISTS is not safe against itself: of two replicas
                    # starting together, one fails on the unique index. The lock (released at
                    # commit) makes the second wait, then find the schema there.
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:schema))"),
                                 {"schema": f"create schema {self.schema}"})
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))

    def drop_schema(self) -> None:
        """Drop the service's schema (tests only)."""
        if self.schema:
            with self.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: commits when the block ends, rolls back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only, in no transaction: nothing to commit. Each statement sees
        what was committed when it ran (as every statement of a READ COMMITTED transaction
        does on PostgreSQL), not one snapshot for all. Not for writes: PostgreSQL would commit
        each statement on its own, SQLite would leave them uncommitted."""
        with self._reads() as session:
            yield session

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking database work in the pool, keeping contextvars (trace, log context)."""
        return await _in_thread(self._executor, functools.partial(fn, *args, **kwargs))

    async def run_read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`run` for work that only reads (:meth:`reading`): on a SQLite file, on its own
        thread, so it does not wait for the writes queued before it."""
        return await _in_thread(self._read_executor, functools.partial(fn, *args, **kwargs))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self._executor.shutdown(wait=True)
        self._read_executor.shutdown(wait=True)
        self.engine.dispose()


def insert_ignore(session: Session, table: Table, rows: Sequence[dict[str, Any]],
                  returning: Any = None) -> list[Any]:
    """INSERT ... ON CONFLICT DO NOTHING for both dialects; returns the ``returning`` column of
    the rows actually inserted (the ones that were new); ``returning`` a tuple of columns: a
    tuple of their values per row."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite" or len(rows) > 1:
        inserted = _insert_bound(session, table, rows, "ON CONFLICT DO NOTHING", returning)
        if inserted is not None:
            return inserted
    stmt = _insert_ignore_statement(dialect, table, returning)
    if returning is None:
        session.execute(stmt, list(rows))
        return []
    # RETURNING with executemany is supported by both dialects in SQLAlchemy 2.
    if isinstance(returning, tuple):
        return [tuple(row) for row in session.execute(stmt, list(rows))]
    result = session.execute(stmt, list(rows))
    return list(result.scalars())


@functools.cache
def _insert_ignore_statement(dialect: str, table: Table, returning: Any) -> Any:
    """:func:`insert_ignore`'s statement, built once per table: building it (and deriving its
    cache key) at every call cost more than a one-row insert's execution on SQLite."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).on_conflict_do_nothing()
    if returning is None:
        return stmt
    return stmt.returning(*returning) if isinstance(returning, tuple) else stmt.returning(returning)


# SQLite's limit on a statement's parameters (SQLITE_MAX_VARIABLE_NUMBER since 3.32), and the
# most rows one multi-row VALUES takes (as SQLAlchemy's insertmanyvalues pages them).
SQLITE_MAX_PARAMETERS = 32_766
SQLITE_ROWS_PER_INSERT = 1_000


def insert_on_conflict(session: Session, table: Table, rows: Sequence[dict[str, Any]],
                       statement: Any) -> None:
    """``session.execute(statement, rows)`` for ``statement``, an ``INSERT`` into ``table``
    with an ``ON CONFLICT`` clause (an upsert the caller builds once), the rows sent as
    :func:`insert_ignore` sends them (:func:`_insert_bound`): a batch upsert through
    SQLAlchemy's executemany spent most of its CPU on a parameter dict per row, and on
    PostgreSQL on psycopg parsing the multi-row VALUES list in Python. Falls back to the
    executemany when the clause holds parameters of its own or the rows cannot take that path."""
    if not rows:
        return
    clause = _conflict_clause(statement, session.get_bind().dialect)
    if clause is None or _insert_bound(session, table, rows, clause, None) is None:
        session.execute(statement, list(rows))


_CONFLICT_CLAUSES: dict[tuple[int, str], tuple[Any, str | None]] = {}


def _conflict_clause(statement: Any, dialect: Any) -> str | None:
    """The ``ON CONFLICT ...`` clause of ``statement`` as the dialect writes it, compiled once
    per statement; None when it has parameters (they would have to be bound per row)."""
    key = (id(statement), dialect.name)
    found = _CONFLICT_CLAUSES.get(key)
    if found is None or found[0] is not statement:
        compiled = statement.compile(dialect=dialect)
        _, on, tail = compiled.string.partition(" ON CONFLICT ")
        given = {name for name, bind in compiled.binds.items() if bind.value is not None}
        plain = bool(on) and not given and "?" not in tail and "%(" not in tail
        found = _CONFLICT_CLAUSES[key] = (statement, f"ON CONFLICT {tail}" if plain else None)
    return found[1]


def insert_returning_ids(session: Session, table: Table, rows: Sequence[dict[str, Any]],
                         ) -> list[int] | None:
    """A plain ``INSERT`` of ``rows`` (every row giving the same columns) sent as
    :func:`_insert_bound` sends them; returns the ids the table's autoincrement key gave them,
    in the order of ``rows``, or None when the rows cannot take that path (the caller inserts
    them another way). Each statement's rows take their ids in row order (SQLite: the writer
    holds the write lock, each new row takes the largest id + 1; PostgreSQL: the rows are
    selected ``ORDER BY`` their position, SQLAlchemy's own guarantee for RETURNING in
    parameter order), and later statements larger ones, so sorting the ids gives row order
    whatever order RETURNING lists them in."""
    ids = _insert_bound(session, table, rows, "", table.autoincrement_column, in_order=True)
    return None if ids is None else sorted(ids)


def _insert_bound(session: Session, table: Table, rows: Sequence[dict[str, Any]],
                  conflict: str, returning: Any, *, in_order: bool = False,
                  ) -> list[Any] | None:
    """An ``INSERT`` of ``rows`` with the ``conflict`` clause (``ON CONFLICT ...``) and
    ``returning`` (as :func:`insert_ignore`'s), the rows' values bound a column at a time
    (``bulk._bound``: each column type's bind processor, as an INSERT binds them) and sent as
    the driver takes them, not through SQLAlchemy's executemany, which builds, processes and
    checks a parameter dict per row (most of a batch insert's CPU on SQLite).

    On PostgreSQL ``INSERT ... SELECT * FROM unnest(<one array per column>) ON CONFLICT ...``:
    one statement whose text depends on the columns only, not on the number of rows (a
    multi-row VALUES list with a placeholder per value is parsed by psycopg in Python on every
    call; it caches only short queries). The arrays go in psycopg's binary format (``%b``): its
    text format escapes every element in Python (a regular expression per JSON document or
    quoted string), ~28 us per enrollment row against ~2 in binary. On SQLite a multi-row
    ``INSERT ... VALUES (...), (...) ON CONFLICT ...``, as many rows per statement as its
    parameter limit allows.

    None when the rows cannot take this path (rows giving different columns, a column whose
    Python default is computed per row, on PostgreSQL a column type an array cast would not
    round-trip): the caller inserts them as before."""
    keys = rows[0].keys()
    if not keys or not all(row.keys() == keys for row in rows):
        return None
    connection = session.connection()
    dialect = connection.dialect
    columns = [table.c[key] for key in keys]
    filled = [c for c in table.columns if c.key not in keys and c.default is not None]
    if any(_scalar_default(c) is _NONE for c in filled):
        return None  # a callable or SQL default: only an INSERT computes it per row
    postgres = dialect.name == "postgresql"
    types = [c.type.compile(dialect=dialect) for c in (*columns, *filled)] if postgres else []
    if any("[" in name or " COLLATE " in name for name in types):
        return None  # an array column (unnest would flatten it), a collated type
    defaults = tuple(_scalar_default(c) for c in filled)
    read = itemgetter(*keys)
    values = [read(row) for row in rows] if len(columns) > 1 else [(row[columns[0].key],)
                                                                    for row in rows]
    bound = _bound([*columns, *filled], [(*v, *defaults) for v in values], dialect)
    preparer = dialect.identifier_preparer
    head = (f"INSERT INTO {_table_name(table, connection.get_execution_options(), dialect)} "
            f"({', '.join(preparer.quote(c.name) for c in (*columns, *filled))}) ")
    wanted = () if returning is None else (
        returning if isinstance(returning, tuple) else (returning,))
    tail = conflict + (
        f" RETURNING {', '.join(preparer.quote(c.name) for c in wanted)}" if wanted else "")
    if postgres:
        arrays = tuple(list(column) for column in zip(*bound, strict=True))
        source = f"unnest({', '.join(f'%b::{array_of(name)}' for name in types)})"
        if in_order:
            # Ids taken in the arrays' order (``in_order``: see insert_returning_ids).
            names = [f"v{n}" for n in range(len(types))]
            source = (f"{source} WITH ORDINALITY AS v({', '.join(names)}, position) "
                      "ORDER BY position")
            statements = [(f"{head}SELECT {', '.join(names)} FROM {source} {tail}", arrays)]
        else:
            statements = [(f"{head}SELECT * FROM {source} {tail}", arrays)]
    else:
        width = len(bound[0])
        per = max(1, min(SQLITE_ROWS_PER_INSERT, SQLITE_MAX_PARAMETERS // width))
        one = f"({', '.join('?' * width)})"
        statements = [(f"{head}VALUES {', '.join([one] * len(chunk))} {tail}",
                       tuple(value for row in chunk for value in row))
                      for chunk in (bound[start:start + per]
                                    for start in range(0, len(bound), per))]
    returned: list[Any] = []
    for statement, parameters in statements:
        result = connection.exec_driver_sql(statement, parameters)
        if wanted:
            returned += result.all()
    if not wanted:
        return []
    processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in wanted]
    found = [tuple(value if process is None else process(value)
                   for process, value in zip(processors, row, strict=True))
             for row in returned]
    return found if isinstance(returning, tuple) else [row[0] for row in found]


def upsert(session: Session, table: Table, rows: Sequence[dict[str, Any]],
           merge: Callable[[Any], dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE for both dialects. ``merge`` receives the
    ``excluded`` row (the one that conflicted) and returns the SET clause, which may refer to the
    stored row through the table's columns. Rows go in primary-key order, so concurrent upserts
    of overlapping rows lock them in the same order and cannot deadlock. Each key may appear
    once in ``rows`` (PostgreSQL cannot update a row twice in one statement)."""
    if not rows:
        return
    key = [c.name for c in table.primary_key.columns]
    ordered = sorted(rows, key=lambda row: tuple(row[k] for k in key))
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    session.execute(stmt.on_conflict_do_update(index_elements=key, set_=merge(stmt.excluded)),
                    ordered)


# From this many values on, SQLite gets them as one JSON array parameter (below).
JSON_LIST_VALUES = 8


def one_of(session: Session, column: ColumnElement[Any],
           values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values`` (strings, or integers for an integer column) as ONE parameter.

    On PostgreSQL an array: psycopg prepares statements it sees repeatedly, and an IN list of n
    parameters is a new statement (and a new plan) for every n, whose generic plan can degrade
    into a filter over the whole workspace. On SQLite a JSON array read by ``json_each``
    (``column IN (SELECT value FROM json_each(?))``, still one index probe per value): an IN
    list is expanded and rendered, one parameter per value, at every execution, which for a
    batch's thousand keys cost more (~2 ms) than the look-up itself. A short list stays a
    plain IN list."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(_pg_array(column, bindparam(None, pg_array(values),
                                                          type_=NullType())))
    if len(values) < JSON_LIST_VALUES:
        return column.in_(values)
    listed = func.json_each(bindparam(None, json.dumps(list(values)), type_=String)
                            ).table_valued("value")
    return column.in_(select(listed.c.value))


def one_of_keys(dialect: str, column: ColumnElement[Any], name: str = "keys"
                ) -> ColumnElement[bool]:
    """:func:`one_of` for a statement built once and run many times: the values come at
    execution as the parameter ``name``, encoded by :func:`keys_param`. A statement built per
    batch pays SQLAlchemy's construction and cache-key cost every time, which for a batch of a
    few items costs more than the look-up itself; one built once (``functools.cache`` per
    dialect) finds its compiled form at once. Always the array (PostgreSQL) or the JSON array
    (SQLite), even for one value."""
    if dialect == "postgresql":
        return column == any_(_pg_array(column, bindparam(name, type_=NullType())))
    listed = func.json_each(bindparam(name, type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))


def keys_param(dialect: str, values: Sequence[Any]) -> str:
    """The values of a :func:`one_of_keys` parameter."""
    return pg_array(values) if dialect == "postgresql" else encode_json(list(values))


def _pg_array(column: ColumnElement[Any], parameter: Any) -> ColumnElement[Any]:
    # The parameter is typed by its value (pg_array), not by SQLAlchemy: no bind cast.
    element = BigInteger() if isinstance(column.type, Integer) else String()
    return cast(parameter, ARRAY(element))


class _TextArray(str):
    """A PostgreSQL array literal psycopg sends as a ``text[]`` parameter (see :func:`pg_array`)."""


class _BigintArray(str):
    """A PostgreSQL array literal psycopg sends as a ``bigint[]`` parameter."""


class _TextArrayDumper(Dumper):
    oid = postgres.types["text"].array_oid

    def dump(self, obj: Any) -> bytes:
        return str.encode(obj)


class _BigintArrayDumper(_TextArrayDumper):
    oid = postgres.types["int8"].array_oid


# Every psycopg connection of the process knows them (new types: nothing else changes).
psycopg.adapters.register_dumper(_TextArray, _TextArrayDumper)
psycopg.adapters.register_dumper(_BigintArray, _BigintArrayDumper)


def pg_array(values: Iterable[Any]) -> str:
    """``values`` (strings, or integers) as ONE PostgreSQL array literal (``{"a","b"}``) that
    psycopg sends as a ``text[]`` (``bigint[]``) parameter, which the server parses once.
    psycopg dumps a Python list in Python, element by element, with a regular expression per
    element and a substitution per quote or backslash (~1.4 us per short key, several for a
    JSON text): a batch's thousand keys cost more CPU than the look-up itself. Here every
    element is quoted, its backslashes and double quotes escaped only when the batch has
    any, in a few C-level string operations. (A text parameter cast to an array in SQL would
    not do: the cast is not folded, and a filter parses the literal again for every row.)"""
    items = list(values)
    if items and all(type(v) is int for v in items):
        return _BigintArray("{" + ",".join(map(str, items)) + "}")
    if not items:
        return _TextArray("{}")
    texts = [v if isinstance(v, str) else str(v) for v in items]
    plain = "".join(texts)  # the separators hold quotes: look for them in the elements only
    if "\\" in plain or '"' in plain:
        texts = [t.replace("\\", "\\\\").replace('"', '\\"') for t in texts]
    if any(v is None for v in items):  # SQL NULL (matches nothing), not the text "None"
        return _TextArray("{" + ",".join("NULL" if v is None else f'"{t}"'
                                         for v, t in zip(items, texts, strict=True)) + "}")
    return _TextArray('{"' + '","'.join(texts) + '"}')


def keys_in(session: Session, columns: Sequence[ColumnElement[Any]],
            keys: Iterable[Sequence[Any]]) -> ColumnElement[bool]:
    """Rows whose ``columns`` (of one table) equal one of ``keys`` (one value per column:
    strings, integers or times), whatever their number, as a condition of a SELECT (locking
    or not), UPDATE or DELETE whose keys are ONE parameter per column (the statement's text is
    the same for any batch), which both databases answer with one probe of the index on
    ``columns`` (the primary key, say) per key.

    SQLite: ``rowid IN (SELECT t.rowid FROM json_each(?) AS k, table AS t WHERE t.a =
    json_extract(k.value, '$[0]') AND ...)``, the keys one JSON array (a rowid table): the
    only plan with an index is the keys as the outer loop, a search of every column per key (a
    row-value IN a subquery searched by the first two columns only, then filtered; a
    row-value IN a VALUES list scanned the whole table). PostgreSQL: a join with ``unnest`` of
    one array per column, written ``a = ANY(ARRAY[k.a]) AND b = ANY(ARRAY[k.b]) AND b >= k.b
    AND b <= k.b AND ...``, no condition hashable nor mergeable, so the only join PostgreSQL
    can make is a nested loop, and with the keys outside, probing the index per key, whatever
    its statistics say of the table (plain ``=`` let it hash the whole table for a hundred
    keys): the first column's ``= ANY`` and the others' bounds are the probe's index
    conditions (before PostgreSQL 17 a btree scan takes one ``= ANY``, the others were a
    filter over the workspace's rows), the others' ``= ANY`` rate the probe at the rows it
    finds (with the bounds alone, a probe looked dearer than a scan of a small table). The
    keys are deduplicated (the join gives a row once per key that matches it) and sorted: rows
    found are locked in the keys' order unless the statement orders them.

    An OR of ``a = ? AND b IN (...)`` per leading value, used before, failed on SQLite past
    ~1,000 distinct leading values ("Expression tree is too large (maximum depth 1000)") and
    cost PostgreSQL seconds of planning.

    Only as a top-level AND of the WHERE clause: on PostgreSQL the ``unnest`` is a FROM item
    of the statement (a join), so inside OR or NOT it gives rows twice or none (review
    rkeysin). Known limit (review rkeysin, helper keysin2): on a table PostgreSQL holds no
    statistics for yet (new, not yet analysed by autovacuum), a statement with another
    condition on the table may scan it once per key instead (100 keys over 30,000 young rows:
    ~1 s); once analysed, a probe per key."""
    wanted = sorted({tuple(key) for key in keys})
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        listed = func.unnest(*(
            cast(bindparam(None, pg_array(_bound_values(column, dialect, values, as_text=True)),
                           type_=NullType()), ARRAY(_element_type(column)))
            for column, values in _columns_of(columns, wanted))
        ).table_valued(*(f"k{i}" for i in range(len(columns)))).render_derived()
        pairs = [(column, listed.c[f"k{i}"]) for i, column in enumerate(columns)]
        return and_(*(column == any_(array([value])) for column, value in pairs),
                    *(condition for column, value in pairs[1:]
                      for condition in (column >= value, column <= value)))
    rows = [list(key) for key in zip(*(_bound_values(column, dialect, values)
                                       for column, values in _columns_of(columns, wanted)),
                                     strict=True)]
    table = columns[0].table
    probed = table.alias()
    each = func.json_each(bindparam(None, encode_json(rows), type_=String)).table_valued("value")
    return sql_column("rowid", Integer, _selectable=table).in_(
        select(sql_column("rowid", Integer, _selectable=probed)).select_from(each, probed)
        .where(*(probed.c[column.key] == func.json_extract(each.c.value, f"$[{i}]")
                 for i, column in enumerate(columns))))


def _columns_of(columns: Sequence[ColumnElement[Any]], keys: Sequence[tuple[Any, ...]]
                ) -> Iterator[tuple[ColumnElement[Any], list[Any]]]:
    """Each column with its value of every key."""
    for index, column in enumerate(columns):
        yield column, [key[index] for key in keys]


def _bound_values(column: ColumnElement[Any], dialect: Any, values: list[Any],
                  as_text: bool = False) -> list[Any]:
    """``values`` as a comparison with ``column`` would bind them (a time as the UTC moment,
    which SQLite stores as text); ``as_text``: times as PostgreSQL's text form of the
    moment."""
    process = _bind(column, dialect)  # type: ignore[arg-type]
    found = [process(v) for v in values]
    return [str(v) if isinstance(v, datetime) else v for v in found] if as_text else found


def _element_type(column: ColumnElement[Any]) -> Any:
    """The type of a :func:`keys_in` array's elements on PostgreSQL (pg_array sends text[] or
    bigint[]): the column's own for a time, as bulk_update casts its arrays."""
    if isinstance(column.type, Integer):
        return BigInteger()
    if isinstance(getattr(column.type, "impl", column.type), DateTime):
        return column.type
    return String()
