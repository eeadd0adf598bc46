"""cjo_client against a real identity service: the key it is given authorises its calls, a wrong
key is refused, and a failed call reads as its reason and the fields at fault."""

from __future__ import annotations

import grpc
import pytest

from cjo.identity.v1 import identity_service_pb2 as id_pb
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_client import Client, Endpoints, describe_error, error_reason
from cjo_identity.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from support import SERVICE_TOKEN, Backend, bearer, serving, settings_for


async def test_client_calls_as_the_keys_workspace_and_explains_errors(
        sqlite_backend: Backend) -> None:
    settings = settings_for("identity", sqlite_backend, CJO_ORCHESTRATION_TARGET="127.0.0.1:9",
                            CJO_DECISIONING_TARGET="127.0.0.1:9")
    app = build(settings, Env({}), clock=ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        reply = await ws_grpc.WorkspaceServiceStub(channel).CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id="acme"), metadata=bearer(SERVICE_TOKEN))
        key = reply.api_key.secret
        endpoints = Endpoints({"identity": address})
        assert endpoints.target("content") == "127.0.0.1:50052"

        async with Client(endpoints, key) as client:
            assert key not in repr(client)
            got = await client.workspaces.GetWorkspace(ws_pb.GetWorkspaceRequest(
                name="workspaces/acme"), metadata=client.metadata)
            assert got.workspace.workspace_id == "acme"

            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await client.identity.GetProfile(id_pb.GetProfileRequest(
                    name="profiles/nobody"), metadata=client.metadata)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            assert error_reason(missing.value) == "NOT_FOUND"
            assert "  reason: NOT_FOUND (identity.cjo)" in describe_error(missing.value)

            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await client.identity.ListProfiles(id_pb.ListProfilesRequest(page_size=-1),
                                                   metadata=client.metadata)
            lines = describe_error(bad.value)
            assert lines[0].startswith("INVALID_ARGUMENT")
            assert any(line.strip().startswith("page_size:") for line in lines), lines

        async with Client(endpoints, "cjo_not-a-key") as stranger:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stranger.identity.ListProfiles(id_pb.ListProfilesRequest(),
                                                     metadata=stranger.metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
