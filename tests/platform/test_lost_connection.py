"""PostgreSQL connections the server ended (a restart, a failover, ``pg_terminate_backend``)
between units of work: the next unit of work runs on a new connection and its caller sees no
error; and a healthy pooled connection costs no round trip of its own (no ``SELECT 1`` before
each unit of work, as ``pool_pre_ping`` sent)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, select, text

from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from support import PG_URL, Backend


class Traced:
    """A PostgreSQL database whose connections write their protocol messages (libpq's trace) to
    a file, and whose server processes are known (to end them)."""

    def __init__(self, backend: Backend, trace: IO[bytes]) -> None:
        metadata = MetaData()
        self.notes = Table("notes", metadata, Column("id", Integer, primary_key=True),
                           Column("text", String(64), nullable=False))
        self.db = Database(PG_URL, schema=backend.schema_prefix + "lost")
        self.trace = trace
        self.pids: list[int] = []
        event.listen(self.db.engine, "connect", self._connected)
        self.db.create_schema()
        metadata.create_all(self.db.engine)
        self.transactions = Transactions(self.db, ManualClock())

    def _connected(self, dbapi_conn: Any, _: Any) -> None:
        self.pids.append(dbapi_conn.info.backend_pid)
        dbapi_conn.pgconn.trace(self.trace.fileno())

    def end_every_connection(self) -> None:
        """End the server processes of the pool's connections, as a restart does, and wait
        until they are gone (so the pool sees the end)."""
        with Database(PG_URL).engine.connect() as other:
            ended = other.execute(text(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE pid = ANY(:pids)"), {"pids": self.pids}).scalars().all()
        assert ended and all(ended)

    def write(self, uow: UnitOfWork, note: str) -> int:
        return int(uow.session.execute(self.notes.insert().values(text=note)
                                       .returning(self.notes.c.id)).scalar_one())

    def count(self, uow: UnitOfWork) -> int:
        return int(uow.session.execute(select(func.count()).select_from(self.notes))
                   .scalar_one())

    @contextmanager
    def round_trips(self) -> Iterator[list[str]]:
        """The first word of each statement the block sent, one per round trip: a simple
        Query, or the extended protocol's Sync after the Bind of a statement (parsed then or
        earlier, when prepared)."""
        self.trace.seek(0, 2)
        start = self.trace.tell()
        sent: list[str] = []
        yield sent
        self.trace.seek(start)
        parsed: dict[str, str] = {}
        bound = ""
        for line in self.trace.read().decode().splitlines():
            fields = [*line.split("\t"), ""]  # a statement's next lines have no fields
            if len(fields) < 5 or fields[1] != "F":
                continue
            kind, rest = fields[3], fields[4:]
            if kind == "Query":
                sent.append(rest[0].strip(' "').split()[0].upper())
            elif kind == "Parse":
                name, statement = re.match(r'\s*"([^"]*)"\s*"\s*(\w+)', rest[0]).groups()
                parsed[name] = statement.upper()
            elif kind == "Bind":
                bound = parsed[re.match(r'\s*"[^"]*"\s*"([^"]*)"', rest[0]).group(1)]
            elif kind == "Sync":
                sent.append(bound)


@pytest.fixture
def traced(backend: Backend) -> Iterator[Traced]:
    if backend.kind != "postgresql":
        pytest.skip("a SQLite file has no server to end its connections")
    with tempfile.TemporaryFile() as trace:
        database = Traced(backend, trace)
        yield database
        database.db.dispose()


def test_a_unit_of_work_sends_its_statements_and_nothing_else(traced: Traced) -> None:
    traced.transactions.run_sync(lambda uow: traced.write(uow, "warm"))
    traced.transactions.read_sync(traced.count)
    with traced.round_trips() as writes:
        traced.transactions.run_sync(lambda uow: traced.write(uow, "first"))
    with traced.round_trips() as reads:
        assert traced.transactions.read_sync(traced.count) == 2
    assert writes == ["BEGIN", "INSERT", "COMMIT"]
    assert reads == ["SELECT"]


async def test_units_of_work_after_the_server_ended_every_connection_succeed(
        traced: Traced) -> None:
    """Seen when the connection is checked out, before anything is sent: each unit of work
    runs once, on a new connection; so does work outside a unit of work (a forwarder's own
    transaction)."""
    transactions = traced.transactions
    # Several connections in the pool, each used once.
    for i in range(4):
        await transactions.run(lambda uow, i=i: traced.write(uow, f"before {i}"))
        await transactions.read(traced.count)
    runs: list[str] = []

    def write(uow: UnitOfWork) -> int:
        runs.append("write")
        return traced.write(uow, "after")

    def count(uow: UnitOfWork) -> int:
        runs.append("count")
        return traced.count(uow)

    traced.end_every_connection()
    assert await transactions.run(write) > 0
    assert await transactions.read(count) == 5
    assert runs == ["write", "count"]
    traced.end_every_connection()
    with traced.db.transaction() as session:
        assert session.execute(select(func.count()).select_from(traced.notes)).scalar_one() == 5
    traced.end_every_connection()
    assert await transactions.read(count) == 5
    assert runs == ["write", "count", "count"]


def test_a_connection_ended_after_the_pools_look_is_run_again_once(traced: Traced) -> None:
    """Ended after checkout, before the first statement (the look at checkout cannot see it):
    the unit of work runs again on a new connection, its write made once."""
    runs: list[int] = []

    def ended_first(uow: UnitOfWork) -> int:
        runs.append(uow.session.connection().connection.dbapi_connection.info.backend_pid)
        if len(runs) == 1:
            traced.end_every_connection()
        return traced.write(uow, "once")

    traced.transactions.run_sync(ended_first)
    assert len(runs) == 2 and runs[0] != runs[1]
    assert traced.transactions.read_sync(traced.count) == 1

    reads: list[int] = []

    def read_ended_first(uow: UnitOfWork) -> int:
        reads.append(uow.session.connection().connection.dbapi_connection.info.backend_pid)
        if len(reads) == 1:
            traced.end_every_connection()
        return traced.count(uow)

    assert traced.transactions.read_sync(read_ended_first) == 1
    assert len(reads) == 2 and reads[0] != reads[1]
