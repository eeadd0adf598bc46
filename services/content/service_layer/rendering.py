"""Rendering: find the published versions a request or a batch needs, compile each version
once per process (the cache), render them for one person each; preview a draft.

Reads run in units of work; what they found stays in a PublishedCache (when the process has
one) until a change is signalled. Compiling and rendering are CPU work and run in a worker
thread, never in the database's thread pool; only a render call of a few people, of versions
whose recent renders were all fast, runs on the event loop, where the hop to a thread would
cost more than the render. There a call's renders get INLINE_RENDER_SECONDS together; past
that the version is no longer seen fast and the rest renders again in a thread. Every render
is interrupted at the render time limit wherever it runs (domain/watchdog.py); within one
batch a version that reached it skips the rest of its requests (UNAVAILABLE RENDER_SKIPPED,
retried by the caller). A workspace's renders of versions seen slow run one at a time (its
slow lane), so its slow templates hold one thread, never the threads every other render
uses, nor the GIL turns of the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from cjo_content.adapters import repository
from cjo_content.domain.content_items import ContentItem, ContentVersion
from cjo_content.domain.errors import item_not_found, not_published, version_not_found
from cjo_content.domain.rendering import (
    INLINE_RENDER_SECONDS,
    CompiledCache,
    CompiledContent,
    RenderContext,
    RenderedContent,
    RenderTarget,
    RenderTimeLimitExceeded,
    TooSlowInline,
)
from cjo_content.domain.snippets import resolve_snippets
from cjo_content.service_layer.published_cache import PublishedCache
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import CjoError, Unavailable
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import tracer

log = get_logger("cjo.content")

T = TypeVar("T")

# (item key, requested version: 0 for the latest published)
Wanted = tuple[str, int]

# Render calls of up to this many people render on the event loop when their versions were
# seen fast (CompiledContent.seen_fast): a thread hop costs more CPU than rendering a message
# or two (measured: tests/benchmarks/content.py --batch 1).
INLINE_RENDERS = 4

INLINE_PAUSE_SECONDS = 1.0
"""After a render on the event loop ran past INLINE_RENDER_SECONDS, the workspace's renders
all run in its slow lane for this long: its concurrent calls whose versions all turned slow at
once (their renders run back to back when nothing they await yields) hold the loop once
together, not once each, and never crowd the shared threads (CPU-bound threads contend with
the event loop for the GIL). Another workspace's calls are not concerned."""


class _Lane:
    """A workspace's renders of versions seen slow, one at a time."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


async def off_loop(count: int, work: Callable[[], T]) -> T:
    """``work`` (CPU work for ``count`` requests) in a worker thread, or right here when the
    call is small enough (INLINE_RENDERS) that the hop would cost more than the work."""
    if count <= INLINE_RENDERS:
        return work()
    return await asyncio.to_thread(work)


@dataclass(frozen=True)
class Published:
    """A compiled published version, ready to render."""

    version: int
    compiled: CompiledContent


@dataclass(frozen=True)
class _Lookup:
    """What one transaction read for a set of render requests."""

    latest: dict[str, int]  # item key -> latest published version, for the items that exist
    fingerprints: dict[tuple[str, int], str]  # (key, exact version) -> fingerprint
    workspace_locale: str


def _look_up(uow: UnitOfWork, workspace_id: str, wanted: Collection[Wanted]) -> _Lookup:
    """Latest versions, fingerprints and the workspace's default locale: one query when every
    request asks for an item's latest version (what journeys send), one more for the exact
    versions asked for that are not the latest, whatever the batch size."""
    found = repository.render_lookup(uow.session, workspace_id, {k for k, _ in wanted})
    exact = {(k, v or found.latest.get(k, 0)) for k, v in wanted}
    other = {e for e in exact if e[1] and e not in found.latest_fingerprints}
    fingerprints = {e: found.latest_fingerprints[e] for e in exact
                    if e in found.latest_fingerprints}
    if other:
        fingerprints |= repository.fingerprints(uow.session, workspace_id, other)
    return _Lookup(found.latest, fingerprints, found.default_locale)


def _render(content: CompiledContent, version: int, target: RenderTarget,
            context: RenderContext, inline: float = 0.0) -> RenderedContent:
    return RenderedContent(content.key, content.revision, version, target.channel,
                           content.render_for(target.channel, context, inline))




def _skipped(key: str) -> CjoError:
    return Unavailable(
        f"content item {key!r} was not rendered: another render of its version in this batch "
        "reached the render time limit; retry it on its own",
        reason="RENDER_SKIPPED", metadata={"content_key": key})


class Renderer:
    """Renders content for people. One per process: it owns the compiled-version cache."""

    def __init__(self, transactions: Transactions, cache: CompiledCache,
                 published_cache: PublishedCache | None = None) -> None:
        self.transactions = transactions
        self.cache = cache
        self.published_cache = published_cache
        self._lanes: dict[str, _Lane] = {}  # workspace -> its slow lane, while in use
        self._paused: dict[str, float] = {}  # workspace -> until when it renders slow only

    def _is_paused(self, workspace_id: str) -> bool:
        until = self._paused.get(workspace_id)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._paused[workspace_id]
        return False

    def _pause(self, workspace_id: str) -> None:
        self._paused[workspace_id] = time.monotonic() + INLINE_PAUSE_SECONDS

    async def _in_thread(self, workspace_id: str | None, work: Callable[..., T],
                         *args: Any) -> T:
        """``work(*args)`` in a worker thread (with this context, the trace, as
        asyncio.to_thread does); in the workspace's slow lane when ``workspace_id`` is set."""
        if workspace_id is None:
            return await asyncio.to_thread(work, *args)
        lane = self._lanes.get(workspace_id)
        if lane is None:
            lane = self._lanes[workspace_id] = _Lane()
        lane.users += 1

        def leave() -> None:
            lane.users -= 1
            if not lane.users:
                del self._lanes[workspace_id]

        try:
            await lane.lock.acquire()
        except BaseException:
            leave()
            raise

        def release(done: asyncio.Future[T]) -> None:
            if not done.cancelled():
                done.exception()  # retrieved: a caller gone away is no error to log
            lane.lock.release()
            leave()

        # The lane is released when the render ends, not when its caller does: a call
        # cancelled (its deadline, its client) leaves the render running in its thread.
        rendering = asyncio.ensure_future(asyncio.to_thread(work, *args))
        rendering.add_done_callback(release)
        return await asyncio.shield(rendering)

    async def render(self, workspace_id: str, target: RenderTarget,
                     context: RenderContext) -> RenderedContent:
        """One published version rendered for one person; errors are raised."""
        found, workspace_locale = await self.published(workspace_id, [(target.key,
                                                                       target.version)])
        published = found[(target.key, target.version)]
        if isinstance(published, CjoError):
            raise published
        compiled, context = published.compiled, replace(context,
                                                        workspace_locale=workspace_locale)
        paused = self._is_paused(workspace_id)
        if not paused and compiled.seen_fast():
            try:
                return _render(compiled, published.version, target, context,
                               INLINE_RENDER_SECONDS)
            except TooSlowInline as exc:  # rendered again in a thread
                if exc.demoted:  # the version turned slow, not the GIL busy elsewhere
                    self._pause(workspace_id)
                    paused = True
        lane = workspace_id if paused or compiled.seen_slow() else None
        return await self._in_thread(lane, _render, compiled, published.version, target,
                                     context)

    async def render_batch(self, workspace_id: str,
                           requests: Sequence[tuple[RenderTarget, RenderContext]],
                           ) -> list[RenderedContent | CjoError]:
        """One outcome per request, in order: its rendering or why it failed. A request that
        fails never fails the others."""
        if not requests:
            return []
        found, workspace_locale = await self.published(
            workspace_id, {(target.key, target.version) for target, _ in requests})

        too_slow: set[int] = set()  # id(compiled) of the versions that reached the limit

        def outcome(target: RenderTarget, context: RenderContext,
                    inline: float = 0.0) -> RenderedContent | CjoError:
            published = found[(target.key, target.version)]
            if isinstance(published, CjoError):
                return published
            if id(published.compiled) in too_slow:
                # One render of it took the whole limit, and this one might too: the batch
                # would take requests x limit. Skipped, retryable: it may well be fast.
                return _skipped(target.key)
            try:
                return _render(published.compiled, published.version, target,
                               replace(context, workspace_locale=workspace_locale), inline)
            except TooSlowInline:
                raise
            except RenderTimeLimitExceeded as exc:
                too_slow.add(id(published.compiled))
                return exc
            except CjoError as exc:
                return exc
            except Exception:
                # A bug in one render must not fail the rest of the batch.
                log.exception("render failed unexpectedly", content_key=target.key)
                return CjoError("render failed")

        def work(rest: Sequence[tuple[RenderTarget, RenderContext]],
                 ) -> list[RenderedContent | CjoError]:
            return [outcome(target, context) for target, context in rest]

        versions = [p for p in found.values() if isinstance(p, Published)]
        renderable = sum(isinstance(found[(t.key, t.version)], Published) for t, _ in requests)
        with tracer().start_as_current_span(
                "content.render_batch", attributes={"cjo.render.count": renderable}):
            done: list[RenderedContent | CjoError] = []
            paused = self._is_paused(workspace_id)
            if (not paused and len(requests) <= INLINE_RENDERS
                    and all(p.compiled.seen_fast() for p in versions)):
                # The budget counts this thread's CPU, not other threads' turns with the GIL.
                budget_end = time.thread_time() + INLINE_RENDER_SECONDS
                try:
                    for target, context in requests:
                        left = max(budget_end - time.thread_time(), 0.001)
                        done.append(outcome(target, context, left))
                    return done
                except TooSlowInline as exc:  # the rest renders again in a thread
                    if exc.demoted:
                        self._pause(workspace_id)
                        paused = True
            slow = paused or any(p.compiled.seen_slow() for p in versions)
            return done + await self._in_thread(workspace_id if slow else None, work,
                                                requests[len(done):])

    async def preview(self, workspace_id: str, target: RenderTarget,
                      context: RenderContext) -> RenderedContent:
        """The item's current draft (with the snippets as they are now) rendered for one
        person, without publishing it; reported as version 0."""
        item, snippets, workspace_locale = await self.transactions.run(
            lambda uow: _draft_to_preview(uow, workspace_id, target.key))
        context = replace(context, workspace_locale=workspace_locale)

        def preview() -> RenderedContent:
            compiled = CompiledContent(item.key, item.draft, snippets, item.revision)
            return _render(compiled, 0, target, context)

        return await asyncio.to_thread(preview)

    async def published(self, workspace_id: str, wanted: Collection[Wanted],
                        ) -> tuple[dict[Wanted, Published | CjoError], str]:
        """(key, requested version) -> the compiled version, or why it cannot be rendered;
        and the workspace's default locale.

        The version documents are read (in a second transaction) and compiled only for
        versions this process has not compiled yet."""
        lookup = self._known(workspace_id, wanted)
        if lookup is None:
            lookup = await self._read(workspace_id, wanted)
        compiled: dict[tuple[str, int], CompiledContent] = {}
        missing: set[tuple[str, int]] = set()
        for exact, fingerprint in lookup.fingerprints.items():
            hit = self.cache.get((workspace_id, *exact), fingerprint)
            if hit is None:
                missing.add(exact)
            else:
                compiled[exact] = hit
        if missing:
            documents: dict[tuple[str, int], ContentVersion] = await self.transactions.run(
                lambda uow: repository.versions(uow.session, workspace_id, missing))
            compiled |= await asyncio.to_thread(self._compile, workspace_id, documents,
                                                lookup.fingerprints)
        out: dict[Wanted, Published | CjoError] = {}
        for key, requested in wanted:
            out[(key, requested)] = _resolve(key, requested, lookup.latest, compiled)
        return out, lookup.workspace_locale

    def _known(self, workspace_id: str, wanted: Collection[Wanted]) -> _Lookup | None:
        """What the published cache knows, when the requests ask only for latest versions
        it holds (a pinned older version is read)."""
        if self.published_cache is None:
            return None
        known = self.published_cache.known(workspace_id, {key for key, _ in wanted})
        if known is None or any(v and v != known.latest[k] for k, v in wanted):
            return None
        return _Lookup(known.latest, known.fingerprints, known.locale)

    async def _read(self, workspace_id: str, wanted: Collection[Wanted]) -> _Lookup:
        cache = self.published_cache
        generation = cache.generation if cache is not None else 0
        lookup = await self.transactions.run(lambda uow: _look_up(uow, workspace_id, wanted))
        if cache is not None:
            cache.keep(workspace_id, generation, lookup.latest, lookup.fingerprints,
                       lookup.workspace_locale)
        return lookup

    def _compile(self, workspace_id: str, documents: dict[tuple[str, int], ContentVersion],
                 fingerprints: dict[tuple[str, int], str],
                 ) -> dict[tuple[str, int], CompiledContent]:
        made: dict[tuple[str, int], CompiledContent] = {}
        for exact, doc in documents.items():
            made[exact] = CompiledContent(doc.key, doc.draft, doc.snippets, doc.revision)
            self.cache.put((workspace_id, *exact), fingerprints[exact], made[exact])
        return made


def _resolve(key: str, requested: int, latest: dict[str, int],
             compiled: dict[tuple[str, int], CompiledContent]) -> Published | CjoError:
    if key not in latest:
        return item_not_found(key)
    version = requested or latest[key]
    if not version:
        return not_published(key)
    if (key, version) not in compiled:
        return version_not_found(key, requested)
    return Published(version, compiled[(key, version)])


def _draft_to_preview(uow: UnitOfWork, workspace_id: str,
                      key: str) -> tuple[ContentItem, dict[str, str], str]:
    """The draft, the sources of the snippets it includes now, and the workspace locale."""
    item = repository.get(uow.session, workspace_id, key)
    if item is None:
        raise item_not_found(key)
    snippets = resolve_snippets(
        item.draft.template_sources().values(),
        lambda keys: repository.snippet_sources(uow.session, workspace_id, keys))
    return item, snippets, repository.get_settings(uow.session, workspace_id).default_locale
