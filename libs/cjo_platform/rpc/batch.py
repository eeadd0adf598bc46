"""Batch RPCs answer every item on its own (a ``google.rpc.Status`` each): one bad item never
fails or half-writes the others. :class:`BatchAnswer` is that loop, written once; storing the
parsed items with a per-item fallback is :func:`cjo_platform.db.item_writes.write_each` (the
database's side: which errors are an item's fault)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

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

    def fail(self, index: int, error: CjoError) -> None:
        if isinstance(error, InvalidArgument):
            error = error.within(f"{self.field}[{index}]")
        self.results[index].status.CopyFrom(to_status_proto(error, self.domain))


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
