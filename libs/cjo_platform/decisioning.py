"""Outcomes for decisioning, sent the safe way (like :mod:`cjo_platform.facts`): delivery writes
the message facts decisioning learns from (a decision's exposure, opens and clicks) to its outbox
under :data:`DECISIONING_FACTS_TOPIC`, identity its accepted track events and merges (the
rewards) under :data:`DECISIONING_EVENTS_TOPIC`, each in the transaction that made them true;
a forwarder records them with decisioning in batches, on behalf of each row's workspace
(lingering ``CJO_FACTS_LINGER_MS``, like the facts).
Decisioning deduplicates by fact and event id, so a batch re-sent after a lost acknowledgement
is taken once (a track event it does not act on leaves no id: taken again, as if it came
then). With the event bus (CJO_EVENT_BUS) the forwarders publish the rows to JetStream
instead, and decisioning's consumers (:func:`decisioning_facts_consumer`,
:func:`decisioning_events_consumer`) hand them to its own RecordMessageFacts and RecordEvents.

Identity also reports how far its events have been delivered (:class:`WatermarkReporter`, the
forwarding watermark of RecordForwardingWatermark) so that decisioning learns a lapsed reward
window only once every conversion that could reward it has arrived. With the bus the outbox is
drained into JetStream, not into decisioning, so its watermark says only what was published: it
goes as a marker through every partition of the topic, after the rows it covers, and
decisioning's consumer passes each on once it answered what came before, listing the workspaces
it still keeps (:mod:`cjo_platform.bus.watermark`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cjo.analytics.v1 import fact_pb2
from cjo.decisioning.v1 import decisioning_service_pb2, decisioning_service_pb2_grpc
from cjo.orchestration.v1 import orchestration_service_pb2
from cjo_platform.bus import Bus
from cjo_platform.bus.consumer import BusConsumer, OnWatermark
from cjo_platform.bus.receiver import local_receiver
from cjo_platform.bus.relay import bus_sender
from cjo_platform.bus.watermark import publish_markers
from cjo_platform.clock import Clock
from cjo_platform.config import ServiceSettings
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import (
    DeliveryWatermark,
    Forwarder,
    Outbox,
    OutboxRow,
    SendBatch,
    delivery_watermark,
)
from cjo_platform.facts import FACTS_HAND_OFF_BATCHES
from cjo_platform.forwarding import SEND_TIMEOUT_SECONDS, stored_items_sender
from cjo_platform.rpc.client import channel
from cjo_platform.worker import PollingWorker

DECISIONING_FACTS_TOPIC = "decisioning.facts"
DECISIONING_EVENTS_TOPIC = "decisioning.events"
DECISIONING_SERVICE = "cjo.decisioning.v1.DecisioningService"
_SERVICE = decisioning_service_pb2.DESCRIPTOR.services_by_name["DecisioningService"]


def _facts_request(rows: Sequence[OutboxRow]
                   ) -> decisioning_service_pb2.RecordMessageFactsRequest:
    return decisioning_service_pb2.RecordMessageFactsRequest(
        facts=[fact_pb2.Fact.FromString(row.payload) for row in rows])


def _fact_id(row: OutboxRow) -> str:
    fact_id: str = fact_pb2.Fact.FromString(row.payload).fact_id
    return fact_id


def _fact_profile(row: OutboxRow) -> str:
    profile_id: str = fact_pb2.Fact.FromString(row.payload).profile_id
    return profile_id


def _events_request(rows: Sequence[OutboxRow]) -> decisioning_service_pb2.RecordEventsRequest:
    return decisioning_service_pb2.RecordEventsRequest(
        events=[orchestration_service_pb2.ForwardedEvent.FromString(row.payload)
                for row in rows])


def _event_id(row: OutboxRow) -> str:
    event_id: str = orchestration_service_pb2.ForwardedEvent.FromString(row.payload).event_id
    return event_id


def _event_profile(row: OutboxRow) -> str:
    profile_id: str = orchestration_service_pb2.ForwardedEvent.FromString(
        row.payload).profile_id
    return profile_id


def decisioning_facts_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                                timeout: float = 10.0, poll_interval: float = 1.0,
                                bus: Bus | None = None) -> Forwarder:
    """Forwards serialized ``cjo.analytics.v1.Fact`` rows to RecordMessageFacts, or with
    ``bus`` publishes them to JetStream."""
    send: SendBatch
    if bus is not None:
        # A profile's facts share a partition, so an exposure is taken before its opens.
        send = bus_sender(bus, settings.service, DECISIONING_FACTS_TOPIC,
                          ordering_key=_fact_profile)
    else:
        # The stored Facts are the request's items as they are.
        send = stored_items_sender(settings, "decisioning", service=_SERVICE,
                                   method="RecordMessageFacts", what="message facts",
                                   timeout=timeout)
    return Forwarder(db, outbox, DECISIONING_FACTS_TOPIC, send, poll_interval=poll_interval,
                     item_key=_fact_id, hand_off_batches=FACTS_HAND_OFF_BATCHES,
                     linger=settings.facts_linger_seconds)


def decisioning_facts_consumer(bus: Bus, record_message_facts: Callable[[Any, Any], Awaitable[Any]],
                               db: Database, dead_letters: DeadLetters, clock: Clock, *,
                               linger: float = 0.0) -> BusConsumer:
    """Decisioning's consumer of the message facts delivery publishes:
    ``record_message_facts`` is its servicer's own RecordMessageFacts (lingering ``linger``
    seconds, as :func:`cjo_platform.facts.facts_consumer`)."""
    receive = local_receiver(DECISIONING_SERVICE, "RecordMessageFacts", record_message_facts,
                             request=_facts_request, what="message facts", items_field="facts")
    return BusConsumer(bus, DECISIONING_FACTS_TOPIC, receive, db, dead_letters, clock,
                       item_key=_fact_id, linger=linger)


def decisioning_events_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                                 timeout: float = 10.0, poll_interval: float = 1.0,
                                 bus: Bus | None = None) -> Forwarder:
    """Forwards serialized ``cjo.orchestration.v1.ForwardedEvent`` rows to RecordEvents, or with
    ``bus`` publishes them to JetStream."""
    send: SendBatch
    if bus is not None:
        # A profile's events share a partition: a merge is taken in its place among the rewards.
        send = bus_sender(bus, settings.service, DECISIONING_EVENTS_TOPIC,
                          ordering_key=_event_profile)
    else:
        # The stored ForwardedEvents are the request's items as they are.
        send = stored_items_sender(settings, "decisioning", service=_SERVICE,
                                   method="RecordEvents", what="events", timeout=timeout)
    return Forwarder(db, outbox, DECISIONING_EVENTS_TOPIC, send, poll_interval=poll_interval,
                     item_key=_event_id, linger=settings.facts_linger_seconds)


def decisioning_events_consumer(bus: Bus, record_events: Callable[[Any, Any], Awaitable[Any]],
                                db: Database, dead_letters: DeadLetters, clock: Clock, *,
                                linger: float = 0.0,
                                on_watermark: OnWatermark | None = None) -> BusConsumer:
    """Decisioning's consumer of the track events and merges identity publishes:
    ``record_events`` is its servicer's own RecordEvents (lingering ``linger`` seconds: its
    forwarder lingers too, nobody waits on the rewards); identity's watermark markers go to
    ``on_watermark`` (see :class:`WatermarkReporter`)."""
    receive = local_receiver(DECISIONING_SERVICE, "RecordEvents", record_events,
                             request=_events_request, what="events", items_field="events")
    return BusConsumer(bus, DECISIONING_EVENTS_TOPIC, receive, db, dead_letters, clock,
                       item_key=_event_id, linger=linger, on_watermark=on_watermark)


# How often identity reports its events' forwarding watermark (CJO_IDENTITY_WATERMARK_SECONDS).
WATERMARK_SECONDS = 5.0
# Workspaces a report lists behind the others at most (decisioning takes up to 1,000): past
# those, the watermark of all is the next one's, and decisioning's claim of lapsed windows
# compares each decision with its workspace's time, so the list stays short.
MAX_BEHIND_WORKSPACES = 50
# A workspace is listed only when its oldest waiting event is older than this: a healthy flow's
# events, in flight for a moment, are covered by the watermark of all (see delivery_watermark).
WATERMARK_SLACK = timedelta(seconds=30)
# The outbox rows a report reads at most (the topic's oldest by id), whatever the backlog.
WATERMARK_SCAN_ROWS = 10_000


class WatermarkReporter(PollingWorker):
    """Reports a topic's :class:`~cjo_platform.db.outbox.DeliveryWatermark` every
    ``poll_seconds`` while it runs, busy or idle (read from the outbox, so it is true whatever
    the forwarders are doing); a report that fails is retried with the worker's backoff, and
    the receiver's watermark stays where it was meanwhile (holding its learning, as it
    should)."""

    def __init__(self, db: Database, outbox: Outbox, topic: str,
                 report: Callable[[DeliveryWatermark], Awaitable[None]],
                 poll_seconds: float = WATERMARK_SECONDS) -> None:
        super().__init__(poll_seconds)
        self.name = f"watermark:{topic}"
        self.db = db
        self.outbox = outbox
        self.topic = topic
        self.report = report

    def read(self) -> DeliveryWatermark:
        now = self.outbox.clock.now()  # before the read: see delivery_watermark
        with self.db.transaction() as session:
            return delivery_watermark(session, self.outbox.table, self.topic, now,
                                      MAX_BEHIND_WORKSPACES, WATERMARK_SLACK,
                                      WATERMARK_SCAN_ROWS)

    async def run_once(self) -> bool:
        await self.report(await self.db.run(self.read))
        return False


def _timestamp(moment: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def watermark_request(stream: int, found: DeliveryWatermark
                      ) -> decisioning_service_pb2.RecordForwardingWatermarkRequest:
    return decisioning_service_pb2.RecordForwardingWatermarkRequest(
        stream=stream,  # type: ignore[arg-type]
        delivered_before=_timestamp(found.delivered_before),
        behind_workspaces=[decisioning_service_pb2.WorkspaceWatermark(
            workspace_id=workspace_id, delivered_before=_timestamp(time))
            for workspace_id, time in found.behind])


def decisioning_events_watermark(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                                 poll_seconds: float = WATERMARK_SECONDS,
                                 timeout: float = SEND_TIMEOUT_SECONDS,
                                 bus: Bus | None = None) -> WatermarkReporter:
    """Identity's reporter of its events' forwarding watermark to decisioning: a call that
    names no workspace (the watermark covers them all), or with ``bus`` a marker published to
    every partition of the topic, after the rows it covers (see
    :mod:`cjo_platform.bus.watermark`), which decisioning's consumer passes on."""
    metadata = (("authorization", f"Bearer {settings.service_token}"),)

    async def publish(found: DeliveryWatermark) -> None:
        assert bus is not None
        await publish_markers(bus, DECISIONING_EVENTS_TOPIC, found.delivered_before,
                              found.behind)

    async def report(found: DeliveryWatermark) -> None:
        stub = decisioning_service_pb2_grpc.DecisioningServiceStub(  # type: ignore[no-untyped-call]
            channel(settings.peer("decisioning")))
        await stub.RecordForwardingWatermark(
            watermark_request(decisioning_service_pb2.FORWARDED_STREAM_EVENTS, found),
            metadata=metadata, timeout=timeout)

    return WatermarkReporter(db, outbox, DECISIONING_EVENTS_TOPIC,
                             report if bus is None else publish, poll_seconds)
