"""Facts for analytics, sent the safe way: services write serialized ``cjo.analytics.v1.Fact``
rows to their outbox (topic :data:`FACTS_TOPIC`) in the transaction that made them true, and a
forwarder records them with analytics in batches, on behalf of each row's workspace, lingering
``CJO_FACTS_LINGER_MS`` so the rows of several units of work share a call. With the
event bus (CJO_EVENT_BUS) the forwarder publishes them to JetStream instead and analytics'
:func:`facts_consumer` hands them to its own RecordFacts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cjo.analytics.v1 import analytics_service_pb2, fact_pb2
from cjo_platform.bus import Bus
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.receiver import local_receiver
from cjo_platform.bus.relay import bus_sender
from cjo_platform.clock import Clock
from cjo_platform.config import ServiceSettings
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Outbox, OutboxRow, SendBatch
from cjo_platform.forwarding import stored_items_sender

FACTS_TOPIC = "analytics.facts"
FACTS_HAND_OFF_BATCHES = 32
"""Batches of facts a forwarder queues in memory (16,000 at the default 500), where other topics
queue ``HANDOFF_QUEUE_ROWS`` (4), and as many again in the round in flight, which took a queue
as large: 32,000 facts of ~200 bytes (ids and scalars) hold ~16 MB; the queue's bound in payload
bytes (``HANDOFF_QUEUE_BYTES``, 8 MiB) caps facts of longer ids (~1.6 KB at their limits) at
~20 MB in all. Nobody waits on facts, so while the receiver is behind (a burst: a step round's
facts come 1,500 at a time, faster than analytics records them) they queue here instead of in
the database, where every unit of work behind the first one over the bound went by an unleased
INSERT and a claim reading each payload back (2,000 rows: 45-64% of orchestration's facts in a
burst of 2,000-8,000 sign-ups; docs/capacity-journal.md)."""
ANALYTICS_SERVICE = "cjo.analytics.v1.AnalyticsService"


def _request(rows: Sequence[OutboxRow]) -> analytics_service_pb2.RecordFactsRequest:
    return analytics_service_pb2.RecordFactsRequest(
        facts=[fact_pb2.Fact.FromString(row.payload) for row in rows])


def _fact_id(row: OutboxRow) -> str:
    fact_id: str = fact_pb2.Fact.FromString(row.payload).fact_id
    return fact_id


def facts_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                    timeout: float = 10.0, poll_interval: float = 1.0,
                    bus: Bus | None = None) -> Forwarder:
    if bus is not None:
        # Facts are counted, not ordered: spread over the partitions by fact id.
        return Forwarder(db, outbox, FACTS_TOPIC,
                         bus_sender(bus, settings.service, FACTS_TOPIC, ordering_key=_fact_id),
                         poll_interval=poll_interval, item_key=_fact_id,
                         hand_off_batches=FACTS_HAND_OFF_BATCHES,
                         linger=settings.facts_linger_seconds)
    # The stored Facts are the request's items as they are.
    send: SendBatch = stored_items_sender(
        settings, "analytics",
        service=analytics_service_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
        method="RecordFacts", what="facts", timeout=timeout)
    # Nobody waits on facts: a unit of work's rows wait a little for the next ones'.
    return Forwarder(db, outbox, FACTS_TOPIC, send, poll_interval=poll_interval,
                     item_key=_fact_id, hand_off_batches=FACTS_HAND_OFF_BATCHES,
                     linger=settings.facts_linger_seconds)


def facts_consumer(bus: Bus, record_facts: Callable[[Any, Any], Awaitable[Any]], db: Database,
                   dead_letters: DeadLetters, clock: Clock, *,
                   linger: float = 0.0) -> BusConsumer:
    """Analytics' consumer of the facts every service publishes: ``record_facts`` is its
    servicer's own RecordFacts. Nobody waits on facts: the rows of a round, which the relay
    spread over the partitions, wait up to ``linger`` seconds for each other and go in one
    call (CJO_FACTS_LINGER_MS, as on the forwarders)."""
    receive = local_receiver(ANALYTICS_SERVICE, "RecordFacts", record_facts, request=_request,
                             what="facts", items_field="facts")
    return BusConsumer(bus, FACTS_TOPIC, receive, db, dead_letters, clock, item_key=_fact_id,
                       linger=linger)
