"""Signals between replicas (cjo_platform.db.signals): sent in a transaction, heard by every
process on the same schema once it commits (LISTEN/NOTIFY on PostgreSQL, in-process on
SQLite), never on a rollback, never in another schema, and again after the listening
connection was cut."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy import event, text

from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.signals import Signals, channel_name
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from support import Backend, eventually, settings_for


@dataclass
class Heard:
    payloads: list[str | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def __call__(self, payload: str | None) -> None:
        self.payloads.append(payload)
        self.times.append(time.perf_counter())

    def signals(self) -> list[str]:
        """What was heard, without the "look at everything" calls after (re)connecting."""
        return [p for p in self.payloads if p is not None]


@dataclass
class Replica:
    db: Database
    signals: Signals
    transactions: Transactions
    heard: Heard

    def send(self, payload: str, name: str = "wake") -> None:
        def work(uow: UnitOfWork) -> None:
            self.signals.send(uow, name, payload)

        self.transactions.run_sync(work)


@asynccontextmanager
async def replica(backend: Backend, schema_suffix: str = "") -> AsyncIterator[Replica]:
    settings = settings_for("delivery", backend)
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    schema = None if settings.database_schema is None else settings.database_schema + schema_suffix
    db = Database(settings.database_url, schema=schema)
    signals = Signals(db, health_seconds=0.5, max_backoff=0.2)
    heard = Heard()
    signals.on("wake", heard)
    task = asyncio.create_task(signals.run())
    try:
        await asyncio.wait_for(signals.listening.wait(), 10)
        yield Replica(db, signals, Transactions(db, ManualClock()), heard)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        db.dispose()


async def test_a_signal_reaches_every_process_once_its_transaction_commits(
        backend: Backend) -> None:
    async with replica(backend) as a:
        if backend.kind == "sqlite":
            a.send("p1")  # one process: dispatched right after the commit
            await eventually(lambda: a.heard.signals() == ["p1"])
            return
        async with replica(backend) as b, replica(backend, "_other") as elsewhere:
            a.send("p1")
            await eventually(lambda: b.heard.signals() == ["p1"])
            assert a.heard.signals() == ["p1"]  # its own, once (the LISTEN echo is skipped)

            def rolled_back(uow: UnitOfWork) -> None:
                a.signals.send(uow, "wake", "never")
                raise RuntimeError("changed my mind")

            with pytest.raises(RuntimeError):
                a.transactions.run_sync(rolled_back)
            a.send("p2")
            await eventually(lambda: b.heard.signals() == ["p1", "p2"])
            assert a.heard.signals() == ["p1", "p2"]
            # Another schema on the same database (another service, another test) hears none.
            assert elsewhere.heard.signals() == []

            # How long from the commit on one replica to the handler on the other.
            latencies = []
            for i in range(40):
                start = time.perf_counter()
                a.send(f"m{i}")
                await eventually(lambda n=3 + i: len(b.heard.signals()) == n,  # type: ignore[misc]
                                 interval=0.001)
                latencies.append(b.heard.times[-1] - start)
            median = statistics.median(latencies)
            print(f"signal latency across replicas: median {median * 1000:.1f} ms, "
                  f"max {max(latencies) * 1000:.1f} ms")
            assert median < 0.1


async def test_signals_are_sent_after_the_commit_outside_the_use_cases_transaction(
        backend: Backend) -> None:
    """A NOTIFY in a use-case's transaction would take PostgreSQL's database-wide notification
    lock at its commit, serialising every signalling commit: the use-case's transaction runs
    none; the signal goes out after the commit, and signals sent at once from many threads
    all arrive (identical ones possibly once)."""
    if backend.kind != "postgresql":
        pytest.skip("only PostgreSQL notifies other processes")
    async with replica(backend) as a, replica(backend) as b:
        executed: list[str] = []

        def record(conn: object, cursor: object, statement: str, *args: object) -> None:
            executed.append(statement)

        in_transaction: list[str] = []

        def work(uow: UnitOfWork) -> None:
            a.signals.send(uow, "wake", "hot")
            uow.session.execute(text("SELECT 1"))
            in_transaction.extend(executed)  # everything run so far: the transaction's part

        event.listen(a.db.engine, "before_cursor_execute", record)
        try:
            a.transactions.run_sync(work)
            await eventually(lambda: b.heard.signals() == ["hot"])
        finally:
            event.remove(a.db.engine, "before_cursor_execute", record)
        assert in_transaction and not any("pg_notify" in s for s in in_transaction)
        assert any("pg_notify" in s for s in executed[len(in_transaction):])

        names = [f"t{i}" for i in range(40)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(a.send, names))
        await eventually(lambda: set(b.heard.signals()) == {"hot", *names})
        assert sorted(a.heard.signals()) == sorted(["hot", *names])


async def test_the_listener_reconnects_and_tells_its_handlers_to_look(
        backend: Backend) -> None:
    if backend.kind != "postgresql":
        pytest.skip("only PostgreSQL has a listening connection to lose")
    async with replica(backend) as a, replica(backend) as b:
        a.send("before")
        await eventually(lambda: b.heard.signals() == ["before"])
        calls = len(b.heard.payloads)
        # Cut b's LISTEN connection, as a failover or a network break would.
        with a.db.engine.begin() as conn:
            cut = conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"),
                {"name": f"cjo-signals-{b.signals.origin}"}).scalars().all()
        assert cut == [True]
        # Back: the handlers were told to look at everything, and new signals arrive.
        await eventually(lambda: None in b.heard.payloads[calls:], timeout=10)
        a.send("after")
        await eventually(lambda: b.heard.signals() == ["before", "after"], timeout=10)


def test_channel_names_fit_postgresql_identifiers() -> None:
    assert channel_name("t0123456789_delivery", "inbox") == "cjo.t0123456789_delivery.inbox"
    assert channel_name(None, "queued") == "cjo.public.queued"
    long = channel_name("s" * 60, "inbox")
    assert len(long) <= 63 and long != channel_name("s" * 61, "inbox")
