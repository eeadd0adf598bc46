"""The content use-cases called directly (no gRPC), each in a unit of work on a temporary
SQLite database: what a user of the service would notice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from cjo_content.adapters.tables import metadata
from cjo_content.domain.content_items import (
    ContentDraft,
    EmailTemplate,
    Localization,
    SmsTemplate,
    UpdateMask,
)
from cjo_content.domain.rendering import (
    CompiledCache,
    RenderContext,
    RenderedContent,
    RenderedEmail,
    RenderedSms,
    RenderTarget,
)
from cjo_content.domain.settings import ContentSettings
from cjo_content.service_layer import content_items, settings, snippets, versions
from cjo_content.service_layer.rendering import Renderer
from cjo_platform.clock import ManualClock
from cjo_platform.db import Database
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import (
    Aborted,
    AlreadyExists,
    CjoError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

WS = "ws-a"
T = TypeVar("T")


class Content:
    """The use-cases over one temporary database, run the way the servicer runs them."""

    def __init__(self, path: Path) -> None:
        db = Database(f"sqlite:///{path}/content.db")
        metadata.create_all(db.engine)
        self.clock = ManualClock()
        self.transactions = Transactions(db, self.clock)
        self.cache = CompiledCache(max_entries=16)
        self.renderer = Renderer(self.transactions, self.cache)

    def __call__(self, work: Callable[[UnitOfWork], T]) -> T:
        return self.transactions.run_sync(work)


@pytest.fixture
def content(tmp_path: Path) -> Content:
    return Content(tmp_path)


def email(subject: str, html: str = "<p>Hi</p>") -> ContentDraft:
    return ContentDraft(email=EmailTemplate(subject=subject, html=html))


def person(**traits: object) -> RenderContext:
    return RenderContext(traits=traits, profile_id="p1", workspace_id=WS)


EMAIL = RenderTarget("promo", 0, "email", "")


def subject(rendered: RenderedContent) -> str:
    body = rendered.rendering.body
    assert isinstance(body, RenderedEmail)
    return body.subject


def test_items_are_created_read_listed_changed_and_deleted(content: Content) -> None:
    created = content(lambda uow: content_items.create(uow, WS, "promo", email("Hi")))
    assert (created.key, created.revision, created.latest_version) == ("promo", 1, 0)
    with pytest.raises(AlreadyExists):
        content(lambda uow: content_items.create(uow, WS, "promo", email("Again")))
    with pytest.raises(InvalidArgument) as bad:
        content(lambda uow: content_items.create(uow, WS, "Bad Key", email("{{ x")))
    assert {v.field for v in bad.value.violations} == {"key", "email.subject"}
    # Keys are per workspace.
    content(lambda uow: content_items.create(uow, "ws-b", "promo", email("Other")))

    content.clock.advance(timedelta(minutes=1))
    patch, subject_only = email("Hello"), UpdateMask.parse(["email.subject"])
    updated = content(lambda uow: content_items.update(uow, WS, "promo", patch, subject_only,
                                                       created.etag))
    assert (updated.revision, updated.draft.email) == (2, EmailTemplate("Hello", html="<p>Hi</p>"))
    assert updated.update_time - created.update_time == timedelta(minutes=1)
    same = content(lambda uow: content_items.update(uow, WS, "promo", patch, subject_only))
    assert same.etag == updated.etag  # nothing changed: same revision
    with pytest.raises(Aborted):  # the etag read before the update is stale now
        content(lambda uow: content_items.update(uow, WS, "promo", email("Late"), subject_only,
                                                 created.etag))
    assert content(lambda uow: content_items.get(uow, WS, "promo")) == updated

    for key in ("a-1", "b-1", "c-1"):
        content(partial(content_items.create, workspace_id=WS, key=key,
                        draft=ContentDraft(tags=("sale",), sms=SmsTemplate("x"))))
    first, after = content(lambda uow: content_items.page(uow, WS, None, 2, "sale"))
    assert [i.key for i in first] == ["a-1", "b-1"] and after == "b-1"
    rest, end = content(lambda uow: content_items.page(uow, WS, after, 2, "sale"))
    assert [i.key for i in rest] == ["c-1"] and end is None

    with pytest.raises(Aborted):
        content(lambda uow: content_items.delete(uow, WS, "promo", created.etag))
    content(lambda uow: content_items.delete(uow, WS, "promo"))
    with pytest.raises(NotFound):
        content(lambda uow: content_items.get(uow, WS, "promo"))
    assert content(lambda uow: content_items.get(uow, "ws-b", "promo")).revision == 1


def test_versions_freeze_draft_and_snippets_and_roll_back(content: Content) -> None:
    content(lambda uow: snippets.create(uow, WS, "sign", "Cheers"))
    content(lambda uow: content_items.create(
        uow, WS, "promo", email("v1", html="<p>{% render 'sign' %}</p>")))
    v1 = content(lambda uow: versions.publish(uow, WS, "promo"))
    assert (v1.version, v1.snippets) == (1, {"sign": "Cheers"})
    content(lambda uow: snippets.update(uow, WS, "sign", "Bye"))
    content(lambda uow: content_items.update(uow, WS, "promo", email("v2"),
                                             UpdateMask.parse(["email.subject"])))
    v2 = content(lambda uow: versions.publish(uow, WS, "promo"))
    assert (v2.version, v2.revision, v2.snippets) == (2, 2, {"sign": "Bye"})

    back = content(lambda uow: versions.rollback(uow, WS, "promo", 1))
    assert (back.version, back.rolled_back_from, back.snippets) == (3, 1, {"sign": "Cheers"})
    assert back.draft.email is not None and back.draft.email.subject == "v1"
    newest, before = content(lambda uow: versions.page(uow, WS, "promo", None, 2))
    assert [v.version for v in newest] == [3, 2] and before == 2
    oldest, end = content(lambda uow: versions.page(uow, WS, "promo", before, 2))
    assert [v.version for v in oldest] == [1] and end is None

    with pytest.raises(NotFound):
        content(lambda uow: versions.rollback(uow, WS, "promo", 9))
    with pytest.raises(InvalidArgument):
        content(lambda uow: versions.rollback(uow, WS, "promo", 0))
    content(lambda uow: content_items.create(
        uow, WS, "broken", email("x", html="{% render 'missing' %}")))
    with pytest.raises(FailedPrecondition):
        content(lambda uow: versions.publish(uow, WS, "broken"))


def test_snippets_are_created_changed_listed_and_deleted(content: Content) -> None:
    first = content(lambda uow: snippets.create(uow, WS, "sign", "Cheers"))
    with pytest.raises(AlreadyExists):
        content(lambda uow: snippets.create(uow, WS, "sign", "Again"))
    with pytest.raises(InvalidArgument) as bad:
        content(lambda uow: snippets.create(uow, WS, "other", "{% if %}"))
    assert [v.field for v in bad.value.violations] == ["source"]
    changed = content(lambda uow: snippets.update(uow, WS, "sign", "Bye", first.etag))
    assert changed.revision == 2
    assert content(lambda uow: snippets.update(uow, WS, "sign", "Bye")) == changed
    with pytest.raises(Aborted):
        content(lambda uow: snippets.update(uow, WS, "sign", "Late", first.etag))
    content(lambda uow: snippets.create(uow, WS, "zz", "z"))
    page, after = content(lambda uow: snippets.page(uow, WS, None, 1))
    assert [s.key for s in page] == ["sign"] and after == "sign"
    content(lambda uow: snippets.delete(uow, WS, "sign", changed.etag))
    with pytest.raises(NotFound):
        content(lambda uow: snippets.get(uow, WS, "sign"))


def test_settings_without_an_etag_apply_and_a_stale_one_is_aborted(content: Content) -> None:
    defaults = content(lambda uow: settings.get(uow, WS))
    assert (defaults.default_locale, defaults.revision) == ("en", 0)
    locale = frozenset({"default_locale"})
    korean = content(lambda uow: settings.update(uow, WS, ContentSettings("ko-KR"), locale,
                                                 defaults.etag))
    assert (korean.default_locale, korean.revision) == ("ko-KR", 1)
    assert content(lambda uow: settings.update(uow, WS, ContentSettings("ko-KR"), locale)) \
        == korean
    with pytest.raises(Aborted):
        content(lambda uow: settings.update(uow, WS, ContentSettings("ja"), locale,
                                            defaults.etag))
    japanese = content(lambda uow: settings.update(uow, WS, ContentSettings("ja"), locale))
    assert japanese.revision == 2
    with pytest.raises(InvalidArgument) as bad:
        content(lambda uow: settings.update(uow, WS, ContentSettings("en_US"), locale))
    assert [v.field for v in bad.value.violations] == ["default_locale"]
    assert content(lambda uow: settings.get(uow, "ws-b")).revision == 0


async def test_render_reads_published_versions_compiled_once(content: Content) -> None:
    content(lambda uow: content_items.create(uow, WS, "promo",
                                             email("v1 {{ profile.name }}")))
    with pytest.raises(FailedPrecondition):
        await content.renderer.render(WS, EMAIL, person(name="Ann"))
    content(lambda uow: versions.publish(uow, WS, "promo"))
    content(lambda uow: content_items.update(uow, WS, "promo", email("v2 {{ profile.name }}"),
                                             UpdateMask.parse(["email.subject"])))
    # The draft is not rendered until it is published; a preview shows it.
    rendered = await content.renderer.render(WS, EMAIL, person(name="Ann"))
    assert (subject(rendered), rendered.version, rendered.revision) == ("v1 Ann", 1, 1)
    preview = await content.renderer.preview(WS, EMAIL, person(name="Ann"))
    assert (subject(preview), preview.version, preview.revision) == ("v2 Ann", 0, 2)
    content(lambda uow: versions.publish(uow, WS, "promo"))
    assert subject(await content.renderer.render(WS, EMAIL, person(name="Bo"))) == "v2 Bo"
    pinned = await content.renderer.render(WS, RenderTarget("promo", 1, "email", ""),
                                           person(name="Bo"))
    assert subject(pinned) == "v1 Bo"
    misses = content.cache.misses
    await content.renderer.render(WS, EMAIL, person(name="Cy"))
    assert content.cache.misses == misses  # served from the compiled cache


async def test_a_batch_answers_every_request_on_its_own(content: Content) -> None:
    content(lambda uow: content_items.create(uow, WS, "promo", ContentDraft(
        sms=SmsTemplate("Hello {{ profile.name }}"),
        localizations=(Localization("de", ContentDraft(sms=SmsTemplate("Hallo")).bodies),))))
    content(lambda uow: versions.publish(uow, WS, "promo"))
    content(lambda uow: content_items.create(uow, WS, "draft-only", email("x")))
    content(lambda uow: settings.update(uow, WS, ContentSettings("de"),
                                        frozenset({"default_locale"})))
    sms = RenderTarget("promo", 0, "sms", "")
    outcomes = await content.renderer.render_batch(WS, [
        (sms, person(name="Ann")),
        (RenderTarget("promo", 0, "push", ""), person()),
        (RenderTarget("missing", 0, "sms", ""), person()),
        (RenderTarget("draft-only", 0, "email", ""), person()),
        (RenderTarget("promo", 5, "sms", ""), person()),
    ])
    first, push, missing, draft_only, no_such_version = outcomes
    # No locale asked for: the workspace default (de) picks the German body.
    assert isinstance(first, RenderedContent) and first.rendering.locale == "de"
    assert isinstance(first.rendering.body, RenderedSms) and first.rendering.body.text == "Hallo"
    assert isinstance(push, CjoError) and push.reason == "CHANNEL_BODY_MISSING"
    assert isinstance(missing, NotFound)
    assert isinstance(draft_only, CjoError) and draft_only.reason == "CONTENT_NOT_PUBLISHED"
    assert isinstance(no_such_version, NotFound)
    assert no_such_version.reason == "CONTENT_VERSION_NOT_FOUND"
