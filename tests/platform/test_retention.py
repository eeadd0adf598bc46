"""Retention (cjo_platform.db.retention): rows past their kind's age go in small batches, young
rows and rows still needed stay, a rewrite keeps the row, two replicas share the work, and a
failing kind neither stops the worker nor the other kinds. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Integer,
    MetaData,
    String,
    Table,
    event,
    false,
    func,
    select,
    text,
)
from structlog.testing import capture_logs

import cjo_platform.db.retention as library
from cjo_platform.clock import ManualClock
from cjo_platform.config import ConfigError, Env
from cjo_platform.db import Database, UtcDateTime
from cjo_platform.db.dead_letters import define_dead_letters
from cjo_platform.db.idempotency import define_request_log
from cjo_platform.db.retention import (
    Configured,
    Retention,
    RetentionWorker,
    Rule,
    configure,
    retention_worker,
    setting_name,
)
from cjo_platform.db.unit_of_work import Transactions
from support import Backend, eventually

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

metadata = MetaData()
notes = Table(
    "notes", metadata,
    Column("workspace_id", String(32), primary_key=True),
    Column("note_id", Integer, primary_key=True),
    Column("body", String(200), nullable=False),
    Column("pinned", Boolean, nullable=False),
    Column("create_time", UtcDateTime, nullable=False, index=True),
    Column("blank_time", UtcDateTime, nullable=True),
)
# Declared but never created: every batch of its kind fails.
missing = Table("missing", metadata, Column("id", Integer, primary_key=True),
                Column("create_time", UtcDateTime, nullable=False))


@dataclass
class Db:
    db: Database
    clock: ManualClock
    transactions: Transactions

    def add(self, workspace: str, first: int, count: int, age: timedelta,
            pinned: bool = False) -> None:
        with self.db.transaction() as session:
            session.execute(notes.insert(), [
                {"workspace_id": workspace, "note_id": i, "body": f"note {i}", "pinned": pinned,
                 "create_time": NOW - age} for i in range(first, first + count)])

    def ids(self, workspace: str = "w1") -> list[int]:
        with self.db.transaction() as session:
            return list(session.execute(select(notes.c.note_id).where(
                notes.c.workspace_id == workspace).order_by(notes.c.note_id)).scalars())

    def bodies(self) -> dict[int, str]:
        with self.db.transaction() as session:
            return {r.note_id: r.body for r in session.execute(
                select(notes.c.note_id, notes.c.body))}


@pytest.fixture
def store(backend: Backend) -> Iterator[Db]:
    url = backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/retention.db")
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "retention")
    db.create_schema()
    notes.create(db.engine)
    clock = ManualClock(NOW)
    try:
        yield Db(db, clock, Transactions(db, clock))
    finally:
        db.dispose()


def unpinned() -> ColumnElement[bool]:
    return notes.c.pinned == false()


DELETE = Rule("notes", notes, notes.c.create_time, 30, removable=unpinned)


def retention(store: Db, *rules: Configured, batch: int = 10) -> Retention:
    return Retention(store.transactions, "test", list(rules), batch)


async def test_old_rows_go_in_batches_and_young_and_needed_rows_stay(store: Db) -> None:
    store.add("w1", 0, 25, timedelta(days=31))  # past the 30 days
    store.add("w1", 100, 5, timedelta(days=29))  # young
    store.add("w1", 200, 3, timedelta(days=400), pinned=True)  # old, but still needed
    store.add("w2", 0, 4, timedelta(days=31))  # retention is per environment: every workspace
    keep = retention(store, Configured(DELETE, 30))

    # Each batch reads the next 10 rows past their days, oldest first, and removes the
    # removable ones among them: the 3 pinned rows and 7 others, then 10, 10 and the last 2.
    assert await keep.run_once() is True  # a full window: more may be waiting
    assert keep.last.removed == {"notes": 7}
    assert await keep.run_once() is True
    assert await keep.run_once() is True
    assert await keep.run_once() is False  # the pass reached the cut-off
    assert keep.last.removed == {"notes": 2}
    assert await keep.run_once() is False
    assert keep.last.removed == {"notes": 0}
    assert store.ids("w1") == [*range(100, 105), 200, 201, 202]
    assert store.ids("w2") == []

    store.clock.advance(timedelta(days=2))  # the young ones come of age
    await keep.run_once()
    assert store.ids("w1") == [200, 201, 202]


def unpin(store: Db, *note_ids: int) -> None:
    with store.db.transaction() as session:
        session.execute(notes.update().where(notes.c.note_id.in_(note_ids)).values(pinned=False))


async def test_kept_rows_are_looked_at_again_by_the_next_pass(store: Db) -> None:
    store.add("w1", 0, 3, timedelta(days=400), pinned=True)
    store.add("w1", 10, 4, timedelta(days=40))
    keep = retention(store, Configured(DELETE, 30), batch=2)
    while await keep.run_once():
        pass
    assert store.ids() == [0, 1, 2]
    unpin(store, 0, 1)  # no longer needed (an enrollment ended, a decision was learned)
    store.add("w1", 20, 1, timedelta(days=30, seconds=-30))  # comes of age within a minute

    store.clock.advance(timedelta(minutes=1))
    while await keep.run_once():
        pass
    # This pass reached the cut-off: it goes on with the rows that come of age; the rows it
    # kept wait for the next pass.
    assert store.ids() == [0, 1, 2]

    store.clock.advance(library.PASS_INTERVAL)
    while await keep.run_once():
        pass
    assert store.ids() == [2]


async def test_a_pass_longer_than_the_interval_goes_on_to_the_cut_off(store: Db) -> None:
    store.add("w1", 0, 6, timedelta(days=400), pinned=True)
    store.add("w1", 10, 2, timedelta(days=40))
    keep = retention(store, Configured(DELETE, 30), batch=2)
    # One round every 8 hours: the pass walks the kept rows for longer than PASS_INTERVAL; it
    # must still reach the removable rows behind them, not start again from the oldest.
    for _ in range(4):
        await keep.run_once()
        store.clock.advance(library.PASS_INTERVAL / 3 + timedelta(minutes=1))
    assert store.ids() == [0, 1, 2, 3, 4, 5]


def probe_calls(store: Db) -> Callable[[], int]:
    """A ``probe(pinned)`` SQL function, the removable condition of :data:`PROBED`: NOT pinned,
    counting the rows it is evaluated on (a sequence on PostgreSQL, a Python function on
    SQLite); returns the count so far."""
    if store.db.engine.dialect.name == "postgresql":
        with store.db.transaction() as session:
            session.execute(text("CREATE SEQUENCE probe_calls"))
            session.execute(text(
                "CREATE FUNCTION probe(pinned boolean) RETURNS boolean VOLATILE LANGUAGE plpgsql"
                " AS $$ BEGIN PERFORM nextval('probe_calls'); RETURN NOT pinned; END $$"))

        def read() -> int:
            with store.db.transaction() as session:
                value, called = session.execute(text(
                    "SELECT last_value, is_called FROM probe_calls")).one()
                return int(value) if called else 0
        return read
    calls = [0]

    def probe(pinned: int) -> bool:
        calls[0] += 1
        return not pinned

    event.listen(store.db.engine, "connect", lambda connection, _: connection.create_function(
        "probe", 1, probe))
    store.db.engine.dispose()  # connections made from now on have the function
    return lambda: calls[0]


PROBED = Rule("notes", notes, notes.c.create_time, 30,
              removable=lambda: func.probe(notes.c.pinned, type_=Boolean).is_(True))


async def test_a_batch_reads_its_window_however_many_old_rows_are_kept(store: Db) -> None:
    calls = probe_calls(store)
    for i in range(400):  # rows that stay, older than all others: at the head of the index
        store.add("w1", i, 1, timedelta(days=400, seconds=-i), pinned=True)
    store.add("w1", 1000, 30, timedelta(days=31))
    keep = retention(store, Configured(PROBED, 30), batch=10)
    rounds = 0
    while True:
        before = calls()
        more = await keep.run_once()
        # Each batch looks at its own 10 rows only, not at the 400 kept ones before them.
        assert calls() - before <= 10
        rounds += 1
        if not more:
            break
    assert rounds == 44  # 430 rows read once each in 43 full windows, and an empty one
    assert store.ids() == list(range(400))


async def test_zero_days_keeps_a_kind_forever(store: Db) -> None:
    store.add("w1", 0, 5, timedelta(days=3650))
    keep = retention(store, Configured(DELETE, 0))
    assert await keep.run_once() is False
    assert store.ids() == [0, 1, 2, 3, 4]


async def test_a_rewrite_keeps_the_row_and_happens_once(store: Db) -> None:
    def blank(row: Any, now: datetime) -> dict[str, object]:
        return {"body": f"[{row.body[:4]}]", "blank_time": now}

    rule = Rule("bodies", notes, notes.c.create_time, 30,
                removable=lambda: notes.c.blank_time.is_(None), rewrite=blank,
                read=[notes.c.body])
    store.add("w1", 0, 3, timedelta(days=31))
    store.add("w1", 10, 1, timedelta(days=1))
    keep = retention(store, Configured(rule, 30), batch=2)
    assert await keep.run_once() is True
    assert await keep.run_once() is False
    assert await keep.run_once() is False
    assert keep.last.removed == {"bodies": 0}  # rewritten rows are not taken again
    assert store.bodies() == {0: "[note]", 1: "[note]", 2: "[note]", 10: "note 10"}


async def test_a_failing_kind_is_logged_and_the_others_and_the_worker_go_on(store: Db) -> None:
    broken = Rule("missing", missing, missing.c.create_time, 1)
    store.add("w1", 0, 25, timedelta(days=31))
    keep = retention(store, Configured(broken, 1), Configured(DELETE, 30))
    worker = RetentionWorker(keep, poll_seconds=0.01)
    with capture_logs() as logs:
        task = asyncio.create_task(worker.run())
        try:
            await eventually(lambda: store.ids() == [])
            await eventually(lambda: "missing" in keep.last.errors)
            assert not task.done()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    failures = [e for e in logs if e.get("kind") == "missing" and e["log_level"] == "warning"]
    assert failures and "missing" in failures[0]["error"]


async def test_two_replicas_share_the_work_and_remove_each_row_once(store: Db) -> None:
    store.add("w1", 0, 300, timedelta(days=60))
    store.add("w1", 1000, 7, timedelta(days=1))
    replicas = [retention(store, Configured(DELETE, 30), batch=20) for _ in range(2)]
    removed = [0, 0]

    async def drain(i: int) -> None:
        while True:
            more = await replicas[i].run_once()
            assert not replicas[i].last.errors
            removed[i] += replicas[i].last.removed["notes"]
            if not more:
                return

    await asyncio.gather(drain(0), drain(1))
    # A last partial batch may meet rows the other replica just took: another round finds none.
    for replica in replicas:
        await replica.run_once()
    assert store.ids() == list(range(1000, 1007))
    assert sum(removed) == 300


def test_settings_name_each_kind_and_are_validated() -> None:
    rules = [DELETE, Rule("other", notes, notes.c.create_time, 7)]
    env = Env({setting_name("orchestration", "notes"): "0"})
    assert [(c.rule.kind, c.days) for c in configure(env, "orchestration", rules)] == [
        ("notes", 0), ("other", 7)]
    assert setting_name("orchestration", "notes") == "CJO_ORCHESTRATION_RETENTION_NOTES_DAYS"
    env = Env({"CJO_CONTENT_RETENTION_REQUEST_LOG_DAYS": "-1",
               "CJO_CONTENT_RETENTION_BATCH": "lots",
               # Longer (or inf) and retention ran once, then never again.
               "CJO_CONTENT_RETENTION_POLL_SECONDS": "inf"})
    shared = MetaData()
    retention_worker(env, "content", Transactions(Database("sqlite://"), ManualClock()),
                     define_request_log(shared), define_dead_letters(shared))
    with pytest.raises(ConfigError) as raised:
        env.check()
    assert "CJO_CONTENT_RETENTION_REQUEST_LOG_DAYS=-1" in str(raised.value)
    assert "CJO_CONTENT_RETENTION_BATCH='lots'" in str(raised.value)
    assert "CJO_CONTENT_RETENTION_POLL_SECONDS=inf is above 86400" in str(raised.value)
