"""ContentService: protos in, domain calls, protos out. Nothing else lives here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from cjo_content.adapters import repository
from cjo_content.api.convert import (
    CHANNEL_NAMES,
    context_from_proto,
    draft_from_proto,
    item_to_proto,
    rendered_message,
    settings_from_proto,
    settings_to_proto,
    snippet_to_proto,
    version_to_proto,
)
from cjo_content.api.rendering import DOMAIN, render_result
from cjo_content.domain.content_items import (
    ContentItem,
    ContentVersion,
    UpdateMask,
    apply_update,
    check_draft,
    key_from_name,
)
from cjo_content.domain.locales import is_bcp47
from cjo_content.domain.rendering import CompiledCache, CompiledContent
from cjo_content.domain.settings import (
    SETTINGS_NAME,
    ContentSettings,
    apply_settings_update,
    check_settings_name,
    parse_settings_mask,
)
from cjo_content.domain.snippets import Snippet, resolve_snippets, snippet_key_from_name
from cjo_content.domain.validation import check_new_item, check_snippet, check_update
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.idempotency import RequestLog
from cjo_platform.errors import (
    Aborted,
    AlreadyExists,
    CjoError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Violations,
)
from cjo_platform.limits import check_batch
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.status import to_status_proto
from cjo_platform.telemetry import tracer

SERVICE = "cjo.content.v1.ContentService"

R = TypeVar("R", bound=Message)


def _not_found(key: str) -> NotFound:
    return NotFound(f"content item {key!r} not found", reason="CONTENT_ITEM_NOT_FOUND",
                    metadata={"content_key": key})


def _snippet_not_found(key: str) -> NotFound:
    return NotFound(f"snippet {key!r} not found", reason="SNIPPET_NOT_FOUND",
                    metadata={"snippet_key": key})


def _stale(what: str, key: str, etag: str) -> Aborted:
    return Aborted(f"{what} {key!r} changed since etag {etag!r} was read; read it again",
                   metadata={"key": key})


def _item_at(session: Session, workspace: str, key: str, etag: str) -> ContentItem:
    """The content item as stored now; the caller's etag, when given, must still match."""
    return _current(repository.get(session, workspace, key), "content item", key, etag,
                    _not_found)


def _snippet_at(session: Session, workspace: str, key: str, etag: str) -> Snippet:
    """The snippet as stored now; the caller's etag, when given, must still match."""
    return _current(repository.get_snippet(session, workspace, key), "snippet", key, etag,
                    _snippet_not_found)


Stored = TypeVar("Stored", ContentItem, Snippet)


def _current(found: Stored | None, what: str, key: str, etag: str,
             missing: Callable[[str], NotFound]) -> Stored:
    if found is None:
        raise missing(key)
    _check_etag(what, key, etag, found.etag)
    return found


def _check_etag(what: str, key: str, expected: str, actual: str) -> None:
    if expected and expected != actual:
        raise _stale(what, key, expected)


def _raise_within(problems: Violations, prefix: str) -> None:
    if problems:
        raise InvalidArgument(problems.items).within(prefix)


@dataclass(frozen=True)
class _Target:
    """A validated render request: which item, version, channel and locale."""

    key: str
    version: int  # 0: latest published
    channel: str
    locale: str  # explicit locale or ""


def _target(request: pb.RenderContentRequest | pb.PreviewContentRequest) -> _Target:
    problems = Violations()
    key = ""
    try:
        key = key_from_name(request.name)
    except InvalidArgument as exc:
        problems.items.extend(exc.violations)
    channel = CHANNEL_NAMES.get(request.channel, "")
    if not request.channel:
        problems.add("channel", "is required")
    elif not channel:
        problems.add("channel", f"unknown channel {request.channel}")
    version = getattr(request, "version", 0)
    problems.check(version >= 0, "version", "must be 0 (latest published) or a version number")
    problems.check(not request.locale or is_bcp47(request.locale), "locale",
                   "must be a BCP 47 language tag such as 'en' or 'ko-KR'")
    problems.raise_if_any()
    return _Target(key, version, channel, request.locale)


def _not_published(key: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"content item {key!r} has no published version; publish it first",
        reason="CONTENT_NOT_PUBLISHED", metadata={"content_key": key})


@dataclass(frozen=True)
class _Published:
    """A compiled published version, ready to render."""

    version: int
    revision: int
    compiled: CompiledContent
    fingerprint: str = ""


class ContentServicer(pb_grpc.ContentServiceServicer):
    def __init__(self, db: Database, requests: RequestLog, cache: CompiledCache,
                 clock: Clock) -> None:
        self.db = db
        self.requests = requests
        self.cache = cache
        self.clock = clock

    async def _write(self, method: str, request: Message, request_id: str,
                     response_type: type[R], compute: Callable[[Session], R]) -> R:
        """Run ``compute`` in one transaction, once per ``request_id``."""
        workspace = current_workspace()

        def run() -> R:
            with self.db.transaction() as session:
                return self.requests.once(
                    session, workspace_id=workspace, method=f"/{SERVICE}/{method}",
                    request_id=request_id, request=request, response_type=response_type,
                    compute=lambda: compute(session))

        return await self.db.run(run)

    async def _read(self, read: Callable[[Session], Any]) -> Any:
        def run() -> Any:
            with self.db.transaction() as session:
                return read(session)

        return await self.db.run(run)

    # --- content items ---------------------------------------------------------------------

    async def CreateContentItem(self, request: pb.CreateContentItemRequest,
                                context: grpc.aio.ServicerContext,
                                ) -> pb.CreateContentItemResponse:
        workspace = current_workspace()
        key = request.content_item.key
        draft = draft_from_proto(request.content_item)
        # Parsing templates is CPU work: keep it off the event loop.
        _raise_within(await asyncio.to_thread(check_new_item, key, draft), "content_item")

        def insert(session: Session) -> pb.CreateContentItemResponse:
            item = repository.insert(session, workspace, key, draft, self.clock.now())
            if item is None:
                raise AlreadyExists(f"content item {key!r} already exists",
                                    reason="CONTENT_ITEM_EXISTS", metadata={"content_key": key})
            return pb.CreateContentItemResponse(content_item=item_to_proto(item))

        return await self._write("CreateContentItem", request, request.request_id,
                                 pb.CreateContentItemResponse, insert)

    async def GetContentItem(self, request: pb.GetContentItemRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetContentItemResponse:
        key = key_from_name(request.name)
        workspace = current_workspace()
        item = await self._read(lambda session: repository.get(session, workspace, key))
        if item is None:
            raise _not_found(key)
        return pb.GetContentItemResponse(content_item=item_to_proto(item))

    async def ListContentItems(self, request: pb.ListContentItemsRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> pb.ListContentItemsResponse:
        size = page_size(request.page_size)
        after = _cursor(request.page_token, "after", str)
        workspace = current_workspace()
        items: list[ContentItem] = await self._read(
            lambda session: repository.page(session, workspace, after, size + 1, request.tag))
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
        _raise_within(await asyncio.to_thread(check_update, patch, mask), "content_item")

        def change(session: Session) -> pb.UpdateContentItemResponse:
            current = _item_at(session, workspace, key, etag)
            draft = apply_update(current.draft, patch, mask)
            if draft == current.draft:  # nothing changed: keep revision and etag
                return pb.UpdateContentItemResponse(content_item=item_to_proto(current))
            _raise_within(check_draft(draft), "content_item")
            saved = repository.save_revision(session, workspace, current, draft,
                                             self.clock.now())
            if saved is None:
                raise _stale("content item", key, current.etag)
            return pb.UpdateContentItemResponse(content_item=item_to_proto(saved))

        return await self._write("UpdateContentItem", request, request.request_id,
                                 pb.UpdateContentItemResponse, change)

    async def DeleteContentItem(self, request: pb.DeleteContentItemRequest,
                                context: grpc.aio.ServicerContext,
                                ) -> pb.DeleteContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.name)

        def remove(session: Session) -> pb.DeleteContentItemResponse:
            current = _item_at(session, workspace, key, request.etag)
            if not repository.delete_revision(session, workspace, key, current.revision):
                raise _stale("content item", key, current.etag)
            return pb.DeleteContentItemResponse()

        return await self._write("DeleteContentItem", request, request.request_id,
                                 pb.DeleteContentItemResponse, remove)

    # --- versions --------------------------------------------------------------------------

    async def PublishContentItem(self, request: pb.PublishContentItemRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.PublishContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.name)

        def publish(session: Session) -> pb.PublishContentItemResponse:
            current = _item_at(session, workspace, key, request.etag)
            snippets = resolve_snippets(
                current.draft.template_sources().values(),
                lambda keys: repository.snippet_sources(session, workspace, keys))
            version = repository.publish(session, workspace, current, current.draft,
                                         current.revision, snippets, self.clock.now())
            if version is None:
                raise _stale("content item", key, current.etag)
            return pb.PublishContentItemResponse(content_version=version_to_proto(version))

        return await self._write("PublishContentItem", request, request.request_id,
                                 pb.PublishContentItemResponse, publish)

    async def RollbackContentItem(self, request: pb.RollbackContentItemRequest,
                                  context: grpc.aio.ServicerContext,
                                  ) -> pb.RollbackContentItemResponse:
        workspace = current_workspace()
        key = key_from_name(request.name)
        if request.version <= 0:
            raise InvalidArgument.one("version", "must be a published version number")

        def rollback(session: Session) -> pb.RollbackContentItemResponse:
            current = _item_at(session, workspace, key, "")
            old = repository.get_version(session, workspace, key, request.version)
            if old is None:
                raise NotFound(f"content item {key!r} has no version {request.version}",
                               reason="CONTENT_VERSION_NOT_FOUND",
                               metadata={"content_key": key, "version": str(request.version)})
            version = repository.publish(session, workspace, current, old.draft, old.revision,
                                         old.snippets, self.clock.now(),
                                         rolled_back_from=old.version)
            if version is None:
                raise _stale("content item", key, current.etag)
            return pb.RollbackContentItemResponse(content_version=version_to_proto(version))

        return await self._write("RollbackContentItem", request, request.request_id,
                                 pb.RollbackContentItemResponse, rollback)

    async def ListContentItemVersions(self, request: pb.ListContentItemVersionsRequest,
                                      context: grpc.aio.ServicerContext,
                                      ) -> pb.ListContentItemVersionsResponse:
        key = key_from_name(request.parent, "parent")
        size = page_size(request.page_size)
        before = _cursor(request.page_token, "before", int)
        workspace = current_workspace()

        def read(session: Session) -> list[ContentVersion] | None:
            if repository.get(session, workspace, key) is None:
                return None
            return repository.versions_page(session, workspace, key, before, size + 1)

        versions: list[ContentVersion] | None = await self._read(read)
        if versions is None:
            raise _not_found(key)
        token = encode_token({"before": versions[size - 1].version}) if len(versions) > size else ""
        return pb.ListContentItemVersionsResponse(
            content_versions=[version_to_proto(v) for v in versions[:size]],
            next_page_token=token)

    # --- rendering -------------------------------------------------------------------------

    async def _published(self, workspace: str, targets: list[_Target],
                         ) -> tuple[dict[tuple[str, int], _Published | CjoError], str]:
        """(key, requested version) -> compiled version, or why it cannot be rendered; and the
        workspace's default locale.

        One transaction reads latest versions, fingerprints and the workspace's settings (one
        query each, whatever the batch size); the version documents are read only for
        versions this process has not compiled yet.
        """
        wanted = {(t.key, t.version) for t in targets}

        def resolve(session: Session,
                    ) -> tuple[dict[str, int], dict[tuple[str, int], str], str]:
            latest = repository.latest_versions(session, workspace, {k for k, _ in wanted})
            exact = {(k, v if v else latest.get(k, 0)) for k, v in wanted}
            return latest, repository.fingerprints(
                session, workspace, {(k, v) for k, v in exact if v}), \
                repository.get_settings(session, workspace).default_locale

        latest, fingerprints, workspace_locale = await self._read(resolve)
        out: dict[tuple[str, int], _Published | CjoError] = {}
        compiled: dict[tuple[str, int], CompiledContent] = {}
        missing: set[tuple[str, int]] = set()
        for key, version in fingerprints:
            found = self.cache.get((workspace, key, version), fingerprints[(key, version)])
            if found is None:
                missing.add((key, version))
            else:
                compiled[(key, version)] = found
        if missing:
            docs: dict[tuple[str, int], ContentVersion] = await self._read(
                lambda session: repository.versions(session, workspace, missing))

            def compile_all() -> None:
                for exact, doc in docs.items():
                    made = CompiledContent(doc.key, doc.draft, doc.snippets, doc.revision)
                    self.cache.put((workspace, *exact), fingerprints[exact], made)
                    compiled[exact] = made

            await asyncio.to_thread(compile_all)
        for key, requested in wanted:
            if key not in latest:
                out[(key, requested)] = _not_found(key)
                continue
            exact_version = requested or latest[key]
            if not exact_version:
                out[(key, requested)] = _not_published(key)
            elif (key, exact_version) not in compiled:
                out[(key, requested)] = NotFound(
                    f"content item {key!r} has no version {requested}",
                    reason="CONTENT_VERSION_NOT_FOUND",
                    metadata={"content_key": key, "version": str(requested)})
            else:
                entry = compiled[(key, exact_version)]
                out[(key, requested)] = _Published(exact_version, entry.revision, entry,
                                                   fingerprints[(key, exact_version)])
        return out, workspace_locale

    @staticmethod
    def _render(workspace: str, target: _Target, published: _Published | CjoError,
                request: pb.RenderContentRequest | pb.PreviewContentRequest,
                workspace_locale: str) -> common_pb2.RenderedMessage:
        """One render for a unary call: errors are raised, not put in a status."""
        if isinstance(published, CjoError):
            raise published
        context = context_from_proto(request.context, target.locale, workspace,
                                     workspace_locale)
        rendering = published.compiled.render_for(target.channel, context)
        return rendered_message(target.key, published.revision, published.version,
                                target.channel, rendering)

    async def RenderContent(self, request: pb.RenderContentRequest,
                            context: grpc.aio.ServicerContext) -> pb.RenderContentResponse:
        target = _target(request)
        workspace = current_workspace()
        found, workspace_locale = await self._published(workspace, [target])
        message = await asyncio.to_thread(self._render, workspace, target,
                                          found[(target.key, target.version)], request,
                                          workspace_locale)
        return pb.RenderContentResponse(message=message)

    async def BatchRenderContent(self, request: pb.BatchRenderContentRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.BatchRenderContentResponse:
        check_batch(request.requests, "requests")
        workspace = current_workspace()
        results = [pb.BatchRenderContentResult() for _ in request.requests]
        targets: list[tuple[int, _Target]] = []
        for index, item in enumerate(request.requests):
            try:
                targets.append((index, _target(item)))
            except InvalidArgument as exc:
                results[index].status.CopyFrom(
                    to_status_proto(exc.within(f"requests[{index}]"), DOMAIN))
        published: dict[tuple[str, int], _Published | CjoError] = {}
        workspace_locale = ""
        if targets:
            published, workspace_locale = await self._published(workspace,
                                                                [t for _, t in targets])
        renderable: list[tuple[int, _Target, _Published]] = []
        for index, target in targets:
            found = published[(target.key, target.version)]
            if isinstance(found, CjoError):
                results[index].status.CopyFrom(to_status_proto(found, DOMAIN))
            else:
                renderable.append((index, target, found))

        with tracer().start_as_current_span(
                "content.render_batch", attributes={"cjo.render.count": len(renderable)}):
            def render_all() -> None:
                for index, target, version in renderable:
                    results[index].CopyFrom(render_result(
                        workspace, version.compiled, version.version, target.channel,
                        target.locale, request.requests[index].context, workspace_locale))

            await asyncio.to_thread(render_all)
        return pb.BatchRenderContentResponse(results=results)

    async def PreviewContent(self, request: pb.PreviewContentRequest,
                             context: grpc.aio.ServicerContext) -> pb.PreviewContentResponse:
        target = _target(request)
        workspace = current_workspace()

        def read(session: Session) -> tuple[ContentItem, dict[str, str], str]:
            item = repository.get(session, workspace, target.key)
            if item is None:
                raise _not_found(target.key)
            snippets = resolve_snippets(
                item.draft.template_sources().values(),
                lambda keys: repository.snippet_sources(session, workspace, keys))
            return item, snippets, repository.get_settings(session, workspace).default_locale

        item, snippets, workspace_locale = await self._read(read)

        def preview() -> common_pb2.RenderedMessage:
            compiled = CompiledContent(item.key, item.draft, snippets, item.revision)
            return self._render(workspace, target, _Published(0, item.revision, compiled),
                                request, workspace_locale)

        return pb.PreviewContentResponse(message=await asyncio.to_thread(preview))

    # --- snippets --------------------------------------------------------------------------

    async def CreateSnippet(self, request: pb.CreateSnippetRequest,
                            context: grpc.aio.ServicerContext) -> pb.CreateSnippetResponse:
        workspace = current_workspace()
        key, source = request.snippet.key, request.snippet.source
        _raise_within(await asyncio.to_thread(check_snippet, key, source), "snippet")

        def insert(session: Session) -> pb.CreateSnippetResponse:
            snippet = repository.insert_snippet(session, workspace, key, source,
                                                self.clock.now())
            if snippet is None:
                raise AlreadyExists(f"snippet {key!r} already exists", reason="SNIPPET_EXISTS",
                                    metadata={"snippet_key": key})
            return pb.CreateSnippetResponse(snippet=snippet_to_proto(snippet))

        return await self._write("CreateSnippet", request, request.request_id,
                                 pb.CreateSnippetResponse, insert)

    async def GetSnippet(self, request: pb.GetSnippetRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetSnippetResponse:
        key = snippet_key_from_name(request.name)
        workspace = current_workspace()
        snippet = await self._read(lambda session: repository.get_snippet(session, workspace, key))
        if snippet is None:
            raise _snippet_not_found(key)
        return pb.GetSnippetResponse(snippet=snippet_to_proto(snippet))

    async def ListSnippets(self, request: pb.ListSnippetsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListSnippetsResponse:
        size = page_size(request.page_size)
        after = _cursor(request.page_token, "after", str)
        workspace = current_workspace()
        snippets: list[Snippet] = await self._read(
            lambda session: repository.snippets_page(session, workspace, after, size + 1))
        token = encode_token({"after": snippets[size - 1].key}) if len(snippets) > size else ""
        return pb.ListSnippetsResponse(snippets=[snippet_to_proto(s) for s in snippets[:size]],
                                       next_page_token=token)

    async def UpdateSnippet(self, request: pb.UpdateSnippetRequest,
                            context: grpc.aio.ServicerContext) -> pb.UpdateSnippetResponse:
        workspace = current_workspace()
        key = snippet_key_from_name(request.snippet.name, "snippet.name")
        source, etag = request.snippet.source, request.snippet.etag
        _raise_within(await asyncio.to_thread(check_snippet, key, source, ""), "snippet")

        def change(session: Session) -> pb.UpdateSnippetResponse:
            current = _snippet_at(session, workspace, key, etag)
            if source == current.source:
                return pb.UpdateSnippetResponse(snippet=snippet_to_proto(current))
            saved = repository.save_snippet(session, workspace, current, source,
                                            self.clock.now())
            if saved is None:
                raise _stale("snippet", key, current.etag)
            return pb.UpdateSnippetResponse(snippet=snippet_to_proto(saved))

        return await self._write("UpdateSnippet", request, request.request_id,
                                 pb.UpdateSnippetResponse, change)

    async def DeleteSnippet(self, request: pb.DeleteSnippetRequest,
                            context: grpc.aio.ServicerContext) -> pb.DeleteSnippetResponse:
        workspace = current_workspace()
        key = snippet_key_from_name(request.name)

        def remove(session: Session) -> pb.DeleteSnippetResponse:
            current = _snippet_at(session, workspace, key, request.etag)
            if not repository.delete_snippet(session, workspace, key, current.revision):
                raise _stale("snippet", key, current.etag)
            return pb.DeleteSnippetResponse()

        return await self._write("DeleteSnippet", request, request.request_id,
                                 pb.DeleteSnippetResponse, remove)


    # --- settings --------------------------------------------------------------------------

    async def GetContentSettings(self, request: pb.GetContentSettingsRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.GetContentSettingsResponse:
        check_settings_name(request.name, "name")
        workspace = current_workspace()
        settings = await self._read(lambda session: repository.get_settings(session, workspace))
        return pb.GetContentSettingsResponse(content_settings=settings_to_proto(settings))

    async def UpdateContentSettings(self, request: pb.UpdateContentSettingsRequest,
                                    context: grpc.aio.ServicerContext,
                                    ) -> pb.UpdateContentSettingsResponse:
        workspace = current_workspace()
        check_settings_name(request.content_settings.name, "content_settings.name")
        mask = parse_settings_mask(request.update_mask.paths)
        patch = settings_from_proto(request.content_settings)
        etag = request.content_settings.etag
        # Validate before the transaction so bad input never touches the database.
        try:
            apply_settings_update(ContentSettings(), patch, mask)
        except InvalidArgument as exc:
            raise exc.within("content_settings") from None

        def change(session: Session) -> pb.UpdateContentSettingsResponse:
            current = repository.get_settings(session, workspace)
            _check_etag("content settings", SETTINGS_NAME, etag, current.etag)
            updated = apply_settings_update(current, patch, mask)
            if updated == current:  # nothing changed: keep revision and etag
                return pb.UpdateContentSettingsResponse(
                    content_settings=settings_to_proto(current))
            saved = repository.save_settings(session, workspace, current, updated,
                                             self.clock.now())
            if saved is None:
                raise _stale("content settings", SETTINGS_NAME, current.etag)
            return pb.UpdateContentSettingsResponse(content_settings=settings_to_proto(saved))

        return await self._write("UpdateContentSettings", request, request.request_id,
                                 pb.UpdateContentSettingsResponse, change)


T = TypeVar("T")


def _cursor(token: str, name: str, kind: type[T]) -> T | None:
    cursor = decode_token(token)
    if cursor is None:
        return None
    value = cursor.get(name)
    if not isinstance(value, kind):
        raise InvalidArgument.one("page_token", "is not a token returned by this method")
    return value
