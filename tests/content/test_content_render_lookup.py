"""What a render reads before it renders, on SQLite and PostgreSQL: the latest published
versions, their fingerprints and the workspace's default locale in one statement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from cjo_content import adapters
from cjo_content.domain.content_items import ContentDraft, SmsTemplate
from cjo_content.domain.rendering import CompiledCache, RenderContext, RenderTarget
from cjo_content.domain.settings import ContentSettings
from cjo_content.service_layer import content_items, settings, versions
from cjo_content.service_layer.rendering import Renderer
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.migrations import upgrade
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import CjoError, NotFound
from support import PG_URL, Backend

WS = "ws-a"
MIGRATIONS = Path(str(adapters.__file__)).parent / "migrations"


@pytest.fixture
def transactions(backend: Backend) -> Iterator[Transactions]:
    url = PG_URL if backend.kind == "postgresql" else f"sqlite:///{backend.data_dir}/c.db"
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url, schema=backend.schema_prefix + "content")
    db.create_schema()
    upgrade(db, MIGRATIONS)
    yield Transactions(db, ManualClock())
    db.dispose()


def sms(key: str, text: str) -> Any:
    return lambda uow: content_items.create(uow, WS, key, ContentDraft(sms=SmsTemplate(text)))


def person() -> RenderContext:
    return RenderContext(traits={"name": "Ann"}, profile_id="p1", workspace_id=WS)


def text_of(outcome: object) -> str:
    assert not isinstance(outcome, CjoError), outcome
    return outcome.rendering.body.text  # type: ignore[attr-defined, no-any-return]


async def test_rendering_latest_versions_reads_once(transactions: Transactions) -> None:
    """A journey's render asks for the latest published version of each item: one statement
    reads what the renders need, however many items and people the batch holds."""
    tx = transactions.run_sync
    for key in ("a", "b"):
        tx(sms(key, f"{key} v1 {{{{ profile.name }}}}"))
        tx(lambda uow, key=key: versions.publish(uow, WS, key))
    tx(lambda uow: content_items.update(uow, WS, "a", ContentDraft(sms=SmsTemplate("a v2")),
                                        content_items.UpdateMask.parse(["sms"])))
    tx(lambda uow: versions.publish(uow, WS, "a"))
    renderer = Renderer(transactions, CompiledCache(max_entries=16))
    batch = [(RenderTarget(key, 0, "sms", ""), person()) for key in ("a", "b", "a")]
    await renderer.render_batch(WS, batch)  # compiles and caches both versions

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith("SELECT 1"):
            statements.append(statement)

    event.listen(transactions.db.engine, "before_cursor_execute", count)
    try:
        outcomes = await renderer.render_batch(WS, batch)
    finally:
        event.remove(transactions.db.engine, "before_cursor_execute", count)
    assert [text_of(o) for o in outcomes] == ["a v2", "b v1 Ann", "a v2"]
    assert len(statements) == 1, statements


async def test_pinned_missing_and_default_locale(transactions: Transactions) -> None:
    tx = transactions.run_sync
    tx(sms("a", "one"))
    tx(lambda uow: versions.publish(uow, WS, "a"))
    tx(lambda uow: content_items.update(uow, WS, "a", ContentDraft(sms=SmsTemplate("two")),
                                        content_items.UpdateMask.parse(["sms"])))
    tx(lambda uow: versions.publish(uow, WS, "a"))
    renderer = Renderer(transactions, CompiledCache(max_entries=16))
    pinned, latest, missing = await renderer.render_batch(WS, [
        (RenderTarget("a", 1, "sms", ""), person()), (RenderTarget("a", 0, "sms", ""), person()),
        (RenderTarget("nope", 0, "sms", ""), person())])
    assert (text_of(pinned), text_of(latest)) == ("one", "two")
    assert isinstance(missing, NotFound)
    # The workspace's default locale, also when no item of the batch exists.
    tx(lambda uow: settings.update(uow, WS, ContentSettings("de"),
                                   frozenset({"default_locale"})))
    found, locale = await renderer.published(WS, [("nope", 0)])
    assert locale == "de" and isinstance(found[("nope", 0)], NotFound)
    found, locale = await renderer.published(WS, [("a", 0)])
    assert locale == "de"
