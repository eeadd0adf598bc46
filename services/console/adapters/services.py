"""The console's only way to data: the services' public gRPC APIs, called with the signed-in
person's API key, exactly as any client of cjo would."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import reports_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as decisioning_pb
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo_client import Client

TIMEOUT = 10.0
# A profile page shows at most this many of the person's enrollments, the newest.
MAX_ENROLLMENTS = 200


class Services:
    """Typed calls through one signed-in person's client (its channels live as long as their
    session)."""

    def __init__(self, client: Client) -> None:
        self._meta = client.metadata
        self.identity: Any = client.identity
        self.orchestration: Any = client.orchestration
        self.delivery: Any = client.delivery
        self.analytics: Any = client.analytics
        self.decisioning: Any = client.decisioning

    async def _call(self, method: Any, request: Any) -> Any:
        return await method(request, metadata=self._meta, timeout=TIMEOUT)

    # Orchestration
    async def journeys(self) -> list[Any]:
        found: list[Any] = []
        token = ""
        while True:
            reply = await self._call(self.orchestration.ListJourneys,
                                     orchestration_pb.ListJourneysRequest(page_size=1000,
                                                                          page_token=token))
            found.extend(reply.journeys)
            token = reply.next_page_token
            if not token or len(found) >= 5000:
                return found

    async def journey(self, journey_id: str) -> Any:
        return (await self._call(self.orchestration.GetJourney, orchestration_pb.GetJourneyRequest(
            name=f"journeys/{journey_id}"))).journey

    async def change_journey(self, journey_id: str, action: str) -> Any:
        """Pause, resume or archive; each press is its own request (a fresh request id)."""
        name, request_id = f"journeys/{journey_id}", str(uuid.uuid4())
        if action == "pause":
            return (await self._call(self.orchestration.PauseJourney,
                                     orchestration_pb.PauseJourneyRequest(
                                         name=name, request_id=request_id))).journey
        if action == "resume":
            return (await self._call(self.orchestration.ResumeJourney,
                                     orchestration_pb.ResumeJourneyRequest(
                                         name=name, request_id=request_id))).journey
        if action == "archive":
            return (await self._call(self.orchestration.ArchiveJourney,
                                     orchestration_pb.ArchiveJourneyRequest(
                                         name=name, request_id=request_id))).journey
        raise ValueError(action)

    async def may_change_journeys(self) -> bool:
        """Whether the key may pause, resume and archive: asks to pause a journey that cannot
        exist. The scope check comes first, so a key without the scope is refused
        (PERMISSION_DENIED) and one with it hears NOT_FOUND; nothing is changed either way."""
        try:
            await self._call(self.orchestration.PauseJourney, orchestration_pb.PauseJourneyRequest(
                name=f"journeys/{uuid.uuid4()}", request_id=str(uuid.uuid4())))
        except grpc.aio.AioRpcError as exc:
            return bool(exc.code() != grpc.StatusCode.PERMISSION_DENIED)
        return True

    async def enrollments(self, profile_id: str) -> list[Any]:
        """The person's enrollments in every journey, newest first (at most MAX_ENROLLMENTS):
        one listing across journeys (parent ``journeys/-``), whatever their number."""
        found: list[Any] = []
        token = ""
        while len(found) < MAX_ENROLLMENTS:
            reply = await self._call(
                self.orchestration.ListEnrollments, orchestration_pb.ListEnrollmentsRequest(
                    parent="journeys/-", profile_id=profile_id,
                    page_size=min(100, MAX_ENROLLMENTS - len(found)), page_token=token))
            found.extend(reply.enrollments)
            token = reply.next_page_token
            if not token:
                break
        return found

    # Analytics
    async def funnel(self, journey_id: str) -> Any:
        """The journey's funnel; empty while analytics has no fact of it (it answers
        INVALID_ARGUMENT on `journey` then: a journey no one entered yet is not an error here)."""
        try:
            return await self._call(self.analytics.GetJourneyFunnel,
                                    reports_pb2.GetJourneyFunnelRequest(
                                        journey=f"journeys/{journey_id}"))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            return reports_pb2.GetJourneyFunnelResponse(journey=f"journeys/{journey_id}")

    async def experiments(self) -> list[Any]:
        reply = await self._call(self.analytics.ListExperiments,
                                 reports_pb2.ListExperimentsRequest(page_size=200))
        return list(reply.experiments)

    async def experiment(self, experiment_id: str) -> Any:
        return await self._call(self.analytics.GetExperimentResults,
                                reports_pb2.GetExperimentResultsRequest(
                                    experiment_id=experiment_id))

    async def journey_report(self, journey_id: str) -> Any:
        return (await self._call(self.analytics.GetJourneyReport,
                                 analytics_pb.GetJourneyReportRequest(
                                     journey=f"journeys/{journey_id}"))).report

    # Identity
    async def profile(self, profile_id: str) -> Any:
        return (await self._call(self.identity.GetProfile, identity_pb.GetProfileRequest(
            name=f"profiles/{profile_id}"))).profile

    async def lookup(self, identifier_type: str, value: str) -> Any:
        return (await self._call(self.identity.LookupProfile, identity_pb.LookupProfileRequest(
            identifier=event_pb2.Identifier(type=identifier_type, value=value)))).profile

    async def profiles(self) -> list[Any]:
        reply = await self._call(self.identity.ListProfiles,
                                 identity_pb.ListProfilesRequest(page_size=50))
        return list(reply.profiles)

    # Delivery
    async def messages(self, profile_id: str) -> list[Any]:
        reply = await self._call(self.delivery.ListMessages, delivery_pb.ListMessagesRequest(
            profile_id=profile_id, page_size=100))
        return list(reply.messages)

    async def message(self, message_id: str) -> Any:
        return (await self._call(self.delivery.GetMessage, delivery_pb.GetMessageRequest(
            name=f"messages/{message_id}"))).message

    # Decisioning
    async def decision_points(self) -> list[Any]:
        reply = await self._call(self.decisioning.ListDecisionPoints,
                                 decisioning_pb.ListDecisionPointsRequest(page_size=1000))
        return list(reply.decision_points)

    async def decision_report(self, key: str) -> Any:
        return await self._call(self.decisioning.GetDecisionReport,
                                decisioning_pb.GetDecisionReportRequest(
                                    decision_point=f"decisionPoints/{key}"))


def is_unauthenticated(exc: grpc.aio.AioRpcError) -> bool:
    """The key is no longer accepted (revoked, rotated out): the session ends. A key refused
    one call for its scope (PERMISSION_DENIED) stays signed in: that call gets a 403."""
    return bool(exc.code() == grpc.StatusCode.UNAUTHENTICATED)
