"""An outbox of its own for forwarder tests: tables in a fresh schema (or SQLite file), rows to
queue, and what is left of them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import MetaData, Table, func, select

from cjo_platform.clock import Clock, ManualClock
from cjo_platform.db import Database
from cjo_platform.db.dead_letters import DeadLetter, DeadLetters, define_dead_letters
from cjo_platform.db.outbox import Forwarder, Outbox, define_outbox
from support import Backend, eventually


@dataclass
class Box:
    """One replica's view of a shared outbox: its own Database (connection pool) and Outbox."""

    db: Database
    outbox: Outbox
    dead_letters: DeadLetters

    def queue(self, topic: str, workspace: str, payloads: list[bytes]) -> None:
        with self.db.transaction() as session:
            self.outbox.add(session, topic, workspace, [(p, "") for p in payloads])

    def queued(self, topic: str = "t") -> int:
        table = self.outbox.table
        with self.db.transaction() as session:
            return int(session.execute(select(func.count()).select_from(table)
                                       .where(table.c.topic == topic)).scalar_one())

    def attempts(self, payload: bytes) -> int:
        table = self.outbox.table
        with self.db.transaction() as session:
            return int(session.execute(select(table.c.attempts)
                                       .where(table.c.payload == payload)).scalar_one())

    def letters(self, workspace: str) -> list[DeadLetter]:
        with self.db.transaction() as session:
            return self.dead_letters.list(session, workspace)

    def close(self) -> None:
        self.db.dispose()


def tables() -> tuple[MetaData, Table, Table]:
    metadata = MetaData()
    return metadata, define_outbox(metadata), define_dead_letters(metadata)


def open_box(url: str, schema: str, clock: Clock | None = None, *, create: bool = False) -> Box:
    metadata, outbox, dead_letters = tables()
    clock = clock or ManualClock()
    db = Database(url, schema=schema)
    if create:
        db.create_schema()
        metadata.create_all(db.engine)
    letters = DeadLetters(dead_letters, clock)
    return Box(db, Outbox(outbox, clock, letters), letters)


def url_of(backend: Backend) -> str:
    return str(backend.env().get("CJO_DATABASE_URL", f"sqlite:///{backend.data_dir}/outbox.db"))


@contextmanager
def two_boxes(backend: Backend) -> Iterator[tuple[Box, Box]]:
    """Two replicas' views of one outbox: separate Database objects, so separate pools (the
    PostgreSQL schema is dropped afterwards)."""
    clock = ManualClock()
    schema = backend.schema_prefix + "outbox"
    first = open_box(url_of(backend), schema, clock, create=True)
    second = open_box(url_of(backend), schema, clock)
    try:
        yield first, second
    finally:
        second.close()
        if backend.kind == "postgresql":
            first.db.drop_schema()
        first.close()


class Rounds:
    """Watches a forwarder's rounds, so a test can wait until it is idle: its last round found
    no more work and no wake-up is pending (it waits for one, or for its poll)."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self._round = forwarder.run_once
        self.running = False
        self.more = True  # until a round said otherwise
        self.failures: list[Exception] = []  # rounds that raised
        forwarder.run_once = self.run_once  # type: ignore[method-assign]

    async def run_once(self) -> bool:
        self.running = True
        try:
            self.more = await self._round()
            return self.more
        except Exception as exc:
            self.failures.append(exc)
            raise
        finally:
            self.running = False

    def idle(self) -> bool:
        return not (self.running or self.more or self.forwarder._wake.is_set())


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def started(forwarder: Forwarder, rounds: Rounds) -> asyncio.Task[None]:
    """``forwarder`` running, once it is idle (``rounds`` watches it)."""
    task = asyncio.create_task(forwarder.run())
    try:
        await eventually(lambda: forwarder._running)
        await eventually(rounds.idle)
    except BaseException:
        await stop(task)
        raise
    return task
