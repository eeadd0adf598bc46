"""ContentService: protos in, domain calls, protos out. Nothing else lives here."""

from __future__ import annotations

import asyncio

import grpc

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from cjo_content.adapters import repository
from cjo_content.api.convert import (
    context_from_proto,
    draft_from_proto,
    email_message,
    item_to_proto,
)
from cjo_content.domain.content_items import (
    ContentItem,
    UpdateMask,
    apply_update,
    check_draft,
    key_from_name,
)
from cjo_content.domain.rendering import EmailRenderer
from cjo_content.domain.validation import check_new_item, check_update
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.errors import (
    Aborted,
    AlreadyExists,
    CjoError,
    InvalidArgument,
    NotFound,
    Violations,
)
from cjo_platform.limits import check_batch
from cjo_platform.logging import get_logger
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.status import OK, internal_status, to_status_proto
from cjo_platform.telemetry import tracer

DOMAIN = "content.cjo"
SERVICE = "cjo.content.v1.ContentService"

log = get_logger("cjo.content")


def _not_found(key: str) -> NotFound:
    return NotFound(f"content item {key!r} not found", reason="CONTENT_ITEM_NOT_FOUND",
                    metadata={"content_key": key})


def _stale(key: str, etag: str) -> Aborted:
    return Aborted(f"content item {key!r} changed since etag {etag!r} was read; read it again",
                   metadata={"content_key": key})


def _raise_for_item(problems: Violations) -> None:
    if problems:
        raise InvalidArgument(problems.items).within("content_item")


def _email_target(request: pb.RenderContentRequest) -> str:
    """The content key of a render request for the email channel (the only channel so far)."""
    problems = Violations()
    key = ""
    try:
        key = key_from_name(request.name)
    except InvalidArgument as exc:
        problems.items.extend(exc.violations)
    if request.channel == common_pb2.CHANNEL_UNSPECIFIED:
        problems.add("channel", "is required")
    elif request.channel != common_pb2.CHANNEL_EMAIL:
        problems.add("channel", "only CHANNEL_EMAIL can be rendered so far")
    problems.raise_if_any()
    return key


class ContentServicer(pb_grpc.ContentServiceServicer):
    def __init__(self, db: Database, requests: RequestLog, renderer: EmailRenderer,
                 clock: Clock) -> None:
        self.db = db
        self.requests = requests
        self.renderer = renderer
        self.clock = clock

    # --- content items ---------------------------------------------------------------------

    async def CreateContentItem(self, request: pb.CreateContentItemRequest,
                                context: grpc.aio.ServicerContext,
                                ) -> pb.CreateContentItemResponse:
        workspace = current_workspace()
        key = request.content_item.key
        draft = draft_from_proto(request.content_item)
        # Parsing templates is CPU work: keep it off the event loop.
        _raise_for_item(await asyncio.to_thread(check_new_item, key, draft))

        def create() -> pb.CreateContentItemResponse:
            with self.db.transaction() as session:
                def insert() -> pb.CreateContentItemResponse:
                    item = repository.insert(session, workspace, key, draft, self.clock.now())
                    if item is None:
                        raise AlreadyExists(f"content item {key!r} already exists",
                                            reason="CONTENT_ITEM_EXISTS",
                                            metadata={"content_key": key})
                    return pb.CreateContentItemResponse(content_item=item_to_proto(item))

                return self.requests.once(
                    session, workspace_id=workspace, method=f"/{SERVICE}/CreateContentItem",
                    request_id=request.request_id, request=request,
                    response_type=pb.CreateContentItemResponse, compute=insert)

        return await self.db.run(create)

    async def GetContentItem(self, request: pb.GetContentItemRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetContentItemResponse:
        key = key_from_name(request.name)
        workspace = current_workspace()

        def read() -> ContentItem | None:
            with self.db.transaction() as session:
                return repository.get(session, workspace, key)

        item = await self.db.run(read)
        if item is None:
            raise _not_found(key)
        return pb.GetContentItemResponse(content_item=item_to_proto(item))

    async def ListContentItems(self, request: pb.ListContentItemsRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> pb.ListContentItemsResponse:
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = None
        if cursor is not None:
            after = cursor.get("after")
            if not isinstance(after, str):
                raise InvalidArgument.one("page_token", "is not a token returned by this method")
        workspace = current_workspace()

        def read() -> list[ContentItem]:
            with self.db.transaction() as session:
                return repository.page(session, workspace, after, size + 1)

        items = await self.db.run(read)
        token = encode_token({"after": items[size - 1].key}) if len(items) > size else ""
        return pb.ListContentItemsResponse(content_items=[item_to_proto(i) for i in items[:size]],
                                           next_page_token=token)

    async def UpdateContentItem(self, request: pb.UpdateContentItemRequest,
                                context: grpc.aio.ServicerContext,
                                ) -> pb.UpdateContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.content_item.name, "content_item.name")
        mask = UpdateMask.parse(request.update_mask.paths)
        patch = draft_from_proto(request.content_item)
        etag = request.content_item.etag
        # Parsing templates is CPU work: keep it off the event loop.
        _raise_for_item(await asyncio.to_thread(check_update, patch, mask))

        def update() -> pb.UpdateContentItemResponse:
            with self.db.transaction() as session:
                def change() -> pb.UpdateContentItemResponse:
                    current = repository.get(session, workspace, key)
                    if current is None:
                        raise _not_found(key)
                    if etag and etag != current.etag:
                        raise _stale(key, etag)
                    draft = apply_update(current.draft, patch, mask)
                    if draft == current.draft:  # nothing changed: keep revision and etag
                        return pb.UpdateContentItemResponse(content_item=item_to_proto(current))
                    _raise_for_item(check_draft(draft))
                    saved = repository.save_revision(session, workspace, current, draft,
                                                     self.clock.now())
                    if saved is None:
                        raise _stale(key, current.etag)
                    return pb.UpdateContentItemResponse(content_item=item_to_proto(saved))

                return self.requests.once(
                    session, workspace_id=workspace, method=f"/{SERVICE}/UpdateContentItem",
                    request_id=request.request_id, request=request,
                    response_type=pb.UpdateContentItemResponse, compute=change)

        return await self.db.run(update)

    async def DeleteContentItem(self, request: pb.DeleteContentItemRequest,
                                context: grpc.aio.ServicerContext,
                                ) -> pb.DeleteContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.name)

        def delete() -> pb.DeleteContentItemResponse:
            with self.db.transaction() as session:
                def remove() -> pb.DeleteContentItemResponse:
                    current = repository.get(session, workspace, key)
                    if current is None:
                        raise _not_found(key)
                    if request.etag and request.etag != current.etag:
                        raise _stale(key, request.etag)
                    if not repository.delete_revision(session, workspace, key,
                                                      current.revision):
                        raise _stale(key, current.etag)
                    return pb.DeleteContentItemResponse()

                return self.requests.once(
                    session, workspace_id=workspace, method=f"/{SERVICE}/DeleteContentItem",
                    request_id=request.request_id, request=request,
                    response_type=pb.DeleteContentItemResponse, compute=remove)

        return await self.db.run(delete)

    # --- rendering -------------------------------------------------------------------------

    async def RenderContent(self, request: pb.RenderContentRequest,
                            context: grpc.aio.ServicerContext) -> pb.RenderContentResponse:
        key = _email_target(request)
        workspace = current_workspace()

        def read() -> ContentItem | None:
            with self.db.transaction() as session:
                return repository.get(session, workspace, key)

        item = await self.db.run(read)
        if item is None:
            raise _not_found(key)

        def render() -> pb.RenderContentResponse:
            email = self.renderer.render_email(workspace, item, context_from_proto(request.context))
            return pb.RenderContentResponse(message=email_message(item, email))

        return await asyncio.to_thread(render)

    async def BatchRenderContent(self, request: pb.BatchRenderContentRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.BatchRenderContentResponse:
        check_batch(request.requests, "requests")
        workspace = current_workspace()
        results = [pb.BatchRenderContentResult() for _ in request.requests]
        targets: list[tuple[int, str]] = []
        for index, item in enumerate(request.requests):
            try:
                targets.append((index, _email_target(item)))
            except InvalidArgument as exc:
                results[index].status.CopyFrom(
                    to_status_proto(exc.within(f"requests[{index}]"), DOMAIN))

        def load() -> dict[str, ContentItem]:
            with self.db.transaction() as session:
                return repository.get_many(session, workspace, {key for _, key in targets})

        items = await self.db.run(load) if targets else {}

        def render_all() -> None:
            with tracer().start_as_current_span(
                    "content.render_batch", attributes={"cjo.render.count": len(targets)}):
                for index, key in targets:
                    results[index].CopyFrom(
                        self._render_one(workspace, items.get(key), key,
                                         request.requests[index]))

        await asyncio.to_thread(render_all)
        return pb.BatchRenderContentResponse(results=results)

    def _render_one(self, workspace: str, item: ContentItem | None, key: str,
                    request: pb.RenderContentRequest) -> pb.BatchRenderContentResult:
        """One render of a batch; whatever goes wrong stays in this item's status."""
        try:
            if item is None:
                raise _not_found(key)
            email = self.renderer.render_email(workspace, item, context_from_proto(request.context))
            return pb.BatchRenderContentResult(status=OK, message=email_message(item, email))
        except CjoError as exc:
            return pb.BatchRenderContentResult(status=to_status_proto(exc, DOMAIN))
        except Exception:
            log.exception("render failed unexpectedly", content_key=key)
            return pb.BatchRenderContentResult(status=internal_status("render failed"))
