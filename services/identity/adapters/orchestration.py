"""The receiving end of the events outbox: accepted events, segment transitions, merges and
erasures go to OrchestrationService.HandleEvents, one batch per workspace; with the event bus
(CJO_EVENT_BUS) they are published to JetStream instead, partitioned by profile, and
orchestration's bus consumer hands them to the same HandleEvents."""

from __future__ import annotations

from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC
from cjo_platform.bus import Bus
from cjo_platform.bus.relay import bus_sender
from cjo_platform.config import ServiceSettings
from cjo_platform.db import Database
from cjo_platform.db.outbox import Forwarder, Outbox, SendBatch
from cjo_platform.forwarding import stored_items_sender


def events_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox,
                     bus: Bus | None = None) -> Forwarder:
    send: SendBatch
    if bus is not None:
        # A profile's events share a partition, so orchestration applies them in order.
        send = bus_sender(bus, settings.service, EVENTS_TOPIC, ordering_key=lambda row: (
            pb.ForwardedEvent.FromString(row.payload).profile_id))
    else:
        # The stored ForwardedEvents are the request's items as they are.
        send = stored_items_sender(
            settings, "orchestration",
            service=pb.DESCRIPTOR.services_by_name["OrchestrationService"],
            method="HandleEvents", what="events")
    return Forwarder(db, outbox, EVENTS_TOPIC, send,
                     item_key=lambda row: pb.ForwardedEvent.FromString(row.payload).event_id)


