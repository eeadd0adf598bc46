"""An outbox of its own for forwarder tests: tables in a fresh schema (or SQLite file), rows to
queue, and what is left of them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import MetaData, Table, func, select

from cjo_platform.clock import Clock, ManualClock
from cjo_platform.db import Database
from cjo_platform.db.dead_letters import DeadLetter, DeadLetters, define_dead_letters
from cjo_platform.db.outbox import Outbox, define_outbox


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
