"""Transactional outbox: a service writes an event and its outbox row in one local transaction;
a forwarder sends rows in batches and deletes them only after the receiver acknowledged.

Receivers deduplicate by their own ids, so at-least-once forwarding is effectively once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    select,
)
from sqlalchemy.orm import Session

from cjo_platform.clock import Clock
from cjo_platform.db.bulk import bulk_insert
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.engine import Database
from cjo_platform.db.types import UtcDateTime
from cjo_platform.telemetry import batch_span
from cjo_platform.worker import PollingWorker


def define_outbox(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        # SQLite needs INTEGER PRIMARY KEY for autoincrement; PostgreSQL gets a bigint identity.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("topic", String(64), nullable=False),
        Column("workspace_id", String(64), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("traceparent", String(64), nullable=False, default=""),
        Column("create_time", UtcDateTime, nullable=False),
        # The forwarder replica sending the row, and until when its claim holds; a claim that
        # expired (its replica died) is taken over.
        Column("lease_owner", String(64), nullable=True),
        Column("lease_until", UtcDateTime, nullable=True),
        # Times the receiver refused the row alone (not counting outages), and since when.
        Column("attempts", Integer, nullable=False, default=0, server_default="0"),
        Column("first_failed_time", UtcDateTime, nullable=True),
        Index("ix_outbox_topic", "topic", "id"),
    )


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    workspace_id: str
    payload: bytes
    traceparent: str
    create_time: datetime


class Outbox:
    """Writes rows inside a caller's transaction; :class:`Forwarder` drains them."""

    def __init__(self, table: Table, clock: Clock, dead_letters: DeadLetters | None = None,
                 ) -> None:
        self.table = table
        self.clock = clock
        # Where rows the receiver refused for good go (``None`` only in tests of the outbox).
        self.dead_letters = dead_letters
        self._listeners: list[Callable[[], None]] = []

    def add(self, session: Session, topic: str, workspace_id: str,
            payloads: Sequence[tuple[bytes, str]]) -> None:
        """Queue (payload, traceparent) pairs; they are sent after the transaction commits."""
        if not payloads:
            return
        now = self.clock.now()
        # Ids follow the order of ``payloads``, which is the order the forwarder sends them in.
        bulk_insert(session, self.table, [
            {"topic": topic, "workspace_id": workspace_id, "payload": payload,
             "traceparent": traceparent, "create_time": now}
            for payload, traceparent in payloads
        ])

    def on_write(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def notify(self) -> None:
        """Call after committing rows so forwarders wake at once instead of at the next poll."""
        for listener in self._listeners:
            listener()


SendBatch = Callable[[str, Sequence[OutboxRow]], Awaitable[None]]


class Forwarder(PollingWorker):
    """Sends one topic's outbox rows to a receiver, oldest first, in batches.

    Rows of one workspace go in one call (the receiver acts on behalf of that workspace). A failed
    call leaves the rows in place and is retried with backoff; nothing is deleted before the
    receiver acknowledged, so a crash at any point re-sends at most one batch.
    """

    def __init__(self, db: Database, outbox: Outbox, topic: str, send: SendBatch, *,
                 batch_size: int = 500, poll_interval: float = 1.0,
                 max_backoff: float = 30.0) -> None:
        super().__init__(poll_interval, max_backoff)
        self.name = f"outbox:{topic}"
        self.db = db
        self.outbox = outbox
        self.topic = topic
        self.send = send
        self.batch_size = batch_size
        outbox.on_write(self.wake)

    def _claim(self) -> list[OutboxRow]:
        table = self.outbox.table
        with self.db.transaction() as session:
            rows = session.execute(
                select(table).where(table.c.topic == self.topic)
                .order_by(table.c.id).limit(self.batch_size)
            ).all()
        return [OutboxRow(r.id, r.topic, r.workspace_id, r.payload, r.traceparent, r.create_time)
                for r in rows]

    def _delete(self, ids: Sequence[int]) -> None:
        table = self.outbox.table
        with self.db.transaction() as session:
            session.execute(delete(table).where(table.c.id.in_(ids)))

    async def drain_once(self) -> int:
        """Send what is queued now; returns how many rows were acknowledged."""
        rows = await self.db.run(self._claim)
        if not rows:
            return 0
        # Keep per-workspace order: send the leading run of one workspace, then the next.
        sent = 0
        start = 0
        while start < len(rows):
            end = start
            while end < len(rows) and rows[end].workspace_id == rows[start].workspace_id:
                end += 1
            group = rows[start:end]
            with batch_span(f"outbox.forward {self.topic}", [r.traceparent for r in group]):
                await self.send(group[0].workspace_id, group)
            await self.db.run(self._delete, [r.id for r in group])
            sent += len(group)
            start = end
        return sent

    async def run_once(self) -> bool:
        return await self.drain_once() >= self.batch_size
