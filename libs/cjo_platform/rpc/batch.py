"""Batch RPCs answer every item on its own (a ``google.rpc.Status`` each): one bad item never
fails or half-writes the others. :class:`BatchAnswer` is that loop, written once; storing the
parsed items with a per-item fallback is :func:`cjo_platform.db.item_writes.write_each` (the
database's side: which errors are an item's fault)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from cjo_platform.errors import CjoError, InvalidArgument
from cjo_platform.limits import MAX_BATCH_ITEMS, MAX_CALL_PAYLOAD_BYTES, check_batch
from cjo_platform.rpc.client import too_large
from cjo_platform.rpc.status import OK, to_status_proto
from cjo_platform.rpc.validation import check_item

R = TypeVar("R", bound=Message)
Response = TypeVar("Response", bound=Message)
Item = TypeVar("Item")
Parsed = TypeVar("Parsed")
Outcome = TypeVar("Outcome")


class BatchAnswer(Generic[R]):
    """The per-item results of a batch request whose items sit in the repeated ``field``.

    Construction refuses an empty or oversized batch as a whole (INVALID_ARGUMENT naming the
    field); after that every problem is the item's own: :meth:`fail` records it on the item's
    status, with field paths inside the item prefixed by ``field[index]``.

    Most items of a batch answer a plain OK. Only the results a servicer touches are built as
    messages (:meth:`result`, :meth:`fail`); :meth:`response` encodes the plain ones from one
    cached encoding and decodes the whole response in one call (in C): a thousand result
    messages built, filled and copied one by one cost ~20 ms of CPU, the response alone well
    under 1 ms. :attr:`results` (every result as a message) is there for servicers that fill
    each item anyway."""

    def __init__(self, items: Sequence[Any], field: str, domain: str,
                 result: type[R]) -> None:
        check_batch(items, field)
        self.items = items
        self.field = field
        self.domain = domain
        self._result = result
        self._answered: dict[int, R] = {}  # the results built so far, by item index
        self._all: list[R] | None = None

    def result(self, index: int) -> R:
        """The result of item ``index``, to fill in (status OK unless it failed)."""
        if self._all is not None:
            return self._all[index]
        found = self._answered.get(index)
        if found is not None:
            return found
        answer: R = self._result()
        answer.ParseFromString(_ok_result(self._result))
        self._answered[index] = answer
        return answer

    @property
    def results(self) -> list[R]:
        """Every item's result as a message, in item order."""
        if self._all is None:
            self._all = [self.result(index) for index in range(len(self.items))]
        return self._all

    def response(self, response: type[Response]) -> Response:
        """The response of type ``response`` whose repeated ``results`` are these results."""
        tag, plain = _entry(response, self._result)
        built: Response = response()
        if self._all is None and not self._answered:
            built.ParseFromString(plain * len(self.items))
            return built
        answered = self._answered if self._all is None else dict(enumerate(self._all))
        encoded = bytearray()
        for index in range(len(self.items)):
            answer = answered.get(index)
            if answer is None:
                encoded += plain
            else:
                body = answer.SerializeToString()
                encoded += tag + varint(len(body)) + body
        built.ParseFromString(bytes(encoded))
        return built

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
        self.result(index).status.CopyFrom(to_status_proto(error, self.domain))


# Encodings made once per result type (and per response type), by the types' full names.
_ok_results: dict[str, bytes] = {}
_entries: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _ok_result(result: type[Message]) -> bytes:
    """The encoding of a result that says OK and nothing else."""
    name = result.DESCRIPTOR.full_name
    found = _ok_results.get(name)
    if found is None:
        found = _ok_results[name] = result(status=OK).SerializeToString()
    return found


def _entry(response: type[Message], result: type[Message]) -> tuple[bytes, bytes]:
    """The key of ``response``'s ``results`` field on the wire, and a whole plain-OK entry."""
    key = (response.DESCRIPTOR.full_name, result.DESCRIPTOR.full_name)
    found = _entries.get(key)
    if found is None:
        field = response.DESCRIPTOR.fields_by_name["results"]
        if field.message_type is not result.DESCRIPTOR:
            raise TypeError(f"{key[0]}.results does not hold {key[1]}")
        tag = varint(field.number << 3 | 2)  # wire type 2: length-delimited
        body = _ok_result(result)
        found = _entries[key] = (tag, tag + varint(len(body)) + body)
    return found


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf varint: how lengths and field keys are written."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def chunks(items: Sequence[Item], size: int = MAX_BATCH_ITEMS, *,
           weight: Callable[[Item], int] | None = None,
           max_bytes: int = MAX_CALL_PAYLOAD_BYTES) -> list[Sequence[Item]]:
    """``items`` in order, in slices of at most ``size`` (a peer's batch limit) and, with
    ``weight`` (an item's encoded bytes), of at most ``max_bytes`` (one item larger than that
    goes alone): a batch of large items (rendered emails) is never refused for its size."""
    if weight is None:
        return [items[i:i + size] for i in range(0, len(items), size)]
    sliced: list[Sequence[Item]] = []
    start, carried = 0, 0
    for i, item in enumerate(items):
        bytes_ = weight(item)
        if i > start and (i - start >= size or carried + bytes_ > max_bytes):
            sliced.append(items[start:i])
            start, carried = i, 0
        carried += bytes_
    if start < len(items):
        sliced.append(items[start:])
    return sliced


async def call_in_chunks(items: Sequence[Item],
                         call: Callable[[Sequence[Item]], Awaitable[Sequence[Outcome]]],
                         *, size: int = MAX_BATCH_ITEMS,
                         weight: Callable[[Item], int] | None = None) -> list[Outcome]:
    """One outcome per item, from one ``call`` per chunk of at most ``size`` items (in order;
    with ``weight``, also of at most :data:`MAX_CALL_PAYLOAD_BYTES`, see :func:`chunks`).

    ``call`` answers each item of its chunk; a failure it cannot pin on an item (the whole RPC
    failed, or it answered the wrong number of results) it turns into outcomes of its own."""
    outcomes: list[Outcome] = []
    for chunk in chunks(items, size, weight=weight):
        answered = await call(chunk)
        if len(answered) != len(chunk):
            raise ValueError(f"a chunk of {len(chunk)} items got {len(answered)} outcomes")
        outcomes.extend(answered)
    return outcomes


async def in_halves_when_too_large(items: Sequence[Item],
                                   call: Callable[[Sequence[Item]], Awaitable[Sequence[Outcome]]],
                                   ) -> list[Outcome]:
    """``call(items)``'s answers, one per item; a call that passes gRPC's message limit
    (:func:`~cjo_platform.rpc.client.too_large`: many large answers, e.g. profiles near their
    limit) is made again as two calls of half the items each, down to one item. Any other
    failure is raised."""
    try:
        return list(await call(items))
    except grpc.aio.AioRpcError as exc:
        if len(items) < 2 or not too_large(exc):
            raise
    middle = len(items) // 2
    return [*await in_halves_when_too_large(items[:middle], call),
            *await in_halves_when_too_large(items[middle:], call)]
