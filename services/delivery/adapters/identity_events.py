"""Forwards engagement events from the outbox to identity's IngestEvents, on behalf of each
row's workspace. Identity dedupes on the event's ``message_id`` (derived from the engagement),
so a batch sent twice after a crash is applied once. With the event bus (CJO_EVENT_BUS) they are
published to JetStream instead, partitioned by the message's profile, and identity's bus consumer
hands them to the same IngestEvents."""

from __future__ import annotations

from cjo.identity.v1 import event_pb2, identity_service_pb2
from cjo_delivery.adapters import stubs
from cjo_delivery.adapters.engagement_store import IDENTITY_EVENTS_TOPIC
from cjo_platform.bus import Bus
from cjo_platform.bus.relay import bus_sender
from cjo_platform.config import ServiceSettings
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Outbox, OutboxRow, SendBatch
from cjo_platform.forwarding import peer_sender


def _person(row: OutboxRow) -> str:
    """The profile the message went to (else the address engaged): one person's opens and
    clicks share a partition, in order."""
    event = event_pb2.Event.FromString(row.payload)
    if event.profile_id:
        profile_id: str = event.profile_id
        return profile_id
    return event.identifiers[0].value if event.identifiers else ""


def identity_events_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                              timeout: float = 10.0, poll_interval: float = 1.0,
                              bus: Bus | None = None) -> Forwarder:
    send: SendBatch
    if bus is not None:
        send = bus_sender(bus, settings.service, IDENTITY_EVENTS_TOPIC, ordering_key=_person)
    else:
        send = peer_sender(
            settings, "identity",
            method=lambda ch: stubs.identity(ch).IngestEvents,
            request=lambda rows: identity_service_pb2.IngestEventsRequest(
                events=[event_pb2.Event.FromString(row.payload) for row in rows]),
            what="engagement events", timeout=timeout)
    return Forwarder(db, outbox, IDENTITY_EVENTS_TOPIC, send, batch_size=1000,
                     poll_interval=poll_interval,
                     item_key=lambda row: event_pb2.Event.FromString(row.payload).message_id)
