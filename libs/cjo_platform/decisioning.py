"""Outcomes for decisioning, sent the safe way (like :mod:`cjo_platform.facts`): delivery writes
the message facts decisioning learns from (a decision's exposure, opens and clicks) to its outbox
under :data:`DECISIONING_FACTS_TOPIC`, identity its accepted track events and merges (the
rewards) under :data:`DECISIONING_EVENTS_TOPIC`, each in the transaction that made them true;
a forwarder records them with decisioning in batches, on behalf of each row's workspace.
Decisioning deduplicates by fact and event id, so a batch re-sent after a lost acknowledgement
is taken once."""

from __future__ import annotations

from cjo.analytics.v1 import fact_pb2
from cjo.decisioning.v1 import decisioning_service_pb2, decisioning_service_pb2_grpc
from cjo.orchestration.v1 import orchestration_service_pb2
from cjo_platform.config import ServiceSettings
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Outbox
from cjo_platform.forwarding import peer_sender

DECISIONING_FACTS_TOPIC = "decisioning.facts"
DECISIONING_EVENTS_TOPIC = "decisioning.events"


def decisioning_facts_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                                timeout: float = 10.0, poll_interval: float = 1.0
                                ) -> Forwarder:
    """Forwards serialized ``cjo.analytics.v1.Fact`` rows to RecordMessageFacts."""
    send = peer_sender(
        settings, "decisioning",
        # The generated *_pb2_grpc modules carry no annotations.
        method=lambda ch: decisioning_service_pb2_grpc.DecisioningServiceStub(  # type: ignore[no-untyped-call]
            ch).RecordMessageFacts,
        request=lambda rows: decisioning_service_pb2.RecordMessageFactsRequest(
            facts=[fact_pb2.Fact.FromString(row.payload) for row in rows]),
        what="message facts", timeout=timeout)
    return Forwarder(db, outbox, DECISIONING_FACTS_TOPIC, send, poll_interval=poll_interval,
                     item_key=lambda row: fact_pb2.Fact.FromString(row.payload).fact_id)


def decisioning_events_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                                 timeout: float = 10.0, poll_interval: float = 1.0
                                 ) -> Forwarder:
    """Forwards serialized ``cjo.orchestration.v1.ForwardedEvent`` rows to RecordEvents."""
    send = peer_sender(
        settings, "decisioning",
        method=lambda ch: decisioning_service_pb2_grpc.DecisioningServiceStub(  # type: ignore[no-untyped-call]
            ch).RecordEvents,
        request=lambda rows: decisioning_service_pb2.RecordEventsRequest(
            events=[orchestration_service_pb2.ForwardedEvent.FromString(row.payload)
                    for row in rows]),
        what="events", timeout=timeout)
    return Forwarder(
        db, outbox, DECISIONING_EVENTS_TOPIC, send, poll_interval=poll_interval,
        item_key=lambda row: orchestration_service_pb2.ForwardedEvent.FromString(
            row.payload).event_id)
