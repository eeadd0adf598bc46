"""Helpers for the services' retention tests: a service's real database (its migrations), rows
with only the columns a test cares about, and its retention worker drained round by round."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, LargeBinary, String, Table, select

from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.retention import Rule
from cjo_platform.db.types import UtcDateTime
from cjo_platform.service import Storage, open_storage
from support import Backend, settings_for

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class ServiceDb:
    service: str
    storage: Storage
    clock: ManualClock

    def insert(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        with self.storage.db.transaction() as session:
            for row in rows:  # one by one: an executemany takes its columns from the first row
                session.execute(table.insert().values(filled(table, row)))

    def rows(self, table: Table, *columns: Any) -> list[Any]:
        with self.storage.db.transaction() as session:
            return list(session.execute(select(*columns).select_from(table)
                                        .order_by(*columns)).all())

    async def retain(self, rules: Sequence[Rule] = (), **days: int) -> dict[str, int]:
        """Run the service's retention until nothing is left to do (``days``: kind -> days);
        rows removed per kind."""
        env = Env({f"CJO_{self.service.upper()}_RETENTION_{kind.upper()}_DAYS": str(n)
                   for kind, n in days.items()} | {
            f"CJO_{self.service.upper()}_RETENTION_BATCH": "3"})
        worker = self.storage.retention(env, self.service, rules)
        env.check()
        removed: dict[str, int] = {}
        while True:
            more = await worker.run_once()
            assert worker.retention.last.errors == {}
            for kind, n in worker.retention.last.removed.items():
                removed[kind] = removed.get(kind, 0) + n
            if not more:
                return removed


@contextmanager
def service_db(service: str, backend: Backend) -> Iterator[ServiceDb]:
    tables = importlib.import_module(f"cjo_{service}.adapters.tables")
    bootstrap = importlib.import_module(f"cjo_{service}.bootstrap")
    migrations: Path = bootstrap.MIGRATIONS
    clock = ManualClock(NOW)
    storage = open_storage(settings_for(service, backend), tables.metadata, migrations, clock)
    storage.migrate()
    try:
        yield ServiceDb(service, storage, clock)
    finally:
        storage.db.dispose()


def filled(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` plus a plain value for every other required column."""
    row = dict(values)
    for column in table.columns:
        if (column.name in row or column.nullable or column.default is not None
                or column.server_default is not None or column.autoincrement is True):
            continue
        kind = column.type
        row[column.name] = (
            NOW if isinstance(kind, UtcDateTime) else
            False if isinstance(kind, Boolean) else
            0 if isinstance(kind, Integer) else
            0.0 if isinstance(kind, Float) else
            b"" if isinstance(kind, LargeBinary) else
            {} if isinstance(kind, JSON) else
            "x" if isinstance(kind, String) else None)
    return row
