"""How facts are stored, at the repository, on SQLite and PostgreSQL: every value read back as
it was sent, each id once, and a batch in as few round trips as the database allows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, cast, event, func, insert, select

from cjo_analytics import adapters
from cjo_analytics.adapters import repository
from cjo_analytics.adapters.tables import facts
from cjo_analytics.domain.facts import Fact, FactType
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from support import PG_URL, Backend

T0 = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/a.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(url, schema=backend.schema_prefix + "analytics")
    database.create_schema()
    upgrade(database, MIGRATIONS)
    yield database
    database.dispose()


def _record(db: Database, batch: list[Fact], now: datetime = T0) -> set[str]:
    with db.transaction() as session:
        return repository.record_facts(session, "ws-a", batch, now)


def _entered(fact_id: str, profile: str = "p1") -> Fact:
    return Fact(fact_id, FactType.JOURNEY_ENTERED, profile, "j1", "e1", "", T0)


def test_every_value_reads_back_as_sent(db: Database) -> None:
    converted = Fact(
        "conv-1", FactType.GOAL_REACHED, "p-ü😀", "journey \"quoted\" \\ back", "e1", "m1",
        T0, journey_version=2**53 + 1, node_id="goal\nline", channel=3,
        content_key="café 😀", variant="B", experiment_id="x1", arm="a", control=True,
        arm_weight=33.333333333333336, revenue=19.99, currency="EUR", exit_reason="",
        conversion_deadline=T0 + timedelta(days=7, microseconds=1), visit_sequence=7,
        source_event_id="ev-1")
    plain = Fact("plain-1", FactType.NODE_VISITED, "p2", "", "", "", T0 - timedelta(days=800),
                 revenue=0.1 + 0.2)
    received = T0 + timedelta(seconds=1)
    assert _record(db, [converted, plain], received) == {"conv-1", "plain-1"}

    with db.transaction() as session:
        rows = {row.fact_id: row for row in session.execute(select(facts)).all()}
    for sent in (converted, plain):
        row = rows[sent.fact_id]
        for name in ("profile_id", "journey_id", "enrollment_id", "message_id", "occur_time",
                     "journey_version", "node_id", "channel", "content_key", "variant",
                     "experiment_id", "arm", "control", "arm_weight", "revenue", "currency",
                     "exit_reason", "conversion_deadline", "visit_sequence",
                     "source_event_id"):
            assert getattr(row, name) == getattr(sent, name), name
        assert row.type == sent.type.value
        assert row.record_time == received
        assert row.workspace_id == "ws-a"
    assert rows["plain-1"].occur_hour == int((T0 - timedelta(days=800)).timestamp()) // 3600


def test_each_id_is_stored_once_and_named_new_once(db: Database) -> None:
    assert _record(db, [_entered("a"), _entered("b")]) == {"a", "b"}
    # Stored before, new, and new twice in one batch (the first copy counts).
    assert _record(db, [_entered("b", "other"), _entered("c"), _entered("c", "other")]) == {"c"}
    assert _record(db, [_entered("a"), _entered("c")]) == set()
    with db.transaction() as session:
        stored = session.execute(select(facts.c.fact_id, facts.c.profile_id)).all()
    assert sorted(stored) == [("a", "p1"), ("b", "p1"), ("c", "p1")]


def test_a_batch_takes_one_statement_on_postgresql(db: Database, backend: Backend) -> None:
    """The senders' forwarders send a few facts per call at a steady rate: each round trip
    costs the driver more CPU than the rows. PostgreSQL takes the batch, stored ones skipped and
    the new ones named, in one statement; SQLite (in-process) reads the stored ids first."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    _record(db, [_entered("a")])
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert _record(db, [_entered("a"), _entered("b"), _entered("c")]) == {"b", "c"}
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    writes = [s for s in statements if not s.lstrip().upper().startswith("SELECT 1")]
    assert len(writes) == (1 if backend.kind == "postgresql" else 2), writes


def test_stored_values_are_what_an_insert_of_the_same_row_stores(db: Database) -> None:
    """The batch path (SQLite: the driver's executemany of tuples made from the facts, its
    times bound by the column's processor once per moment) stores every column exactly as an
    SQLAlchemy INSERT of the same row does: the same text for times (microseconds 0, year 1,
    another zone), the same storage class for booleans and floats."""
    paris = timezone(timedelta(hours=1))
    batch = [
        Fact("f1", FactType.EXPERIMENT_EXPOSED, "p1", "j1", "e1", "", T0, experiment_id="x",
             arm="a", control=True, arm_weight=40.0,
             conversion_deadline=datetime(1, 1, 1, tzinfo=UTC)),
        Fact("f2", FactType.CONVERTED, "p2", "", "", "", T0.replace(microsecond=0),
             revenue=12.5, currency="EUR", source_event_id="ev"),
        Fact("f3", FactType.NODE_VISITED, "p3", "j1", "e3", "", T0.astimezone(paris),
             node_id="n", visit_sequence=2),
    ]
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    _record(db, batch, now)
    twins = [replace(f, fact_id=f"twin-{f.fact_id}") for f in batch]
    with db.transaction() as session:
        session.execute(insert(facts), repository._fact_rows("ws-a", twins, now, lambda t: t))
    columns = [c for c in facts.columns if c.name != "fact_id"]
    raw = [cast(c, String).label(c.name) for c in columns]
    if db.engine.dialect.name == "sqlite":
        raw += [func.typeof(c).label(f"typeof_{c.name}") for c in columns]
    with db.transaction() as session:
        stored = {row.fact_id: row._asdict() for row in session.execute(
            select(facts.c.fact_id, *raw).order_by(facts.c.fact_id))}
    for f in batch:
        got, expected = stored[f.fact_id], stored[f"twin-{f.fact_id}"]
        del got["fact_id"], expected["fact_id"]
        assert got == expected, f.fact_id
