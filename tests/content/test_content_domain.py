"""Content items, Liquid templates and the compiled-template cache, without gRPC or a database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cjo_content.domain.content_items import (
    ContentDraft,
    EmailTemplate,
    MissingVariables,
    UpdateMask,
    apply_update,
    check_draft,
    etag_of,
    key_from_name,
)
from cjo_content.domain.rendering import (
    CompiledCache,
    CompiledContent,
    RenderContext,
    RenderedEmail,
    check_draft_templates,
)
from cjo_content.domain.templates import (
    TemplateKind,
    TemplatePosition,
    TemplateSyntaxError,
    compile_template,
)
from cjo_platform.errors import FailedPrecondition, InvalidArgument

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def render_email(email: EmailTemplate, context: RenderContext,
                 snippets: dict[str, str] | None = None,
                 policy: MissingVariables = MissingVariables.LENIENT) -> RenderedEmail:
    compiled = CompiledContent("welcome", ContentDraft(email=email, missing_variables=policy),
                               snippets or {}, 1)
    out = compiled.render("email", context)
    assert isinstance(out, RenderedEmail)
    return out


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
    problems = check_draft_templates(ContentDraft(email=EmailTemplate(
        subject="{{ x", html="<p>{{ ok }}</p>", text="{% if %}{% endif %}")).template_sources())
    fields = {v.field: v.description for v in problems.items}
    assert set(fields) == {"email.subject", "email.text"}
    assert fields["email.subject"].startswith("Liquid syntax error at line 1, column 1")


def test_html_is_escaped_but_subject_preheader_and_text_are_not() -> None:
    email = EmailTemplate(subject="Hi {{ profile.name }}", preheader="{{ profile.name }}",
                          html="<p>{{ profile.name }}</p>", text="Hi {{ profile.name }}")
    out = render_email(email, RenderContext({"name": "<b>Ann & Co</b>"}))
    assert out.html == "<p>&lt;b&gt;Ann &amp; Co&lt;/b&gt;</p>"
    assert out.subject == "Hi <b>Ann & Co</b>"
    assert out.preheader == "<b>Ann & Co</b>"
    assert out.text == "Hi <b>Ann & Co</b>"


def test_subject_is_one_line_and_text_is_derived_from_html() -> None:
    email = EmailTemplate(subject="Hello\n{{ profile.name }}\r\nBcc: x@evil.example",
                          html='<p>Go <a href="{{ event.url }}">here</a></p>')
    out = render_email(email, RenderContext({"name": "Ann"}, {"url": "https://a.example/?x=1&y=2"}))
    assert out.subject == "Hello Ann Bcc: x@evil.example"
    assert out.text == "Go here (https://a.example/?x=1&y=2)"


def test_render_errors_fail_with_the_field_and_position() -> None:
    email = EmailTemplate(subject="s", html="<p>\n  {% include 'footer' %}</p>")
    with pytest.raises(FailedPrecondition) as raised:
        render_email(email, RenderContext())
    assert raised.value.reason == "RENDER_FAILED"
    assert raised.value.metadata["field"] == "email.html"
    assert (raised.value.metadata["line"], raised.value.metadata["column"]) == ("2", "14")
    assert "footer" in raised.value.message
    assert "not registered" in raised.value.message

    runaway = EmailTemplate(subject="s", html="{% for i in (1..1000000) %}{{ i }}{% endfor %}")
    with pytest.raises(FailedPrecondition, match="loop iteration limit"):
        render_email(runaway, RenderContext())


def test_the_cache_never_serves_another_fingerprint_and_is_bounded() -> None:
    cache = CompiledCache(max_entries=3)
    one = CompiledContent("k", ContentDraft(email=EmailTemplate(subject="one", text="t")), {}, 1)
    cache.put(("ws", "k", 1), "fp-1", one)
    assert cache.get(("ws", "k", 1), "fp-1") is one
    # Same key, other content (deleted and created again): a miss, never the old compilation.
    assert cache.get(("ws", "k", 1), "fp-2") is None
    for n in range(10):
        cache.put(("ws", "k", n), f"fp-{n}", one)
    assert len(cache) == 3
    assert cache.get(("ws", "k", 1), "fp-1") is None


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
