"""Scopes of API keys checked on every RPC of every service, through real gRPC servers of all six
services authenticating through identity; revocation and rotation reaching the other services'
key caches."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from identity_support import Recorder, event, rpc_error

import cjo
from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.common.v1 import dead_letter_service_pb2 as dead_pb
from cjo.common.v1 import dead_letter_service_pb2_grpc as dead_grpc
from cjo.content.v1 import content_service_pb2 as content_pb
from cjo.content.v1 import content_service_pb2_grpc as content_grpc
from cjo.decisioning.v1 import decisioning_service_pb2 as decisioning_pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as decisioning_grpc
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo.identity.v1 import workspace_pb2
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import orchestration_service_pb2 as orchestration_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orchestration_grpc
from cjo_analytics.bootstrap import build as build_analytics
from cjo_content.bootstrap import build as build_content
from cjo_decisioning.bootstrap import build as build_decisioning
from cjo_delivery.bootstrap import build as build_delivery
from cjo_identity.bootstrap import build as build_identity
from cjo_orchestration.bootstrap import build as build_orchestration
from cjo_platform.config import Env
from cjo_platform.rpc.scopes import REQUIRED_SCOPES
from support import (
    SERVICE_TOKEN,
    Backend,
    as_service,
    bearer,
    eventually,
    free_port,
    refused_within,
    serving,
    settings_for,
)

Metadata = tuple[tuple[str, str], ...]


def test_every_rpc_of_every_service_needs_a_named_scope() -> None:
    # Every generated service descriptor, so an RPC added to any proto fails here until the
    # table says which scope it needs (unlisted methods need ADMIN, which is safe but rarely
    # right).
    methods: set[str] = set()
    for module in pkgutil.walk_packages(cjo.__path__, "cjo."):
        if not module.name.endswith("_pb2"):
            continue
        descriptor = importlib.import_module(module.name).DESCRIPTOR
        for service in descriptor.services_by_name.values():
            methods.update(f"/{service.full_name}/{m.name}" for m in service.methods)
    assert "/cjo.decisioning.v1.DecisioningService/Decide" in methods
    assert "/cjo.common.v1.DeadLetterService/PurgeDeadLetters" in methods
    assert methods - REQUIRED_SCOPES.keys() == set(), "RPCs without a scope"
    assert REQUIRED_SCOPES.keys() - methods == set(), "scopes of RPCs that do not exist"


@dataclass
class Cluster:
    """All six services on one backend, each authenticating keys through identity."""

    channels: dict[str, grpc.aio.Channel]

    def stub(self, service: str, factory: Callable[[grpc.aio.Channel], Any]) -> Any:
        return factory(self.channels[service])


@asynccontextmanager
async def cluster(backend: Backend, recorder: Recorder, cache_seconds: str = "30"
                  ) -> AsyncIterator[Cluster]:
    identity_port = free_port()
    identity_target = f"127.0.0.1:{identity_port}"
    nowhere = f"127.0.0.1:{free_port()}"
    peers = {"CJO_IDENTITY_TARGET": identity_target, "CJO_CONTENT_TARGET": nowhere,
             "CJO_DELIVERY_TARGET": nowhere, "CJO_ANALYTICS_TARGET": nowhere,
             "CJO_DECISIONING_TARGET": nowhere, "CJO_ORCHESTRATION_TARGET": recorder.address,
             "CJO_API_KEY_CACHE_SECONDS": cache_seconds}
    apps = {
        "identity": build_identity(settings_for(
            "identity", backend, **{**peers, "CJO_IDENTITY_PORT": str(identity_port)}), Env({})),
        "content": build_content(settings_for("content", backend, **peers), Env({})),
        "orchestration": build_orchestration(settings_for(
            "orchestration", backend, **{**peers, "CJO_ORCHESTRATION_TARGET": nowhere}), Env({})),
        "delivery": build_delivery(settings_for("delivery", backend, **peers), Env({
            "CJO_SMTP_PORT": str(free_port()), "CJO_DELIVERY_TRACKING_PORT": "0"})),
        "analytics": build_analytics(settings_for("analytics", backend, **peers), Env({})),
        "decisioning": build_decisioning(settings_for("decisioning", backend, **peers), Env({})),
    }
    async with AsyncExitStack() as stack:
        channels = {}
        for name, app in apps.items():
            address = await stack.enter_async_context(serving(app))
            channels[name] = await stack.enter_async_context(grpc.aio.insecure_channel(address))
        yield Cluster(channels)


Call = Callable[[Cluster, Metadata], Awaitable[object]]

# (what, the scope it needs, the key scopes that may call it) — written out, not derived from
# the table under test.
ALL = {"admin", "write", "read", "ingest"}
CALLS: list[tuple[str, str, set[str], Call]] = [
    ("identity IngestEvents", "ingest", {"admin", "write", "ingest"},
     lambda c, m: c.stub("identity", identity_grpc.IdentityServiceStub).IngestEvents(
         identity_pb.IngestEventsRequest(events=[event("m1", ("user_id", "u1"))]), metadata=m)),
    ("identity ListProfiles", "read", {"admin", "write", "read"},
     lambda c, m: c.stub("identity", identity_grpc.IdentityServiceStub).ListProfiles(
         identity_pb.ListProfilesRequest(), metadata=m)),
    ("identity CreateSegment", "write", {"admin", "write"},
     lambda c, m: c.stub("identity", identity_grpc.IdentityServiceStub).CreateSegment(
         identity_pb.CreateSegmentRequest(), metadata=m)),
    ("identity UpdateIdentitySettings", "admin", {"admin"},
     lambda c, m: c.stub("identity", identity_grpc.IdentityServiceStub).UpdateIdentitySettings(
         identity_pb.UpdateIdentitySettingsRequest(), metadata=m)),
    ("identity CreateApiKey", "admin", {"admin"},
     lambda c, m: c.stub("identity", ws_grpc.WorkspaceServiceStub).CreateApiKey(
         ws_pb.CreateApiKeyRequest(display_name="more"), metadata=m)),
    ("identity GetWorkspace", "read", {"admin", "write", "read"},
     lambda c, m: c.stub("identity", ws_grpc.WorkspaceServiceStub).GetWorkspace(
         ws_pb.GetWorkspaceRequest(), metadata=m)),
    ("content ListContentItems", "read", {"admin", "write", "read"},
     lambda c, m: c.stub("content", content_grpc.ContentServiceStub).ListContentItems(
         content_pb.ListContentItemsRequest(), metadata=m)),
    ("content CreateContentItem", "write", {"admin", "write"},
     lambda c, m: c.stub("content", content_grpc.ContentServiceStub).CreateContentItem(
         content_pb.CreateContentItemRequest(), metadata=m)),
    ("content UpdateContentSettings", "admin", {"admin"},
     lambda c, m: c.stub("content", content_grpc.ContentServiceStub).UpdateContentSettings(
         content_pb.UpdateContentSettingsRequest(), metadata=m)),
    ("orchestration ListJourneys", "read", {"admin", "write", "read"},
     lambda c, m: c.stub("orchestration", orchestration_grpc.OrchestrationServiceStub)
     .ListJourneys(orchestration_pb.ListJourneysRequest(), metadata=m)),
    ("orchestration PauseJourney", "write", {"admin", "write"},
     lambda c, m: c.stub("orchestration", orchestration_grpc.OrchestrationServiceStub)
     .PauseJourney(orchestration_pb.PauseJourneyRequest(name="journeys/none"), metadata=m)),
    ("delivery ListMessages", "read", {"admin", "write", "read"},
     lambda c, m: c.stub("delivery", delivery_grpc.DeliveryServiceStub).ListMessages(
         delivery_pb.ListMessagesRequest(), metadata=m)),
    ("delivery ListProviders", "admin", {"admin"},
     lambda c, m: c.stub("delivery", delivery_grpc.DeliveryServiceStub).ListProviders(
         delivery_pb.ListProvidersRequest(), metadata=m)),
    ("delivery PurgeDeadLetters", "admin", {"admin"},
     lambda c, m: c.stub("delivery", dead_grpc.DeadLetterServiceStub).PurgeDeadLetters(
         dead_pb.PurgeDeadLettersRequest(), metadata=m)),
    ("analytics GetJourneyReport", "read", {"admin", "write", "read"},
     lambda c, m: c.stub("analytics", analytics_grpc.AnalyticsServiceStub).GetJourneyReport(
         analytics_pb.GetJourneyReportRequest(journey="journeys/j1"), metadata=m)),
    ("identity DeleteSegment", "write", {"admin", "write"},
     lambda c, m: c.stub("identity", identity_grpc.IdentityServiceStub).DeleteSegment(
         identity_pb.DeleteSegmentRequest(name="segments/none"), metadata=m)),
    ("decisioning ListActions", "read", {"admin", "write", "read"},
     lambda c, m: c.stub("decisioning", decisioning_grpc.DecisioningServiceStub).ListActions(
         decisioning_pb.ListActionsRequest(), metadata=m)),
    ("decisioning CreateAction", "write", {"admin", "write"},
     lambda c, m: c.stub("decisioning", decisioning_grpc.DecisioningServiceStub).CreateAction(
         decisioning_pb.CreateActionRequest(), metadata=m)),
    ("decisioning Decide", "write", {"admin", "write"},
     lambda c, m: c.stub("decisioning", decisioning_grpc.DecisioningServiceStub).Decide(
         decisioning_pb.DecideRequest(), metadata=m)),
]


def _scope_refusal(error: grpc.aio.AioRpcError) -> dict[str, str] | None:
    """The ErrorInfo metadata of a SCOPE_REQUIRED refusal, None for any other answer."""
    if error.code() != grpc.StatusCode.PERMISSION_DENIED:
        return None
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.reason == "SCOPE_REQUIRED":
            return dict(info.metadata)
    return None


async def test_each_scope_is_allowed_and_denied_on_every_service(
        backend: Backend, recorder: Recorder) -> None:
    async with cluster(backend, recorder) as running:
        keys_stub = running.stub("identity", ws_grpc.WorkspaceServiceStub)
        acme = await keys_stub.CreateWorkspace(ws_pb.CreateWorkspaceRequest(
            workspace_id="acme"), metadata=bearer(SERVICE_TOKEN))
        admin = bearer(acme.api_key.secret)  # a key from before scopes: ADMIN
        keys = {"admin": admin}
        for scope in ("write", "read", "ingest"):
            created = await keys_stub.CreateApiKey(ws_pb.CreateApiKeyRequest(
                display_name=scope,
                scope=workspace_pb2.ApiKeyScope.Value(f"API_KEY_SCOPE_{scope.upper()}")),
                metadata=admin)
            keys[scope] = bearer(created.api_key.secret)

        outcomes: dict[tuple[str, str], str] = {}
        for what, needed, _, call in CALLS:
            for scope, metadata in [*keys.items(), ("service token", as_service("acme"))]:
                try:
                    await call(running, metadata)
                    refusal = None
                except grpc.aio.AioRpcError as exc:
                    # Past the scope check, a call may still fail (a request left empty), but
                    # never for who is calling.
                    assert exc.code() != grpc.StatusCode.UNAUTHENTICATED, (what, scope, exc)
                    refusal = _scope_refusal(exc)
                    if refusal is None:
                        assert exc.code() != grpc.StatusCode.PERMISSION_DENIED, (what, exc)
                if refusal is None:
                    outcomes[(what, scope)] = "allowed"
                else:
                    assert refusal["scope"] == needed, (what, refusal)
                    assert refusal["key_scope"] == scope
                    outcomes[(what, scope)] = "denied"
        expected = {(what, scope): "allowed" if scope in allowed else "denied"
                    for what, _, allowed, _ in CALLS for scope in ALL}
        # Service-to-service calls carry the token, not a key: never scoped.
        expected.update({(what, "service token"): "allowed" for what, *_ in CALLS})
        assert outcomes == expected

        # A stream is checked like a unary call.
        inbox = running.stub("delivery", delivery_grpc.DeliveryServiceStub).SubscribeInbox(
            delivery_pb.SubscribeInboxRequest(profile_id="p1"), metadata=keys["ingest"])
        with_ingest = await rpc_error(inbox.read())
        assert _scope_refusal(with_ingest) == {
            "scope": "read", "key_scope": "ingest",
            "method": "/cjo.delivery.v1.DeliveryService/SubscribeInbox"}


async def _refused(call: Awaitable[object]) -> bool:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
        return True
    return False


async def test_revocation_and_rotation_reach_every_service(
        backend: Backend, recorder: Recorder) -> None:
    # Replicas trust a verified key for CJO_API_KEY_CACHE_SECONDS (short here, 30 s by default).
    bound = 1.0
    async with cluster(backend, recorder, cache_seconds=str(bound)) as running:
        keys_stub = running.stub("identity", ws_grpc.WorkspaceServiceStub)
        acme = await keys_stub.CreateWorkspace(ws_pb.CreateWorkspaceRequest(
            workspace_id="acme"), metadata=bearer(SERVICE_TOKEN))
        admin = bearer(acme.api_key.secret)
        doomed = (await keys_stub.CreateApiKey(ws_pb.CreateApiKeyRequest(
            display_name="leaked", scope=workspace_pb2.API_KEY_SCOPE_READ),
            metadata=admin)).api_key
        reports = running.stub("analytics", analytics_grpc.AnalyticsServiceStub)
        content = running.stub("content", content_grpc.ContentServiceStub)

        def report(metadata: Metadata) -> Awaitable[object]:
            return reports.GetJourneyReport(
                analytics_pb.GetJourneyReportRequest(journey="journeys/j1"), metadata=metadata)

        def items(metadata: Metadata) -> Awaitable[object]:
            return content.ListContentItems(content_pb.ListContentItemsRequest(),
                                            metadata=metadata)

        await report(bearer(doomed.secret))
        await items(bearer(doomed.secret))  # both caches trust the key now
        await keys_stub.RevokeApiKey(ws_pb.RevokeApiKeyRequest(name=doomed.name),
                                     metadata=admin)
        started = time.monotonic()

        async def revoked_everywhere() -> bool:
            return (await _refused(report(bearer(doomed.secret)))
                    and await _refused(items(bearer(doomed.secret))))

        await refused_within(bound, started, revoked_everywhere)
        await report(admin)


async def test_a_rotated_out_secret_is_not_trusted_past_its_expiry_by_any_cache(
        backend: Backend, recorder: Recorder) -> None:
    # The default bound of 30 seconds: a cache must end the old secret at its expiry, not when
    # its entry runs out.
    async with cluster(backend, recorder) as running:
        keys_stub = running.stub("identity", ws_grpc.WorkspaceServiceStub)
        acme = await keys_stub.CreateWorkspace(ws_pb.CreateWorkspaceRequest(
            workspace_id="acme"), metadata=bearer(SERVICE_TOKEN))
        admin = bearer(acme.api_key.secret)
        reports = running.stub("analytics", analytics_grpc.AnalyticsServiceStub)

        def report(metadata: Metadata) -> Awaitable[object]:
            return reports.GetJourneyReport(
                analytics_pb.GetJourneyReportRequest(journey="journeys/j1"), metadata=metadata)

        rotated = (await keys_stub.RotateApiKey(ws_pb.RotateApiKeyRequest(
            name=acme.api_key.name, overlap=duration_pb2.Duration(seconds=2)),
            metadata=admin)).api_key
        started = asyncio.get_running_loop().time()
        await report(admin)  # the old secret, cached by analytics with its expiry
        await report(bearer(rotated.secret))
        await eventually(lambda: _refused(report(admin)), timeout=10)
        assert asyncio.get_running_loop().time() - started < 10
        await report(bearer(rotated.secret))
