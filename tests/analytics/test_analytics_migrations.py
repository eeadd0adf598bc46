"""Analytics migrations that move data: facts recorded before the per-message rows existed are
folded into them, so the channel report counts them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import insert

from cjo.common.v1 import common_pb2
from cjo_analytics import adapters
from cjo_analytics.adapters import repository
from cjo_analytics.adapters.tables import facts
from cjo_analytics.domain.reports import Window
from cjo_platform.db import Database
from cjo_platform.db.migrations import alembic_config, upgrade
from support import PG_URL, Backend

EMAIL, SMS = common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_SMS
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"


def test_the_migration_folds_facts_recorded_before_it(backend: Backend) -> None:
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/a.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "analytics")
    try:
        db.create_schema()
        command.upgrade(alembic_config(db, MIGRATIONS), "0002")
        old = [("s1", "message_sent", "m1", EMAIL, "welcome", T0),
               ("d1", "message_delivered", "m1", 0, "", T0 + timedelta(minutes=1)),
               ("c1", "message_clicked", "m1", 0, "", T0 + timedelta(hours=1)),
               ("s2", "message_sent", "m2", SMS, "reminder", T0),
               ("b2", "message_bounced", "m2", 0, "", T0 + timedelta(minutes=2)),
               ("e3", "journey_entered", "", 0, "", T0)]
        with db.engine.begin() as conn:
            conn.execute(insert(facts), [
                {"workspace_id": "ws-a", "fact_id": fid, "type": kind, "profile_id": "p1",
                 "journey_id": "j1", "enrollment_id": "e1", "message_id": message,
                 "occur_time": at, "record_time": at, "channel": channel,
                 "content_key": content, "occur_hour": 0}
                for fid, kind, message, channel, content, at in old])
        upgrade(db, MIGRATIONS)
        with db.transaction() as session:
            rows = repository.channel_outcomes(session, "ws-a", "j1", None)
            windowed = repository.channel_outcomes(
                session, "ws-a", "", Window(T0 + timedelta(minutes=30), T0 + timedelta(days=1)))
        got = {(r.channel, r.content_key): (r.outcomes.sent, r.outcomes.delivered,
                                            r.outcomes.clicked, r.outcomes.bounced)
               for r in rows}
        assert got == {(EMAIL, "welcome"): (1, 1, 1, 0), (SMS, "reminder"): (1, 0, 0, 1)}
        assert [(r.channel, r.outcomes.sent, r.outcomes.clicked) for r in windowed] == [
            (EMAIL, 0, 1)]
    finally:
        db.dispose()
