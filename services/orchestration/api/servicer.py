"""OrchestrationService: protos in, a use-case called, protos out. Nothing else lives here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import grpc

from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as pb_grpc
from cjo_orchestration.adapters.peers import DecisioningCatalog
from cjo_orchestration.api.convert import (
    OCCURRENCE_STATES_FROM_PROTO,
    enrollment_to_proto,
    graph_from_proto,
    journey_to_proto,
    occurrence_to_proto,
)
from cjo_orchestration.domain import journeys as domain
from cjo_orchestration.domain.entry import validate_forwarded_event
from cjo_orchestration.domain.journeys import Journey
from cjo_orchestration.domain.lifecycle import LIFECYCLE_EVENTS
from cjo_orchestration.domain.names import (
    ANY_JOURNEY,
    parse_enrollment_name,
    parse_journey_name,
    parse_journey_parent,
    parse_occurrence_name,
)
from cjo_orchestration.service_layer import enrollment, events, journeys, schedules
from cjo_orchestration.service_layer.ids import NewId
from cjo_platform.content_catalog import ContentCatalog
from cjo_platform.db.item_writes import write_each
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.limits import MAX_PROFILE_ID_LENGTH, check_id
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.profiles import consent_from_proto, profile_view, segment_id
from cjo_platform.protobuf import struct_to_dict
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.batch import BatchAnswer
from cjo_platform.rpc.idempotent import once, seen
from cjo_platform.telemetry import current_traceparent

DOMAIN = "orchestration.cjo"
StateChange = pb.PauseJourneyRequest | pb.ResumeJourneyRequest | pb.ArchiveJourneyRequest
StateChanged = TypeVar("StateChanged", pb.PauseJourneyResponse, pb.ResumeJourneyResponse,
                       pb.ArchiveJourneyResponse)
SERVICE = "cjo.orchestration.v1.OrchestrationService"


def _cursor(token: str, listing: str = "") -> tuple[datetime, str] | None:
    """The keyset position in a page token; ``listing`` names the filters it was issued for."""
    cursor = decode_token(token)
    if cursor is None:
        return None
    try:
        position = datetime.fromisoformat(cursor["t"]), str(cursor["id"])
        issued_for = str(cursor.get("f", ""))
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument.one("page_token", "is not a token returned by this method") from None
    if issued_for != listing:
        raise InvalidArgument.one("page_token", "belongs to a listing with other filters")
    return position


def _token(when: datetime, item_id: str, listing: str = "") -> str:
    return encode_token({"t": when.isoformat(), "id": item_id, "f": listing})


def _changes(journey: journey_pb2.Journey, paths: list[str]) -> domain.JourneyChanges:
    """AIP-134: the named fields, or without a mask every field the request populates."""
    if not paths:
        trigger = journey.WhichOneof("trigger")
        paths = [field for field, populated in (
            ("display_name", bool(journey.display_name)),
            ("event_trigger", trigger == "event_trigger"),
            ("segment_trigger", trigger == "segment_trigger"),
            ("api_trigger", trigger == "api_trigger"),
            ("scheduled_trigger", trigger == "scheduled_trigger"),
            ("nodes", bool(journey.nodes)),
            ("entry_node_id", bool(journey.entry_node_id)),
            ("re_entry", bool(journey.re_entry)),
            ("re_entry_cooldown", journey.HasField("re_entry_cooldown")),
            ("goal", journey.HasField("goal")),
            ("exit_criteria", bool(journey.exit_criteria))) if populated]
        if not paths:
            raise InvalidArgument.one("update_mask", "names no field to change")
    problems = Violations()
    for index, path in enumerate(paths):
        problems.check(path in domain.UPDATABLE_FIELDS, f"update_mask.paths[{index}]",
                       f"{path!r} cannot be updated; updatable: "
                       f"{', '.join(domain.UPDATABLE_FIELDS)}")
    named = [p for p in paths if p in domain.TRIGGER_FIELDS]
    problems.check(len(named) <= 1, "update_mask", "names more than one trigger field")
    problems.raise_if_any()
    return domain.JourneyChanges(fields=frozenset(paths), display_name=journey.display_name,
                                 graph=graph_from_proto(journey))


def _forwarded(item: pb.ForwardedEvent, default_traceparent: str) -> events.ForwardedEvent:
    problems = validate_forwarded_event(item.event_id, item.profile_id, item.event.name)
    problems.raise_if_any()
    name = item.event.name
    if name in LIFECYCLE_EVENTS:  # read as received: a merge names its other profile
        properties, traits = _contents(item)
        return events.ForwardedEvent(
            event_id=item.event_id, profile_id=item.profile_id, event_name=name,
            properties=properties, traits=traits,
            traceparent=item.traceparent or default_traceparent)
    # Its properties and traits are read only if a journey may use them (the request
    # validated them already): most events of a busy workspace reach no journey.
    return events.ForwardedEvent(
        event_id=item.event_id, profile_id=item.profile_id, event_name=name,
        properties={}, traits={}, traceparent=item.traceparent or default_traceparent,
        unread=partial(_contents, item))


def _contents(item: pb.ForwardedEvent) -> tuple[dict[str, Any], dict[str, Any]]:
    """A forwarded event's properties, and the profile as of this event (as every condition
    evaluated on it reads ``profile``)."""
    return (struct_to_dict(item.event.properties),
            profile_view(struct_to_dict(item.profile_traits),
                         struct_to_dict(item.computed_traits),
                         (segment_id(s) for s in item.segments),
                         consent_from_proto(item.consents),
                         ((i.type, i.value) for i in item.identifiers)))


class OrchestrationServicer(pb_grpc.OrchestrationServiceServicer):
    def __init__(self, transactions: Transactions, new_id: NewId,
                 receiver: events.EventReceiver,
                 content: ContentCatalog | None = None,
                 decisioning: DecisioningCatalog | None = None,
                 on_enrolled: Callable[[], None] | None = None,
                 profiles: enrollment.ProfileDirectory | None = None) -> None:
        self.transactions = transactions
        self.new_id = new_id
        self.receiver = receiver  # stores forwarded events and applies them (HandleEvents)
        self.content = content  # asked which content keys exist before publishing
        # Gets the decision points of optimising splits before a version is published.
        self.decisioning = decisioning
        self.on_enrolled = on_enrolled or (lambda: None)  # wakes the step worker
        # Identity, asked by Enroll whether the profile exists (required to serve Enroll).
        self.profiles = profiles

    # --- journeys ----------------------------------------------------------------------------

    async def CreateJourney(self, request: pb.CreateJourneyRequest,
                            context: grpc.aio.ServicerContext) -> pb.CreateJourneyResponse:
        workspace = current_workspace()
        draft = request.journey
        graph = graph_from_proto(draft)
        return await once(
            self.transactions, request, pb.CreateJourneyResponse,
            work=lambda uow: pb.CreateJourneyResponse(journey=journey_to_proto(
                journeys.create(uow, workspace, self.new_id(), draft.display_name, graph))))

    async def GetJourney(self, request: pb.GetJourneyRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetJourneyResponse:
        journey_id = parse_journey_name(request.name)
        workspace = current_workspace()
        journey = await self.transactions.run(lambda uow: journeys.get(uow, workspace,
                                                                       journey_id))
        return pb.GetJourneyResponse(journey=journey_to_proto(journey))

    async def ListJourneys(self, request: pb.ListJourneysRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListJourneysResponse:
        size = page_size(request.page_size)
        after = _cursor(request.page_token)
        workspace = current_workspace()
        page, more = await self.transactions.run(
            lambda uow: journeys.list_journeys(uow, workspace, size, after))
        return pb.ListJourneysResponse(
            journeys=[journey_to_proto(j) for j in page],
            next_page_token=_token(page[-1].create_time, page[-1].journey_id) if more else "")

    async def UpdateJourney(self, request: pb.UpdateJourneyRequest,
                            context: grpc.aio.ServicerContext) -> pb.UpdateJourneyResponse:
        journey_id = parse_journey_name(request.journey.name, "journey.name")
        changes = _changes(request.journey, list(request.update_mask.paths))
        workspace = current_workspace()
        return await once(
            self.transactions, request, pb.UpdateJourneyResponse,
            work=lambda uow: pb.UpdateJourneyResponse(journey=journey_to_proto(
                journeys.update(uow, workspace, journey_id, changes, request.journey.etag))))

    async def PublishJourney(self, request: pb.PublishJourneyRequest,
                             context: grpc.aio.ServicerContext) -> pb.PublishJourneyResponse:
        journey_id = parse_journey_name(request.name)
        workspace = current_workspace()
        missing = await journeys.missing_content(self.transactions, self.content, workspace,
                                                 journey_id)
        revision = await journeys.prepare_decisioning(self.transactions, self.decisioning,
                                                      workspace, journey_id, missing)
        return await once(
            self.transactions, request, pb.PublishJourneyResponse,
            work=lambda uow: pb.PublishJourneyResponse(journey=journey_to_proto(
                journeys.publish(uow, workspace, journey_id, missing, revision))))

    async def PauseJourney(self, request: pb.PauseJourneyRequest,
                           context: grpc.aio.ServicerContext) -> pb.PauseJourneyResponse:
        return await self._change_state(request, pb.PauseJourneyResponse, journeys.pause)

    async def ResumeJourney(self, request: pb.ResumeJourneyRequest,
                            context: grpc.aio.ServicerContext) -> pb.ResumeJourneyResponse:
        return await self._change_state(request, pb.ResumeJourneyResponse, journeys.resume)

    async def ArchiveJourney(self, request: pb.ArchiveJourneyRequest,
                             context: grpc.aio.ServicerContext) -> pb.ArchiveJourneyResponse:
        return await self._change_state(request, pb.ArchiveJourneyResponse, journeys.archive)

    async def _change_state(self, request: StateChange, response_type: type[StateChanged],
                            change: Callable[[UnitOfWork, str, str], Journey]) -> StateChanged:
        """Pause, resume and archive: the journey as the first answer to the request's
        ``request_id`` left it."""
        journey_id = parse_journey_name(request.name)
        workspace = current_workspace()
        return await once(self.transactions, request, response_type, work=lambda uow: response_type(
            journey=journey_to_proto(change(uow, workspace, journey_id))))

    # --- enrollments -------------------------------------------------------------------------

    async def Enroll(self, request: pb.EnrollRequest,
                     context: grpc.aio.ServicerContext) -> pb.EnrollResponse:
        journey_id = parse_journey_name(request.journey, "journey")
        problems = Violations()
        check_id(problems, "profile_id", request.profile_id, required=True,
                 max_length=MAX_PROFILE_ID_LENGTH)
        problems.check(bool(request.request_id), "request_id",
                       "is required: it makes a retried Enroll enroll once")
        problems.raise_if_any()
        workspace = current_workspace()
        entrant = enrollment.Entrant(request.profile_id, struct_to_dict(request.profile_traits),
                                     struct_to_dict(request.properties))
        traceparent = current_traceparent()
        # Identity decides whether the profile exists (and who it is now) before anything is
        # written: a step reads identity's record, so an id it does not know could never run.
        # A repeated request_id gets its first answer whatever identity says now.
        known_as = (enrollment.NOT_ASKED if await seen(self.transactions, request) else
                    await enrollment.identity_profile(self.profiles, workspace,
                                                      request.profile_id))

        def enroll(uow: UnitOfWork) -> pb.EnrollResponse:
            admitted = enrollment.enroll_profile(
                uow, workspace, journey_id, entrant, f"enroll:{request.request_id}",
                traceparent, self.new_id, known_as)
            if admitted.enrollment is None:
                return pb.EnrollResponse(skip_reason=admitted.skip_reason)
            return pb.EnrollResponse(enrollment=enrollment_to_proto(admitted.enrollment, []))

        response = await once(
            self.transactions, request, pb.EnrollResponse,
            work=enroll)
        if response.HasField("enrollment"):
            self.on_enrolled()
        return response

    async def GetEnrollment(self, request: pb.GetEnrollmentRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetEnrollmentResponse:
        journey_id, enrollment_id = parse_enrollment_name(request.name)
        workspace = current_workspace()
        found, steps = await self.transactions.run(lambda uow: enrollment.get_enrollment(
            uow, workspace, journey_id, enrollment_id))
        return pb.GetEnrollmentResponse(enrollment=enrollment_to_proto(found, steps))

    async def ListEnrollments(self, request: pb.ListEnrollmentsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListEnrollmentsResponse:
        journey_id = parse_journey_parent(request.parent)
        if journey_id is None and not request.profile_id:
            raise InvalidArgument.one("profile_id", f"is required with parent {ANY_JOURNEY} "
                                                    f"(every journey)")
        size = page_size(request.page_size)
        listing = f"{journey_id or '-'}/{request.profile_id}"
        before = _cursor(request.page_token, listing)
        workspace = current_workspace()
        page, more = await self.transactions.run(lambda uow: enrollment.list_enrollments(
            uow, workspace, journey_id, request.profile_id, size, before))
        return pb.ListEnrollmentsResponse(
            enrollments=[enrollment_to_proto(e, steps) for e, steps in page],
            next_page_token=(_token(page[-1][0].create_time, page[-1][0].enrollment_id,
                                    listing) if more else ""))

    # --- events from identity ----------------------------------------------------------------

    async def HandleEvents(self, request: pb.HandleEventsRequest,
                           context: grpc.aio.ServicerContext) -> pb.HandleEventsResponse:
        answer = BatchAnswer(request.events, "events", DOMAIN, pb.HandleEventResult)
        workspace = current_workspace()
        traceparent = current_traceparent()
        parsed = answer.parse(lambda item: _forwarded(item, traceparent))
        # An event the database cannot store fails alone; the others are received.
        new = await write_each(answer, parsed,
                               lambda batch: self.receiver.receive(workspace, batch))
        for index, is_new in new:
            if not is_new:
                answer.result(index).duplicate = True
        return answer.response(pb.HandleEventsResponse)

    # --- scheduled occurrences -----------------------------------------------------------------

    async def GetScheduleOccurrence(
            self, request: pb.GetScheduleOccurrenceRequest,
            context: grpc.aio.ServicerContext) -> pb.GetScheduleOccurrenceResponse:
        journey_id, version, fire_time = parse_occurrence_name(request.name)
        workspace = current_workspace()
        occurrence = await self.transactions.run(lambda uow: schedules.get_occurrence(
            uow, workspace, journey_id, version, fire_time))
        return pb.GetScheduleOccurrenceResponse(occurrence=occurrence_to_proto(occurrence))

    async def ListScheduleOccurrences(
            self, request: pb.ListScheduleOccurrencesRequest,
            context: grpc.aio.ServicerContext) -> pb.ListScheduleOccurrencesResponse:
        journey_id = parse_journey_name(request.parent, "parent")
        size = page_size(request.page_size)
        state = None
        if request.state:
            state = OCCURRENCE_STATES_FROM_PROTO.get(request.state)
            if state is None:
                raise InvalidArgument.one("state",
                                          f"{request.state} is not a ScheduleOccurrence.State")
        listing = f"{journey_id}/{state or ''}"
        cursor = _cursor(request.page_token, listing)
        before: tuple[datetime, int] | None = None
        if cursor is not None:
            # The id half holds the journey version here (a BIGINT: at most 18 digits).
            version = cursor[1]
            if not (version.isdecimal() and len(version) <= 18) or cursor[0].tzinfo is None:
                raise InvalidArgument.one("page_token", "is not a token returned by this method")
            before = cursor[0], int(version)
        workspace = current_workspace()
        page, more = await self.transactions.run(lambda uow: schedules.list_occurrences(
            uow, workspace, journey_id, state, size, before))
        return pb.ListScheduleOccurrencesResponse(
            occurrences=[occurrence_to_proto(o) for o in page],
            next_page_token=(_token(page[-1].fire_time, str(page[-1].journey_version), listing)
                             if more else ""))
