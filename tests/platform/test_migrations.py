"""Each service's Alembic revisions build exactly the tables its code declares, on SQLite and
PostgreSQL, and running them twice is harmless."""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from support import Backend

SERVICES = ["identity", "content", "orchestration", "delivery", "analytics", "decisioning"]


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



@pytest.mark.postgres
def test_replicas_starting_together_create_their_schema_without_failing(
        backend: Backend) -> None:
    """Replicas of a service starting at the same moment on a fresh PostgreSQL database each
    create the schema before migrating (the migrations themselves take a lock in env.py): none
    may fail because another one created it first."""
    if backend.kind != "postgresql":
        pytest.skip("SQLite keeps no schemas")
    replicas = 6
    databases = [Database(backend.env()["CJO_DATABASE_URL"],
                          schema=backend.schema_prefix + "analytics") for _ in range(replicas)]
    start = Barrier(replicas)

    def start_replica(db: Database) -> None:
        with db.engine.connect():
            pass  # connected before the race, as a replica is once its pool is up
        start.wait()
        db.create_schema()

    try:
        with ThreadPoolExecutor(replicas) as pool:
            for result in [pool.submit(start_replica, db) for db in databases]:
                result.result()  # raises what the replica's start-up raised
    finally:
        for db in databases:
            db.dispose()
