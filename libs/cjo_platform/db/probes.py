"""Look-ups of one workspace's rows by key that probe the index on (workspace_id, key) once per
key on PostgreSQL, also for a workspace the planner's statistics do not know yet (a new tenant
inside big tables, or a fresh database before autovacuum's first ANALYZE)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, String, bindparam, select, text
from sqlalchemy.sql.expression import BindParameter, Select, TextClause, TextualSelect
from sqlalchemy.sql.sqltypes import NullType
from sqlalchemy.types import TypeEngine

from cjo_platform.db.engine import one_of_keys


def by_keys(dialect: str, columns: Sequence[Column[Any]], key: Column[Any], *,
            order_by: Sequence[Column[Any]] = (), lock: bool = False,
            workspace: str = "workspace_id", keys: str = "keys") -> Select[Any] | TextualSelect:
    """The ``columns`` of the rows of the workspace (parameter ``workspace``) whose ``key`` is
    one of the parameter ``keys`` (see keys_param), in ``order_by``; ``lock``: locked (FOR
    UPDATE, in the key's order). On PostgreSQL :func:`pg_by_keys` (the rows then also carry
    the ``order_by`` columns); elsewhere "workspace_id = :workspace AND key IN (...)"."""
    if dialect == "postgresql":
        return pg_by_keys(columns, key, order_by=order_by, lock=lock, workspace=workspace,
                          keys=keys)
    statement = (select(*columns)
                 .where(key.table.c.workspace_id == bindparam(workspace, type_=String),
                        one_of_keys(dialect, key, keys))
                 .order_by(*order_by))
    return statement.with_for_update() if lock else statement


def pg_by_keys(columns: Sequence[Column[Any]], key: Column[Any], *, where: str = "",
               computed: Mapping[str, tuple[str, TypeEngine[Any]]] | None = None,
               binds: Iterable[BindParameter[Any]] = (), arrays: Iterable[str] = (),
               order_by: Sequence[Column[Any]] = (), lock: bool = False,
               workspace: str = "workspace_id", keys: str = "keys",
               locked_before: Mapping[str, str] | None = None,
               locked_within: Sequence[str] = ()) -> TextualSelect:
    """:func:`by_keys` on PostgreSQL (:func:`pg_probes`), read back as the table's column
    types. ``where``: a further condition on the rows, and ``computed``: further columns
    (name: SQL, type), both SQL over the table as ``t`` whose parameters other than the
    workspace and the keys are ``binds``, or array literals named in ``arrays``.
    ``locked_before`` and ``locked_within``: see :func:`pg_probes`."""
    named = {c.name for c in columns}
    picked = [*columns, *(c for c in order_by if c.name not in named)]
    extra = computed or {}
    sql = pg_probes(key.table.name, ", ".join([*(f"t.{c.name}" for c in picked),
                                               *(f"{e} AS {n}" for n, (e, _) in extra.items())]),
                    {key.name: keys}, lock=lock, where=where, workspace=workspace,
                    locked_before=locked_before, locked_within=locked_within)
    if order_by:
        sql += " ORDER BY " + ", ".join(f"x.{c.name}" for c in order_by)
    locked_arrays = list((locked_before or {}).values())
    return (pg_text(sql, [keys, *arrays, *locked_arrays]).bindparams(*binds)
            .columns(*picked, **{n: t for n, (_, t) in extra.items()}))


def _in_byte_order(columns: Iterable[str]) -> str:
    return ", ".join(f'{column} COLLATE "C"' for column in columns)


def in_byte_order(dialect: str, *columns: Any) -> list[Any]:
    """``columns`` to ORDER BY in Python's order of their strings, as the locked probes sort
    their keys: COLLATE "C" on PostgreSQL, whatever the database's collation (SQLite's default
    already is byte order)."""
    return [column.collate("C") for column in columns] if dialect == "postgresql" \
        else list(columns)


def pg_text(sql: str, arrays: Iterable[str]) -> TextClause:
    """``sql`` whose parameters ``arrays`` are array literals (cjo_platform.db.pg_array: typed
    text[] by their value, not by SQLAlchemy)."""
    return text(sql).bindparams(*(bindparam(name, type_=NullType()) for name in arrays
                                  if f":{name}" in sql))


def pg_probes(table: str, picked: str, keys: dict[str, str], *, lock: bool = False,
              where: str = "", workspace: str = "workspace_id",
              locked_before: Mapping[str, str] | None = None,
              locked_within: Sequence[str] = ()) -> str:
    """PostgreSQL's look-up of ``table``'s rows of the workspace (parameter ``workspace``)
    whose ``keys`` (column: array parameter) match one element of the arrays, and ``where``
    (SQL over the table as ``t``): one probe of the index on (workspace_id, *keys) per
    element.

    The workspace comes from a subquery (OFFSET 0 keeps it one), not as a constant: the
    planner then rates "workspace_id = w.id" by the table's number of workspaces, not by the
    statistics of this one, which know nothing of a workspace newer than them; with a
    constant, both a new workspace's probe by the key's index and a scan of another index
    with the workspace as prefix came out at one row, and the planner took the scan,
    filtering every row of the workspace per key. The lateral subquery (OFFSET 0 again) keeps
    the planner from flattening the probes into a join over the workspace.

    ``lock``: each row found is locked (FOR UPDATE) as it is probed, so in the keys' order:
    sorted here by the database in byte order (Python's order of the same strings), the order of
    every other statement that locks several of the table's rows. When those lock them in
    another order, the keys are sorted by ``locked_before`` first (column: array parameter, one
    value per key, not matched: the column another statement locks by, a key's profile), and a
    key's several rows (a key that is not unique) are locked in the order of ``locked_within``
    (columns)."""
    before = locked_before or {}
    arrays = ", ".join(f"CAST(:{parameter} AS text[])"
                       for parameter in [*keys.values(), *before.values()])
    names = ", ".join([*keys, *before])
    match = " AND ".join(f"t.{column} = k.{column}" for column in keys)
    if where:
        match += f" AND ({where})"
    listed = f"unnest({arrays}) AS k({names})"
    within = ""
    if lock:
        # COLLATE "C": byte order, which for UTF-8 is Python's order of str, so a statement
        # whose rows Python sorted locks in the same order under any database collation.
        listed = f"(SELECT * FROM {listed} ORDER BY {_in_byte_order([*before, *keys])}) AS k"
        if locked_within:
            within = " ORDER BY " + _in_byte_order(f"t.{column}" for column in locked_within)
    return (f"SELECT x.* FROM (SELECT CAST(:{workspace} AS text) AS id OFFSET 0) AS w "
            f"CROSS JOIN {listed} "
            f"CROSS JOIN LATERAL (SELECT {picked} FROM {table} AS t "
            f"WHERE t.workspace_id = w.id AND {match}{within} OFFSET 0"
            f"{' FOR UPDATE' if lock else ''}) AS x")
