"""WorkspaceService: protos in, a use-case of the service layer, protos out."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from cjo.identity.v1 import workspace_service_pb2 as pb
from cjo.identity.v1 import workspace_service_pb2_grpc as pb_grpc
from cjo_identity.api.convert import (
    api_key_name_of,
    api_key_to_proto,
    workspace_id_of,
    workspace_to_proto,
)
from cjo_identity.service_layer import workspaces
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import InvalidArgument, PermissionDenied, Unauthenticated
from cjo_platform.rpc.auth import KeyResolver, current_principal, current_workspace
from cjo_platform.rpc.idempotent import once

SERVICE = "cjo.identity.v1.WorkspaceService"
CREATE_WORKSPACE = f"/{SERVICE}/CreateWorkspace"
CREATE_API_KEY = f"/{SERVICE}/CreateApiKey"
AUTHENTICATE_API_KEY = f"/{SERVICE}/AuthenticateApiKey"
SERVICE_ONLY_METHODS = frozenset({CREATE_WORKSPACE, AUTHENTICATE_API_KEY})

# CreateWorkspace acts for no workspace yet; its request ids are deployment-wide.
_DEPLOYMENT = ""


class WorkspaceServicer(pb_grpc.WorkspaceServiceServicer):
    """The request log keeps each answer WITHOUT the key's secret: the secret is set on the
    answer of the call that created the key (after its commit), and a repeat gets the key
    without it."""

    def __init__(self, transactions: Transactions, resolve_key: KeyResolver,
                 forget_key: Callable[[str], None] = lambda key_id: None) -> None:
        # ``resolve_key`` reads the database: other services cache its answers for the bound
        # themselves, and an answer from a cache here would make their bound twice as long.
        self.transactions = transactions
        self.resolve_key = resolve_key
        self.forget_key = forget_key

    async def CreateWorkspace(self, request: pb.CreateWorkspaceRequest,
                              context: grpc.aio.ServicerContext) -> pb.CreateWorkspaceResponse:
        revealed: list[str] = []

        def create(uow: UnitOfWork) -> pb.CreateWorkspaceResponse:
            workspace, key, secret = workspaces.create_workspace(
                uow, request.workspace_id, request.display_name)
            _reveal_after_commit(uow, revealed, secret)
            return pb.CreateWorkspaceResponse(workspace=workspace_to_proto(workspace),
                                              api_key=api_key_to_proto(key))

        response = await self.transactions.once(
            workspace_id=_DEPLOYMENT, method=CREATE_WORKSPACE, request_id=request.request_id,
            request=request, response_type=pb.CreateWorkspaceResponse, work=create)
        if revealed:
            response.api_key.secret = revealed[0]
        return response

    async def GetWorkspace(self, request: pb.GetWorkspaceRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetWorkspaceResponse:
        principal = current_principal()
        workspace_id = (workspace_id_of(request.name, "name") if request.name
                        else principal.workspace_id)
        if not workspace_id:
            raise InvalidArgument.one("name", "is required")
        if not principal.is_service and workspace_id != principal.workspace_id:
            raise PermissionDenied("an API key can read only its own workspace",
                                   reason="OTHER_WORKSPACE")
        workspace = await self.transactions.run(
            lambda uow: workspaces.get_workspace(uow, workspace_id))
        return pb.GetWorkspaceResponse(workspace=workspace_to_proto(workspace))

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.CreateApiKeyResponse:
        workspace_id = current_workspace()
        revealed: list[str] = []

        def create(uow: UnitOfWork) -> pb.CreateApiKeyResponse:
            key, secret = workspaces.create_api_key(uow, workspace_id, request.display_name)
            _reveal_after_commit(uow, revealed, secret)
            return pb.CreateApiKeyResponse(api_key=api_key_to_proto(key))

        response = await self.transactions.once(
            workspace_id=workspace_id, method=CREATE_API_KEY, request_id=request.request_id,
            request=request, response_type=pb.CreateApiKeyResponse, work=create)
        if revealed:
            response.api_key.secret = revealed[0]
        return response

    async def DeleteApiKey(self, request: pb.DeleteApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.DeleteApiKeyResponse:
        workspace_id, key_id = api_key_name_of(request.name, "name")
        if workspace_id != current_workspace():
            raise PermissionDenied("an API key can delete only keys of its own workspace",
                                   reason="OTHER_WORKSPACE")

        def delete(uow: UnitOfWork) -> pb.DeleteApiKeyResponse:
            key = workspaces.delete_api_key(uow, workspace_id, key_id)
            return pb.DeleteApiKeyResponse(api_key=api_key_to_proto(key))

        response = await once(self.transactions, request, pb.DeleteApiKeyResponse, delete)
        # This replica refuses the key at once; the others when their cache entry runs out.
        self.forget_key(key_id)
        return response

    async def AuthenticateApiKey(
        self, request: pb.AuthenticateApiKeyRequest, context: grpc.aio.ServicerContext,
    ) -> pb.AuthenticateApiKeyResponse:
        if not request.secret:
            raise InvalidArgument.one("secret", "is required")
        principal = await self.resolve_key(request.secret)
        if principal is None:
            raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        return pb.AuthenticateApiKeyResponse(workspace_id=principal.workspace_id,
                                             key_id=principal.key_id)


def _reveal_after_commit(uow: UnitOfWork, revealed: list[str], secret: str) -> None:
    # Only the attempt that committed may reveal its key: an attempt that lost a race and was
    # rolled back issued a key that does not exist.
    uow.after_commit(lambda: revealed.append(secret))
