"""The plans the database makes for the statements a piece of storage code sends: query-plan
tests run the real storage function, capture its statements and ask for the plan of each (a
statement that scans a whole table makes every batch cost a pass over it)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from cjo_platform.db import Database


def plans(db: Database, work: Callable[[Session], Any], table: str) -> list[tuple[str, str]]:
    """Run ``work`` in a transaction; returns (statement, plan) of each statement it sent that
    reads or changes ``table`` (only its own: not those the service's workers send meanwhile
    on other connections of the engine)."""
    sent: list[tuple[str, Any]] = []
    mine: list[Any] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if (conn.connection.dbapi_connection in mine and table in statement
                and not statement.lstrip().upper().startswith("INSERT")):
            sent.append((statement, parameters[0] if executemany else parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.transaction() as session:
            mine.append(session.connection().connection.dbapi_connection)
            work(session)
            cursor = session.connection().connection.driver_connection.cursor()
            found = []
            for statement, parameters in sent:
                prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
                cursor.execute(prefix + statement, parameters)
                found.append((statement, "\n".join(str(row[-1] if db.is_sqlite else row[0])
                                                   for row in cursor.fetchall())))
            cursor.close()
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert found, "no statement captured"
    return found


def probed_by(db: Database, plan: str, key: str) -> bool:
    """Whether ``plan`` searches an index by ``key`` (SQLite), or has ``key`` in an index
    condition (PostgreSQL): a probe per key, not a filter over the workspace's rows."""
    if db.is_sqlite:
        return f"{key}=?" in plan
    return any(re.search(rf"\b{key}\b", line) for line in plan.splitlines()
               if "Index Cond" in line)
