"""IdentityService: protos in, domain calls, protos out."""

from __future__ import annotations

import uuid
from datetime import datetime

import grpc

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_service_pb2_grpc as pb_grpc
from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_identity.adapters import profiles
from cjo_identity.api.convert import (
    event_from_proto,
    event_to_proto,
    profile_id_of,
    profile_to_proto,
    stored_event_to_proto,
)
from cjo_identity.domain.events import Event, StoredEvent
from cjo_identity.domain.identifiers import parse_identifier
from cjo_identity.domain.ingest import Accepted, BatchPlan
from cjo_identity.domain.profiles import Profile
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.retry import retry_on_conflict
from cjo_platform.errors import InvalidArgument, NotFound, Violations
from cjo_platform.limits import check_batch
from cjo_platform.logging import get_logger
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.status import OK, to_status_proto
from cjo_platform.telemetry import current_traceparent

SERVICE = "cjo.identity.v1.IdentityService"
DOMAIN = "identity.cjo"
EVENTS_TOPIC = "orchestration.events"

log = get_logger(__name__)


def new_id() -> str:
    return uuid.uuid4().hex


def forwarded_event(accepted: Accepted, traceparent: str) -> bytes:
    """The outbox payload orchestration receives for an accepted event."""
    return orchestration_pb.ForwardedEvent(
        event_id=accepted.event_id,
        profile_id=accepted.profile_id,
        event=event_to_proto(accepted.event),
        profile_traits=dict_to_struct(accepted.profile_traits),
        traceparent=traceparent,
    ).SerializeToString()


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, db: Database, outbox: Outbox, clock: Clock) -> None:
        self.db = db
        self.outbox = outbox
        self.clock = clock

    async def IngestEvents(self, request: pb.IngestEventsRequest,
                           context: grpc.aio.ServicerContext) -> pb.IngestEventsResponse:
        check_batch(request.events, "events")
        workspace = current_workspace()
        now = self.clock.now()
        traceparent = current_traceparent()
        results: list[pb.IngestEventResult] = []
        valid: list[tuple[pb.IngestEventResult, Event]] = []
        for index, item in enumerate(request.events):
            result = pb.IngestEventResult(status=OK)
            try:
                valid.append((result, event_from_proto(item, now)))
            except InvalidArgument as exc:
                result.status.CopyFrom(to_status_proto(exc.within(f"events[{index}]"), DOMAIN))
            results.append(result)
        if not valid:
            return pb.IngestEventsResponse(results=results)

        def apply() -> BatchPlan:
            with self.db.transaction() as session:
                plan = profiles.ingest(session, workspace, [e for _, e in valid], now, new_id)
                self.outbox.add(session, EVENTS_TOPIC, workspace, [
                    (forwarded_event(a, traceparent), traceparent) for a in plan.accepted])
            return plan

        plan = await self.db.run(retry_on_conflict, apply)
        if plan.accepted:
            self.outbox.notify()
        for identifier, owner, chosen in plan.conflicts:
            # Two profiles share a person; merging them is issue 3. Until then, say so.
            log.info("identifier owned by another profile; not relinked",
                     identifier_type=identifier.type.value, owner=owner, profile_id=chosen)
        for (result, _), outcome in zip(valid, plan.outcomes, strict=True):
            result.event_id = outcome.event_id
            result.profile_id = outcome.profile_id
            result.duplicate = outcome.duplicate
        return pb.IngestEventsResponse(results=results)

    async def GetProfile(self, request: pb.GetProfileRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetProfileResponse:
        profile_id = profile_id_of(request.name, "name")
        workspace = current_workspace()

        def read() -> Profile | None:
            with self.db.transaction() as session:
                return profiles.get_profile(session, workspace, profile_id)

        profile = await self.db.run(read)
        if profile is None:
            raise NotFound(f"profile {request.name!r} does not exist")
        return pb.GetProfileResponse(profile=profile_to_proto(profile))

    async def LookupProfile(self, request: pb.LookupProfileRequest,
                            context: grpc.aio.ServicerContext) -> pb.LookupProfileResponse:
        problems = Violations()
        identifier = parse_identifier(request.identifier.type, request.identifier.value,
                                      problems, "identifier")
        if identifier is None:
            raise InvalidArgument(problems.items)
        workspace = current_workspace()

        def read() -> Profile | None:
            with self.db.transaction() as session:
                owner = profiles.owner_of(session, workspace, identifier)
                return None if owner is None else profiles.get_profile(session, workspace, owner)

        profile = await self.db.run(read)
        if profile is None:
            raise NotFound("no profile has this identifier", reason="IDENTIFIER_UNKNOWN")
        return pb.LookupProfileResponse(profile=profile_to_proto(profile))

    async def ListProfileEvents(
        self, request: pb.ListProfileEventsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.ListProfileEventsResponse:
        profile_id = profile_id_of(request.parent, "parent")
        size = page_size(request.page_size)
        after = _cursor(request.page_token)
        workspace = current_workspace()

        def read() -> list[StoredEvent] | None:
            with self.db.transaction() as session:
                if not profiles.profile_exists(session, workspace, profile_id):
                    return None
                return profiles.list_events(session, workspace, profile_id, size + 1, after)

        page = await self.db.run(read)
        if page is None:
            raise NotFound(f"profile {request.parent!r} does not exist")
        next_token = ""
        if len(page) > size:
            page = page[:size]
            last = page[-1]
            next_token = encode_token({"t": last.event.timestamp.isoformat(),
                                       "id": last.event_id})
        return pb.ListProfileEventsResponse(events=[stored_event_to_proto(e) for e in page],
                                            next_page_token=next_token)


def _cursor(token: str) -> tuple[datetime, str] | None:
    cursor = decode_token(token)
    if cursor is None:
        return None
    try:
        time = datetime.fromisoformat(cursor["t"])
        if time.tzinfo is None:
            raise ValueError("naive time")
        return time, str(cursor["id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument.one("page_token", "is not a token returned by this method") \
            from None
