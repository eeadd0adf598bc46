"""WorkspaceService and API key authentication over a real gRPC server, on both backends."""

from __future__ import annotations

import grpc
from grpc_status import rpc_status
from identity_support import Identity, event, rpc_error
from sqlalchemy import select

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo_identity.adapters.tables import api_keys, request_log
from cjo_platform.rpc.status import field_violations
from support import SERVICE_TOKEN, as_service, bearer


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
