"""Alembic migrations, run programmatically. Each service keeps its own revisions in
``adapters/migrations``; its ``env.py`` is one call to :func:`run_env`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
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


# --- revisions every service has (their bodies, written once; frozen once released) --------

def add_dead_letter_origins() -> None:
    """``dead_letters.origin`` and its unique index (see :mod:`cjo_platform.db.dead_letters`):
    nullable and without a default, so adding it rewrites no table."""
    op.add_column("dead_letters", sa.Column("origin", sa.String(length=128), nullable=True))
    op.create_index("ux_dead_letters_origin", "dead_letters", ["source", "origin"], unique=True)


def drop_dead_letter_origins() -> None:
    op.drop_index("ux_dead_letters_origin", table_name="dead_letters")
    op.drop_column("dead_letters", "origin")


def add_dead_letter_item_index() -> None:
    """``ix_dead_letters_item`` (see :mod:`cjo_platform.db.dead_letters`): a letter found by its
    item, not by walking its workspace's letters."""
    op.create_index("ix_dead_letters_item", "dead_letters", ["workspace_id", "source", "item_key"],
                    if_not_exists=True)


def drop_dead_letter_item_index() -> None:
    op.drop_index("ix_dead_letters_item", table_name="dead_letters")
