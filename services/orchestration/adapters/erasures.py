"""Telling delivery that a profile was erased, the safe way: the event worker writes a row to
the outbox (topic :data:`ERASURES_TOPIC`) in the transaction that ended the profile's
enrollments, and a forwarder calls DeliveryService.EraseProfiles until delivery confirms.

Going through orchestration (rather than straight from identity) orders the two: by the time
delivery erases, no enrollment of the profile can ask for another message, so delivery's
cancellation is final.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from cjo.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc
from cjo_platform.config import ServiceSettings
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import Forwarder, Outbox, OutboxRow
from cjo_platform.logging import get_logger
from cjo_platform.rpc.client import channel, on_behalf_of

log = get_logger(__name__)

ERASURES_TOPIC = "delivery.erasures"


def request(session: Session, outbox: Outbox, erased: Sequence[tuple[str, str]]) -> None:
    """Queue delivery's erasure of these (workspace, profile) ids in the caller's transaction."""
    by_workspace: dict[str, list[str]] = {}
    for workspace_id, profile_id in erased:
        by_workspace.setdefault(workspace_id, []).append(profile_id)
    for workspace_id, profile_ids in by_workspace.items():
        outbox.add(session, ERASURES_TOPIC, workspace_id, [
            (delivery_service_pb2.EraseProfilesRequest(profile_ids=[p]).SerializeToString(), "")
            for p in profile_ids])


class MessagesInFlight(Exception):
    """Delivery is handing some of the profiles' messages to a provider right now; erasing
    again once they finished erases them too."""


def erasures_forwarder(settings: ServiceSettings, db: Database, outbox: Outbox, *,
                       timeout: float = 10.0, poll_interval: float = 1.0) -> Forwarder:
    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> None:
        stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel(settings.peer("delivery")))
        profile_ids = sorted({p for row in rows for p in
                              delivery_service_pb2.EraseProfilesRequest.FromString(
                                  row.payload).profile_ids})
        reply = await stub.EraseProfiles(
            delivery_service_pb2.EraseProfilesRequest(profile_ids=profile_ids),
            metadata=on_behalf_of(settings.service_token, workspace_id), timeout=timeout)
        busy = [r.profile_id for r in reply.results if r.in_flight_count]
        # The rows stay and the forwarder retries with backoff: erasing is idempotent.
        if busy:
            raise MessagesInFlight(f"delivery is sending messages of {len(busy)} erased "
                                   f"profiles; erasing again later")
        canceled = sum(r.canceled_count for r in reply.results)
        log.info("profiles erased in delivery", workspace=workspace_id,
                 profiles=len(profile_ids), canceled=canceled)

    return Forwarder(db, outbox, ERASURES_TOPIC, send, poll_interval=poll_interval)
