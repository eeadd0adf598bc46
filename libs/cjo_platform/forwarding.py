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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2

from cjo_platform.config import ServiceSettings
from cjo_platform.db.outbox import Later, OutboxRow, Refusal, SendBatch, Undeliverable
from cjo_platform.rpc.client import channel, on_behalf_of

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
                request: Callable[[Sequence[OutboxRow]], Message],
                what: str,
                check_reply: Callable[[str, Sequence[OutboxRow], Any], None] | None = None,
                timeout: float = SEND_TIMEOUT_SECONDS) -> SendBatch:
    """A forwarder's ``send``: ``method(channel)`` is the peer's bound RPC (for example
    ``lambda ch: FooServiceStub(ch).RecordFacts``), ``request(rows)`` builds its request, and
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
            raise call_refused(code, f"{peer} refused the {what}: {exc.code().name}: "
                                     f"{exc.details()}") from exc
        if check_reply is not None:
            check_reply(workspace_id, rows, reply)
            return []
        return refusals(peer, what, rows, reply)

    return send


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
