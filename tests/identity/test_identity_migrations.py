"""Identity migrations that move data: profiles with computed traits stored before 0006 are due
at once, so their windows lapse without waiting for their next event; and 0013's storage
parameter (room on each page of profiles for HOT updates)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import JSON, String, column, select, table, text

from cjo_identity import adapters
from cjo_identity.adapters.tables import PROFILES_FILLFACTOR, profiles
from cjo_platform.db import Database, UtcDateTime
from cjo_platform.db.migrations import alembic_config, upgrade
from support import PG_URL, Backend

MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"
# The profiles table as revision 0005 left it (no recompute_due yet).
PROFILES_0005 = table(
    "profiles", column("workspace_id", String), column("profile_id", String),
    column("traits", JSON), column("trait_times", JSON), column("create_time", UtcDateTime),
    column("update_time", UtcDateTime), column("computed", JSON))


def test_profiles_with_computed_traits_are_due_after_the_upgrade(backend: Backend) -> None:
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/i.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "identity")
    try:
        db.create_schema()
        command.upgrade(alembic_config(db, MIGRATIONS), "0005")
        now = datetime(2026, 3, 1, tzinfo=UTC)
        with db.engine.begin() as conn:
            for profile_id, computed in (("counted", {"orders_30d": 1}), ("plain", None)):
                row = {"workspace_id": "acme", "profile_id": profile_id, "traits": {},
                       "trait_times": {}, "create_time": now, "update_time": now}
                if computed is not None:
                    row["computed"] = computed
                conn.execute(PROFILES_0005.insert().values(**row))
        upgrade(db, MIGRATIONS)
        with db.engine.connect() as conn:
            due = dict(conn.execute(
                select(profiles.c.profile_id, profiles.c.recompute_due)).all())
        assert due == {"counted": datetime(1970, 1, 1, tzinfo=UTC), "plain": None}
    finally:
        db.dispose()


def _fillfactor(db: Database) -> str | None:
    with db.engine.connect() as conn:
        options = conn.execute(text(
            "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'profiles' AND n.nspname = current_schema()")).scalar_one()
    found = [o.split("=", 1)[1] for o in options or () if o.startswith("fillfactor=")]
    return found[0] if found else None


def test_profiles_keep_room_for_hot_updates_after_the_upgrade(backend: Backend) -> None:
    """Revision 0013 (and the declared table) leave PROFILES_FILLFACTOR percent of each page of
    profiles filled on PostgreSQL, so the update of every event's profile stays on its page;
    SQLite upgrades and downgrades through it untouched."""
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/i.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "identity")
    try:
        db.create_schema()
        config = alembic_config(db, MIGRATIONS)
        command.upgrade(config, "0012")
        if backend.kind == "postgresql":
            assert _fillfactor(db) is None
        upgrade(db, MIGRATIONS)
        if backend.kind == "postgresql":
            assert _fillfactor(db) == str(PROFILES_FILLFACTOR)
        command.downgrade(config, "0012")
        if backend.kind == "postgresql":
            assert _fillfactor(db) is None
            with db.engine.begin() as conn:
                conn.execute(text("DROP TABLE profiles"))
                profiles.create(conn)  # as the code declares it
            assert _fillfactor(db) == str(PROFILES_FILLFACTOR)
    finally:
        db.dispose()
