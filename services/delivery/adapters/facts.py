"""Facts for analytics: written to the outbox with a message's final status, forwarded in
batches to analytics.RecordFacts on behalf of the message's workspace."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cjo.analytics.v1 import analytics_service_pb2, analytics_service_pb2_grpc, fact_pb2
from cjo_delivery.domain.messages import Claim, MessageStatus
from cjo_platform.config import ServiceSettings
from cjo_platform.db.outbox import OutboxRow, SendBatch
from cjo_platform.logging import get_logger
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)

FACTS_TOPIC = "analytics.facts"
RECORD_TIMEOUT_SECONDS = 10.0

_FACTS = {
    MessageStatus.SENT: ("message_sent", fact_pb2.FACT_TYPE_MESSAGE_SENT),
    MessageStatus.FAILED: ("message_failed", fact_pb2.FACT_TYPE_MESSAGE_FAILED),
}


def fact_payload(claim: Claim, status: MessageStatus, occur_time: datetime) -> bytes | None:
    """The serialized fact for a message that reached ``status``, or None when there is nothing
    to report: only final statuses are facts, and a fact is about a profile, so a message sent
    directly through the API without one is not counted."""
    if status not in _FACTS or not claim.profile_id:
        return None
    prefix, kind = _FACTS[status]
    # The id is derived from the message, so a fact written twice is recorded once.
    return fact_pb2.Fact(
        fact_id=f"{prefix}:{claim.message_id}", type=kind, profile_id=claim.profile_id,
        journey_id=claim.journey_id, enrollment_id=claim.enrollment_id,
        message_id=claim.message_id, occur_time=to_timestamp(occur_time),
    ).SerializeToString()


def facts_sender(settings: ServiceSettings) -> SendBatch:
    """The outbox forwarder's send: one RecordFacts call per batch of one workspace."""

    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> None:
        stub = analytics_service_pb2_grpc.AnalyticsServiceStub(channel(settings.peer("analytics")))
        request = analytics_service_pb2.RecordFactsRequest(
            facts=[fact_pb2.Fact.FromString(row.payload) for row in rows])
        reply = await stub.RecordFacts(request,
                                       metadata=on_behalf_of(settings.service_token, workspace_id),
                                       timeout=RECORD_TIMEOUT_SECONDS)
        # A refused fact would be refused again: report it and let the batch go.
        for fact, result in zip(request.facts, reply.results, strict=False):
            if result.status.code != 0:
                log.warning("analytics refused a fact", fact_id=fact.fact_id,
                            workspace=workspace_id, error=result.status.message)

    return send
