"""Facts for analytics, sent the safe way: services write serialized ``cjo.analytics.v1.Fact``
rows to their outbox (topic :data:`FACTS_TOPIC`) in the transaction that made them true, and a
forwarder records them with analytics in batches, on behalf of each row's workspace."""

from __future__ import annotations

from collections.abc import Sequence

from cjo.analytics.v1 import analytics_service_pb2, analytics_service_pb2_grpc, fact_pb2
from cjo_platform.config import ServiceSettings
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Outbox, OutboxRow
from cjo_platform.logging import get_logger
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)

FACTS_TOPIC = "analytics.facts"


def facts_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                    timeout: float = 10.0, poll_interval: float = 1.0) -> Forwarder:
    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> None:
        stub = analytics_service_pb2_grpc.AnalyticsServiceStub(channel(settings.peer("analytics")))
        request = analytics_service_pb2.RecordFactsRequest(
            facts=[fact_pb2.Fact.FromString(row.payload) for row in rows])
        reply = await stub.RecordFacts(
            request, metadata=on_behalf_of(settings.service_token, workspace_id),
            timeout=timeout)
        # A fact analytics refused would be refused again: report it and let the batch go.
        for fact, result in zip(request.facts, reply.results, strict=True):
            if result.status.code != 0:
                log.error("analytics refused a fact", fact_id=fact.fact_id,
                          workspace=workspace_id, error=result.status.message)

    return Forwarder(db, outbox, FACTS_TOPIC, send, poll_interval=poll_interval)
