"""The receiving end of a bus topic: the service's own batch RPC, called in-process.

A bus consumer hands a workspace's messages to the same servicer method (``HandleEvents``,
``RecordFacts``, ...) that the outbox forwarder calls over gRPC, acting for the workspace as the
service token does, after the same request checks as the validation interceptor. So each
behaviour keeps one home (the use-case the method calls), and the method's answer is read as a
forwarder reads a peer's: :func:`cjo_platform.forwarding.refusals` per item,
:func:`cjo_platform.forwarding.call_refused` for a refusal of the whole call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2

from cjo_platform.db.item_writes import database_unavailable
from cjo_platform.db.outbox import OutboxRow, SendBatch, Undeliverable
from cjo_platform.errors import CjoError
from cjo_platform.forwarding import call_refused, refusals
from cjo_platform.rpc.auth import acting_for
from cjo_platform.rpc.validation import check_request


class _InProcess:
    """The ``context`` a servicer method gets when the bus calls it: no peer, no metadata."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def time_remaining(self) -> None:
        return None

    def peer(self) -> str:
        return "event-bus"


def local_receiver(service: str, rpc: str, method: Callable[[Any, Any], Awaitable[Any]],
                   request: Callable[[Sequence[OutboxRow]], Message], what: str,
                   items_field: str,
                   check_reply: Callable[[str, Sequence[OutboxRow], Any], None] | None = None
                   ) -> SendBatch:
    """``send(workspace_id, rows)`` running ``method`` (a bound servicer method whose full
    gRPC name is ``/<service>/<rpc>``) on ``request(rows)``; returns the refused rows.
    ``check_reply``, when given, replaces the per-item check, as for
    :func:`cjo_platform.forwarding.peer_sender` (it raises ``Later`` to keep the rows)."""
    full_method = f"/{service}/{rpc}"

    async def receive(workspace_id: str, rows: Sequence[OutboxRow]) -> list[Any]:
        try:
            message = request(rows)
        except (DecodeError, ValueError, TypeError) as exc:
            raise Undeliverable(f"cannot build the {what} request: {exc!r}") from exc
        with acting_for(workspace_id, full_method):
            try:
                check_request(message, skip=items_field)
                reply = await method(message, _InProcess())
            except CjoError as exc:
                code = code_pb2.Code.Value(exc.code_name)
                raise call_refused(code, f"{rpc} refused the {what}: {exc.code_name}: "
                                         f"{exc.message}") from exc
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # an outage: nobody's fault; the consumer waits, counting nothing
                raise Undeliverable(f"{rpc} failed: {exc!r}", certain=False) from exc
        if check_reply is not None:
            check_reply(workspace_id, rows, reply)
            return []
        return refusals(service, what, rows, reply)

    return receive
