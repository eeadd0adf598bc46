"""Request idempotency: a mutating RPC with a ``request_id`` returns its first answer on repeat.

The answer is stored in the same transaction as the change it describes, so a crash never
leaves a change without its answer or an answer without its change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Column, LargeBinary, MetaData, PrimaryKeyConstraint, String, Table, select
from sqlalchemy.orm import Session

from cjo_platform.clock import Clock
from cjo_platform.db.types import UtcDateTime
from cjo_platform.errors import FailedPrecondition, InvalidArgument

M = TypeVar("M", bound=Message)

MAX_REQUEST_ID_LENGTH = 128


def define_request_log(metadata: MetaData) -> Table:
    return Table(
        "request_log",
        metadata,
        Column("workspace_id", String(64), nullable=False),
        Column("method", String(128), nullable=False),
        Column("request_id", String(MAX_REQUEST_ID_LENGTH), nullable=False),
        Column("request_hash", String(64), nullable=False),
        Column("response", LargeBinary, nullable=False),
        Column("create_time", UtcDateTime, nullable=False),
        PrimaryKeyConstraint("workspace_id", "method", "request_id"),
    )


class RequestLog:
    def __init__(self, table: Table, clock: Clock) -> None:
        self.table = table
        self.clock = clock

    def once(self, session: Session, *, workspace_id: str, method: str, request_id: str,
             request: Message, response_type: type[M], compute: Callable[[], M]) -> M:
        """Return the stored answer for ``request_id`` or compute, store and return a new one.

        Reusing a request id for a different request is refused, so a client bug cannot
        silently get somebody else's answer.
        """
        if not request_id:
            return compute()
        if len(request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument.one("request_id", f"at most {MAX_REQUEST_ID_LENGTH} characters")
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        t = self.table
        row = session.execute(
            select(t.c.request_hash, t.c.response).where(
                t.c.workspace_id == workspace_id, t.c.method == method,
                t.c.request_id == request_id)
        ).first()
        if row is not None:
            if row.request_hash != digest:
                raise FailedPrecondition(
                    f"request_id {request_id!r} was already used for a different request",
                    reason="REQUEST_ID_REUSED")
            first: M = response_type.FromString(row.response)
            return first
        response = compute()
        session.execute(t.insert().values(
            workspace_id=workspace_id, method=method, request_id=request_id,
            request_hash=digest, response=response.SerializeToString(),
            create_time=self.clock.now()))
        return response
