"""Each service's Alembic revisions build exactly the tables its code declares, on SQLite and
PostgreSQL, and running them twice is harmless."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from support import Backend

SERVICES = ["identity", "content", "orchestration", "delivery", "analytics"]


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_match_the_tables(service: str, backend: Backend) -> None:
    tables = importlib.import_module(f"cjo_{service}.adapters.tables")
    adapters = importlib.import_module(f"cjo_{service}.adapters")
    migrations = Path(str(adapters.__file__)).parent / "migrations"
    env = backend.env()
    url = env.get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/{service}.db")
    db = Database(url, schema=backend.schema_prefix + service)
    try:
        upgrade(db, migrations)
        upgrade(db, migrations)  # idempotent
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    tables.metadata)
        assert diff == [], f"run `make migration SERVICE={service} MSG=...`: {diff}"
    finally:
        db.dispose()
