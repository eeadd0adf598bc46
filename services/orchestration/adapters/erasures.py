"""Telling delivery that a profile was erased, the safe way: the event round writes a row to
the outbox (topic :data:`ERASURES_TOPIC`) in the transaction that ended the profile's
enrollments, and a forwarder calls DeliveryService.EraseProfiles until delivery confirms.

Going through orchestration (rather than straight from identity) orders the two: by the time
delivery erases, no enrollment of the profile can ask for another message, so delivery's
cancellation is final.

With the event bus (CJO_EVENT_BUS) the rows are published to JetStream instead (partitioned by
profile) and delivery's bus consumer hands them to the same EraseProfiles.
"""

from __future__ import annotations

from collections.abc import Sequence

from cjo.delivery.v1 import delivery_service_pb2
from cjo_orchestration.adapters import stubs
from cjo_platform.bus import Bus
from cjo_platform.bus.relay import bus_sender
from cjo_platform.config import ServiceSettings
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Later, Outbox, OutboxRow, SendBatch
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.forwarding import peer_sender
from cjo_platform.logging import get_logger

log = get_logger(__name__)

ERASURES_TOPIC = "delivery.erasures"


def request(uow: UnitOfWork, erased: Sequence[tuple[str, str]]) -> None:
    """Queue delivery's erasure of these (workspace, profile) ids in the unit of work."""
    by_workspace: dict[str, list[str]] = {}
    for workspace_id, profile_id in erased:
        by_workspace.setdefault(workspace_id, []).append(profile_id)
    for workspace_id, profile_ids in by_workspace.items():
        uow.publish(ERASURES_TOPIC, workspace_id, [
            (delivery_service_pb2.EraseProfilesRequest(profile_ids=[p]).SerializeToString(), "")
            for p in profile_ids])


class MessagesInFlight(Later):
    """Delivery is handing some of the profiles' messages to a provider right now; erasing
    again once they finished erases them too. Only this workspace's erasures wait: the others
    go on."""


def _profiles(rows: Sequence[OutboxRow]) -> list[str]:
    return sorted({p for row in rows for p in
                   delivery_service_pb2.EraseProfilesRequest.FromString(row.payload).profile_ids})


def _check_reply(workspace_id: str, rows: Sequence[OutboxRow],
                 reply: delivery_service_pb2.EraseProfilesResponse) -> None:
    busy = [r.profile_id for r in reply.results if r.in_flight_count]
    # Later keeps this workspace's rows (with backoff; erasing is idempotent) while the other
    # workspaces' erasures go on.
    if busy:
        raise MessagesInFlight(f"delivery is sending messages of {len(busy)} erased "
                               f"profiles; erasing again later")
    log.info("profiles erased in delivery", workspace=workspace_id,
             profiles=len(_profiles(rows)),
             canceled=sum(r.canceled_count for r in reply.results))


def erasures_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                       timeout: float = 10.0, poll_interval: float = 1.0,
                       bus: Bus | None = None) -> Forwarder:
    send: SendBatch
    if bus is not None:
        send = bus_sender(bus, settings.service, ERASURES_TOPIC,
                          ordering_key=lambda row: ",".join(_profiles([row])))
    else:
        send = peer_sender(
            settings, "delivery",
            method=lambda ch: stubs.delivery(ch).EraseProfiles,
            request=lambda rows: delivery_service_pb2.EraseProfilesRequest(
                profile_ids=_profiles(rows)),
            what="erasures", check_reply=_check_reply, timeout=timeout)
    return Forwarder(db, outbox, ERASURES_TOPIC, send, poll_interval=poll_interval,
                     item_key=lambda row: ",".join(_profiles([row])))
