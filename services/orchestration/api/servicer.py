"""OrchestrationService: protos in, domain calls, protos out. Nothing else lives here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc

from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as pb_grpc
from cjo_orchestration.adapters import enrollments as enrollment_store
from cjo_orchestration.adapters import facts
from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters import schedules as schedule_store
from cjo_orchestration.adapters.peers import ContentCatalog
from cjo_orchestration.api.convert import (
    OCCURRENCE_STATES_FROM_PROTO,
    enrollment_to_proto,
    graph_from_proto,
    journey_to_proto,
    occurrence_to_proto,
)
from cjo_orchestration.domain import journeys as domain
from cjo_orchestration.domain.engine import (
    Enrollment,
    Step,
    may_enter,
    new_enrollment,
    resolve_profile,
    validate_forwarded_event,
)
from cjo_orchestration.domain.graph import validate_for_publish, validate_shape
from cjo_orchestration.domain.names import (
    parse_enrollment_name,
    parse_journey_name,
    parse_occurrence_name,
)
from cjo_orchestration.domain.schedule import Occurrence
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.outbox import Outbox
from cjo_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument, Violations
from cjo_platform.limits import MAX_ID_LENGTH, check_batch
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.protobuf import struct_to_dict
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.status import OK, to_status_proto
from cjo_platform.telemetry import current_traceparent

DOMAIN = "orchestration.cjo"
MAX_TRACEPARENT_LENGTH = 64


def _raise_within(problems: Violations, prefix: str) -> None:
    if problems:
        raise InvalidArgument([FieldViolation(f"{prefix}.{v.field}", v.description)
                               for v in problems.items])


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


class OrchestrationServicer(pb_grpc.OrchestrationServiceServicer):
    def __init__(self, db: Database, requests: RequestLog, clock: Clock,
                 new_id: Callable[[], str], on_events: Callable[[], None],
                 content: ContentCatalog | None = None,
                 on_enrolled: Callable[[], None] | None = None,
                 outbox: Outbox | None = None) -> None:
        self.outbox = outbox  # facts of enrollments the Enroll RPC creates
        self.content = content  # asked which content keys exist before publishing
        self.on_enrolled = on_enrolled or (lambda: None)  # wakes the step worker
        self.db = db
        self.requests = requests
        self.clock = clock
        self.new_id = new_id
        self.on_events = on_events  # wakes the event worker

    # --- journeys ----------------------------------------------------------------------------

    async def CreateJourney(self, request: pb.CreateJourneyRequest,
                            context: grpc.aio.ServicerContext) -> pb.CreateJourneyResponse:
        workspace = current_workspace()
        draft = request.journey
        graph = graph_from_proto(draft)
        _raise_within(validate_shape(draft.display_name, graph), "journey")

        def create() -> pb.CreateJourneyResponse:
            now = self.clock.now()
            journey = domain.Journey(
                workspace_id=workspace, journey_id=self.new_id(),
                display_name=draft.display_name, state=domain.JourneyState.DRAFT, graph=graph,
                published_version=0, revision=1, create_time=now, update_time=now)
            with self.db.transaction() as session:
                def insert() -> pb.CreateJourneyResponse:
                    journey_store.insert(session, journey)
                    return pb.CreateJourneyResponse(journey=journey_to_proto(journey))

                return self.requests.once(
                    session, workspace_id=workspace, method="CreateJourney",
                    request_id=request.request_id, request=request,
                    response_type=pb.CreateJourneyResponse, compute=insert)

        return await self.db.run(create)

    async def GetJourney(self, request: pb.GetJourneyRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetJourneyResponse:
        journey_id = parse_journey_name(request.name)
        workspace = current_workspace()

        def read() -> domain.Journey:
            with self.db.transaction() as session:
                return journey_store.get(session, workspace, journey_id)

        return pb.GetJourneyResponse(journey=journey_to_proto(await self.db.run(read)))

    async def ListJourneys(self, request: pb.ListJourneysRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListJourneysResponse:
        size = page_size(request.page_size)
        after = _cursor(request.page_token)
        workspace = current_workspace()

        def read() -> list[domain.Journey]:
            with self.db.transaction() as session:
                return journey_store.page(session, workspace, size + 1, after)

        found = await self.db.run(read)
        page, more = found[:size], len(found) > size
        return pb.ListJourneysResponse(
            journeys=[journey_to_proto(j) for j in page],
            next_page_token=_token(page[-1].create_time, page[-1].journey_id) if more else "")

    async def UpdateJourney(self, request: pb.UpdateJourneyRequest,
                            context: grpc.aio.ServicerContext) -> pb.UpdateJourneyResponse:
        journey_id = parse_journey_name(request.journey.name, "journey.name")
        changes = _changes(request.journey, list(request.update_mask.paths))
        workspace = current_workspace()

        def update() -> pb.UpdateJourneyResponse:
            with self.db.transaction() as session:
                def apply() -> pb.UpdateJourneyResponse:
                    current = journey_store.get(session, workspace, journey_id, for_update=True)
                    changed = domain.apply_changes(current, changes, request.journey.etag,
                                                   self.clock.now())
                    _raise_within(validate_shape(changed.display_name, changed.graph),
                                  "journey")
                    journey_store.save(session, changed)
                    return pb.UpdateJourneyResponse(journey=journey_to_proto(changed))

                return self.requests.once(
                    session, workspace_id=workspace, method="UpdateJourney",
                    request_id=request.request_id, request=request,
                    response_type=pb.UpdateJourneyResponse, compute=apply)

        return await self.db.run(update)

    async def PublishJourney(self, request: pb.PublishJourneyRequest,
                             context: grpc.aio.ServicerContext) -> pb.PublishJourneyResponse:
        journey_id = parse_journey_name(request.name)
        workspace = current_workspace()
        missing: set[str] = set()
        if self.content is not None:
            def read_draft() -> domain.Journey:
                with self.db.transaction() as session:
                    return journey_store.get(session, workspace, journey_id)

            draft = await self.db.run(read_draft)
            keys = {n.action.content_key for n in draft.graph.nodes
                    if isinstance(n.action, domain.SendAction) and n.action.content_key}
            missing = await self.content.missing(workspace, keys)

        def publish() -> pb.PublishJourneyResponse:
            with self.db.transaction() as session:
                def freeze() -> pb.PublishJourneyResponse:
                    current = journey_store.get(session, workspace, journey_id, for_update=True)
                    domain.ensure_editable(current, "published")  # before listing problems
                    problems = validate_for_publish(current.display_name, current.graph,
                                                    missing, self.clock.now())
                    if problems:
                        raise InvalidArgument(
                            problems.items, reason="JOURNEY_NOT_PUBLISHABLE",
                            message=f"journey {journey_id} cannot be published: "
                                    + "; ".join(f"{v.field}: {v.description}"
                                                for v in problems.items))
                    published, version = domain.publish(current, self.clock.now())
                    journey_store.save(session, published)
                    journey_store.add_version(session, version)
                    schedule_store.after_publish(session, version, self.clock.now())
                    return pb.PublishJourneyResponse(journey=journey_to_proto(published))

                return self.requests.once(
                    session, workspace_id=workspace, method="PublishJourney",
                    request_id=request.request_id, request=request,
                    response_type=pb.PublishJourneyResponse, compute=freeze)

        return await self.db.run(publish)

    async def _lifecycle(self, request: Any, method: str, response_type: Any,
                         change: Callable[[domain.Journey, datetime], domain.Journey]) -> Any:
        journey_id = parse_journey_name(request.name)
        workspace = current_workspace()

        def run() -> Any:
            with self.db.transaction() as session:
                def apply() -> Any:
                    current = journey_store.get(session, workspace, journey_id, for_update=True)
                    now = self.clock.now()
                    changed = change(current, now)
                    if changed is not current:
                        journey_store.save(session, changed)
                        version = (changed.workspace_id, changed.journey_id,
                                   changed.published_version)
                        schedule_store.after_lifecycle(
                            session, changed,
                            journey_store.versions(session, [version]).get(version), now)
                    return response_type(journey=journey_to_proto(changed))

                return self.requests.once(
                    session, workspace_id=workspace, method=method,
                    request_id=request.request_id, request=request,
                    response_type=response_type, compute=apply)

        return await self.db.run(run)

    async def PauseJourney(self, request: pb.PauseJourneyRequest,
                           context: grpc.aio.ServicerContext) -> pb.PauseJourneyResponse:
        response: pb.PauseJourneyResponse = await self._lifecycle(
            request, "PauseJourney", pb.PauseJourneyResponse, domain.pause)
        return response

    async def ResumeJourney(self, request: pb.ResumeJourneyRequest,
                            context: grpc.aio.ServicerContext) -> pb.ResumeJourneyResponse:
        response: pb.ResumeJourneyResponse = await self._lifecycle(
            request, "ResumeJourney", pb.ResumeJourneyResponse, domain.resume)
        return response

    async def Enroll(self, request: pb.EnrollRequest,
                     context: grpc.aio.ServicerContext) -> pb.EnrollResponse:
        journey_id = parse_journey_name(request.journey, "journey")
        problems = Violations()
        problems.check(bool(request.profile_id), "profile_id", "is required")
        problems.check(len(request.profile_id) <= MAX_ID_LENGTH, "profile_id",
                       f"at most {MAX_ID_LENGTH} characters")
        problems.check(bool(request.request_id), "request_id",
                       "is required: it makes a retried Enroll enroll once")
        problems.raise_if_any()
        workspace = current_workspace()
        traceparent = current_traceparent()
        traceparent = traceparent if len(traceparent) <= MAX_TRACEPARENT_LENGTH else ""

        def enroll() -> pb.EnrollResponse:
            with self.db.transaction() as session:
                def apply() -> pb.EnrollResponse:
                    journey = journey_store.get(session, workspace, journey_id, for_update=True)
                    if journey.state is not domain.JourneyState.ACTIVE:
                        raise FailedPrecondition(
                            f"journey {journey_id} is {journey.state.value}; only an active "
                            "journey enrolls", reason="JOURNEY_NOT_ACTIVE")
                    graph = journey_store.versions(session, [
                        (workspace, journey_id, journey.published_version)])[
                        (workspace, journey_id, journey.published_version)]
                    # A profile merged away enrolls as its survivor; an erased one not at all.
                    profile_id = resolve_profile(
                        enrollment_store.retired_successors(
                            session, [(workspace, request.profile_id)]),
                        workspace, request.profile_id)
                    if not profile_id:
                        return pb.EnrollResponse(skip_reason="profile_erased")
                    key = (workspace, journey_id, profile_id)
                    now = self.clock.now()
                    skip = may_enter(graph, enrollment_store.history(session, [key]).get(key),
                                     now)
                    if skip:
                        return pb.EnrollResponse(skip_reason=skip)
                    enrollment, fact = new_enrollment(
                        workspace, self.new_id(), journey_id, journey.published_version, graph,
                        profile_id, struct_to_dict(request.profile_traits),
                        struct_to_dict(request.properties), f"enroll:{request.request_id}",
                        traceparent, now)
                    if not enrollment_store.insert_new(session, [enrollment]):
                        return pb.EnrollResponse(skip_reason="already_active")
                    if self.outbox is not None:
                        facts.publish(session, self.outbox, [fact])
                    return pb.EnrollResponse(enrollment=enrollment_to_proto(enrollment, []))

                return self.requests.once(
                    session, workspace_id=workspace, method="Enroll",
                    request_id=request.request_id, request=request,
                    response_type=pb.EnrollResponse, compute=apply)

        response = await self.db.run(enroll)
        if response.HasField("enrollment"):
            self.on_enrolled()
        return response

    async def ArchiveJourney(self, request: pb.ArchiveJourneyRequest,
                             context: grpc.aio.ServicerContext) -> pb.ArchiveJourneyResponse:
        journey_id = parse_journey_name(request.name)
        workspace = current_workspace()

        def archive() -> pb.ArchiveJourneyResponse:
            with self.db.transaction() as session:
                def stop() -> pb.ArchiveJourneyResponse:
                    current = journey_store.get(session, workspace, journey_id, for_update=True)
                    now = self.clock.now()
                    archived = domain.archive(current, now)
                    if archived is not current:
                        journey_store.save(session, archived)
                        schedule_store.after_lifecycle(session, archived, None, now)
                    return pb.ArchiveJourneyResponse(journey=journey_to_proto(archived))

                return self.requests.once(
                    session, workspace_id=workspace, method="ArchiveJourney",
                    request_id=request.request_id, request=request,
                    response_type=pb.ArchiveJourneyResponse, compute=stop)

        return await self.db.run(archive)

    # --- engine ------------------------------------------------------------------------------

    async def HandleEvents(self, request: pb.HandleEventsRequest,
                           context: grpc.aio.ServicerContext) -> pb.HandleEventsResponse:
        check_batch(request.events, "events")
        workspace = current_workspace()
        request_traceparent = current_traceparent()
        now = self.clock.now()
        results: list[pb.HandleEventResult] = []
        rows: list[dict[str, object]] = []
        first_of: dict[str, int] = {}  # event id -> index of its first valid occurrence
        for index, item in enumerate(request.events):
            problems = validate_forwarded_event(item.event_id, item.profile_id, item.event.name)
            if problems:
                error = InvalidArgument(problems.items).within(f"events[{index}]")
                results.append(pb.HandleEventResult(status=to_status_proto(error, DOMAIN)))
                continue
            results.append(pb.HandleEventResult(status=OK))
            if item.event_id in first_of:
                results[-1].duplicate = True
                continue
            first_of[item.event_id] = index
            traceparent = item.traceparent or request_traceparent
            rows.append({
                "workspace_id": workspace, "event_id": item.event_id,
                "profile_id": item.profile_id, "event_name": item.event.name,
                "properties": struct_to_dict(item.event.properties),
                "traits": struct_to_dict(item.profile_traits),
                # A malformed traceparent only costs the trace link, never the event.
                "traceparent": traceparent if len(traceparent) <= MAX_TRACEPARENT_LENGTH else "",
                "receive_time": now, "processed": False,
            })

        def store() -> set[str]:
            with self.db.transaction() as session:
                return enrollment_store.receive(session, rows)

        new = await self.db.run(store) if rows else set()
        for event_id, index in first_of.items():
            results[index].duplicate = event_id not in new
        if new:
            self.on_events()
        return pb.HandleEventsResponse(results=results)

    async def GetEnrollment(self, request: pb.GetEnrollmentRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetEnrollmentResponse:
        journey_id, enrollment_id = parse_enrollment_name(request.name)
        workspace = current_workspace()

        def read() -> tuple[Enrollment, list[Step]]:
            with self.db.transaction() as session:
                enrollment = enrollment_store.get(session, workspace, journey_id, enrollment_id)
                steps = enrollment_store.steps_of(session, workspace, [enrollment_id])
                return enrollment, steps.get(enrollment_id, [])

        enrollment, steps = await self.db.run(read)
        return pb.GetEnrollmentResponse(enrollment=enrollment_to_proto(enrollment, steps))

    async def ListEnrollments(self, request: pb.ListEnrollmentsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListEnrollmentsResponse:
        journey_id = parse_journey_name(request.parent, "parent")
        size = page_size(request.page_size)
        listing = f"{journey_id}/{request.profile_id}"
        before = _cursor(request.page_token, listing)
        workspace = current_workspace()

        def read() -> tuple[list[Enrollment], dict[str, list[Step]]]:
            with self.db.transaction() as session:
                journey_store.get(session, workspace, journey_id)  # NOT_FOUND for a bad parent
                found = enrollment_store.page(session, workspace, journey_id,
                                              request.profile_id, size + 1, before)
                steps = enrollment_store.steps_of(session, workspace,
                                                  [e.enrollment_id for e in found[:size]])
                return found, steps

        found, steps = await self.db.run(read)
        page, more = found[:size], len(found) > size
        return pb.ListEnrollmentsResponse(
            enrollments=[enrollment_to_proto(e, steps.get(e.enrollment_id, [])) for e in page],
            next_page_token=(_token(page[-1].create_time, page[-1].enrollment_id, listing)
                             if more else ""))

    # --- scheduled occurrences -----------------------------------------------------------------

    async def GetScheduleOccurrence(
            self, request: pb.GetScheduleOccurrenceRequest,
            context: grpc.aio.ServicerContext) -> pb.GetScheduleOccurrenceResponse:
        journey_id, version, fire_time = parse_occurrence_name(request.name)
        workspace = current_workspace()

        def read() -> Occurrence:
            with self.db.transaction() as session:
                return schedule_store.get(session, workspace, journey_id, version, fire_time)

        return pb.GetScheduleOccurrenceResponse(
            occurrence=occurrence_to_proto(await self.db.run(read)))

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

        def read() -> list[Occurrence]:
            with self.db.transaction() as session:
                journey_store.get(session, workspace, journey_id)  # NOT_FOUND for a bad parent
                return schedule_store.page(session, workspace, journey_id, state, size + 1,
                                           before)

        found = await self.db.run(read)
        page, more = found[:size], len(found) > size
        return pb.ListScheduleOccurrencesResponse(
            occurrences=[occurrence_to_proto(o) for o in page],
            next_page_token=(_token(page[-1].fire_time, str(page[-1].journey_version), listing)
                             if more else ""))
