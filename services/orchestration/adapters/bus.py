"""Identity's events from the event bus (CJO_EVENT_BUS): orchestration's consumer of the topic
identity's outbox relays, handing each workspace's events to the servicer's own HandleEvents."""

from __future__ import annotations

from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_orchestration.api.servicer import SERVICE, OrchestrationServicer
from cjo_platform.bus import Bus
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.receiver import local_receiver
from cjo_platform.clock import Clock
from cjo_platform.service import Storage

# The topic of identity's events outbox (cjo_identity.adapters.outbox_payloads.EVENTS_TOPIC):
# the stream's name on the bus, so both ends spell it the same.
EVENTS_TOPIC = "orchestration.events"


def events_consumer(bus: Bus, servicer: OrchestrationServicer, storage: Storage,
                    clock: Clock) -> BusConsumer:
    receive = local_receiver(
        SERVICE, "HandleEvents", servicer.HandleEvents,
        request=lambda rows: pb.HandleEventsRequest(
            events=[pb.ForwardedEvent.FromString(row.payload) for row in rows]),
        what="events", items_field="events")
    return BusConsumer(bus, EVENTS_TOPIC, receive, storage.db, storage.dead_letters, clock,
                       item_key=lambda row: pb.ForwardedEvent.FromString(row.payload).event_id)
