"""WorkspaceService and API key authentication over a real gRPC server, on both backends."""

from __future__ import annotations

import time

import grpc
from grpc_status import rpc_status
from identity_support import Identity, Recorder, event, rpc_error
from sqlalchemy import select

from cjo.analytics.v1 import analytics_service_pb2 as analytics_pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_analytics.bootstrap import build as build_analytics
from cjo_identity.adapters.tables import api_keys, request_log
from cjo_identity.bootstrap import build
from cjo_platform.config import Env
from cjo_platform.rpc.status import field_violations
from support import (
    SERVICE_TOKEN,
    Backend,
    as_service,
    bearer,
    refused_within,
    serving,
    settings_for,
)


async def test_creating_a_workspace_needs_the_service_token(identity: Identity) -> None:
    create = ws_pb.CreateWorkspaceRequest(workspace_id="acme", display_name="Acme",
                                          request_id="r-1")
    anonymous = await rpc_error(identity.workspaces.CreateWorkspace(create))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED

    first = await identity.workspaces.CreateWorkspace(create, metadata=bearer(SERVICE_TOKEN))
    assert first.workspace.name == "workspaces/acme"
    assert first.api_key.secret.startswith(f"cjo_{first.api_key.key_id}_")

    as_key_holder = await rpc_error(identity.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="other"), metadata=bearer(first.api_key.secret)))
    assert as_key_holder.code() == grpc.StatusCode.PERMISSION_DENIED

    # A retry returns the same workspace and key, but never the secret again.
    repeat = await identity.workspaces.CreateWorkspace(create, metadata=bearer(SERVICE_TOKEN))
    assert repeat.workspace == first.workspace
    assert repeat.api_key.key_id == first.api_key.key_id
    assert repeat.api_key.secret == ""

    taken = await rpc_error(identity.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="acme"), metadata=bearer(SERVICE_TOKEN)))
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    reused = await rpc_error(identity.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="acme-2", request_id="r-1"),
        metadata=bearer(SERVICE_TOKEN)))
    assert reused.code() == grpc.StatusCode.FAILED_PRECONDITION
    bad = await rpc_error(identity.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(workspace_id="Acme!"), metadata=bearer(SERVICE_TOKEN)))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "workspace_id" in field_violations(rpc_status.from_call(bad))

    def stored_bytes() -> list[bytes]:
        with identity.app.db.transaction() as session:
            responses = session.execute(select(request_log.c.response)).scalars().all()
            hashes = session.execute(select(api_keys.c.secret_hash)).scalars().all()
        return [*responses, *(h.encode() for h in hashes)]

    stored = await identity.app.db.run(stored_bytes)
    assert stored and not any(first.api_key.secret.encode() in blob for blob in stored)


async def test_a_workspace_key_authenticates_its_calls_and_only_those(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    ingest = pb.IngestEventsRequest(events=[event("m1", ("user_id", "u1"))])
    accepted = await identity.events.IngestEvents(ingest, metadata=acme)
    assert accepted.results[0].status.code == 0

    secret = acme[0][1].removeprefix("Bearer ")
    key_id = secret.split("_")[1]
    for metadata in [(), bearer("not-a-key"), bearer(f"cjo_{key_id}_wrong-secret"),
                     bearer(f"cjo_000000000000_{secret.split('_', 2)[2]}")]:
        refused = await rpc_error(identity.events.IngestEvents(ingest, metadata=metadata))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED, metadata

    # Other services resolve keys through identity, with the service token only.
    resolved = await identity.workspaces.AuthenticateApiKey(
        ws_pb.AuthenticateApiKeyRequest(secret=secret), metadata=bearer(SERVICE_TOKEN))
    assert (resolved.workspace_id, resolved.key_id) == ("acme", key_id)
    wrong = await rpc_error(identity.workspaces.AuthenticateApiKey(
        ws_pb.AuthenticateApiKeyRequest(secret=f"cjo_{key_id}_wrong"),
        metadata=bearer(SERVICE_TOKEN)))
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    not_a_service = await rpc_error(identity.workspaces.AuthenticateApiKey(
        ws_pb.AuthenticateApiKeyRequest(secret=secret), metadata=acme))
    assert not_a_service.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_keys_and_workspaces_stay_within_their_workspace(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    await identity.new_workspace("globex")

    own = await identity.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(name="workspaces/acme"), metadata=acme)
    assert own.workspace.workspace_id == "acme"
    implicit = await identity.workspaces.GetWorkspace(ws_pb.GetWorkspaceRequest(), metadata=acme)
    assert implicit.workspace == own.workspace
    other = await rpc_error(identity.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(name="workspaces/globex"), metadata=acme))
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    missing = await rpc_error(identity.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(name="workspaces/nobody"), metadata=bearer(SERVICE_TOKEN)))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    by_service = await identity.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(name="workspaces/globex"), metadata=bearer(SERVICE_TOKEN))
    assert by_service.workspace.workspace_id == "globex"

    # A second key (e.g. for rotation) belongs to the caller's workspace and works at once.
    rotate = ws_pb.CreateApiKeyRequest(display_name="checkout", request_id="rot-1")
    second = await identity.workspaces.CreateApiKey(rotate, metadata=acme)
    assert second.api_key.name.startswith("workspaces/acme/apiKeys/")
    again = await identity.workspaces.CreateApiKey(rotate, metadata=acme)
    assert again.api_key.key_id == second.api_key.key_id and again.api_key.secret == ""
    seen_as = await identity.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(), metadata=bearer(second.api_key.secret))
    assert seen_as.workspace.workspace_id == "acme"

    for_nobody = await rpc_error(identity.workspaces.CreateApiKey(
        ws_pb.CreateApiKeyRequest(), metadata=as_service("nobody")))
    assert for_nobody.code() == grpc.StatusCode.NOT_FOUND


async def test_a_deleted_key_stops_working_on_every_replica_within_the_bound(
        backend: Backend, recorder: Recorder) -> None:
    # Two identity replicas on one database, and analytics authenticating through identity;
    # the bound (CJO_API_KEY_CACHE_SECONDS) is short here, 30 seconds by default. A call begun
    # past it must be refused (support.refused_within): that fails a cache that outlives the
    # bound (a chain of caches: analytics -> identity), not a loaded machine's slow round trips.
    bound = 2.0
    overrides = {"CJO_ORCHESTRATION_TARGET": recorder.address,
                 "CJO_API_KEY_CACHE_SECONDS": str(bound)}
    first = build(settings_for("identity", backend, **overrides), Env({}))
    second = build(settings_for("identity", backend, **overrides), Env({}))
    async with serving(first) as one, serving(second) as two, \
            grpc.aio.insecure_channel(one) as channel_one, \
            grpc.aio.insecure_channel(two) as channel_two:
        analytics = build_analytics(settings_for(
            "analytics", backend, CJO_IDENTITY_TARGET=two, CJO_API_KEY_CACHE_SECONDS=str(bound)),
            Env({}))
        async with serving(analytics) as three, grpc.aio.insecure_channel(three) as channel_three:
            deleting = ws_grpc.WorkspaceServiceStub(channel_one)
            other = ws_grpc.WorkspaceServiceStub(channel_two)
            reports = analytics_grpc.AnalyticsServiceStub(channel_three)
            created = await deleting.CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(workspace_id="acme"), metadata=bearer(SERVICE_TOKEN))
            spare = await deleting.CreateApiKey(ws_pb.CreateApiKeyRequest(display_name="new"),
                                                metadata=bearer(created.api_key.secret))
            old = bearer(created.api_key.secret)
            report = analytics_pb.GetJourneyReportRequest(journey="journeys/j1")
            # Every replica has verified (and cached) the old key.
            await deleting.GetWorkspace(ws_pb.GetWorkspaceRequest(), metadata=old)
            await other.GetWorkspace(ws_pb.GetWorkspaceRequest(), metadata=old)
            await reports.GetJourneyReport(report, metadata=old)

            # Rotation: the old key is deleted with the new one.
            request = ws_pb.DeleteApiKeyRequest(name=created.api_key.name, request_id="d-1")
            deleted = await deleting.DeleteApiKey(request,
                                                  metadata=bearer(spare.api_key.secret))
            started = time.monotonic()
            assert deleted.api_key.key_id == created.api_key.key_id
            assert await deleting.DeleteApiKey(request,
                                               metadata=bearer(spare.api_key.secret)) == deleted
            refused = await rpc_error(deleting.GetWorkspace(ws_pb.GetWorkspaceRequest(),
                                                            metadata=old))
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED  # at once where deleted

            async def refused_everywhere() -> bool:
                for call in (other.GetWorkspace(ws_pb.GetWorkspaceRequest(), metadata=old),
                             reports.GetJourneyReport(report, metadata=old)):
                    try:
                        await call
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                        continue
                    return False
                return True

            await refused_within(bound, started, refused_everywhere)
            # The new key goes on working everywhere.
            await reports.GetJourneyReport(report, metadata=bearer(spare.api_key.secret))
            gone = await rpc_error(deleting.DeleteApiKey(
                ws_pb.DeleteApiKeyRequest(name=created.api_key.name),
                metadata=bearer(spare.api_key.secret)))
            assert gone.code() == grpc.StatusCode.NOT_FOUND
            foreign = await rpc_error(deleting.DeleteApiKey(
                ws_pb.DeleteApiKeyRequest(name="workspaces/other/apiKeys/abc"),
                metadata=bearer(spare.api_key.secret)))
            assert foreign.code() == grpc.StatusCode.PERMISSION_DENIED
