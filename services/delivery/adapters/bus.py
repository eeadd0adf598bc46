"""Orchestration's erasures from the event bus (CJO_EVENT_BUS): delivery's consumer of the topic
orchestration's outbox relays, handing each workspace's erased profiles to the servicer's own
EraseProfiles. A profile with a message a sender is handing to a provider right now is erased
again later (the messages are kept with backoff, as orchestration's forwarder keeps its rows)."""

from __future__ import annotations

from collections.abc import Sequence

from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo_delivery.api.servicer import DeliveryServicer
from cjo_platform.bus import Bus
from cjo_platform.bus.consumer import BusConsumer
from cjo_platform.bus.receiver import local_receiver
from cjo_platform.clock import Clock
from cjo_platform.db.outbox import Later, OutboxRow
from cjo_platform.service import Storage

# The topic of orchestration's erasures outbox (cjo_orchestration.adapters.erasures.
# ERASURES_TOPIC): the stream's name on the bus, so both ends spell it the same.
ERASURES_TOPIC = "delivery.erasures"
SERVICE = "cjo.delivery.v1.DeliveryService"


def _profiles(rows: Sequence[OutboxRow]) -> list[str]:
    return sorted({p for row in rows
                   for p in pb.EraseProfilesRequest.FromString(row.payload).profile_ids})


def _check_reply(workspace_id: str, rows: Sequence[OutboxRow],
                 reply: pb.EraseProfilesResponse) -> None:
    busy = [r.profile_id for r in reply.results if r.in_flight_count]
    if busy:
        raise Later(f"{len(busy)} erased profiles have messages being sent; erasing again later")


def erasures_consumer(bus: Bus, servicer: DeliveryServicer, storage: Storage,
                      clock: Clock) -> BusConsumer:
    receive = local_receiver(
        SERVICE, "EraseProfiles", servicer.EraseProfiles,
        request=lambda rows: pb.EraseProfilesRequest(profile_ids=_profiles(rows)),
        what="erasures", items_field="profile_ids", check_reply=_check_reply)
    return BusConsumer(bus, ERASURES_TOPIC, receive, storage.db, storage.dead_letters, clock,
                       item_key=lambda row: ",".join(_profiles([row])))
