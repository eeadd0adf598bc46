"""Dead letters: items a service gave up on (an outbox row its receiver refused for good, an
inbox event whose processing kept failing), kept per workspace with their error so operators can
list, inspect and replay them (``cjo.common.v1.DeadLetterService``) instead of reading logs.

Every service with an outbox has the table; ``source`` names where a letter came from
(``outbox:analytics.facts``, ``inbox:events``) and so which replay puts it back.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cjo_platform.clock import Clock
from cjo_platform.db.types import UtcDateTime
from cjo_platform.limits import MAX_WORKSPACE_ID_LENGTH, storable_text
from cjo_platform.paging import fit

MAX_SOURCE_LENGTH = 128
MAX_ITEM_KEY_LENGTH = 256
MAX_ERROR_LENGTH = 2000
MAX_ORIGIN_LENGTH = 128


def define_dead_letters(metadata: MetaData) -> Table:
    return Table(
        "dead_letters",
        metadata,
        # SQLite needs INTEGER PRIMARY KEY for autoincrement; PostgreSQL gets a bigint identity.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
        Column("source", String(MAX_SOURCE_LENGTH), nullable=False),
        Column("item_key", String(MAX_ITEM_KEY_LENGTH), nullable=False, default=""),
        Column("payload", LargeBinary, nullable=False),
        Column("traceparent", String(64), nullable=False, default=""),
        Column("error", Text, nullable=False, default=""),
        Column("attempts", Integer, nullable=False, default=1),
        Column("first_failed_time", UtcDateTime, nullable=False),
        Column("last_failed_time", UtcDateTime, nullable=False),
        # Where the item came from, when it can come again (a bus message redelivered after a
        # restart or a partition handover): a source keeps one letter per origin. NULL (the
        # other sources) is never a duplicate.
        Column("origin", String(MAX_ORIGIN_LENGTH), nullable=True),
        Index("ix_dead_letters_workspace", "workspace_id", "id"),
        Index("ux_dead_letters_origin", "source", "origin", unique=True),
        # Retention (CJO_<SERVICE>_RETENTION_DEAD_LETTERS_DAYS, off by default).
        Index("ix_dead_letters_failed", "last_failed_time"),
        # A letter by its item: orchestration's inbox retention keeps a given-up event's row
        # while a letter points at it, and an erasure drops a person's letters by event id.
        Index("ix_dead_letters_item", "workspace_id", "source", "item_key"),
    )


@dataclass(frozen=True)
class DeadLetter:
    id: int
    workspace_id: str
    source: str
    item_key: str
    payload: bytes
    traceparent: str
    error: str
    attempts: int
    first_failed_time: datetime
    last_failed_time: datetime


@dataclass(frozen=True)
class LetterPage:
    """A page of letters, oldest first, and the last id it covers when more letters follow
    (``None``: the last page). A letter taken meanwhile (a purge) is missing from it."""

    letters: list[DeadLetter]
    after_id: int | None


class DeadLetters:
    """Reads and writes dead letters inside a caller's transaction."""

    def __init__(self, table: Table, clock: Clock) -> None:
        self.table = table
        self.clock = clock

    def add(self, session: Session, *, workspace_id: str, source: str, item_key: str,
            payload: bytes, error: str, traceparent: str = "", attempts: int = 1,
            first_failed_time: datetime | None = None, origin: str | None = None) -> bool:
        """Keep an item given up on, with the error that made it fail. With an ``origin``, an
        item of the source already kept from there is not kept twice: returns False then."""
        now = self.clock.now()
        values = dict(
            workspace_id=workspace_id, source=storable_text(source, MAX_SOURCE_LENGTH),
            item_key=storable_text(item_key, MAX_ITEM_KEY_LENGTH), payload=payload,
            traceparent=storable_text(traceparent, 64),
            error=storable_text(error, MAX_ERROR_LENGTH),
            attempts=max(attempts, 1), first_failed_time=first_failed_time or now,
            last_failed_time=now, origin=origin)
        if origin is None:
            session.execute(self.table.insert().values(values))
            return True
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(self.table).values(values).on_conflict_do_nothing(
            index_elements=["source", "origin"])
        return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    def list(self, session: Session, workspace_id: str, source: str | None = None, *,
             after_id: int = 0, limit: int = 100) -> builtins.list[DeadLetter]:
        """The workspace's letters (of one source, when given), oldest first, after ``after_id``
        (the last id of the previous page)."""
        table = self.table
        query = select(table).where(table.c.workspace_id == workspace_id, table.c.id > after_id)
        if source:
            query = query.where(table.c.source == source)
        rows = session.execute(query.order_by(table.c.id).limit(limit)).all()
        return [_letter(row) for row in rows]

    def page(self, session: Session, workspace_id: str, source: str | None = None, *,
             after_id: int = 0, limit: int = 100, max_bytes: int) -> LetterPage:
        """A page of :meth:`list`: at most ``limit`` letters, and at most ``max_bytes`` of their
        payloads (one letter at least, however large). Their ids and payload sizes are read
        first, then the payloads of the letters kept only, so a page of large letters reads
        what it answers (not ``limit`` payloads to answer a few)."""
        table = self.table
        dialect = session.get_bind().dialect.name
        # Bytes on both: PostgreSQL's bytea, SQLite's BLOB (the column only ever holds bytes;
        # SQLite's length() counts a BLOB's bytes, from its header, without reading it).
        size = func.octet_length(table.c.payload) if dialect == "postgresql" \
            else func.length(table.c.payload)
        query = select(table.c.id, size).where(table.c.workspace_id == workspace_id,
                                               table.c.id > after_id)
        if source:
            query = query.where(table.c.source == source)
        sizes = session.execute(query.order_by(table.c.id).limit(limit + 1)).all()
        kept = [int(letter_id) for letter_id, _ in
                sizes[:fit((int(b or 0) for _, b in sizes[:limit]), max_bytes)]]
        if not kept:
            return LetterPage([], None)
        rows = session.execute(select(table).where(table.c.workspace_id == workspace_id,
                                                   table.c.id.in_(kept))
                               .order_by(table.c.id)).all()
        more = len(sizes) > len(kept)
        return LetterPage([_letter(row) for row in rows], kept[-1] if more else None)

    def count(self, session: Session, workspace_id: str, *,
              sources: Collection[str] | None = None) -> int:
        """How many letters the workspace has (of these sources, when given)."""
        table = self.table
        query = select(func.count()).select_from(table).where(
            table.c.workspace_id == workspace_id)
        if sources is not None:
            query = query.where(table.c.source.in_(sorted(sources)))
        return int(session.execute(query).scalar_one())

    def take(self, session: Session, workspace_id: str, ids: Sequence[int] | None, *,
             sources: Collection[str] | None = None, limit: int = 1000,
             ) -> builtins.list[DeadLetter]:
        """Remove and return the workspace's letters with these ``ids`` (``None``: all), of
        these ``sources`` when given, oldest first, at most ``limit``; ids of other workspaces
        or of letters already taken are ignored. The caller replays them in the same
        transaction."""
        table = self.table
        query = select(table).where(table.c.workspace_id == workspace_id)
        if ids is not None:
            if not ids:
                return []
            query = query.where(table.c.id.in_(sorted(set(ids))))
        if sources is not None:
            query = query.where(table.c.source.in_(sorted(sources)))
        query = query.order_by(table.c.id).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            # Two concurrent retries of the same letters: one takes them, the other waits and
            # then finds them gone (never replays twice).
            query = query.with_for_update()
        letters = [_letter(row) for row in session.execute(query).all()]
        if letters:
            session.execute(delete(table).where(table.c.id.in_([x.id for x in letters])))
        return letters


def _letter(r: Row[Any]) -> DeadLetter:
    return DeadLetter(
        id=int(r.id), workspace_id=r.workspace_id, source=r.source, item_key=r.item_key,
        payload=bytes(r.payload), traceparent=r.traceparent, error=r.error,
        attempts=int(r.attempts), first_failed_time=r.first_failed_time,
        last_failed_time=r.last_failed_time)
