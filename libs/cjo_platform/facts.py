"""Facts for analytics, sent the safe way: services write serialized ``cjo.analytics.v1.Fact``
rows to their outbox (topic :data:`FACTS_TOPIC`) in the transaction that made them true, and a
forwarder records them with analytics in batches, on behalf of each row's workspace."""

from __future__ import annotations

from cjo.analytics.v1 import analytics_service_pb2, analytics_service_pb2_grpc, fact_pb2
from cjo_platform.config import ServiceSettings
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Outbox
from cjo_platform.forwarding import peer_sender

FACTS_TOPIC = "analytics.facts"


def facts_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                    timeout: float = 10.0, poll_interval: float = 1.0) -> Forwarder:
    send = peer_sender(
        settings, "analytics",
        # The generated *_pb2_grpc modules carry no annotations (no .pyi is generated for them).
        method=lambda ch: analytics_service_pb2_grpc.AnalyticsServiceStub(  # type: ignore[no-untyped-call]
            ch).RecordFacts,
        request=lambda rows: analytics_service_pb2.RecordFactsRequest(
            facts=[fact_pb2.Fact.FromString(row.payload) for row in rows]),
        what="facts", timeout=timeout)
    return Forwarder(db, outbox, FACTS_TOPIC, send, poll_interval=poll_interval,
                     item_key=lambda row: fact_pb2.Fact.FromString(row.payload).fact_id)
