"""Alembic migrations, run programmatically. Each service keeps its own revisions in
``adapters/migrations``; its ``env.py`` is one call to :func:`run_env`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text

from cjo_platform.db.engine import Database


def alembic_config(db: Database, script_location: Path,
                   attributes: dict[str, Any] | None = None) -> Config:
    """``attributes``: what a data migration needs from the service's configuration (say its
    secret box), read as ``op.get_context().config.attributes``."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes.update(attributes or {})
    config.attributes["engine"] = db.engine
    return config


def upgrade(db: Database, script_location: Path, attributes: dict[str, Any] | None = None
            ) -> None:
    """Bring the service's schema to the newest revision (idempotent)."""
    db.create_schema()
    command.upgrade(alembic_config(db, script_location, attributes), "head")


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's ``env.py``: online migrations on the engine given in config."""
    engine = context.config.attributes["engine"]
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Replicas (or init containers) starting together must not migrate concurrently;
            # the transaction-scoped lock is released at commit.
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema()))"))
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()
