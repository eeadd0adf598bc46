"""Forwards engagement events from the outbox to identity's IngestEvents, on behalf of each
row's workspace. Identity dedupes on the event's ``message_id`` (derived from the engagement),
so a batch sent twice after a crash is applied once."""

from __future__ import annotations

from collections.abc import Sequence

from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo_delivery.adapters.engagement_store import IDENTITY_EVENTS_TOPIC
from cjo_platform.config import ServiceSettings
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Outbox, OutboxRow
from cjo_platform.logging import get_logger
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)


def identity_events_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                              timeout: float = 10.0, poll_interval: float = 1.0) -> Forwarder:
    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> None:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel(settings.peer("identity")))
        request = identity_service_pb2.IngestEventsRequest(
            events=[event_pb2.Event.FromString(row.payload) for row in rows])
        reply = await stub.IngestEvents(
            request, metadata=on_behalf_of(settings.service_token, workspace_id),
            timeout=timeout)
        for event, result in zip(request.events, reply.results, strict=True):
            if result.status.code != 0:  # refused now means refused forever: report, move on
                log.error("identity refused an engagement event", event=event.message_id,
                          workspace=workspace_id, error=result.status.message)

    return Forwarder(db, outbox, IDENTITY_EVENTS_TOPIC, send, batch_size=1000,
                     poll_interval=poll_interval)
