"""Facts for analytics: written to the outbox in the engine's transactions, forwarded in batches."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from cjo.analytics.v1 import analytics_service_pb2, analytics_service_pb2_grpc, fact_pb2
from cjo_orchestration.domain.engine import FactKind, FactRecord
from cjo_platform.config import ServiceSettings
from cjo_platform.db.outbox import Outbox, OutboxRow, SendBatch
from cjo_platform.logging import get_logger
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)

TOPIC = "analytics.facts"

_TYPES = {
    FactKind.JOURNEY_ENTERED: fact_pb2.FACT_TYPE_JOURNEY_ENTERED,
    FactKind.MESSAGE_REQUESTED: fact_pb2.FACT_TYPE_MESSAGE_REQUESTED,
    FactKind.JOURNEY_EXITED: fact_pb2.FACT_TYPE_JOURNEY_EXITED,
}


def encode(fact: FactRecord) -> bytes:
    return fact_pb2.Fact(
        fact_id=fact.fact_id, type=_TYPES[fact.kind], profile_id=fact.profile_id,
        journey_id=fact.journey_id, enrollment_id=fact.enrollment_id,
        message_id=fact.message_id, occur_time=to_timestamp(fact.occur_time),
    ).SerializeToString()


def publish(session: Session, outbox: Outbox, facts: Sequence[FactRecord]) -> None:
    """Queue facts in the caller's transaction, one outbox insert per workspace."""
    by_workspace: dict[str, list[tuple[bytes, str]]] = {}
    for fact in facts:
        by_workspace.setdefault(fact.workspace_id, []).append((encode(fact), fact.traceparent))
    for workspace_id, payloads in by_workspace.items():
        outbox.add(session, TOPIC, workspace_id, payloads)


def analytics_sender(settings: ServiceSettings, timeout: float) -> SendBatch:
    """The Forwarder's send: one RecordFacts call per workspace batch. An item analytics
    rejects cannot become valid by resending it, so it is logged and the batch acknowledged."""

    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> None:
        stub = analytics_service_pb2_grpc.AnalyticsServiceStub(
            channel(settings.peer("analytics")))
        reply = await stub.RecordFacts(
            analytics_service_pb2.RecordFactsRequest(
                facts=[fact_pb2.Fact.FromString(row.payload) for row in rows]),
            metadata=on_behalf_of(settings.service_token, workspace_id), timeout=timeout)
        for row, result in zip(rows, reply.results, strict=False):
            if result.status.code != 0:
                log.error("analytics rejected a fact", outbox_id=row.id,
                          error=result.status.message)

    return send
