"""WorkspaceService: protos in, domain calls, protos out."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from sqlalchemy.orm import Session

from cjo.identity.v1 import workspace_service_pb2 as pb
from cjo.identity.v1 import workspace_service_pb2_grpc as pb_grpc
from cjo_identity.adapters import workspaces
from cjo_identity.adapters.api_keys import issue_api_key
from cjo_identity.api.convert import api_key_to_proto, workspace_id_of, workspace_to_proto
from cjo_identity.domain.workspaces import Workspace, check_new_api_key, check_new_workspace
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.db.retry import retry_on_conflict
from cjo_platform.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from cjo_platform.rpc.auth import KeyResolver, current_principal, current_workspace

SERVICE = "cjo.identity.v1.WorkspaceService"
CREATE_WORKSPACE = f"/{SERVICE}/CreateWorkspace"
CREATE_API_KEY = f"/{SERVICE}/CreateApiKey"
AUTHENTICATE_API_KEY = f"/{SERVICE}/AuthenticateApiKey"
SERVICE_ONLY_METHODS = frozenset({CREATE_WORKSPACE, AUTHENTICATE_API_KEY})

# CreateWorkspace acts for no workspace yet; its request ids are deployment-wide.
_DEPLOYMENT = ""

R = TypeVar("R", pb.CreateWorkspaceResponse, pb.CreateApiKeyResponse)


class WorkspaceServicer(pb_grpc.WorkspaceServiceServicer):
    def __init__(self, db: Database, requests: RequestLog, resolve_key: KeyResolver,
                 clock: Clock) -> None:
        self.db = db
        self.requests = requests
        self.resolve_key = resolve_key
        self.clock = clock

    async def CreateWorkspace(self, request: pb.CreateWorkspaceRequest,
                              context: grpc.aio.ServicerContext) -> pb.CreateWorkspaceResponse:
        check_new_workspace(request.workspace_id, request.display_name)
        now = self.clock.now()

        def create(session: Session) -> tuple[pb.CreateWorkspaceResponse, str]:
            workspace = Workspace(request.workspace_id, request.display_name, now)
            workspaces.add_workspace(session, workspace)
            key, secret = issue_api_key(session, workspace.workspace_id, "default", now)
            return pb.CreateWorkspaceResponse(workspace=workspace_to_proto(workspace),
                                              api_key=api_key_to_proto(key)), secret

        return await self.db.run(retry_on_conflict, lambda: self._once_revealing_secret(
            _DEPLOYMENT, CREATE_WORKSPACE, request, pb.CreateWorkspaceResponse, create))

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

        def read() -> Workspace | None:
            with self.db.transaction() as session:
                return workspaces.get_workspace(session, workspace_id)

        workspace = await self.db.run(read)
        if workspace is None:
            raise NotFound(f"workspace {workspace_id!r} does not exist")
        return pb.GetWorkspaceResponse(workspace=workspace_to_proto(workspace))

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.CreateApiKeyResponse:
        workspace_id = current_workspace()
        check_new_api_key(request.display_name)
        now = self.clock.now()

        def create(session: Session) -> tuple[pb.CreateApiKeyResponse, str]:
            # A key holder's workspace exists; a service acting for one might name any.
            if workspaces.get_workspace(session, workspace_id) is None:
                raise NotFound(f"workspace {workspace_id!r} does not exist")
            key, secret = issue_api_key(session, workspace_id, request.display_name, now)
            return pb.CreateApiKeyResponse(api_key=api_key_to_proto(key)), secret

        return await self.db.run(retry_on_conflict, lambda: self._once_revealing_secret(
            workspace_id, CREATE_API_KEY, request, pb.CreateApiKeyResponse, create))

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

    def _once_revealing_secret(self, workspace_id: str, method: str,
                               request: pb.CreateWorkspaceRequest | pb.CreateApiKeyRequest,
                               response_type: type[R],
                               create: Callable[[Session], tuple[R, str]]) -> R:
        """Create once per request id. The request log keeps the answer WITHOUT the secret, so
        the secret is shown by the first answer only and a repeat returns the key without it."""
        revealed: list[str] = []
        with self.db.transaction() as session:

            def compute() -> R:
                response, secret = create(session)
                revealed.append(secret)
                return response

            response = self.requests.once(
                session, workspace_id=workspace_id, method=method,
                request_id=request.request_id, request=request, response_type=response_type,
                compute=compute)
        if revealed:
            response.api_key.secret = revealed[0]
        return response
