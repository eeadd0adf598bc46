"""What the new-workspace benchmarks share: tables whose statistics know some workspaces and
not a newer one, and the PostgreSQL backend's CPU per call of alternating variants of a
statement (wall times on a loaded 2-core machine are queueing)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from cjo_platform.db import Database


def known_then_new(db: Database, fill: Mapping[str, str], known: int, new: int,
                   now: datetime) -> None:
    """Each table's ``fill`` (an INSERT ... SELECT of ``:n`` rows of the workspace ``:ws``, or
    spread over workspaces named after it when ``:split``): ``known`` rows spread and
    analyzed, then ``new`` rows of the workspace "newcomer", which the statistics do not
    know (autovacuum off for these tables, so they stay as they were)."""
    with db.transaction() as session:
        for table, sql in fill.items():
            session.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            session.execute(text(sql), {"ws": "ws", "split": True, "n": known, "now": now})
    with db.transaction() as session:
        for table in fill:
            session.execute(text(f"ANALYZE {table}"))
    with db.transaction() as session:
        for sql in fill.values():
            session.execute(text(sql), {"ws": "newcomer", "split": False, "n": new, "now": now})


def backend_cpu(pid: int) -> float:
    """CPU ms the backend process ``pid`` has run (/proc/<pid>/schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


def print_row(db: Database, name: str, workspace_id: str,
              variants: Sequence[Callable[[Session], Any]], rounds: int) -> None:
    """A table row: the name, the workspace and :func:`median_cpu` of each variant."""
    figures = " | ".join(f"{f:.2f}" for f in median_cpu(db, variants, rounds))
    print(f"| {name} | {workspace_id} | {figures} |", flush=True)


def median_cpu(db: Database, variants: Sequence[Callable[[Session], Any]], rounds: int
               ) -> list[float]:
    """Each variant run ``rounds`` times, the variants alternating, each in a transaction
    rolled back; the median backend CPU ms per call of each."""
    figures: list[list[float]] = [[] for _ in variants]
    for _ in range(rounds):
        for index, run in enumerate(variants):
            with db.engine.connect() as connection:
                pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                session = Session(bind=connection)
                with session.begin():
                    session.connection()
                    start = backend_cpu(pid)
                    run(session)
                    figures[index].append(backend_cpu(pid) - start)
                    session.rollback()
    return [statistics.median(f) for f in figures]
