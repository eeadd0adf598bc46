"""Forwards engagement events from the outbox to identity's IngestEvents, on behalf of each
row's workspace. Identity dedupes on the event's ``message_id`` (derived from the engagement),
so a batch sent twice after a crash is applied once."""

from __future__ import annotations

from cjo.identity.v1 import event_pb2, identity_service_pb2
from cjo_delivery.adapters import stubs
from cjo_delivery.adapters.engagement_store import IDENTITY_EVENTS_TOPIC
from cjo_platform.config import ServiceSettings
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Outbox
from cjo_platform.forwarding import peer_sender


def identity_events_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                              timeout: float = 10.0, poll_interval: float = 1.0) -> Forwarder:
    send = peer_sender(
        settings, "identity",
        method=lambda ch: stubs.identity(ch).IngestEvents,
        request=lambda rows: identity_service_pb2.IngestEventsRequest(
            events=[event_pb2.Event.FromString(row.payload) for row in rows]),
        what="engagement events", timeout=timeout)
    return Forwarder(db, outbox, IDENTITY_EVENTS_TOPIC, send, batch_size=1000,
                     poll_interval=poll_interval,
                     item_key=lambda row: event_pb2.Event.FromString(row.payload).message_id)
