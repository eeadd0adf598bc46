"""Request idempotency: a mutating RPC with a ``request_id`` returns its first answer on repeat.

The answer is stored in the same transaction as the change it describes, so a crash never
leaves a change without its answer or an answer without its change.
"""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message
from sqlalchemy import (
    Column,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from cjo_platform.clock import Clock
from cjo_platform.db.engine import insert_ignore
from cjo_platform.db.types import UtcDateTime
from cjo_platform.errors import FailedPrecondition, InvalidArgument
from cjo_platform.limits import MAX_ID_LENGTH, MAX_WORKSPACE_ID_LENGTH

MAX_REQUEST_ID_LENGTH = MAX_ID_LENGTH


def define_request_log(metadata: MetaData) -> Table:
    return Table(
        "request_log",
        metadata,
        Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
        Column("method", String(128), nullable=False),
        Column("request_id", String(MAX_REQUEST_ID_LENGTH), nullable=False),
        Column("request_hash", String(64), nullable=False),
        Column("response", LargeBinary, nullable=False),
        Column("create_time", UtcDateTime, nullable=False),
        PrimaryKeyConstraint("workspace_id", "method", "request_id"),
        # Retention deletes answers older than CJO_<SERVICE>_RETENTION_REQUEST_LOG_DAYS.
        Index("ix_request_log_created", "create_time"),
    )


class RequestLog:
    """The stored answers of mutating RPCs, keyed by (workspace, method, request id).
    :meth:`cjo_platform.db.unit_of_work.Transactions.once` is its one user."""

    def __init__(self, table: Table, clock: Clock) -> None:
        self.table = table
        self.clock = clock

    def claim(self, session: Session, *, workspace_id: str, method: str, request_id: str,
              request: Message) -> bytes | None:
        """Claim ``request_id`` for this call: None when it is ours to answer, else the stored
        answer of an earlier call. The claim is an insert that waits for a concurrent claim of
        the same id to commit (then the earlier answer is returned) or roll back (then the id
        is ours), so no call runs against another's half-visible effects. Reusing an id for a
        different request is refused, so a client bug cannot get somebody else's answer."""
        if len(request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument.one("request_id", f"at most {MAX_REQUEST_ID_LENGTH} characters")
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        t = self.table
        claimed = insert_ignore(session, t, [{
            "workspace_id": workspace_id, "method": method, "request_id": request_id,
            "request_hash": digest, "response": b"", "create_time": self.clock.now()}],
            returning=t.c.request_id)
        if claimed:
            return None
        row = session.execute(select(t.c.request_hash, t.c.response).where(
            *self._key(workspace_id, method, request_id))).one()
        if row.request_hash != digest:
            raise FailedPrecondition(
                f"request_id {request_id!r} was already used for a different request",
                reason="REQUEST_ID_REUSED")
        stored: bytes = row.response
        return stored

    def seen(self, session: Session, *, workspace_id: str, method: str,
             request_id: str) -> bool:
        """Whether ``request_id`` was claimed already (answered, or being answered)."""
        return session.execute(select(self.table.c.request_id).where(
            *self._key(workspace_id, method, request_id))).first() is not None

    def answer(self, session: Session, *, workspace_id: str, method: str, request_id: str,
               response: Message) -> None:
        """Store the answer to a claimed id, in the transaction that made the change."""
        session.execute(update(self.table).where(
            *self._key(workspace_id, method, request_id)).values(
                response=response.SerializeToString()))

    def _key(self, workspace_id: str, method: str,
             request_id: str) -> tuple[ColumnElement[bool], ...]:
        t = self.table
        return (t.c.workspace_id == workspace_id, t.c.method == method,
                t.c.request_id == request_id)
