"""Forwarding accepted events to orchestration (the receiving end of the events outbox)."""

from __future__ import annotations

from collections.abc import Sequence

from google.rpc import code_pb2

from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as pb_grpc
from cjo_platform.config import ServiceSettings
from cjo_platform.db.outbox import OutboxRow, SendBatch
from cjo_platform.logging import get_logger
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)

SEND_TIMEOUT_SECONDS = 10.0


def event_sender(settings: ServiceSettings) -> SendBatch:
    """Sends one workspace's outbox rows to OrchestrationService.HandleEvents.

    Any RPC error propagates, so the forwarder keeps the rows and retries; orchestration
    deduplicates by event id, so a batch re-sent after a lost acknowledgement is harmless.
    """

    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> None:
        stub = pb_grpc.OrchestrationServiceStub(channel(settings.peer("orchestration")))
        reply = await stub.HandleEvents(
            pb.HandleEventsRequest(events=[pb.ForwardedEvent.FromString(r.payload)
                                           for r in rows]),
            metadata=on_behalf_of(settings.service_token, workspace_id),
            timeout=SEND_TIMEOUT_SECONDS,
        )
        if len(reply.results) != len(rows):
            raise RuntimeError(f"orchestration answered {len(reply.results)} results "
                               f"for {len(rows)} events")
        # A rejected event is invalid for orchestration (it is final, not transient): sending it
        # again would fail the same way and hold up every later event, so it is logged and let go.
        for row, result in zip(rows, reply.results, strict=True):
            if result.status.code != code_pb2.OK:
                log.error("orchestration rejected an event", outbox_id=row.id,
                          code=result.status.code, message=result.status.message)

    return send
