"""Plain bulk INSERT for hot paths: COPY on PostgreSQL, executemany elsewhere.

COPY ... FROM STDIN runs in the session's own transaction, so the rows commit or roll back with
everything else the unit of work wrote. It skips what makes a pipelined executemany slow (a
statement per row, parameter binding per row on the server) and writes a batch in about half the
time. It cannot do ON CONFLICT or RETURNING: callers that need either use ``insert_ignore`` /
``upsert`` or a plain ``insert()``.

Values go through each column type's bind processor for the dialect, exactly as an INSERT would
bind them (TypeDecorators such as ``UtcDateTime`` run ``process_bind_param``; JSON columns are
encoded as SQLAlchemy's JSON type encodes them, so ``None`` is JSON ``null``), and a failure
surfaces as the SQLAlchemy error an INSERT raises (a unique-key clash is an ``IntegrityError``),
so the unit of work still re-runs a unit of work that lost a race.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

import psycopg
from sqlalchemy import Column, Connection, Engine, LargeBinary, Table, event, insert, null
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from cjo_platform.db.planning import PLANNED_EACH_RUN
from cjo_platform.db.types import UtcDateTime
from cjo_platform.logging import get_logger

log = get_logger(__name__)

# Below this many rows an executemany costs no more than a COPY. Measured on a local PostgreSQL
# with outbox rows (CPU per call): 1 row ~0.5 ms either way, 10 rows 0.8 against 0.5 ms,
# 50 rows 2.2 against 1.1 ms, 200 rows 6.1 against 2.3 ms.
COPY_THRESHOLD = 8


class _Missing:
    """A value a row did not give for a column that other rows of the batch did give."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
_NONE: Any = object()  # a column without a Python-side scalar default


def bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                copy_threshold: int = COPY_THRESHOLD) -> None:
    """Insert ``rows`` (keyed by column key) into ``table``, in order, in the session's
    transaction; autoincrement ids are assigned in row order as with an INSERT.

    Rows may give different columns. A column no row gives is left out of the statement, so the
    database applies its server default (or NULL), unless it has a Python-side scalar default,
    which is written instead, as an INSERT would (a callable one makes the rows go through an
    INSERT, which calls it). A column some rows give and others do not is
    filled, for the rows that lack it, with the Python-side scalar default, else with SQL NULL;
    if the column has a default only the database or a callable can compute, the batch is split
    into runs of rows that agree on giving it, each run inserted in turn (order is kept).
    """
    if not rows:
        return
    unknown = {key for row in rows for key in row} - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {', '.join(sorted(unknown))}")
    # Defaults computed per row in Python (callables, SQL expressions) only an INSERT evaluates.
    computed = {c for c in table.columns
                if c.default is not None and _scalar_default(c) is _NONE}
    postgresql = session.get_bind().dialect.name == "postgresql"
    for run_columns, run in _runs(table, rows):
        if (postgresql and len(run) >= copy_threshold
                and computed.issubset(run_columns)):
            _copy(session, table, run_columns, run)
        else:
            _execute_many(session, table, run_columns, run)


def _runs(table: Table, rows: Sequence[Mapping[str, Any]]
          ) -> Iterator[tuple[list[Column[Any]], list[Sequence[Any]]]]:
    """Consecutive runs of rows normalised to one column list, as value lists (``MISSING``
    where a row lacks a column that is then written as SQL NULL)."""
    # Membership by key: `column in list` compares with Column.__eq__, which builds a SQL
    # expression per comparison (a tenth of a 100-row insert's time).
    keys = {key for row in rows for key in row}
    given = [c for c in table.columns if c.key in keys]
    # A scalar Python default counts for columns no row gives too: written as an INSERT would.
    filled = [c for c in table.columns
              if c.key not in keys and _scalar_default(c) is not _NONE]
    # Columns only the server (or a callable) can fill for the rows that lack them.
    split = [c for c in given if _scalar_default(c) is _NONE and _computed_default(table, c)
             and not all(c.key in row for row in rows)]
    if not split:
        columns = given + filled
        yield columns, _value_lists(rows, given, filled)
        return
    start = 0
    while start < len(rows):
        shape = tuple(c.key in rows[start] for c in split)
        end = start + 1
        while end < len(rows) and tuple(c.key in rows[end] for c in split) == shape:
            end += 1
        leave_out = {c.key for c, present in zip(split, shape, strict=True) if not present}
        kept = [c for c in given if c.key not in leave_out]
        yield kept + filled, _value_lists(rows[start:end], kept, filled)
        start = end


def _scalar_default(column: Column[Any]) -> Any:
    default = column.default
    return default.arg if isinstance(default, ScalarElementColumnDefault) else _NONE


def _computed_default(table: Table, column: Column[Any]) -> bool:
    """Whether leaving the column out is not the same as writing NULL: a server default, an
    identity/serial key, or a Python default computed per row (callable, SQL expression)."""
    return (column.default is not None or column.server_default is not None
            or column is table.autoincrement_column)


def _value_lists(rows: Sequence[Mapping[str, Any]], given: Sequence[Column[Any]],
                 filled: Sequence[Column[Any]]) -> list[Sequence[Any]]:
    """Each row's values for ``given`` then ``filled`` (the columns no row gives: their
    scalar defaults). A row that gives every column is read in one C call; one that lacks some
    goes through :func:`_values`."""
    if not given:
        return [_values(row, filled) for row in rows]
    keys = [c.key for c in given]
    defaults = tuple(_scalar_default(c) for c in filled)
    read: Callable[[Mapping[str, Any]], Any] = itemgetter(*keys)
    if len(keys) == 1:
        key = keys[0]
        read = lambda row: (row[key],)  # noqa: E731 (itemgetter of one key gives no tuple)
    columns = [*given, *filled]
    found: list[Sequence[Any]] = []
    for row in rows:
        try:
            found.append(read(row) + defaults)
        except KeyError:
            found.append(_values(row, columns))
    return found


def _values(row: Mapping[str, Any], columns: Sequence[Column[Any]]) -> list[Any]:
    values = []
    for c in columns:
        if c.key in row:
            values.append(row[c.key])
        else:
            default = _scalar_default(c)
            values.append(MISSING if default is _NONE else default)
    return values


def _execute_many(session: Session, table: Table, columns: Sequence[Column[Any]],
                  rows: list[Sequence[Any]]) -> None:
    connection = session.connection()
    dialect = connection.dialect
    given = {c.key for c in columns}
    if dialect.name == "sqlite" and not any(
            c.default is not None and _scalar_default(c) is _NONE and c.key not in given
            for c in table.columns):
        # The driver's executemany, the values bound as an INSERT binds them (as COPY does):
        # an executemany through insert() spends most of its time building and processing a
        # parameter dict per row (100 rows of decisions: ~10 of 11 ms). Not with a callable
        # or SQL default left to compute: only an INSERT computes those per row.
        name = _table_name(table, connection.get_execution_options(), dialect)
        names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in columns)
        statement = f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' * len(columns))})"
        connection.exec_driver_sql(statement, _bound(columns, rows, dialect))
        return
    # SQL NULL for a missing value: null() for types that treat None as a value (JSON null).
    nulls = [null() if c.type.should_evaluate_none else None for c in columns]
    session.execute(insert(table), [
        {c.key: sql_null if v is MISSING else v
         for c, sql_null, v in zip(columns, nulls, row, strict=True)}
        for row in rows])


def _copy(session: Session, table: Table, columns: Sequence[Column[Any]],
          rows: list[Sequence[Any]]) -> None:
    connection = session.connection()
    dialect = connection.dialect
    name = _table_name(table, connection.get_execution_options(), dialect)
    statement = (f"COPY {name} "
                 f"({', '.join(dialect.identifier_preparer.quote(c.name) for c in columns)}) "
                 "FROM STDIN")
    bound = _bound(columns, rows, dialect, times_as_text=True)
    driver: Any = connection.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in bound:
                copy.write_row(row)
    except psycopg.Error as error:
        raise DBAPIError.instance(statement, None, error, psycopg.Error) from error
    _analyze_when_young(session, name)


# The tables (by engine) this process has seen with planner statistics (see below).
_WITH_STATISTICS: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def _analyze_when_young(session: Session, name: str) -> None:
    """ANALYZE ``name`` once the transaction that bulk-loaded it commits, if it was never
    analyzed (a new schema's tables, until autovacuum's first pass a minute or more later).

    Without statistics the planner guesses that a workspace holds a small share of a table,
    and may probe a look-up by (workspace, type, value) through an index on the workspace
    alone, filtering every row of the workspace per key: identity's second 1,000-event batch
    into a new schema took 2.3 s in its owners look-up (0.005 s with statistics). PostgreSQL's
    advice for bulk loads ("Populating a Database": run ANALYZE afterwards). One look at
    ``pg_class`` per table and process; the ANALYZE on a connection of its own, after commit."""
    engine = session.get_bind().engine
    known = _WITH_STATISTICS.setdefault(engine, set())
    if name in known:
        return
    if not _never_analyzed(session.connection(), name):
        known.add(name)
        return

    def analyze(_: Session) -> None:
        # After the commit: a failure here must not reach the caller as the unit of work's
        # (it committed). SKIP_LOCKED: autovacuum holding the table is analyzing it already.
        # A skip (another transaction holds the table) is only a WARNING and leaves the table
        # as young as it was: known only once pg_class says it was analyzed.
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {name}")
                analyzed = not _never_analyzed(connection, name)
        except Exception:
            log.warning("analyzing a bulk-loaded table failed", table=name, exc_info=True)
            return
        if analyzed:
            known.add(name)

    event.listen(session, "after_commit", analyze, once=True)


def _never_analyzed(connection: Connection, name: str) -> bool:
    """Whether the table has no statistics yet (``reltuples`` -1 until the first ANALYZE or
    VACUUM; False for a table that does not exist)."""
    return bool(connection.exec_driver_sql(
        "SELECT reltuples < 0 FROM pg_class WHERE oid = to_regclass(%(name)s)",
        {"name": name}).scalar())


def _bound(columns: Sequence[Column[Any]], rows: Sequence[Sequence[Any]],
           dialect: Dialect, times_as_text: bool = False) -> list[tuple[Any, ...]]:
    """The rows' values as the driver takes them (``MISSING`` as SQL NULL), bound a column at
    a time: a column without a bind processor is left as it is, and a time column's processor
    (string formatting on SQLite) runs once per distinct moment (a batch's rows share their
    receive or creation time; equal moments bind alike, as they are all converted to UTC).
    ``times_as_text``: a time column's values as PostgreSQL's text form of the UTC moment
    (``2026-01-01 00:00:00.5+00:00``), made once per distinct moment, for COPY's text format:
    psycopg's dumper formats a datetime per row, ~1.2 us each (two per event row)."""
    bound: list[Sequence[Any]] = []
    for index, column in enumerate(columns):
        values = [row[index] for row in rows]
        process = _bind(column, dialect)
        if isinstance(column.type, UtcDateTime):
            distinct = set(values)
            processed = {v: None if v is MISSING else process(v) for v in distinct}
            if times_as_text:
                processed = {v: None if p is None else str(p) for v, p in processed.items()}
            values = [processed[v] for v in values]
        elif process is not _identity:
            values = [None if v is MISSING else process(v) for v in values]
        elif any(v is MISSING for v in values):
            values = [None if v is MISSING else v for v in values]
        bound.append(values)
    return list(zip(*bound, strict=True))


def _bind(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """The column type's bind processor for the dialect: what an INSERT would send."""
    if dialect.name == "sqlite" and isinstance(column.type, LargeBinary):
        # sqlite3 stores bytes as a BLOB as they are; the processor would wrap each value in
        # a memoryview first.
        return _identity
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    if processor is None:
        return _identity
    return processor


def _identity(value: Any) -> Any:
    return value


def _table_name(table: Table, options: Mapping[str, Any], dialect: Dialect) -> str:
    """The table as an INSERT on this connection addresses it: its own schema, translated by a
    ``schema_translate_map`` if the connection has one; without a schema the connection's
    search_path finds it (Database sets one per service)."""
    schema = table.schema
    translate = options.get("schema_translate_map")
    if translate and schema in translate:
        schema = translate[schema]
    preparer = dialect.identifier_preparer
    name = preparer.quote(table.name)
    return f"{preparer.quote_schema(schema)}.{name}" if schema else name


def array_of(type_name: str) -> str:
    """The array type to cast a column's unnest array to: its type without the size (``VARCHAR``
    for ``VARCHAR(128)``). An explicit cast to a sized type cuts an over-long value silently,
    where the INSERT's or UPDATE's own assignment to the column refuses it, as a plain
    statement would; cut keys could even collide and drop a row ON CONFLICT."""
    return re.sub(r"\(.*\)", "", type_name) + "[]"


def bulk_update(session: Session, table: Table, keys: Sequence[str],
                rows: Sequence[Mapping[str, Any]], *, match: Mapping[str, str] | None = None,
                where: Mapping[str, Any] | None = None) -> int:
    """``UPDATE table SET <the other columns> WHERE <keys>`` for each of ``rows`` (keyed by
    column key; every row gives the same columns, ``keys`` among them, each key at most once),
    in the session's transaction, the values bound as an UPDATE binds them; returns how many
    rows it updated.

    ``match`` names row values that are compared, not set: row key -> the column they must
    equal (a claim's attempt number while ``attempts`` itself is set); ``where`` adds the same
    condition to every row: column key -> value (``status = 'sending'``). A row whose
    conditions do not hold is left alone and not counted.

    PostgreSQL gets ONE statement, ``UPDATE ... FROM unnest(<one binary array per column>)``:
    an executemany is a statement per row, which the server parses, plans and runs one by
    one, and psycopg binds row by row in Python. Each row is found by a probe of an index on
    ``keys`` (the primary key), whatever the table's size or statistics (see
    :func:`_probed_by_key`), so the rows are locked and changed in the order given (callers
    whose rounds may overlap sort them, as orchestration's ``save_progress`` does). A ``where``
    value is cast to its column's type: one the column cannot hold fails the statement rather
    than matching nothing. SQLite gets the driver's executemany with the values bound a column
    at a time (a time column's processor once per distinct moment), as :func:`bulk_insert`
    does: one primary-key search per row, in the order given."""
    if not rows:
        return 0
    match = match or {}
    where = where or {}
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    # A compared value is bound as the column it is compared with.
    columns = [table.c[match.get(name, name)] for name in names]
    bound = _bound(columns, [itemgetter(*names)(row) for row in rows]
                   if len(names) > 1 else [(row[names[0]],) for row in rows], dialect)
    constants = [(table.c[key], _bind(table.c[key], dialect)(value))
                 for key, value in where.items()]
    preparer = dialect.identifier_preparer
    name = _table_name(table, connection.get_execution_options(), dialect)
    changed = [n for n in names if n not in keys and n not in match]
    compared = [(table.c[match.get(n, n)], n) for n in names if n in keys or n in match]
    if dialect.name == "postgresql":
        # A fixed condition (where) is checked like a compared value, against a column of the given
        # rows holding the value for each: on the table alone, the planner would count the
        # rows it leaves (a guess of 0.5% on a table it never analyzed) and could scan them
        # once for the whole batch instead of probing the key (see _probed_by_key).
        conditions = [(c, f"{c.name} (where)") for c, _ in constants]
        arrays = [*(list(a) for a in zip(*bound, strict=True)),
                  *([v] * len(rows) for _, v in constants)]
        types = [c.type.compile(dialect=dialect) for c in [*columns, *(c for c, _ in conditions)]]
        quote = preparer.quote
        statement = (
            f"UPDATE {name} AS t SET "
            + ", ".join(f"{quote(table.c[n].name)} = v.{quote(n)}" for n in changed)
            + f" FROM unnest({', '.join(f'%b::{array_of(t)}' for t in types)}) AS v("
            + ", ".join(quote(n) for n in [*names, *(n for _, n in conditions)]) + ") WHERE "
            + " AND ".join([*(_probed_by_key(quote(c.name), quote(n))
                              for c, n in compared if n in keys),
                            *(_checked(quote(c.name), quote(n))
                              for c, n in [*compared, *conditions] if n not in keys)]))
        # Planned at each run: a plan made while the table was young scanned it per row.
        result = connection.exec_driver_sql(statement, tuple(arrays),
                                            execution_options=PLANNED_EACH_RUN)
        return int(result.rowcount)
    order = [names.index(n) for n in changed] + [names.index(n) for _, n in compared]
    statement = (f"UPDATE {name} SET "
                 + ", ".join(f"{preparer.quote(table.c[n].name)} = ?" for n in changed)
                 + " WHERE "
                 + " AND ".join([f"{preparer.quote(c.name)} = ?" for c, _ in compared]
                                + [f"{preparer.quote(c.name)} = ?" for c, _ in constants]))
    fixed = tuple(v for _, v in constants)
    result = connection.exec_driver_sql(
        statement, [tuple(row[i] for i in order) + fixed for row in bound])
    # sqlite3 sums the rows an executemany changed.
    return int(result.rowcount)


def _probed_by_key(column: str, value: str) -> str:
    """The condition that the target's ``column`` equals the given row's ``value``, written
    ``t.column = ANY(ARRAY[v.value])``: a btree index takes it as an index condition, as it
    takes ``t.column = v.value``, but it is neither hashable nor mergeable, so the only plan
    PostgreSQL can make is a nested loop over the given rows with a probe of the index per
    row (one ``=`` left among the conditions would let it hash the table on that column).

    With ``=`` the planner priced a batch of 500 against the whole table and took a hash
    join over a seq scan in tables of up to ~90,000 rows (by their width and statistics) and
    in tables never analyzed: 2-2.5 times the probes' backend CPU at 50,000 rows
    (docs/capacity-journal.md), and the side it hashed decided the order of the locks. No
    ``SET enable_hashjoin`` (it would hold for the rest of the caller's transaction, or cost
    two more statements to undo); NULL never matches, as with ``=``."""
    return f"t.{column} = ANY(ARRAY[v.{value}])"


def _checked(column: str, value: str) -> str:
    """The condition that the target's ``column`` equals the given row's ``value``, checked on
    the row its key found: ``(t.column = v.value) IS TRUE`` is no index condition, so it
    cannot draw the probe to another index that leads with the workspace and this column
    (delivery's messages' (workspace_id, status, create_time): every message of the workspace
    in that status read per row), nor a hash join (it is no operator clause), and NULL never
    matches, as with ``=``."""
    return f"(t.{column} = v.{value}) IS TRUE"
