"""Which database errors are the data's fault and which the database's, and the per-item write
fallback built on that: a batch the database refuses for one item's sake is written again item
by item, so only the items at fault fail. The RPC layer stays free of SQLAlchemy: it asks these
through :class:`~cjo_platform.rpc.batch.BatchAnswer` and the error interceptor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from cjo_platform.db.retry import lost_race
from cjo_platform.errors import CjoError, InvalidArgument

Parsed = TypeVar("Parsed")
Outcome = TypeVar("Outcome")


class Failing(Protocol):
    """What records an item's failure (a :class:`~cjo_platform.rpc.batch.BatchAnswer`)."""

    def fail(self, index: int, error: CjoError) -> None: ...


async def write_each(answer: Failing, parsed: Sequence[tuple[int, Parsed]],
                     write: Callable[[list[Parsed]], Awaitable[Sequence[Outcome]]],
                     ) -> list[tuple[int, Outcome]]:
    """``(index, outcome)`` for the parsed items ``write`` stored, all in one call.

    When the database refuses the batch for a reason one item can cause (a value it cannot
    store, a constraint), the items are written again one at a time, in order, so only the
    items at fault fail (INVALID_ARGUMENT naming the item, recorded with ``answer.fail``) and the
    others are stored. Any other error (the database is down) fails the whole call."""
    if not parsed:
        return []
    try:
        outcomes = await write([item for _, item in parsed])
    except Exception as exc:
        if not item_at_fault(exc):
            raise
    else:
        return list(zip([index for index, _ in parsed], outcomes, strict=True))
    written: list[tuple[int, Outcome]] = []
    for index, item in parsed:
        try:
            [outcome] = await write([item])
        except Exception as exc:
            if not item_at_fault(exc):
                raise
            answer.fail(index, InvalidArgument.one("", f"cannot be stored: {brief(exc)}"))
            continue
        written.append((index, outcome))
    return written


def item_at_fault(exc: BaseException) -> bool:
    """Whether a failed write may be the fault of the data written (so writing the items one by
    one finds the culprit) rather than of the database (down, busy: everything fails)."""
    if isinstance(exc, (DataError, IntegrityError)):
        return not lost_race(exc)
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        # Raised while binding a value (a date out of range, a NaN in JSON, a NUL in text).
        return isinstance(exc.orig, (ValueError, TypeError, OverflowError))
    return isinstance(exc, (ValueError, OverflowError))


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database cannot be used right now: it is
    down or unreachable (OperationalError, InterfaceError, a dropped connection), or the
    connection pool had no connection free in time. Such a failure is nobody's request's fault:
    callers should try again later (UNAVAILABLE), and nothing may be blamed on the data."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, (OperationalError, InterfaceError, PoolTimeoutError)):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def brief(exc: BaseException) -> str:
    """The first line of what the database (or driver) said, at most 200 characters."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return first if len(first) <= 200 else first[:199] + "…"
