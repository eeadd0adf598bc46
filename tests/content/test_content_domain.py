"""Content items, Liquid templates and the compiled-template cache, without gRPC or a database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cjo_content.domain.content_items import (
    ContentDraft,
    ContentItem,
    EmailTemplate,
    UpdateMask,
    apply_update,
    check_draft,
    etag_of,
    key_from_name,
)
from cjo_content.domain.rendering import EmailRenderer, RenderContext, check_email_templates
from cjo_content.domain.templates import (
    TemplateCache,
    TemplateKind,
    TemplatePosition,
    TemplateSyntaxError,
    compile_template,
)
from cjo_platform.errors import FailedPrecondition, InvalidArgument

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def item(email: EmailTemplate, revision: int = 1, key: str = "welcome") -> ContentItem:
    return ContentItem(key=key, display_name="", tags=(), email=email, revision=revision,
                       create_time=NOW, update_time=NOW)


@pytest.mark.parametrize(("source", "line", "column"), [
    ("Hello {{ profile.name }", 1, 7),                 # unclosed output
    ("one\ntwo\n  {% if profile.vip %}\nhi", 3, 6),    # if never closed: points at the if
    ("a\n b {% for x in %}{% endfor %}", 2, 7),        # missing expression
    ("x\n{% endif %}", 2, 4),                          # stray end tag
    ("{{ profile.name | shout }}", 1, 19),             # unknown filter
    ("{% frobnicate %}", 1, 4),                        # unknown tag
])
def test_syntax_errors_carry_line_and_column(source: str, line: int, column: int) -> None:
    with pytest.raises(TemplateSyntaxError) as raised:
        compile_template(source, TemplateKind.HTML)
    assert raised.value.position == TemplatePosition(line, column)
    assert f"line {line}, column {column}" in str(raised.value)


def test_check_email_templates_names_each_broken_field() -> None:
    problems = check_email_templates(EmailTemplate(subject="{{ x", html="<p>{{ ok }}</p>",
                                                   text="{% if %}{% endif %}"))
    fields = {v.field: v.description for v in problems.items}
    assert set(fields) == {"email.subject", "email.text"}
    assert fields["email.subject"].startswith("Liquid syntax error at line 1, column 1")


def test_html_is_escaped_but_subject_preheader_and_text_are_not() -> None:
    renderer = EmailRenderer(TemplateCache())
    email = EmailTemplate(subject="Hi {{ profile.name }}", preheader="{{ profile.name }}",
                          html="<p>{{ profile.name }}</p>", text="Hi {{ profile.name }}")
    out = renderer.render_email("ws", item(email), RenderContext({"name": "<b>Ann & Co</b>"}))
    assert out.html == "<p>&lt;b&gt;Ann &amp; Co&lt;/b&gt;</p>"
    assert out.subject == "Hi <b>Ann & Co</b>"
    assert out.preheader == "<b>Ann & Co</b>"
    assert out.text == "Hi <b>Ann & Co</b>"


def test_subject_is_one_line_and_text_is_derived_from_html() -> None:
    renderer = EmailRenderer(TemplateCache())
    email = EmailTemplate(subject="Hello\n{{ profile.name }}\r\nBcc: x@evil.example",
                          html='<p>Go <a href="{{ event.url }}">here</a></p>')
    out = renderer.render_email("ws", item(email),
                                RenderContext({"name": "Ann"}, {"url": "https://a.example/?x=1&y=2"}))
    assert out.subject == "Hello Ann Bcc: x@evil.example"
    assert out.text == "Go here (https://a.example/?x=1&y=2)"


def test_render_errors_fail_with_the_field_and_position() -> None:
    renderer = EmailRenderer(TemplateCache())
    email = EmailTemplate(subject="s", html="<p>\n  {% include 'footer' %}</p>")
    with pytest.raises(FailedPrecondition) as raised:
        renderer.render_email("ws", item(email), RenderContext())
    assert raised.value.reason == "RENDER_FAILED"
    assert raised.value.metadata["field"] == "email.html"
    assert (raised.value.metadata["line"], raised.value.metadata["column"]) == ("2", "14")
    assert "footer" in raised.value.message

    runaway = EmailTemplate(subject="s", html="{% for i in (1..1000000) %}{{ i }}{% endfor %}")
    with pytest.raises(FailedPrecondition, match="loop iteration limit"):
        renderer.render_email("ws", item(runaway, revision=2), RenderContext())


def test_a_hot_template_is_parsed_once_and_a_reused_key_never_serves_stale_text() -> None:
    cache = TemplateCache()
    renderer = EmailRenderer(cache)
    first = item(EmailTemplate(subject="v1 {{ profile.name }}", html="<p>one</p>"))
    for _ in range(5):
        renderer.render_email("ws", first, RenderContext({"name": "A"}))
    assert cache.misses == 2  # subject and html, once each
    assert cache.hits == 8

    # Same key and revision, different text (the item was deleted and created again).
    again = item(EmailTemplate(subject="v2 {{ profile.name }}", html="<p>two</p>"))
    assert renderer.render_email("ws", again, RenderContext({"name": "A"})).subject == "v2 A"


def test_the_cache_is_bounded() -> None:
    cache = TemplateCache(max_entries=3)
    for n in range(10):
        cache.get(("ws", "k", n, "html"), f"<p>{n}</p>", TemplateKind.HTML)
    assert len(cache) == 3
    small = TemplateCache(max_source_chars=100)
    for n in range(10):
        small.get(("ws", "k", n, "html"), "x" * 40 + str(n), TemplateKind.HTML)
    assert len(small) == 2


def test_etag_is_stable_and_follows_the_revision() -> None:
    assert etag_of("welcome", 1) == etag_of("welcome", 1)
    assert etag_of("welcome", 1) != etag_of("welcome", 2)
    assert etag_of("welcome", 1) != etag_of("welcome2", 1)
    assert len(etag_of("welcome", 1)) == 16


def test_names() -> None:
    assert key_from_name("contentItems/welcome-1") == "welcome-1"
    for bad in ("welcome", "contentItems/", "contentItems/Welcome", "contentItems/a/b",
                "journeys/x"):
        with pytest.raises(InvalidArgument):
            key_from_name(bad)


def test_update_mask_paths_are_checked() -> None:
    with pytest.raises(InvalidArgument) as empty:
        UpdateMask.parse([])
    assert empty.value.violations[0].field == "update_mask"
    with pytest.raises(InvalidArgument) as unknown:
        UpdateMask.parse(["display_name", "revision"])
    assert "'revision'" in unknown.value.violations[0].description


def test_apply_update_replaces_only_masked_fields() -> None:
    current = ContentDraft("Old", ("a",), EmailTemplate(subject="S", html="<p>H</p>", text="T"))
    patch = ContentDraft("New", ("b",), EmailTemplate(subject="S2", html="ignored"))

    renamed = apply_update(current, patch, UpdateMask.parse(["display_name"]))
    assert renamed == ContentDraft("New", ("a",), current.email)

    subject = apply_update(current, patch, UpdateMask.parse(["email.subject", "tags"]))
    assert subject.email == EmailTemplate(subject="S2", html="<p>H</p>", text="T")
    assert subject.tags == ("b",)

    whole = apply_update(current, ContentDraft(), UpdateMask.parse(["email"]))
    assert whole.email is None
    assert {v.field for v in check_draft(whole).items} == {"email"}

    created = apply_update(ContentDraft(), patch, UpdateMask.parse(["email.html"]))
    assert created.email == EmailTemplate(html="ignored")
    assert {v.field for v in check_draft(created).items} == {"email.subject"}


def test_check_draft_limits() -> None:
    big = "x" * (256 * 1024 + 1)
    draft = ContentDraft("d" * 257, ("", "t", "t"),
                         EmailTemplate(subject="s" * 999, html=big, text="é" * (128 * 1024 + 1)))
    fields = {v.field for v in check_draft(draft).items}
    assert fields == {"display_name", "tags[0]", "tags[2]", "email.subject", "email.html",
                      "email.text"}
