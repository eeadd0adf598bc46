"""Every mutating OrchestrationService RPC with a ``request_id`` answers concurrent repeats of
one request with the first answer and acts once, over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from orchestration_support import ENGINE_ENV, SeededIdentity, fake_server

from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as pb_grpc
from cjo_orchestration.bootstrap import build as build_orchestration
from cjo_platform.config import Env
from support import (
    Backend,
    as_service,
    free_port,
    same_answer_to_concurrent_repeats,
    serving,
    settings_for,
)

WS = "ws-once"
META = as_service(WS)
Stub = pb_grpc.OrchestrationServiceStub


@asynccontextmanager
async def orchestration(backend: Backend) -> AsyncIterator[Stub]:
    """Orchestration with an identity stand-in that knows every profile (Enroll asks it); its
    other peers point at ports nothing listens on (these journeys send nothing, so publishing
    asks content nothing)."""
    peers = {f"CJO_{name.upper()}_TARGET": f"127.0.0.1:{free_port()}"
             for name in ("content", "delivery", "analytics")}
    async with fake_server(SeededIdentity(lambda profile_id: {}),
                           identity_grpc.add_IdentityServiceServicer_to_server,
                           free_port()) as identity:
        app = build_orchestration(
            settings_for("orchestration", backend, CJO_IDENTITY_TARGET=identity, **peers),
            Env(ENGINE_ENV))
        async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
            yield pb_grpc.OrchestrationServiceStub(channel)  # type: ignore[no-untyped-call]


def draft(name: str = "Welcome") -> journey_pb2.Journey:
    """Enrolled through Enroll only; ends at once."""
    return journey_pb2.Journey(display_name=name, api_trigger=journey_pb2.ApiTrigger(),
                               entry_node_id="done",
                               nodes=[journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])


async def created(stub: Stub) -> journey_pb2.Journey:
    reply = await stub.CreateJourney(pb.CreateJourneyRequest(journey=draft()), metadata=META)
    return reply.journey


async def active(stub: Stub) -> journey_pb2.Journey:
    journey = await created(stub)
    reply = await stub.PublishJourney(pb.PublishJourneyRequest(name=journey.name), metadata=META)
    return reply.journey


async def paused(stub: Stub) -> journey_pb2.Journey:
    journey = await active(stub)
    reply = await stub.PauseJourney(pb.PauseJourneyRequest(name=journey.name), metadata=META)
    return reply.journey


async def journeys(stub: Stub) -> list[journey_pb2.Journey]:
    return list((await stub.ListJourneys(pb.ListJourneysRequest(), metadata=META)).journeys)


async def one_journey(stub: Stub) -> journey_pb2.Journey:
    [journey] = await journeys(stub)
    return journey


# Each case: the journey the call starts from (None: none), the repeated call and request, and
# what must hold once afterwards, given the answer.
Setup = Callable[[Stub], Awaitable[journey_pb2.Journey]] | None
Call = Callable[[Stub, journey_pb2.Journey | None], tuple[Callable[..., Any], Any]]
Effect = Callable[[Stub, Any, journey_pb2.Journey | None], Awaitable[None]]


async def one_created(stub: Stub, answer: Any, before: journey_pb2.Journey | None) -> None:
    assert [j.name for j in await journeys(stub)] == [answer.journey.name]


async def changed_once(stub: Stub, answer: Any, before: journey_pb2.Journey | None) -> None:
    assert before is not None
    now = await one_journey(stub)
    # Each change bumps the etag once: the repeats changed nothing more.
    assert int(now.etag.strip('"')) == int(before.etag.strip('"')) + 1
    assert (now.etag, now.state, now.published_version) == (
        answer.journey.etag, answer.journey.state, answer.journey.published_version)


async def enrolled_once(stub: Stub, answer: Any, before: journey_pb2.Journey | None) -> None:
    assert before is not None and answer.enrollment.profile_id == "ada"
    reply = await stub.ListEnrollments(pb.ListEnrollmentsRequest(parent=before.name),
                                       metadata=META)
    assert [e.name for e in reply.enrollments] == [answer.enrollment.name]


CASES: dict[str, tuple[Setup, Call, Effect]] = {
    "CreateJourney": (None, lambda s, j: (s.CreateJourney, pb.CreateJourneyRequest(
        journey=draft(), request_id="r-create")), one_created),
    "UpdateJourney": (created, lambda s, j: (s.UpdateJourney, pb.UpdateJourneyRequest(
        journey=journey_pb2.Journey(name=j.name, display_name="Renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        request_id="r-update")), changed_once),
    "PublishJourney": (created, lambda s, j: (s.PublishJourney, pb.PublishJourneyRequest(
        name=j.name, request_id="r-publish")), changed_once),
    "PauseJourney": (active, lambda s, j: (s.PauseJourney, pb.PauseJourneyRequest(
        name=j.name, request_id="r-pause")), changed_once),
    "ResumeJourney": (paused, lambda s, j: (s.ResumeJourney, pb.ResumeJourneyRequest(
        name=j.name, request_id="r-resume")), changed_once),
    "ArchiveJourney": (active, lambda s, j: (s.ArchiveJourney, pb.ArchiveJourneyRequest(
        name=j.name, request_id="r-archive")), changed_once),
    "Enroll": (active, lambda s, j: (s.Enroll, pb.EnrollRequest(
        journey=j.name, profile_id="ada", request_id="r-enroll")), enrolled_once),
}


@pytest.mark.parametrize("method", sorted(CASES))
async def test_concurrent_repeats_of_a_request_get_the_first_answer(
        backend: Backend, method: str) -> None:
    setup, call, effect = CASES[method]
    async with orchestration(backend) as stub:
        before = await setup(stub) if setup is not None else None
        rpc, request = call(stub, before)
        answer = await same_answer_to_concurrent_repeats(rpc, request, META)
        await effect(stub, answer, before)
        # A later repeat still gets the first answer, however the journey changed since.
        name = before.name if before is not None else answer.journey.name
        await stub.ArchiveJourney(pb.ArchiveJourneyRequest(name=name), metadata=META)
        assert await rpc(request, metadata=META) == answer
