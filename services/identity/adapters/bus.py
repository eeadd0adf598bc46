"""Delivery's engagement events from the event bus (CJO_EVENT_BUS): identity's consumer of the
topic delivery's outbox relays, handing each workspace's events (opens, clicks, bounces as
track events) to the servicer's own IngestEvents."""

from __future__ import annotations

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.api.identity_servicer import SERVICE, IdentityServicer
from cjo_platform.bus import Bus
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.receiver import local_receiver
from cjo_platform.clock import Clock
from cjo_platform.service import Storage

# The topic of delivery's engagement outbox (cjo_delivery.adapters.engagement_store.
# IDENTITY_EVENTS_TOPIC): the stream's name on the bus, so both ends spell it the same.
ENGAGEMENT_TOPIC = "identity.events"


def engagement_consumer(bus: Bus, servicer: IdentityServicer, storage: Storage,
                        clock: Clock) -> BusConsumer:
    receive = local_receiver(
        SERVICE, "IngestEvents", servicer.IngestEvents,
        request=lambda rows: pb.IngestEventsRequest(
            events=[event_pb2.Event.FromString(row.payload) for row in rows]),
        what="engagement events", items_field="events")
    return BusConsumer(bus, ENGAGEMENT_TOPIC, receive, storage.db, storage.dead_letters, clock,
                       item_key=lambda row: event_pb2.Event.FromString(row.payload).message_id)
