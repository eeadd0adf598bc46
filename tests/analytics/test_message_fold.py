"""Folding facts into one row per message, at the repository, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from cjo_analytics import adapters
from cjo_analytics.adapters import repository
from cjo_analytics.adapters.tables import messages
from cjo_analytics.domain.facts import Fact, FactType
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from support import PG_URL, Backend

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"


def test_disagreeing_variants_fold_alike_whatever_the_database_collation(
        backend: Backend) -> None:
    """Two facts of one message name different variants (a bug upstream, or a replay): the
    row keeps the greatest by code point on both databases, even where PostgreSQL's column
    collation is a language one that orders "B" after "a"."""
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/a.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "analytics")
    try:
        db.create_schema()
        upgrade(db, MIGRATIONS)
        if backend.kind == "postgresql":
            with db.engine.begin() as conn:
                if conn.execute(text("SELECT 1 FROM pg_collation WHERE collname = 'en-x-icu'")
                                ).first() is None:
                    pytest.skip("this PostgreSQL has no ICU collations to test with")
                conn.execute(text(f'ALTER TABLE "{db.schema}".messages ALTER COLUMN variant '
                                  'TYPE varchar(128) COLLATE "en-x-icu"'))
        for n, variants in enumerate((("a", "B"), ("B", "a"))):
            for i, variant in enumerate(variants):
                kind = (FactType.MESSAGE_REQUESTED, FactType.MESSAGE_SENT)[i]
                with db.transaction() as session:
                    repository.record_facts(session, "ws-a", [Fact(
                        f"f{n}{i}", kind, "p1", "j1", "e1", f"m{n}",
                        T0 + timedelta(minutes=i), variant=variant)], T0)
        with db.transaction() as session:
            folded = dict(session.execute(
                select(messages.c.message_key, messages.c.variant)).all())
        assert folded == {"m0": "a", "m1": "a"}
    finally:
        db.dispose()
