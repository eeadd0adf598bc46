"""ContentService: protos in, use-cases called, protos out. The behaviour lives in
``service_layer``; this module only translates."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from cjo_content.api.convert import (
    draft_from_proto,
    item_to_proto,
    render_request,
    rendered_message,
    settings_from_proto,
    settings_to_proto,
    snippet_to_proto,
    version_to_proto,
)
from cjo_content.domain.content_items import UpdateMask, key_from_name
from cjo_content.domain.settings import check_settings_name, parse_settings_mask
from cjo_content.domain.snippets import snippet_key_from_name
from cjo_content.service_layer import content_items, settings, snippets, versions
from cjo_content.service_layer.rendering import Renderer, off_loop
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import CjoError, InvalidArgument
from cjo_platform.paging import cursor_value, next_page_token, page_size
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.batch import BatchAnswer
from cjo_platform.rpc.idempotent import once

SERVICE = "cjo.content.v1.ContentService"
DOMAIN = "content.cjo"

R = TypeVar("R", bound=Message)


def _within(prefix: str, work: Callable[[UnitOfWork], R]) -> Callable[[UnitOfWork], R]:
    """``work`` with its field violations named from the request field ``prefix`` (use-cases
    name fields of the resource they change)."""
    def run(uow: UnitOfWork) -> R:
        try:
            return work(uow)
        except InvalidArgument as exc:
            raise exc.within(prefix) from None
    return run


class ContentServicer(pb_grpc.ContentServiceServicer):
    def __init__(self, transactions: Transactions, renderer: Renderer) -> None:
        self.transactions = transactions
        self.renderer = renderer
        self.published = renderer.published_cache

    # --- content items ---------------------------------------------------------------------

    async def CreateContentItem(self, request: pb.CreateContentItemRequest,
                                context: grpc.aio.ServicerContext,
                                ) -> pb.CreateContentItemResponse:
        workspace = current_workspace()
        key, draft = request.content_item.key, draft_from_proto(request.content_item)
        return await once(
            self.transactions, request, pb.CreateContentItemResponse,
            _within("content_item", lambda uow: pb.CreateContentItemResponse(
                content_item=item_to_proto(content_items.create(uow, workspace, key, draft)))))

    async def GetContentItem(self, request: pb.GetContentItemRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetContentItemResponse:
        key = key_from_name(request.name)
        workspace = current_workspace()
        item = await self.transactions.run(lambda uow: content_items.get(uow, workspace, key))
        return pb.GetContentItemResponse(content_item=item_to_proto(item))

    async def ListContentItems(self, request: pb.ListContentItemsRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> pb.ListContentItemsResponse:
        size = page_size(request.page_size)
        after = cursor_value(request.page_token, "after", str)
        workspace = current_workspace()
        items, last = await self.transactions.run(
            lambda uow: content_items.page(uow, workspace, after, size, request.tag))
        return pb.ListContentItemsResponse(content_items=[item_to_proto(i) for i in items],
                                           next_page_token=next_page_token("after", last))

    async def UpdateContentItem(self, request: pb.UpdateContentItemRequest,
                                context: grpc.aio.ServicerContext,
                                ) -> pb.UpdateContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.content_item.name, "content_item.name")
        mask = UpdateMask.parse(request.update_mask.paths)
        patch, etag = draft_from_proto(request.content_item), request.content_item.etag
        return await once(
            self.transactions, request, pb.UpdateContentItemResponse,
            _within("content_item", lambda uow: pb.UpdateContentItemResponse(
                content_item=item_to_proto(
                    content_items.update(uow, workspace, key, patch, mask, etag)))))

    async def DeleteContentItem(self, request: pb.DeleteContentItemRequest,
                                context: grpc.aio.ServicerContext,
                                ) -> pb.DeleteContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.name)

        def delete(uow: UnitOfWork) -> pb.DeleteContentItemResponse:
            content_items.delete(uow, workspace, key, request.etag, self.published)
            return pb.DeleteContentItemResponse()

        return await once(self.transactions, request, pb.DeleteContentItemResponse, delete)

    # --- versions --------------------------------------------------------------------------

    async def PublishContentItem(self, request: pb.PublishContentItemRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.PublishContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.name)
        return await once(
            self.transactions, request, pb.PublishContentItemResponse,
            lambda uow: pb.PublishContentItemResponse(content_version=version_to_proto(
                versions.publish(uow, workspace, key, request.etag, self.published))))

    async def RollbackContentItem(self, request: pb.RollbackContentItemRequest,
                                  context: grpc.aio.ServicerContext,
                                  ) -> pb.RollbackContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.name)
        return await once(
            self.transactions, request, pb.RollbackContentItemResponse,
            lambda uow: pb.RollbackContentItemResponse(content_version=version_to_proto(
                versions.rollback(uow, workspace, key, request.version, self.published))))

    async def ListContentItemVersions(self, request: pb.ListContentItemVersionsRequest,
                                      context: grpc.aio.ServicerContext,
                                      ) -> pb.ListContentItemVersionsResponse:
        key = key_from_name(request.parent, "parent")
        size = page_size(request.page_size)
        before = cursor_value(request.page_token, "before", int)
        workspace = current_workspace()
        found, last = await self.transactions.run(
            lambda uow: versions.page(uow, workspace, key, before, size))
        return pb.ListContentItemVersionsResponse(
            content_versions=[version_to_proto(v) for v in found],
            next_page_token=next_page_token("before", last))

    # --- rendering -------------------------------------------------------------------------

    async def RenderContent(self, request: pb.RenderContentRequest,
                            context: grpc.aio.ServicerContext) -> pb.RenderContentResponse:
        workspace = current_workspace()
        target, person = render_request(request, workspace)
        rendered = await self.renderer.render(workspace, target, person)
        return pb.RenderContentResponse(message=rendered_message(rendered))

    async def BatchRenderContent(self, request: pb.BatchRenderContentRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.BatchRenderContentResponse:
        workspace = current_workspace()
        answer = BatchAnswer(request.requests, "requests", DOMAIN, pb.BatchRenderContentResult)
        # Converting a thousand people's traits and building a thousand rendered messages is
        # CPU work: off the event loop, like the rendering itself, so other calls keep flowing
        # (a call of a few people stays on the loop: the hop would cost more).
        count = len(request.requests)
        parsed = await off_loop(
            count, lambda: answer.parse(lambda item: render_request(item, workspace)))
        outcomes = await self.renderer.render_batch(workspace, [r for _, r in parsed])

        def answer_each() -> None:
            for (index, _), outcome in zip(parsed, outcomes, strict=True):
                if isinstance(outcome, CjoError):
                    answer.fail(index, outcome)
                else:
                    answer.results[index].message.CopyFrom(rendered_message(outcome))

        await off_loop(count, answer_each)
        return pb.BatchRenderContentResponse(results=answer.results)

    async def PreviewContent(self, request: pb.PreviewContentRequest,
                             context: grpc.aio.ServicerContext) -> pb.PreviewContentResponse:
        workspace = current_workspace()
        target, person = render_request(request, workspace)
        rendered = await self.renderer.preview(workspace, target, person)
        return pb.PreviewContentResponse(message=rendered_message(rendered))

    # --- snippets --------------------------------------------------------------------------

    async def CreateSnippet(self, request: pb.CreateSnippetRequest,
                            context: grpc.aio.ServicerContext) -> pb.CreateSnippetResponse:
        workspace = current_workspace()
        key, source = request.snippet.key, request.snippet.source
        return await once(
            self.transactions, request, pb.CreateSnippetResponse,
            _within("snippet", lambda uow: pb.CreateSnippetResponse(
                snippet=snippet_to_proto(snippets.create(uow, workspace, key, source)))))

    async def GetSnippet(self, request: pb.GetSnippetRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetSnippetResponse:
        key = snippet_key_from_name(request.name)
        workspace = current_workspace()
        snippet = await self.transactions.run(lambda uow: snippets.get(uow, workspace, key))
        return pb.GetSnippetResponse(snippet=snippet_to_proto(snippet))

    async def ListSnippets(self, request: pb.ListSnippetsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListSnippetsResponse:
        size = page_size(request.page_size)
        after = cursor_value(request.page_token, "after", str)
        workspace = current_workspace()
        found, last = await self.transactions.run(
            lambda uow: snippets.page(uow, workspace, after, size))
        return pb.ListSnippetsResponse(snippets=[snippet_to_proto(s) for s in found],
                                       next_page_token=next_page_token("after", last))

    async def UpdateSnippet(self, request: pb.UpdateSnippetRequest,
                            context: grpc.aio.ServicerContext) -> pb.UpdateSnippetResponse:
        workspace = current_workspace()
        key = snippet_key_from_name(request.snippet.name, "snippet.name")
        source, etag = request.snippet.source, request.snippet.etag
        return await once(
            self.transactions, request, pb.UpdateSnippetResponse,
            _within("snippet", lambda uow: pb.UpdateSnippetResponse(
                snippet=snippet_to_proto(snippets.update(uow, workspace, key, source, etag)))))

    async def DeleteSnippet(self, request: pb.DeleteSnippetRequest,
                            context: grpc.aio.ServicerContext) -> pb.DeleteSnippetResponse:
        workspace = current_workspace()
        key = snippet_key_from_name(request.name)

        def delete(uow: UnitOfWork) -> pb.DeleteSnippetResponse:
            snippets.delete(uow, workspace, key, request.etag)
            return pb.DeleteSnippetResponse()

        return await once(self.transactions, request, pb.DeleteSnippetResponse, delete)

    # --- settings --------------------------------------------------------------------------

    async def GetContentSettings(self, request: pb.GetContentSettingsRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.GetContentSettingsResponse:
        check_settings_name(request.name, "name")
        workspace = current_workspace()
        found = await self.transactions.run(lambda uow: settings.get(uow, workspace))
        return pb.GetContentSettingsResponse(content_settings=settings_to_proto(found))

    async def UpdateContentSettings(self, request: pb.UpdateContentSettingsRequest,
                                    context: grpc.aio.ServicerContext,
                                    ) -> pb.UpdateContentSettingsResponse:
        workspace = current_workspace()
        check_settings_name(request.content_settings.name, "content_settings.name")
        mask = parse_settings_mask(request.update_mask.paths)
        patch = settings_from_proto(request.content_settings)
        etag = request.content_settings.etag
        return await once(
            self.transactions, request, pb.UpdateContentSettingsResponse,
            _within("content_settings", lambda uow: pb.UpdateContentSettingsResponse(
                content_settings=settings_to_proto(
                    settings.update(uow, workspace, patch, mask, etag, self.published)))))
