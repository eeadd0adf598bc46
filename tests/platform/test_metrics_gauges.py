"""Queue gauges: read from the database at most once per interval however often Prometheus
scrapes, and a probe whose query fails costs only its own gauges."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import MetaData, text
from sqlalchemy.orm import Session

from cjo_platform.clock import ManualClock
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Outbox, define_outbox
from cjo_platform.metrics import Gauge, Probe, QueueGauges, Reading, outbox_probe

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BROKEN = Gauge("cjo.test.broken", "a gauge whose query fails")


def outbox_database(tmp_path: Path) -> tuple[Database, Outbox]:
    metadata = MetaData()
    table = define_outbox(metadata)
    db = Database(f"sqlite:///{tmp_path / 'gauges.db'}")
    metadata.create_all(db.engine)
    return db, Outbox(table, ManualClock(T0))


def add_rows(db: Database, outbox: Outbox, topic: str, count: int) -> None:
    with db.transaction() as session:
        outbox.add(session, topic, "ws", [(f"p-{i}".encode(), "") for i in range(count)])


def broken(session: Session, now: datetime) -> Iterable[Reading]:
    session.execute(text("SELECT * FROM no_such_table"))
    yield Reading(BROKEN.name, 1)


def test_outbox_rows_and_age_per_topic(tmp_path: Path) -> None:
    db, outbox = outbox_database(tmp_path)
    add_rows(db, outbox, "orchestration.events", 3)
    add_rows(db, outbox, "analytics.facts", 1)
    clock = ManualClock(T0 + timedelta(seconds=90))
    gauges = QueueGauges(db, clock, [outbox_probe(outbox.table)])
    rows = {r.attributes["topic"]: r.value for r in gauges.readings("cjo.outbox.rows")}
    assert rows == {"orchestration.events": 3, "analytics.facts": 1}
    ages = {r.attributes["topic"]: r.value for r in gauges.readings("cjo.outbox.oldest.age")}
    assert ages == {"orchestration.events": 90.0, "analytics.facts": 90.0}


def test_scrapes_within_the_interval_share_one_read(tmp_path: Path) -> None:
    db, outbox = outbox_database(tmp_path)
    reads = 0
    probe = outbox_probe(outbox.table)

    def counted(session: Session, now: datetime) -> Iterable[Reading]:
        nonlocal reads
        reads += 1
        return list(probe.read(session, now))

    gauges = QueueGauges(db, ManualClock(T0), [Probe("outbox", probe.gauges, counted)],
                         interval=3600)
    assert gauges.readings("cjo.outbox.rows") == []
    add_rows(db, outbox, "orchestration.events", 2)
    for _ in range(5):  # scrapes: no new query, so the rows added are not seen yet
        assert gauges.readings("cjo.outbox.rows") == []
    assert reads == 1
    fresh = QueueGauges(db, ManualClock(T0), [Probe("outbox", probe.gauges, counted)],
                        interval=0)
    assert [r.value for r in fresh.readings("cjo.outbox.rows")] == [2]


def test_a_failing_probe_leaves_the_others_readable(tmp_path: Path) -> None:
    db, outbox = outbox_database(tmp_path)
    add_rows(db, outbox, "orchestration.events", 2)
    gauges = QueueGauges(db, ManualClock(T0), [Probe("broken", [BROKEN], broken),
                                               outbox_probe(outbox.table)], interval=0)
    assert gauges.readings(BROKEN.name) == []
    assert [r.value for r in gauges.readings("cjo.outbox.rows")] == [2]
