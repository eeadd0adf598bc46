"""IdentityService: protos in, a use-case of the service layer, protos out."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from cjo.identity.v1 import consent_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_service_pb2_grpc as pb_grpc
from cjo_identity.api.convert import (
    CHANNEL_NAMES,
    backfill_to_proto,
    event_from_proto,
    profile_id_of,
    profile_to_proto,
    settings_from_proto,
    settings_to_proto,
    stored_event_to_proto,
)
from cjo_identity.domain.backfills import BackfillState
from cjo_identity.domain.consent import ConsentState, Decision
from cjo_identity.domain.events import DEFAULT_MAX_CLOCK_SKEW, Event, StoredEvent
from cjo_identity.domain.identifiers import parse_identifier
from cjo_identity.domain.profiles import Profile
from cjo_identity.domain.segments import (
    Segment,
    SegmentChanges,
    SegmentState,
    check_update_mask,
    compile_condition,
)
from cjo_identity.service_layer import consent, ingest, profiles, segments, settings
from cjo_identity.service_layer.consent import ConsentQuery
from cjo_identity.service_layer.ingest import NO_GROUP_COMMIT, GroupCommitSettings
from cjo_platform.db.item_writes import write_each
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import Aborted, InvalidArgument, NotFound, Violations
from cjo_platform.limits import MAX_FORWARDED_PROFILE_BYTES, check_topic
from cjo_platform.logging import LogOnce, get_logger
from cjo_platform.paging import MAX_PAGE_BYTES, decode_token, encode_token, fit, page_size
from cjo_platform.profiles import PROFILE_TRIM_FIELDS, trim_profile
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.auth import current_principal, current_workspace
from cjo_platform.rpc.batch import BatchAnswer
from cjo_platform.rpc.idempotent import once, seen
from cjo_platform.rpc.scopes import Scope
from cjo_platform.secret_box import SecretBox
from cjo_platform.telemetry import current_traceparent

SERVICE = "cjo.identity.v1.IdentityService"
log = get_logger(__name__)
# Profiles past the bound logged lately: each is logged once an hour, not at every step round.
_logged = LogOnce(3600.0)
DOMAIN = "identity.cjo"


M = TypeVar("M", bound=Message)

# A call parsed again this many times at most when the settings change under it.
SETTINGS_ATTEMPTS = 3

class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, transactions: Transactions,
                 on_backfill: Callable[[], None] = lambda: None,
                 forward_to_decisioning: bool = True,
                 max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
                 group_commit: GroupCommitSettings = NO_GROUP_COMMIT,
                 secret_box: SecretBox | None = None) -> None:
        self.transactions = transactions
        # Seals the workspaces' verification secrets at rest (none: stored in plaintext).
        self.secret_box = secret_box or SecretBox([])
        # How far ahead of its receive time an event's time may be (corrected_time).
        self.max_clock_skew = max_clock_skew
        # Track events and merges also go to decisioning (rewards): one outbox row per event.
        self.forward_to_decisioning = forward_to_decisioning
        # Called after a backfill is committed: wakes this replica's time worker.
        self.on_backfill = on_backfill
        # Events are parsed with cached settings, checked again in the write transaction.
        self.settings = settings.SettingsCache(transactions, self.secret_box)
        self.ingest = ingest.IngestGroups(transactions, group_commit, self.secret_box,
                                          forward_to_decisioning)

    async def IngestEvents(self, request: pb.IngestEventsRequest,
                           context: grpc.aio.ServicerContext) -> pb.IngestEventsResponse:
        workspace = current_workspace()
        now = self.transactions.clock.now()
        principal = current_principal()
        # A publishable key's events pass its rules (source, verification, protected data).
        publishable = (principal.key_id if not principal.is_service
                       and principal.scope is Scope.INGEST else "")
        traceparent = current_traceparent()
        current = self.settings.cached(workspace)
        fresh = current is None  # read from the database for this call
        for _ in range(SETTINGS_ATTEMPTS):
            if current is None:
                current = await self.settings.load(workspace)
            answer = BatchAnswer(request.events, "events", DOMAIN, pb.IngestEventResult)
            parsed = answer.parse(partial(event_from_proto, now=now, settings=current.settings,
                                          publishable_key=publishable,
                                          max_skew=self.max_clock_skew))
            if len(parsed) < len(request.events) and not fresh:
                # Refused on cached settings: never without asking the database (another
                # replica may have just allowed it).
                current, fresh = None, True
                continue
            try:
                await self._ingest(answer, parsed, workspace, current, traceparent,
                                   hide_profiles=bool(publishable))
            except settings.SettingsChanged as changed:
                # They changed since cached (nothing was written): parse with the new ones.
                current, fresh = self.settings.put(workspace, changed.current), True
                continue
            return pb.IngestEventsResponse(results=answer.results)
        raise Aborted("the workspace's identity settings kept changing; try again",
                      reason="SETTINGS_CHANGED")

    async def _ingest(self, answer: BatchAnswer[pb.IngestEventResult],
                      parsed: list[tuple[int, Event]], workspace: str,
                      current: settings.Cached, traceparent: str, hide_profiles: bool) -> None:
        # An event the database cannot store fails alone; the others are ingested.
        outcomes = await write_each(answer, parsed, lambda batch: self.ingest.ingest(
            workspace, current, batch, traceparent))
        for index, outcome in outcomes:
            if isinstance(outcome, InvalidArgument):
                answer.fail(index, outcome)
                continue
            result = answer.results[index]
            result.event_id = outcome.event_id
            # Anyone can use a publishable key: it does not learn profile ids.
            result.profile_id = "" if hide_profiles else outcome.profile_id
            result.duplicate = outcome.duplicate

    async def GetProfile(self, request: pb.GetProfileRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetProfileResponse:
        profile_id = profile_id_of(request.name, "name")
        workspace = current_workspace()
        profile = await self.transactions.read(
            lambda uow: profiles.get_profile(uow, workspace, profile_id))
        return pb.GetProfileResponse(profile=profile_to_proto(profile))

    async def BatchGetProfiles(self, request: pb.BatchGetProfilesRequest,
                               context: grpc.aio.ServicerContext) -> pb.BatchGetProfilesResponse:
        answer = BatchAnswer(request.names, "names", DOMAIN, pb.BatchGetProfileResult)
        workspace = current_workspace()
        # A name is a string: its violation has no field of its own and is named `names[i]`.
        wanted = answer.parse(lambda name: profile_id_of(name, ""))
        # Reads only: in no transaction, beside the writes (Transactions.read).
        found = await self.transactions.read(lambda uow: profiles.get_profiles(
            uow, workspace, [p for _, p in wanted])) if wanted else {}
        for index, profile_id in wanted:
            profile = found.get(profile_id)
            if profile is None:
                answer.fail(index, NotFound(f"profile {request.names[index]!r} does not exist"))
            else:
                answer.results[index].profile.CopyFrom(profile_to_proto(profile))
        response = pb.BatchGetProfilesResponse(results=answer.results)
        # A profile grown past the limits by merges is answered bounded, so one never makes
        # the answer too large for the others (a caller splits an answer of many large ones).
        # Measured once for the whole answer: profiles within the limits cost one ByteSize.
        if response.ByteSize() > MAX_FORWARDED_PROFILE_BYTES:
            for result in response.results:
                if trim_profile(result.profile, MAX_FORWARDED_PROFILE_BYTES, "traits",
                                **PROFILE_TRIM_FIELDS):
                    result.profile_trimmed = True
                    copy = result.profile
                    if _logged(copy.profile_id):
                        log.warning("a profile past the limits (grown by merges) is answered "
                                    "without some of its traits or lists (logged once an "
                                    "hour per profile)", profile=copy.profile_id,
                                    traits_kept=len(copy.traits.fields),
                                    identifiers_kept=len(copy.identifiers),
                                    limit_bytes=MAX_FORWARDED_PROFILE_BYTES)
        return response

    async def LookupProfile(self, request: pb.LookupProfileRequest,
                            context: grpc.aio.ServicerContext) -> pb.LookupProfileResponse:
        workspace = current_workspace()
        current, _ = await self.transactions.run(
            lambda uow: settings.get_settings(uow, workspace, self.secret_box))
        problems = Violations()
        identifier = parse_identifier(request.identifier.type, request.identifier.value,
                                      problems, "identifier", known_types=current.known_types,
                                      phone_region=current.default_phone_region)
        if identifier is None:
            raise InvalidArgument(problems.items)
        profile = await self.transactions.run(
            lambda uow: profiles.lookup_profile(uow, workspace, identifier))
        return pb.LookupProfileResponse(profile=profile_to_proto(profile))

    async def ListProfileEvents(
        self, request: pb.ListProfileEventsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.ListProfileEventsResponse:
        profile_id = profile_id_of(request.parent, "parent")
        size = page_size(request.page_size)
        after = _event_cursor(request.page_token)
        workspace = current_workspace()
        page, more = await self.transactions.run(lambda uow: profiles.list_profile_events(
            uow, workspace, profile_id, size, after))
        found = [stored_event_to_proto(e) for e in page]
        # Bounded by their stored size already; by what they encode to as well (a Struct may
        # encode larger than its JSON).
        kept, more = _fit_events(page, [e.ByteSize() for e in found], MAX_PAGE_BYTES, more)
        return pb.ListProfileEventsResponse(events=found[:kept],
                                            next_page_token=_event_token(more))

    async def BatchCheckConsent(
        self, request: pb.BatchCheckConsentRequest, context: grpc.aio.ServicerContext,
    ) -> pb.BatchCheckConsentResponse:
        answer = BatchAnswer(request.queries, "queries", DOMAIN, pb.BatchCheckConsentResult)
        workspace = current_workspace()
        asked = answer.parse(_consent_query)
        decisions = await self.transactions.read(lambda uow: consent.check_consent(
            uow, workspace, [q for _, q in asked])) if asked else []
        for (index, _), decision in zip(asked, decisions, strict=True):
            answer.results[index].decision.CopyFrom(_decision_proto(decision))
        return pb.BatchCheckConsentResponse(results=answer.results)

    async def GetIdentitySettings(
        self, request: pb.GetIdentitySettingsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.GetIdentitySettingsResponse:
        workspace = current_workspace()
        current, update_time, backfill = await self.transactions.run(
            lambda uow: settings.get_settings_and_backfill(uow, workspace, self.secret_box))
        return pb.GetIdentitySettingsResponse(
            settings=settings_to_proto(current, update_time, backfill))

    async def UpdateIdentitySettings(
        self, request: pb.UpdateIdentitySettingsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.UpdateIdentitySettingsResponse:
        workspace = current_workspace()
        wanted = settings_from_proto(request.settings)

        def update(uow: UnitOfWork) -> pb.UpdateIdentitySettingsResponse:
            update_time, backfill = settings.update_settings(uow, workspace, wanted,
                                                               self.secret_box)
            if backfill is not None and backfill.state is not BackfillState.DONE:
                uow.after_commit(self.on_backfill)
            # As saved: an empty verification secret kept the current one.
            saved, _ = settings.get_settings(uow, workspace, self.secret_box)
            return pb.UpdateIdentitySettingsResponse(
                settings=settings_to_proto(saved, update_time, backfill))

        response = await once(self.transactions, request, pb.UpdateIdentitySettingsResponse,
                              work=update)
        # Ingest here uses them from the next call (other replicas from their next write).
        self.settings.forget(workspace)
        return response

    async def ListProfiles(self, request: pb.ListProfilesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListProfilesResponse:
        source = request.filter
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = str(cursor.get("after", "")) if cursor else ""
        workspace = current_workspace()
        # Compiled (its trial evaluation included) in the transaction's thread, never on the
        # event loop that serves every other call.
        found, last = await self.transactions.run(lambda uow: profiles.list_profiles(
            uow, workspace, compile_condition(source, "filter") if source.strip() else None,
            size, after))
        return pb.ListProfilesResponse(
            profiles=[profile_to_proto(p) for p in found],
            next_page_token=encode_token({"after": last}) if last is not None else "")

    async def CreateSegment(self, request: pb.CreateSegmentRequest,
                            context: grpc.aio.ServicerContext) -> pb.CreateSegmentResponse:
        workspace = current_workspace()
        draft = request.segment

        def create(uow: UnitOfWork) -> pb.CreateSegmentResponse:
            created = segments.create_segment(uow, workspace, draft.segment_id,
                                              draft.display_name, draft.condition)
            uow.after_commit(self.on_backfill)
            return pb.CreateSegmentResponse(segment=segment_to_proto(*created))

        return await once(self.transactions, request, pb.CreateSegmentResponse, work=create)

    async def GetSegment(self, request: pb.GetSegmentRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetSegmentResponse:
        segment_id = segment_id_of(request.name, "name")
        workspace = current_workspace()
        found = await self.transactions.run(
            lambda uow: segments.get_segment(uow, workspace, segment_id))
        return pb.GetSegmentResponse(segment=segment_to_proto(*found))

    async def ListSegments(self, request: pb.ListSegmentsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListSegmentsResponse:
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = str(cursor.get("after", "")) if cursor else ""
        workspace = current_workspace()
        found, last = await self.transactions.run(
            lambda uow: segments.list_segments(uow, workspace, size, after))
        return pb.ListSegmentsResponse(
            segments=[segment_to_proto(s, count) for s, count in found],
            next_page_token=encode_token({"after": last}) if last is not None else "")

    async def UpdateSegment(self, request: pb.UpdateSegmentRequest,
                            context: grpc.aio.ServicerContext) -> pb.UpdateSegmentResponse:
        segment_id = segment_id_of(request.segment.name, "segment.name")
        paths = frozenset(request.update_mask.paths)
        check_update_mask(paths)
        draft = request.segment
        changes = SegmentChanges(display_name=draft.display_name, condition=draft.condition)
        workspace = current_workspace()

        def update(uow: UnitOfWork) -> pb.UpdateSegmentResponse:
            updated = segments.update_segment(uow, workspace, segment_id, changes, paths,
                                              draft.etag)
            if "condition" in paths:
                uow.after_commit(self.on_backfill)
            return pb.UpdateSegmentResponse(segment=segment_to_proto(*updated))

        return await once(self.transactions, request, pb.UpdateSegmentResponse, work=update)

    async def DeleteSegment(self, request: pb.DeleteSegmentRequest,
                            context: grpc.aio.ServicerContext) -> pb.DeleteSegmentResponse:
        segment_id = segment_id_of(request.name, "name")
        workspace = current_workspace()
        traceparent = current_traceparent()

        def delete(uow: UnitOfWork) -> pb.DeleteSegmentResponse:
            segments.delete_segment(uow, workspace, segment_id, traceparent)
            return pb.DeleteSegmentResponse()

        # The members leave a chunk per transaction first; the deletion (and the answer to
        # the request id) is then one short transaction. A repeat only gets the first answer.
        if not await seen(self.transactions, request):
            await segments.drain(self.transactions, workspace, segment_id, traceparent)
        return await once(self.transactions, request, pb.DeleteSegmentResponse, work=delete)

    async def ListSegmentMembers(
        self, request: pb.ListSegmentMembersRequest, context: grpc.aio.ServicerContext,
    ) -> pb.ListSegmentMembersResponse:
        segment_id = segment_id_of(request.parent, "parent")
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = str(cursor.get("after", "")) if cursor else ""
        workspace = current_workspace()
        members, last = await self.transactions.run(
            lambda uow: segments.list_members(uow, workspace, segment_id, size, after))
        return pb.ListSegmentMembersResponse(
            profile_ids=members,
            next_page_token=encode_token({"after": last}) if last is not None else "")

    async def DeleteProfile(self, request: pb.DeleteProfileRequest,
                            context: grpc.aio.ServicerContext) -> pb.DeleteProfileResponse:
        profile_id = profile_id_of(request.name, "name")
        workspace = current_workspace()
        traceparent = current_traceparent()

        def erase(uow: UnitOfWork) -> pb.DeleteProfileResponse:
            profiles.delete_profile(uow, workspace, profile_id, request.block_identifiers,
                                    traceparent)
            return pb.DeleteProfileResponse()

        return await once(
            self.transactions, request, pb.DeleteProfileResponse,
            work=erase)

    async def ExportProfile(self, request: pb.ExportProfileRequest,
                            context: grpc.aio.ServicerContext) -> pb.ExportProfileResponse:
        profile_id = profile_id_of(request.name, "name")
        cursor = _export_cursor(request.page_token)
        workspace = current_workspace()
        # The document json.dumps(..., sort_keys=True) writes, each part encoded once (ASCII:
        # characters are bytes) as it is read: the read stops where the page's JSON would pass
        # MAX_PAGE_BYTES (on the read path: a long export holds up no writer).
        head: list[str] = []
        encoded: dict[str, str] = {}

        def profile_bytes(profile: Profile) -> int:
            if cursor is not None:
                return 0
            head.append(_json(profile_to_proto(profile)))
            return len(head[-1])

        def event_bytes(event: StoredEvent) -> int:
            text = encoded[event.event_id] = _json(stored_event_to_proto(event))
            return len(text) + 2

        _, history, more = await self.transactions.read(
            lambda uow: profiles.export_profile(uow, workspace, profile_id, cursor,
                                                MAX_PAGE_BYTES, profile_bytes, event_bytes))
        document = '{"events": [' + ", ".join(encoded[e.event_id] for e in history) + "]" \
            + (f', "profile": {head[-1]}' if cursor is None else "") + "}"
        token = "" if more is None else encode_token({
            "t": more.after[0].isoformat(), "id": more.after[1], "p": more.profile_id,
            "m": more.merges, "s": more.received_by.isoformat(), "n": more.exported})
        return pb.ExportProfileResponse(json=document, next_page_token=token)


def _json(message: Message) -> str:
    return json.dumps(json_format.MessageToDict(message), sort_keys=True)


def _fit_events(page: list[StoredEvent], sizes: list[int], max_bytes: int,
                more: tuple[datetime, str] | None) -> tuple[int, tuple[datetime, str] | None]:
    """How many leading events of ``page`` (each of ``sizes`` bytes) to answer within
    ``max_bytes`` (one at least), and where the next page starts."""
    kept = fit(sizes, max_bytes)
    if kept < len(page):
        last = page[kept - 1]
        return kept, (last.event.timestamp, last.event_id)
    return kept, more


def _event_token(after: tuple[datetime, str] | None) -> str:
    return encode_token({"t": after[0].isoformat(), "id": after[1]}) if after else ""


_STATES = {
    ConsentState.SUBSCRIBED: consent_pb2.CONSENT_STATE_SUBSCRIBED,
    ConsentState.UNSUBSCRIBED: consent_pb2.CONSENT_STATE_UNSUBSCRIBED,
    ConsentState.UNKNOWN: consent_pb2.CONSENT_STATE_UNKNOWN,
}


def _decision_proto(decision: Decision) -> consent_pb2.ConsentDecision:
    return consent_pb2.ConsentDecision(state=_STATES[decision.state], allowed=decision.allowed,
                                       reason=decision.reason)


def _consent_query(query: consent_pb2.ConsentQuery) -> ConsentQuery:
    problems = Violations()
    channel = CHANNEL_NAMES.get(query.channel)
    problems.check(bool(query.profile_id), "profile_id", "is required")
    problems.check(channel is not None, "channel", "is required")
    check_topic(problems, "topic", query.topic)
    if problems or channel is None:
        raise InvalidArgument(problems.items)
    return ConsentQuery(query.profile_id, channel, query.topic)


_SEGMENT_STATES = {
    SegmentState.ACTIVE: segment_pb2.SEGMENT_STATE_ACTIVE,
    SegmentState.INVALID: segment_pb2.SEGMENT_STATE_INVALID,
}


def segment_to_proto(segment: Segment, member_count: int) -> segment_pb2.Segment:
    return segment_pb2.Segment(
        name=f"segments/{segment.segment_id}", segment_id=segment.segment_id,
        display_name=segment.display_name, condition=segment.condition,
        member_count=member_count, create_time=to_timestamp(segment.create_time),
        state=_SEGMENT_STATES[segment.state], error_count=segment.error_count,
        consecutive_error_count=segment.consecutive_errors, last_error=segment.last_error,
        last_error_time=to_timestamp(segment.last_error_time),
        last_error_profile_id=segment.last_error_profile_id,
        update_time=to_timestamp(segment.update_time or segment.create_time),
        etag=segment.etag, backfill=backfill_to_proto(segment.backfill))


def segment_id_of(name: str, field: str) -> str:
    rest = name.removeprefix("segments/")
    if not name.startswith("segments/") or not rest or "/" in rest:
        raise InvalidArgument.one(field, "must be segments/{segment_id}")
    return rest


def _export_cursor(token: str) -> profiles.ExportCursor | None:
    """An ExportProfile page token: where the page starts, and what identifies the set of events
    exported (the profile resolved to, how many profiles were merged into it, when the export
    began and how many of the events received by then it answered so far). A token of an
    earlier release, without them, starts the export again (ABORTED, as a change would)."""
    after = _event_cursor(token)
    if after is None:
        return None
    cursor = decode_token(token) or {}
    if not {"p", "m", "s", "n"} <= cursor.keys():
        raise Aborted("the page token is from an earlier release; start the export again",
                      reason="PROFILE_CHANGED")
    profile, merges, exported = cursor["p"], cursor["m"], cursor["n"]
    try:
        received_by = datetime.fromisoformat(cursor["s"])
    except (TypeError, ValueError):
        received_by = None
    if not isinstance(profile, str) or not isinstance(merges, int) \
            or not isinstance(exported, int) or received_by is None \
            or received_by.tzinfo is None:
        raise InvalidArgument.one("page_token", "is not a token returned by this method")
    return profiles.ExportCursor(after, profile, merges, received_by, exported)


def _event_cursor(token: str) -> tuple[datetime, str] | None:
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
