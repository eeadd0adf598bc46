"""IdentityService: protos in, domain calls, protos out."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

import grpc
from google.protobuf import json_format

from cjo.analytics.v1 import fact_pb2
from cjo.identity.v1 import consent_pb2, event_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_service_pb2_grpc as pb_grpc
from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_identity.adapters import profiles, segments
from cjo_identity.adapters.segments import Transition
from cjo_identity.adapters.settings import load_settings, save_settings
from cjo_identity.api.convert import (
    CHANNEL_NAMES,
    event_from_proto,
    event_to_proto,
    profile_id_of,
    profile_to_proto,
    settings_from_proto,
    settings_to_proto,
    stored_event_to_proto,
)
from cjo_identity.domain.consent import ConsentState, Decision, decide
from cjo_identity.domain.conversions import Conversion
from cjo_identity.domain.events import Event, StoredEvent
from cjo_identity.domain.golden import Golden, trait_values
from cjo_identity.domain.identifiers import Identifier, parse_identifier
from cjo_identity.domain.ingest import Accepted, BatchPlan, Merge, conversions_of, linkable
from cjo_identity.domain.profiles import Profile
from cjo_identity.domain.segments import (
    ENTERED,
    EXITED,
    PROFILE_DELETED,
    PROFILE_MERGED,
    Segment,
    activation,
    check_segment,
    compile_condition,
)
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.outbox import Outbox
from cjo_platform.db.retry import retry_on_conflict
from cjo_platform.errors import AlreadyExists, InvalidArgument, NotFound, Violations
from cjo_platform.facts import FACTS_TOPIC
from cjo_platform.limits import check_batch
from cjo_platform.logging import get_logger
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.protobuf import dict_to_struct, to_timestamp
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.status import OK, to_status_proto
from cjo_platform.telemetry import current_traceparent

SERVICE = "cjo.identity.v1.IdentityService"
DOMAIN = "identity.cjo"
EVENTS_TOPIC = "orchestration.events"
SCAN_CHUNK = 1000
T = TypeVar("T")
SCAN_ROUNDS = 10

log = get_logger(__name__)


def new_id() -> str:
    return uuid.uuid4().hex


def forwarded_event(accepted: Accepted, traceparent: str) -> bytes:
    """The outbox payload orchestration receives for an accepted event."""
    return orchestration_pb.ForwardedEvent(
        event_id=accepted.event_id,
        profile_id=accepted.profile_id,
        event=event_to_proto(accepted.event),
        profile_traits=dict_to_struct(trait_values(accepted.golden.traits)),
        traceparent=traceparent,
    ).SerializeToString()


def conversion_fact(accepted: Accepted, conversion: Conversion) -> bytes:
    """The outbox payload analytics records for a conversion; its id follows from the event's,
    so a re-sent fact is recorded once."""
    return fact_pb2.Fact(
        fact_id=f"identity.conversion:{accepted.event_id}",
        type=fact_pb2.FACT_TYPE_CONVERTED,
        profile_id=accepted.profile_id,
        occur_time=to_timestamp(accepted.event.timestamp),
        revenue=conversion.revenue,
        currency=conversion.currency,
    ).SerializeToString()


def segment_event(transition: Transition, golden: Golden, now: datetime,
                  traceparent: str) -> bytes:
    """The outbox payload telling orchestration a profile entered or left a segment."""
    segment = transition.segment
    name = ENTERED if transition.entered else EXITED
    return orchestration_pb.ForwardedEvent(
        event_id=new_id(),
        profile_id=transition.profile_id,
        event=event_pb2.Event(
            message_id=f"{name}:{segment.segment_id}:{transition.profile_id}:{now.isoformat()}",
            type=event_pb2.EVENT_TYPE_TRACK, name=name,
            properties=dict_to_struct({"segment_id": segment.segment_id,
                                       "segment_name": segment.display_name}),
            timestamp=to_timestamp(now), source="identity"),
        profile_traits=dict_to_struct(trait_values(golden.traits)),
        traceparent=traceparent,
    ).SerializeToString()


def erasure_event(profile_id: str, now: datetime, traceparent: str) -> bytes:
    """The outbox payload telling other services to drop their copies of a profile."""
    return orchestration_pb.ForwardedEvent(
        event_id=new_id(), profile_id=profile_id,
        event=event_pb2.Event(message_id=f"{PROFILE_DELETED}:{profile_id}",
                              type=event_pb2.EVENT_TYPE_TRACK, name=PROFILE_DELETED,
                              timestamp=to_timestamp(now), source="identity"),
        traceparent=traceparent,
    ).SerializeToString()


def merge_event(merge: Merge, golden: Golden | None, now: datetime, traceparent: str) -> bytes:
    """The outbox payload telling orchestration that ``merged_profile_id`` is now part of the
    survivor, so enrollments of the merged profile follow the person. A profile is merged away
    once, so ids derived from the pair make a re-sent or re-planned merge deduplicate."""
    key = f"{PROFILE_MERGED}:{merge.merged_profile_id}:{merge.survivor_profile_id}"
    return orchestration_pb.ForwardedEvent(
        event_id=key, profile_id=merge.survivor_profile_id,
        event=event_pb2.Event(message_id=key, type=event_pb2.EVENT_TYPE_TRACK,
                              name=PROFILE_MERGED,
                              properties=dict_to_struct(
                                  {"merged_profile_id": merge.merged_profile_id}),
                              timestamp=to_timestamp(now), source="identity"),
        profile_traits=dict_to_struct(trait_values(golden.traits) if golden else {}),
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
        settings = await self._settings(workspace)
        results: list[pb.IngestEventResult] = []
        parsed: list[tuple[int, pb.IngestEventResult, Event]] = []
        for index, item in enumerate(request.events):
            result = pb.IngestEventResult(status=OK)
            try:
                parsed.append((index, result, event_from_proto(item, now, settings)))
            except InvalidArgument as exc:
                result.status.CopyFrom(to_status_proto(exc.within(f"events[{index}]"), DOMAIN))
            results.append(result)
        erased = await self._erased(workspace, {i for _, _, e in parsed for i in e.identifiers})
        valid: list[tuple[pb.IngestEventResult, Event]] = []
        for index, result, event in parsed:
            if erased & set(event.identifiers):
                # Erased on request: such identifiers never identify anyone again.
                event = replace(event, identifiers=tuple(
                    i for i in event.identifiers if i not in erased))
            if not event.identifiers or not linkable(event, settings):
                error = InvalidArgument.one(
                    "identifiers", "every identifier is blocked or erased; nothing to resolve "
                                   "the event to")
                result.status.CopyFrom(to_status_proto(error.within(f"events[{index}]"), DOMAIN))
                continue
            valid.append((result, event))
        if not valid:
            return pb.IngestEventsResponse(results=results)

        def apply() -> BatchPlan:
            with self.db.transaction() as session:
                plan = profiles.ingest(session, workspace, [e for _, e in valid], now, new_id,
                                       settings)
                merged = {m.merged_profile_id for m in plan.graph.merges}
                transitions = segments.refresh(
                    session, workspace,
                    {p: g for p, g in plan.golden.items() if p not in merged}, merged,
                    settings, now, before=plan.before)
                self.outbox.add(session, EVENTS_TOPIC, workspace, [
                    # Merges first: the batch's events (and all later ones) carry the survivor's
                    # id, and must find the merged profile's enrollments already moved to it.
                    *((merge_event(m, plan.golden.get(m.survivor_profile_id), now,
                                   traceparent), traceparent) for m in plan.graph.merges),
                    *((forwarded_event(a, traceparent), traceparent) for a in plan.accepted),
                    *((segment_event(t, plan.golden[t.profile_id], now, traceparent),
                       traceparent) for t in transitions)])
                self.outbox.add(session, FACTS_TOPIC, workspace, [
                    (conversion_fact(a, c), traceparent)
                    for a, c in conversions_of(plan.accepted, settings)])
            return plan

        plan = await self.db.run(retry_on_conflict, lambda: _again_if_stale(apply))
        if plan.accepted:
            self.outbox.notify()
        for accepted, conversion in conversions_of(plan.accepted, settings):
            if conversion.problem:
                log.warning("conversion recorded with revenue 0", event_id=accepted.event_id,
                            message_id=accepted.event.message_id,
                            event_name=accepted.event.name, reason=conversion.problem)
        for merge in plan.graph.merges:
            log.info("profiles merged", merged_profile_id=merge.merged_profile_id,
                     profile_id=merge.survivor_profile_id,
                     identifier_type=merge.link.identifier.type)
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

    async def BatchGetProfiles(self, request: pb.BatchGetProfilesRequest,
                               context: grpc.aio.ServicerContext) -> pb.BatchGetProfilesResponse:
        check_batch(request.names, "names")
        workspace = current_workspace()
        results = [pb.BatchGetProfileResult(status=OK) for _ in request.names]
        wanted: list[tuple[int, str]] = []
        for index, name in enumerate(request.names):
            try:
                wanted.append((index, profile_id_of(name, f"names[{index}]")))
            except InvalidArgument as error:
                results[index].status.CopyFrom(to_status_proto(error, DOMAIN))

        def read() -> tuple[dict[str, str], dict[str, Profile]]:
            with self.db.transaction() as session:
                resolved = profiles.resolve_profile_ids(session, workspace,
                                                        [p for _, p in wanted])
                found = profiles.load_profiles(session, workspace, sorted(set(resolved.values())))
                return resolved, {p.profile_id: p for p in found}

        resolved, found = await self.db.run(read) if wanted else ({}, {})
        for index, profile_id in wanted:
            profile = found.get(resolved[profile_id])
            if profile is None:
                results[index].status.CopyFrom(to_status_proto(
                    NotFound(f"profile {request.names[index]!r} does not exist"), DOMAIN))
            else:
                results[index].profile.CopyFrom(profile_to_proto(profile))
        return pb.BatchGetProfilesResponse(results=results)

    async def LookupProfile(self, request: pb.LookupProfileRequest,
                            context: grpc.aio.ServicerContext) -> pb.LookupProfileResponse:
        workspace = current_workspace()
        settings = await self._settings(workspace)
        problems = Violations()
        identifier = parse_identifier(request.identifier.type, request.identifier.value,
                                      problems, "identifier", known_types=settings.known_types,
                                      phone_region=settings.default_phone_region)
        if identifier is None:
            raise InvalidArgument(problems.items)

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
                resolved = profiles.resolve_profile_ids(session, workspace,
                                                        [profile_id])[profile_id]
                if not profiles.profile_exists(session, workspace, resolved):
                    return None
                return profiles.list_events(session, workspace, resolved, size + 1, after)

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

    async def BatchCheckConsent(
        self, request: pb.BatchCheckConsentRequest, context: grpc.aio.ServicerContext,
    ) -> pb.BatchCheckConsentResponse:
        check_batch(request.queries, "queries")
        workspace = current_workspace()
        results = [pb.BatchCheckConsentResult(status=OK) for _ in request.queries]
        asked: list[tuple[int, str, str, str]] = []
        for index, query in enumerate(request.queries):
            problems = Violations()
            channel = CHANNEL_NAMES.get(query.channel)
            problems.check(bool(query.profile_id), "profile_id", "is required")
            problems.check(channel is not None, "channel", "is required")
            problems.check(len(query.topic) <= 128, "topic", "at most 128 characters")
            if problems or channel is None:
                error = InvalidArgument(problems.items).within(f"queries[{index}]")
                results[index].status.CopyFrom(to_status_proto(error, DOMAIN))
                continue
            asked.append((index, query.profile_id, channel, query.topic))

        def read() -> tuple[IdentitySettings, dict[str, str], dict[str, Golden]]:
            with self.db.transaction() as session:
                settings, _ = load_settings(session, workspace)
                resolved = profiles.resolve_profile_ids(session, workspace,
                                                        [p for _, p, _, _ in asked])
                return settings, resolved, profiles.golden_of(session, workspace,
                                                              resolved.values())

        settings, resolved, records = await self.db.run(read)
        for index, profile_id, channel, topic in asked:
            decision = decide(records.get(resolved[profile_id]), channel, topic, settings)
            results[index].decision.CopyFrom(_decision_proto(decision))
        return pb.BatchCheckConsentResponse(results=results)

    async def GetIdentitySettings(
        self, request: pb.GetIdentitySettingsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.GetIdentitySettingsResponse:
        workspace = current_workspace()

        def read() -> tuple[IdentitySettings, datetime | None]:
            with self.db.transaction() as session:
                return load_settings(session, workspace)

        settings, update_time = await self.db.run(read)
        return pb.GetIdentitySettingsResponse(settings=settings_to_proto(settings, update_time))

    async def UpdateIdentitySettings(
        self, request: pb.UpdateIdentitySettingsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.UpdateIdentitySettingsResponse:
        workspace = current_workspace()
        settings = settings_from_proto(request.settings)
        now = self.clock.now()

        def write() -> None:
            with self.db.transaction() as session:
                save_settings(session, workspace, settings, now)

        await self.db.run(retry_on_conflict, write)
        return pb.UpdateIdentitySettingsResponse(settings=settings_to_proto(settings, now))

    async def _erased(self, workspace: str, wanted: set[Identifier]) -> set[Identifier]:
        def read() -> set[Identifier]:
            with self.db.transaction() as session:
                return profiles.erased_among(session, workspace, wanted)

        return await self.db.run(read) if wanted else set()

    async def ListProfiles(self, request: pb.ListProfilesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListProfilesResponse:
        condition = (compile_condition(request.filter, "filter")
                     if request.filter.strip() else None)
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = str(cursor.get("after", "")) if cursor else ""
        workspace = current_workspace()

        def read() -> tuple[list[Profile], str]:
            with self.db.transaction() as session:
                matched: list[str] = []
                last = after
                # Scan a bounded number of rows per call, so a rare match cannot make one
                # call read the whole workspace; the token continues the scan.
                for _ in range(SCAN_ROUNDS):
                    rows = profiles.scan_profiles(session, workspace, last, SCAN_CHUNK)
                    for profile_id, golden, computed in rows:
                        last = profile_id
                        if condition is None or condition.test(activation(golden, computed)):
                            matched.append(profile_id)
                            if len(matched) == size:
                                break
                    if len(matched) == size or len(rows) < SCAN_CHUNK:
                        break
                more = len(matched) == size or len(rows) == SCAN_CHUNK
                return (profiles.load_profiles(session, workspace, matched),
                        encode_token({"after": last}) if more else "")

        found, token = await self.db.run(read)
        return pb.ListProfilesResponse(profiles=[profile_to_proto(p) for p in found],
                                       next_page_token=token)

    async def CreateSegment(self, request: pb.CreateSegmentRequest,
                            context: grpc.aio.ServicerContext) -> pb.CreateSegmentResponse:
        workspace = current_workspace()
        now = self.clock.now()
        segment = Segment(request.segment.segment_id, request.segment.display_name,
                          request.segment.condition, now)
        check_segment(segment)
        traceparent = current_traceparent()

        def create() -> int:
            with self.db.transaction() as session:
                if segments.get_segment(session, workspace, segment.segment_id) is not None:
                    raise AlreadyExists(f"segment {segment.segment_id!r} already exists",
                                        reason="SEGMENT_EXISTS")
                segments.add_segment(session, workspace, segment)
                settings = load_settings(session, workspace)[0]
                entered = 0
                after = ""
                # Existing profiles that match enter now (and orchestration hears of it).
                while rows := profiles.scan_profiles(session, workspace, after, SCAN_CHUNK):
                    after = rows[-1][0]
                    golden = {p: g for p, g, _ in rows}
                    transitions = segments.refresh(session, workspace, golden, (), settings,
                                                   now, only=[segment])
                    entered += len(transitions)
                    self.outbox.add(session, EVENTS_TOPIC, workspace, [
                        (segment_event(t, golden[t.profile_id], now, traceparent), traceparent)
                        for t in transitions])
                return entered

        entered = await self.db.run(retry_on_conflict, create)
        if entered:
            self.outbox.notify()
        return pb.CreateSegmentResponse(segment=segment_to_proto(segment, entered))

    async def GetSegment(self, request: pb.GetSegmentRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetSegmentResponse:
        segment_id = segment_id_of(request.name, "name")
        workspace = current_workspace()

        def read() -> tuple[Segment, int] | None:
            with self.db.transaction() as session:
                return segments.get_segment(session, workspace, segment_id)

        found = await self.db.run(read)
        if found is None:
            raise NotFound(f"segment {request.name!r} does not exist")
        return pb.GetSegmentResponse(segment=segment_to_proto(*found))

    async def ListSegmentMembers(
        self, request: pb.ListSegmentMembersRequest, context: grpc.aio.ServicerContext,
    ) -> pb.ListSegmentMembersResponse:
        segment_id = segment_id_of(request.parent, "parent")
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = str(cursor.get("after", "")) if cursor else ""
        workspace = current_workspace()

        def read() -> list[str] | None:
            with self.db.transaction() as session:
                if segments.get_segment(session, workspace, segment_id) is None:
                    return None
                return segments.list_members(session, workspace, segment_id, size + 1, after)

        members = await self.db.run(read)
        if members is None:
            raise NotFound(f"segment {request.parent!r} does not exist")
        token = encode_token({"after": members[size - 1]}) if len(members) > size else ""
        return pb.ListSegmentMembersResponse(profile_ids=members[:size], next_page_token=token)

    async def DeleteProfile(self, request: pb.DeleteProfileRequest,
                            context: grpc.aio.ServicerContext) -> pb.DeleteProfileResponse:
        profile_id = profile_id_of(request.name, "name")
        workspace = current_workspace()
        now = self.clock.now()
        traceparent = current_traceparent()

        def erase() -> bool:
            with self.db.transaction() as session:
                resolved = profiles.resolve_profile_ids(session, workspace,
                                                        [profile_id])[profile_id]
                if not profiles.erase_profile(session, workspace, resolved,
                                              request.block_identifiers, now):
                    return False
                settings = load_settings(session, workspace)[0]
                segments.refresh(session, workspace, {}, [resolved], settings, now)
                self.outbox.add(session, EVENTS_TOPIC, workspace, [
                    (erasure_event(resolved, now, traceparent), traceparent)])
                return True

        if not await self.db.run(retry_on_conflict, erase):
            raise NotFound(f"profile {request.name!r} does not exist")
        self.outbox.notify()
        return pb.DeleteProfileResponse()

    async def ExportProfile(self, request: pb.ExportProfileRequest,
                            context: grpc.aio.ServicerContext) -> pb.ExportProfileResponse:
        profile_id = profile_id_of(request.name, "name")
        workspace = current_workspace()

        def read() -> tuple[Profile, list[StoredEvent]] | None:
            with self.db.transaction() as session:
                profile = profiles.get_profile(session, workspace, profile_id)
                if profile is None:
                    return None
                history: list[StoredEvent] = []
                after = None
                while page := profiles.list_events(session, workspace, profile.profile_id,
                                                   1000, after):
                    history += page
                    after = (page[-1].event.timestamp, page[-1].event_id)
                return profile, history

        found = await self.db.run(read)
        if found is None:
            raise NotFound(f"profile {request.name!r} does not exist")
        profile, history = found
        document = {
            "profile": json_format.MessageToDict(profile_to_proto(profile)),
            "events": [json_format.MessageToDict(stored_event_to_proto(e)) for e in history],
        }
        return pb.ExportProfileResponse(json=json.dumps(document, sort_keys=True))

    async def _settings(self, workspace: str) -> IdentitySettings:
        def read() -> IdentitySettings:
            with self.db.transaction() as session:
                return load_settings(session, workspace)[0]

        return await self.db.run(read)


_STATES = {
    ConsentState.SUBSCRIBED: consent_pb2.CONSENT_STATE_SUBSCRIBED,
    ConsentState.UNSUBSCRIBED: consent_pb2.CONSENT_STATE_UNSUBSCRIBED,
    ConsentState.UNKNOWN: consent_pb2.CONSENT_STATE_UNKNOWN,
}


def _decision_proto(decision: Decision) -> consent_pb2.ConsentDecision:
    return consent_pb2.ConsentDecision(state=_STATES[decision.state], allowed=decision.allowed,
                                       reason=decision.reason)


def _again_if_stale(work: Callable[[], T], attempts: int = 5) -> T:
    for _ in range(attempts - 1):
        try:
            return work()
        except profiles.StaleGraph:
            continue
    return work()


def segment_to_proto(segment: Segment, member_count: int) -> segment_pb2.Segment:
    return segment_pb2.Segment(
        name=f"segments/{segment.segment_id}", segment_id=segment.segment_id,
        display_name=segment.display_name, condition=segment.condition,
        member_count=member_count, create_time=to_timestamp(segment.create_time))


def segment_id_of(name: str, field: str) -> str:
    rest = name.removeprefix("segments/")
    if not name.startswith("segments/") or not rest or "/" in rest:
        raise InvalidArgument.one(field, "must be segments/{segment_id}")
    return rest


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
