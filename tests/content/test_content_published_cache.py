"""Renders read nothing from the database while what they need is cached, and every replica
renders what was published, rolled back, deleted or configured since (its signal), in its own
workspace only; a lost signal is outlived by at most the cache's max age."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from cjo_content import adapters
from cjo_content.domain.content_items import ContentDraft, SmsTemplate
from cjo_content.domain.rendering import CompiledCache, RenderContext, RenderTarget
from cjo_content.domain.settings import ContentSettings
from cjo_content.service_layer import content_items, settings, versions
from cjo_content.service_layer.published_cache import PublishedCache
from cjo_content.service_layer.rendering import Renderer
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from cjo_platform.db.signals import Signals
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import CjoError, NotFound
from support import PG_URL, Backend, eventually

WS, OTHER = "ws-a", "ws-b"
MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"
SMS = content_items.UpdateMask.parse(["sms"])
MAX_AGE = timedelta(seconds=2)


@dataclass
class Replica:
    transactions: Transactions
    published: PublishedCache
    renderer: Renderer
    statements: list[str]

    async def write(self, work: Any) -> Any:
        return await self.transactions.run(work)

    async def text(self, key: str, workspace: str = WS) -> str:
        [outcome] = await self.renderer.render_batch(workspace, [(
            RenderTarget(key, 0, "sms", ""),
            RenderContext(traits={"name": "Ann"}, profile_id="p1",
                          workspace_id=workspace))])
        if isinstance(outcome, CjoError):
            return type(outcome).__name__
        return outcome.rendering.body.text  # type: ignore[no-any-return]

    async def cached(self, key: str, expected: str, workspace: str = WS) -> bool:
        """Whether a render of ``key`` says ``expected`` without reading the database."""
        self.statements.clear()
        text = await self.text(key, workspace)
        # (the pool's liveness checks are not the render's)
        read = [s for s in self.statements if not s.lstrip().upper().startswith("SELECT 1")]
        return text == expected and not read


@asynccontextmanager
async def replicas(backend: Backend, clock: ManualClock) -> AsyncIterator[list[Replica]]:
    """Two replicas sharing one PostgreSQL database (own Database, signals and caches); on
    SQLite, where one process serves a database, one."""
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/c.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    made: list[Replica] = []
    tasks: list[asyncio.Task[None]] = []
    dbs: list[Database] = []
    for _ in range(2 if backend.kind == "postgresql" else 1):
        db = Database(url, schema=backend.schema_prefix + "content")
        dbs.append(db)
        if len(dbs) == 1:
            db.create_schema()
            upgrade(db, MIGRATIONS)
        transactions = Transactions(db, clock)
        signals = Signals(db)
        published = PublishedCache(signals, clock, max_age=MAX_AGE)
        statements: list[str] = []
        event.listen(db.engine, "before_cursor_execute",
                     lambda *args, s=statements: s.append(args[2]))
        made.append(Replica(transactions, published,
                            Renderer(transactions, CompiledCache(16), published), statements))
        tasks.append(asyncio.create_task(signals.run()))
        await asyncio.wait_for(signals.listening.wait(), 10)
    try:
        yield made
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for db in dbs:
            db.dispose()


def create(key: str, text: str, workspace: str = WS) -> Any:
    return lambda uow: content_items.create(uow, workspace, key,
                                            ContentDraft(sms=SmsTemplate(text)))


def edit(key: str, text: str, workspace: str = WS) -> Any:
    return lambda uow: content_items.update(uow, workspace, key,
                                            ContentDraft(sms=SmsTemplate(text)), SMS)


async def test_every_replica_renders_what_was_published_since(backend: Backend) -> None:
    clock = ManualClock()
    async with replicas(backend, clock) as group:
        writer, reader = group[0], group[-1]
        cache = writer.published
        await writer.write(create("a", "v1 {{ profile.name }}"))
        await writer.write(lambda uow: versions.publish(uow, WS, "a", published=cache))
        await writer.write(create("a", "other v1", OTHER))
        await writer.write(lambda uow: versions.publish(uow, OTHER, "a", published=cache))
        # Once read (and no change heard since), renders read nothing.
        assert await eventually(lambda: reader.cached("a", "v1 Ann"))

        # A version published on one replica: its next render and, once they heard it, every
        # other replica's renders use it.
        assert await eventually(lambda: writer.cached("a", "v1 Ann"))
        await writer.write(edit("a", "v2 {{ profile.name }}"))
        await writer.write(lambda uow: versions.publish(uow, WS, "a", published=cache))
        assert await writer.text("a") == "v2 Ann"
        # (another replica hears it within milliseconds)
        assert await eventually(lambda: _is(reader.text("a"), "v2 Ann"))
        # ...and the other workspace's content is its own, still cached.
        assert await eventually(lambda: reader.cached("a", "other v1", OTHER))

        # Rolled back, the default locale changed, deleted: the same.
        await writer.write(lambda uow: versions.rollback(uow, WS, "a", 1, published=cache))
        assert await writer.text("a") == "v1 Ann"
        assert await eventually(lambda: _is(reader.text("a"), "v1 Ann"))
        await writer.write(lambda uow: content_items.update(
            uow, WS, "a", ContentDraft(sms=SmsTemplate("{{ locale }}")), SMS))
        await writer.write(lambda uow: versions.publish(uow, WS, "a", published=cache))
        # (the base body is written in the workspace's default locale)
        assert await eventually(lambda: _is(reader.text("a"), "en"))
        await writer.write(lambda uow: settings.update(uow, WS, ContentSettings("de"),
                                                 frozenset({"default_locale"}),
                                                 published=cache))
        assert await writer.text("a") == "de"
        assert await eventually(lambda: _is(reader.text("a"), "de"))
        await writer.write(lambda uow: content_items.delete(uow, WS, "a", published=cache))
        assert await writer.text("a") == NotFound.__name__
        assert await eventually(lambda: _is(reader.text("a"), NotFound.__name__))
        assert await reader.text("a", OTHER) == "other v1"


async def _is(text: Any, expected: str) -> bool:
    return bool(await text == expected)


async def test_a_lost_signal_lasts_at_most_the_max_age(backend: Backend) -> None:
    clock = ManualClock()
    async with replicas(backend, clock) as group:
        replica = group[0]
        await replica.write(create("a", "v1"))
        await replica.write(lambda uow: versions.publish(uow, WS, "a",
                                                         published=replica.published))
        assert await eventually(lambda: replica.cached("a", "v1"))
        await replica.write(edit("a", "v2"))
        await replica.write(lambda uow: versions.publish(uow, WS, "a"))  # no signal
        assert await replica.text("a") == "v1"
        clock.advance(MAX_AGE)
        assert await replica.text("a") == "v2"


async def test_a_read_that_overlapped_a_change_is_not_kept(backend: Backend) -> None:
    clock = ManualClock()
    async with replicas(backend, clock) as group:
        cache = group[0].published
        generation = cache.generation
        cache._heard(WS)  # a change heard while the read ran
        cache.keep(WS, generation, {"a": 1}, {("a", 1): "f1"}, "en")
        assert cache.known(WS, {"a"}) is None
        cache.keep(WS, cache.generation, {"a": 1}, {("a", 1): "f1"}, "en")
        assert cache.known(WS, {"a"}) is not None
        cache.signals.listening.clear()  # the LISTEN connection broke: signals may be lost
        assert cache.known(WS, {"a"}) is None

