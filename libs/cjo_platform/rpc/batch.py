"""Batch RPCs answer every item on its own (a ``google.rpc.Status`` each): one bad item never
fails or half-writes the others. :class:`BatchAnswer` is that loop, written once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from cjo_platform.db.retry import lost_race
from cjo_platform.errors import CjoError, InvalidArgument
from cjo_platform.limits import MAX_BATCH_ITEMS, check_batch
from cjo_platform.rpc.status import OK, to_status_proto
from cjo_platform.rpc.validation import check_item

R = TypeVar("R", bound=Message)
Item = TypeVar("Item")
Parsed = TypeVar("Parsed")
Outcome = TypeVar("Outcome")


class BatchAnswer(Generic[R]):
    """The per-item results of a batch request whose items sit in the repeated ``field``.

    Construction refuses an empty or oversized batch as a whole (INVALID_ARGUMENT naming the
    field); after that every problem is the item's own: :meth:`fail` records it on the item's
    status, with field paths inside the item prefixed by ``field[index]``."""

    def __init__(self, items: Sequence[Any], field: str, domain: str,
                 result: Callable[[], R]) -> None:
        check_batch(items, field)
        self.items = items
        self.field = field
        self.domain = domain
        self.results: list[R] = []
        for _ in items:
            answer = result()
            answer.status.CopyFrom(OK)
            self.results.append(answer)

    def parse(self, parse: Callable[[Any], Parsed]) -> list[tuple[int, Parsed]]:
        """``(index, parse(item))`` for every item that passes the shared validation (which
        the interceptor leaves to the batch, see :mod:`cjo_platform.rpc.validation`) and
        parses; the others fail with the InvalidArgument raised."""
        parsed: list[tuple[int, Parsed]] = []
        for index, item in enumerate(self.items):
            try:
                check_item(item)
                parsed.append((index, parse(item)))
            except InvalidArgument as exc:
                self.fail(index, exc)
        return parsed

    async def write(self, parsed: Sequence[tuple[int, Parsed]],
                    write: Callable[[list[Parsed]], Awaitable[Sequence[Outcome]]],
                    ) -> list[tuple[int, Outcome]]:
        """``(index, outcome)`` for the parsed items ``write`` stored, all in one call.

        When the database refuses the batch for a reason one item can cause (a value it cannot
        store, a constraint), the items are written again one at a time, in order, so only the
        items at fault fail (INVALID_ARGUMENT naming the item) and the others are stored. Any
        other error (the database is down) fails the whole call as before."""
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
                self.fail(index, InvalidArgument.one("", f"cannot be stored: {_brief(exc)}"))
                continue
            written.append((index, outcome))
        return written

    def fail(self, index: int, error: CjoError) -> None:
        if isinstance(error, InvalidArgument):
            error = error.within(f"{self.field}[{index}]")
        self.results[index].status.CopyFrom(to_status_proto(error, self.domain))


def item_at_fault(exc: BaseException) -> bool:
    """Whether a failed write may be the fault of the data written (so writing the items one by
    one finds the culprit) rather than of the database (down, busy: everything fails)."""
    if isinstance(exc, (DataError, IntegrityError)):
        return not lost_race(exc)
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        # Raised while binding a value (a date out of range, a NaN in JSON, a NUL in text).
        return isinstance(exc.orig, (ValueError, TypeError, OverflowError))
    return isinstance(exc, (ValueError, OverflowError))


def _brief(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return first if len(first) <= 200 else first[:199] + "…"


def chunks(items: Sequence[Item], size: int = MAX_BATCH_ITEMS) -> list[Sequence[Item]]:
    """``items`` in order, in slices of at most ``size`` (a peer's batch limit)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


async def call_in_chunks(items: Sequence[Item],
                         call: Callable[[Sequence[Item]], Awaitable[Sequence[Outcome]]],
                         *, size: int = MAX_BATCH_ITEMS) -> list[Outcome]:
    """One outcome per item, from one ``call`` per chunk of at most ``size`` items (in order).

    ``call`` answers each item of its chunk; a failure it cannot pin on an item (the whole RPC
    failed, or it answered the wrong number of results) it turns into outcomes of its own."""
    outcomes: list[Outcome] = []
    for chunk in chunks(items, size):
        answered = await call(chunk)
        if len(answered) != len(chunk):
            raise ValueError(f"a chunk of {len(chunk)} items got {len(answered)} outcomes")
        outcomes.extend(answered)
    return outcomes
