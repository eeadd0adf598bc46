"""The receiving end of an outbox topic: one batch RPC to a peer service per workspace's rows.

Every forwarder in cjo has this shape: rows become one request, the peer is called on behalf of
the rows' workspace with the service token, and the peer answers each row on its own. A row the
peer refused (a non-OK status of its own) goes to the dead letters when the status blames it
(INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE; INTERNAL or UNKNOWN only while the peer took
other rows of the call); any other status means "later". A call that fails as a whole with such
a status is :class:`~cjo_platform.db.outbox.Undeliverable`: the forwarder splits it to find the
row at fault. A call the peer answers "later" (busy, out of time, too large, a deployment
problem) is :class:`~cjo_platform.db.outbox.Later`: only that workspace's rows wait. Only a peer
that cannot be reached (UNAVAILABLE, which the channel already retried) stops the forwarder's
round. Receivers deduplicate by their own ids, so a batch re-sent after a lost acknowledgement
is applied once.

Rows whose payload is one item of the peer's batch request (an event, a fact) go as they are
stored (:func:`stored_items_sender`): a repeated message field is encoded as each item's key,
length and bytes, so the request is the payloads' concatenation, and nothing is decoded and
encoded again on the way (the peer decodes the request once, as it would anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import code_pb2

from cjo_platform.config import ServiceSettings
from cjo_platform.db.outbox import (
    Later,
    OutboxRow,
    Refusal,
    SendBatch,
    Undeliverable,
    traced_call,
)
from cjo_platform.rpc.batch import varint
from cjo_platform.rpc.client import channel, on_behalf_of, too_large
from cjo_platform.rpc.validation import batch_items_field

SEND_TIMEOUT_SECONDS = 10.0

# Codes that blame the request (or the item) for certain: the same rows will fail again.
FAULT_CODES = frozenset({
    code_pb2.INVALID_ARGUMENT, code_pb2.FAILED_PRECONDITION, code_pb2.OUT_OF_RANGE,
})

# Codes that say the peer failed without saying why: a row is blamed only when it failed alone
# while its neighbours were taken (a receiver whose database is down answers UNAVAILABLE).
SUSPECT_CODES = frozenset({code_pb2.INTERNAL, code_pb2.UNKNOWN})

# Codes that say "try again later" (the peer is busy or out of time, the call is too large) or
# "the deployment is wrong" (a bad service token, a peer too old for the RPC): no row is at
# fault. Kept for callers that ask :func:`is_transient`; every code outside FAULT_CODES and
# SUSPECT_CODES is treated so.
TRANSIENT_CODES = frozenset({
    code_pb2.CANCELLED, code_pb2.DEADLINE_EXCEEDED, code_pb2.RESOURCE_EXHAUSTED,
    code_pb2.ABORTED, code_pb2.UNAVAILABLE, code_pb2.UNAUTHENTICATED,
    code_pb2.PERMISSION_DENIED, code_pb2.UNIMPLEMENTED,
})

# A smaller call may pass: too many bytes for the peer, or too much work for the deadline.
SPLIT_CODES = frozenset({code_pb2.RESOURCE_EXHAUSTED, code_pb2.DEADLINE_EXCEEDED})


def is_transient(code: int) -> bool:
    """Whether a peer's ``google.rpc.Code`` means "later" rather than "this item is bad"."""
    return code not in FAULT_CODES and code not in SUSPECT_CODES


def peer_sender(settings: ServiceSettings, peer: str, *,
                method: Callable[[grpc.aio.Channel], Callable[..., Any]],
                request: Callable[[Sequence[OutboxRow]], Message | bytes],
                what: str,
                check_reply: Callable[[str, Sequence[OutboxRow], Any], None] | None = None,
                timeout: float = SEND_TIMEOUT_SECONDS) -> SendBatch:
    """A forwarder's ``send``: ``method(channel)`` is the peer's bound RPC (for example
    ``lambda ch: FooServiceStub(ch).RecordFacts``), ``request(rows)`` builds its request (or its
    encoding, for a method that takes bytes as they are: :class:`StoredItems`), and
    the reply's ``results[i].status`` answers row ``i`` (the refused rows are returned to the
    forwarder). ``check_reply``, when given, replaces that per-item check (for replies of another
    shape); it raises :class:`~cjo_platform.db.outbox.Later` to keep the workspace's rows for
    later."""

    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        try:
            message = request(rows)
        except (DecodeError, ValueError, TypeError) as exc:
            # A payload that does not even make a request: no call will ever carry it.
            raise Undeliverable(f"cannot build the {what} request: {exc!r}") from exc
        call = method(channel(settings.peer(peer)))
        try:
            reply = await call(message,
                               metadata=on_behalf_of(settings.service_token, workspace_id),
                               timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().value[0]
            if code == code_pb2.UNAVAILABLE:
                raise  # unreachable (the channel retried already): the round stops
            if len(rows) == 1 and too_large(exc):
                # One row past the message limit, its own or the peer's: no call will ever
                # carry it (a larger call is split down to its rows first). It alone goes to
                # the dead letters at once, as the bus's relay buries a row past max_payload.
                return [Refusal(rows[0], f"{peer} refused the {what}: the row of "
                                         f"{len(rows[0].payload):,} bytes passes the gRPC "
                                         f"message limit: {exc.details()}",
                                transient=False, certain=True)]
            raise call_refused(code, f"{peer} refused the {what}: {exc.code().name}: "
                                     f"{exc.details()}") from exc
        if check_reply is not None:
            check_reply(workspace_id, rows, reply)
            return []
        return refusals(peer, what, rows, reply)

    return traced_call(send)


class StoredItems:
    """A batch method of a peer called with rows whose payloads are each the encoding of one
    item of its request's repeated field (a stored ``ForwardedEvent``, a ``Fact``): the
    request is built from the stored bytes, never decoded here. A payload that does not decode
    makes the peer refuse the whole call with INVALID_ARGUMENT (``REQUEST_NOT_DECODABLE``), so
    the forwarder splits the call down to that row, as it does for any row at fault."""

    def __init__(self, service: ServiceDescriptor, method: str) -> None:
        found = service.methods_by_name[method]
        field = batch_items_field(found.input_type, found.output_type)
        if not field:
            raise ValueError(f"{found.full_name} is not a batch method")
        self._path = f"/{service.full_name}/{found.name}"
        self._response: Any = GetMessageClass(found.output_type)
        # The field's key: its number and wire type 2 (length-delimited).
        self._key = varint(found.input_type.fields_by_name[field].number << 3 | 2)

    def method(self, ch: grpc.aio.Channel) -> Callable[..., Any]:
        """The method on ``ch``, taking the request's encoding as it is."""
        call: Callable[..., Any] = ch.unary_unary(
            self._path, request_serializer=None, response_deserializer=self._response.FromString)
        return call

    def request(self, rows: Sequence[OutboxRow]) -> bytes:
        """The encoding of the request whose items are the rows' payloads, in order."""
        key = self._key
        return b"".join(b"".join((key, varint(len(row.payload)), row.payload))
                        for row in rows)


def stored_items_sender(settings: ServiceSettings, peer: str, *, service: ServiceDescriptor,
                        method: str, what: str,
                        timeout: float = SEND_TIMEOUT_SECONDS) -> SendBatch:
    """:func:`peer_sender` for ``service.method`` (a batch method, answered per item), sending
    the rows' payloads as the items of its request (:class:`StoredItems`)."""
    items = StoredItems(service, method)
    return peer_sender(settings, peer, method=items.method, request=items.request, what=what,
                       timeout=timeout)


def call_refused(code: int, message: str) -> Undeliverable | Later:
    """What a call the peer refused as a whole, with ``code``, means for its rows."""
    if code in FAULT_CODES or code in SUSPECT_CODES:
        return Undeliverable(message, certain=code in FAULT_CODES)
    return Later(message, split=code in SPLIT_CODES)


def refusals(peer: str, what: str, rows: Sequence[OutboxRow], reply: Any) -> list[Refusal]:
    """The rows a batch reply refused: ``reply.results[i].status`` answers row ``i``."""
    if len(reply.results) != len(rows):
        raise Later(f"{peer} answered {len(reply.results)} results for {len(rows)} {what}")
    refused: list[Refusal] = []
    for row, result in zip(rows, reply.results, strict=True):
        code = result.status.code
        # ALREADY_EXISTS: the peer has the item already, which is what was asked.
        if code in (code_pb2.OK, code_pb2.ALREADY_EXISTS):
            continue
        refused.append(Refusal(row, f"{peer} refused the item: {_code_name(code)}: "
                                    f"{result.status.message}",
                               transient=is_transient(code),
                               certain=code in FAULT_CODES))
    return refused


def _code_name(code: int) -> str:
    try:
        name: str = code_pb2.Code.Name(code)
    except ValueError:
        return str(code)
    return name
