"""Loaded by every service process that `throughput.py --profile` starts (it puts this folder on
PYTHONPATH and sets CJO_BENCH_DB_STATS): counts, per process, the database transactions committed,
the statements sent (one per round trip; an executemany counts once) and the rows they inserted,
updated or deleted, through SQLAlchemy's engine events. On SIGUSR1 the process writes its counts to
`$CJO_BENCH_DB_STATS/<pid>.json` with a sequence number, so the benchmark reads a snapshot taken
after it asked. With CJO_BENCH_STMT_DIR set, it also counts per statement (its text, whitespace
folded, first 160 characters) and writes those counts to `$CJO_BENCH_STMT_DIR/<pid>.json` at the
same time: which statements a scenario sends, and how often. Not part of the services: nothing
here runs unless the benchmark asks for it."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

_DIR = os.environ.get("CJO_BENCH_DB_STATS")
_STMT_DIR = os.environ.get("CJO_BENCH_STMT_DIR")

if _DIR:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _lock = threading.Lock()
    _counts = {"commits": 0, "rollbacks": 0, "statements": 0, "rows_written": 0, "seq": 0}
    _by_statement: dict[str, int] = {}

    def _add(key: str, n: int = 1) -> None:
        with _lock:
            _counts[key] += n

    @event.listens_for(Engine, "commit")
    def _commit(conn: Any) -> None:
        _add("commits")

    @event.listens_for(Engine, "rollback")
    def _rollback(conn: Any) -> None:
        _add("rollbacks")

    @event.listens_for(Engine, "after_cursor_execute")
    def _executed(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                  executemany: bool) -> None:
        _add("statements")
        if _STMT_DIR:
            key = " ".join(statement.split())[:160]
            with _lock:
                _by_statement[key] = _by_statement.get(key, 0) + 1
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            _add("rows_written", max(0, cursor.rowcount or 0))

    def _dump(signum: int, frame: Any) -> None:
        with _lock:
            _counts["seq"] += 1
            data = json.dumps(_counts)
        path = Path(_DIR) / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(data)
        tmp.replace(path)
        if _STMT_DIR:
            with _lock:
                tally = json.dumps(_by_statement)
            (Path(_STMT_DIR) / f"{os.getpid()}.json").write_text(tally)

    signal.signal(signal.SIGUSR1, _dump)
