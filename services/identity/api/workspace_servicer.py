"""WorkspaceService: protos in, a use-case of the service layer, protos out."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from cjo.identity.v1 import workspace_pb2
from cjo.identity.v1 import workspace_service_pb2 as pb
from cjo.identity.v1 import workspace_service_pb2_grpc as pb_grpc
from cjo_identity.api.convert import (
    api_key_name_of,
    api_key_to_proto,
    workspace_id_of,
    workspace_to_proto,
)
from cjo_identity.domain.workspaces import DEFAULT_ROTATION_OVERLAP, scope_of
from cjo_identity.service_layer import workspaces
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import InvalidArgument, PermissionDenied, Unauthenticated
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.protobuf import to_timestamp
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
        scope = scope_of(request.scope)
        revealed: list[str] = []

        def create(uow: UnitOfWork) -> pb.CreateApiKeyResponse:
            key, secret = workspaces.create_api_key(uow, workspace_id, request.display_name,
                                                    scope)
            _reveal_after_commit(uow, revealed, secret)
            return pb.CreateApiKeyResponse(api_key=api_key_to_proto(key))

        response = await self.transactions.once(
            workspace_id=workspace_id, method=CREATE_API_KEY, request_id=request.request_id,
            request=request, response_type=pb.CreateApiKeyResponse, work=create)
        if revealed:
            response.api_key.secret = revealed[0]
        return response

    async def ListApiKeys(self, request: pb.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListApiKeysResponse:
        workspace_id = current_workspace()
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = str(cursor.get("after", "")) if cursor else ""
        keys, last = await self.transactions.run(
            lambda uow: workspaces.list_api_keys(uow, workspace_id, size, after))
        return pb.ListApiKeysResponse(
            api_keys=[api_key_to_proto(key) for key in keys],
            next_page_token=encode_token({"after": last}) if last is not None else "")

    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.RevokeApiKeyResponse:
        workspace_id, key_id = _own_key_name(request.name)

        def revoke(uow: UnitOfWork) -> pb.RevokeApiKeyResponse:
            key = workspaces.revoke_api_key(uow, workspace_id, key_id)
            return pb.RevokeApiKeyResponse(api_key=api_key_to_proto(key))

        response = await once(self.transactions, request, pb.RevokeApiKeyResponse, revoke)
        # This replica refuses the key at once; the others when their cache entry runs out.
        self.forget_key(key_id)
        return response

    async def RotateApiKey(self, request: pb.RotateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.RotateApiKeyResponse:
        workspace_id, key_id = _own_key_name(request.name)
        overlap = (request.overlap.ToTimedelta() if request.HasField("overlap")
                   else DEFAULT_ROTATION_OVERLAP)
        revealed: list[str] = []

        def rotate(uow: UnitOfWork) -> pb.RotateApiKeyResponse:
            key, secret = workspaces.rotate_api_key(uow, workspace_id, key_id, overlap)
            _reveal_after_commit(uow, revealed, secret)
            return pb.RotateApiKeyResponse(api_key=api_key_to_proto(key))

        response = await once(self.transactions, request, pb.RotateApiKeyResponse, rotate)
        if revealed:
            response.api_key.secret = revealed[0]
        # What this replica cached of the old secret does not know its expiry: forget it. Other
        # replicas may trust it until their entry runs out (CJO_API_KEY_CACHE_SECONDS), so an
        # old secret ends at its expiry or that long after the rotation, whichever is later.
        self.forget_key(key_id)
        return response

    async def DeleteApiKey(self, request: pb.DeleteApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.DeleteApiKeyResponse:
        workspace_id, key_id = _own_key_name(request.name)

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
        response = pb.AuthenticateApiKeyResponse(
            workspace_id=principal.workspace_id, key_id=principal.key_id,
            scope=workspace_pb2.ApiKeyScope.ValueType(principal.scope.value))
        if principal.expire_time is not None:
            response.expire_time.CopyFrom(to_timestamp(principal.expire_time))
        return response


def _own_key_name(name: str) -> tuple[str, str]:
    """(workspace id, key id) of a key the caller's workspace owns."""
    workspace_id, key_id = api_key_name_of(name, "name")
    if workspace_id != current_workspace():
        raise PermissionDenied("an API key can manage only keys of its own workspace",
                               reason="OTHER_WORKSPACE")
    return workspace_id, key_id


def _reveal_after_commit(uow: UnitOfWork, revealed: list[str], secret: str) -> None:
    # Only the attempt that committed may reveal its key: an attempt that lost a race and was
    # rolled back issued a key that does not exist.
    uow.after_commit(lambda: revealed.append(secret))
