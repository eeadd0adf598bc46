"""The receiving end of an outbox topic: one batch RPC to a peer service per workspace's rows.

Every forwarder in cjo has this shape: rows become one request, the peer is called on behalf of
the rows' workspace with the service token, and the peer answers each row on its own. A row the
peer refused (a non-OK status of its own) goes to the dead letters, unless the status says
"later" (UNAVAILABLE and the like). A call that fails as a whole with an error that repeating it
cannot cure (INTERNAL, INVALID_ARGUMENT, ...) is :class:`~cjo_platform.db.outbox.Undeliverable`:
the forwarder splits it to find the row at fault. Any other failure (the peer is down, busy, or
the deployment is misconfigured) keeps the rows, retried with backoff; receivers deduplicate by
their own ids, so a batch re-sent after a lost acknowledgement is applied once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2

from cjo_platform.config import ServiceSettings
from cjo_platform.db.outbox import OutboxRow, Refusal, SendBatch, Undeliverable
from cjo_platform.rpc.client import channel, on_behalf_of

SEND_TIMEOUT_SECONDS = 10.0

# Codes that say "try again later" (the peer is down, busy or out of time) or "the deployment is
# wrong" (a bad service token, a peer too old for the RPC): no row is at fault, so no row may be
# dead-lettered for them. Every other failure is blamed on the rows.
TRANSIENT_CODES = frozenset({
    code_pb2.CANCELLED, code_pb2.DEADLINE_EXCEEDED, code_pb2.RESOURCE_EXHAUSTED,
    code_pb2.ABORTED, code_pb2.UNAVAILABLE, code_pb2.UNAUTHENTICATED,
    code_pb2.PERMISSION_DENIED, code_pb2.UNIMPLEMENTED,
})


def is_transient(code: int) -> bool:
    """Whether a peer's ``google.rpc.Code`` means "later" rather than "this item is bad"."""
    return code in TRANSIENT_CODES


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
    shape); it raises to keep the rows."""

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
            if is_transient(code):
                raise
            raise Undeliverable(f"{peer} refused the {what}: {exc.code().name}: "
                                f"{exc.details()}") from exc
        if check_reply is not None:
            check_reply(workspace_id, rows, reply)
            return []
        if len(reply.results) != len(rows):
            raise RuntimeError(f"{peer} answered {len(reply.results)} results for "
                               f"{len(rows)} {what}")
        refused: list[Refusal] = []
        for row, result in zip(rows, reply.results, strict=True):
            code = result.status.code
            # ALREADY_EXISTS: the peer has the item already, which is what was asked.
            if code in (code_pb2.OK, code_pb2.ALREADY_EXISTS):
                continue
            refused.append(Refusal(row, f"{peer} refused the item: {_code_name(code)}: "
                                        f"{result.status.message}",
                                   transient=is_transient(code)))
        return refused

    return send


def _code_name(code: int) -> str:
    try:
        name: str = code_pb2.Code.Name(code)
    except ValueError:
        return str(code)
    return name
