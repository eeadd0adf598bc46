"""The receiving end of an outbox topic: one batch RPC to a peer service per workspace's rows.

Every forwarder in cjo has this shape: rows become one request, the peer is called on behalf of
the rows' workspace with the service token, and an item the peer refused is reported and let
go (refused now means refused forever: sending it again would hold up every later row). A failed
call raises, so the forwarder keeps the rows and retries with backoff; receivers deduplicate by
their own ids, so a batch re-sent after a lost acknowledgement is applied once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2

from cjo_platform.config import ServiceSettings
from cjo_platform.db.outbox import OutboxRow, SendBatch
from cjo_platform.logging import get_logger
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)

SEND_TIMEOUT_SECONDS = 10.0


def peer_sender(settings: ServiceSettings, peer: str, *,
                method: Callable[[grpc.aio.Channel], Callable[..., Any]],
                request: Callable[[Sequence[OutboxRow]], Message],
                what: str,
                check_reply: Callable[[str, Sequence[OutboxRow], Any], None] | None = None,
                timeout: float = SEND_TIMEOUT_SECONDS) -> SendBatch:
    """A forwarder's ``send``: ``method(channel)`` is the peer's bound RPC (for example
    ``lambda ch: FooServiceStub(ch).RecordFacts``), ``request(rows)`` builds its request, and
    the reply's ``results[i].status`` answers row ``i``. ``check_reply``, when given, replaces that
    per-item check (for replies of another shape); it raises to keep the rows."""

    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> None:
        call = method(channel(settings.peer(peer)))
        reply = await call(request(rows),
                           metadata=on_behalf_of(settings.service_token, workspace_id),
                           timeout=timeout)
        if check_reply is not None:
            check_reply(workspace_id, rows, reply)
            return
        if len(reply.results) != len(rows):
            raise RuntimeError(f"{peer} answered {len(reply.results)} results for "
                               f"{len(rows)} {what}")
        for row, result in zip(rows, reply.results, strict=True):
            if result.status.code != code_pb2.OK:
                log.error(f"{peer} refused {what}", outbox_id=row.id, workspace=workspace_id,
                          code=result.status.code, error=result.status.message)

    return send
