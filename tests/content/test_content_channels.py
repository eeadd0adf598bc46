"""Channel bodies without gRPC: SMS encoding and segments, push, in-app, webhook JSON, snippets,
locale-aware filters, strict variables and render limits."""

from __future__ import annotations

import random
from decimal import Decimal

import babel
import pytest
from babel import numbers

from cjo_content.domain.content_items import (
    ChannelBodies,
    ContentDraft,
    EmailTemplate,
    InAppButtonTemplate,
    InAppTemplate,
    Localization,
    MissingVariables,
    PushTemplate,
    SmsTemplate,
    Variant,
    WebhookTemplate,
    check_draft,
)
from cjo_content.domain.locales import (
    _money_formatter,
    _number_formatter,
    fallback_chain,
    is_bcp47,
)
from cjo_content.domain.rendering import (
    CompiledContent,
    RenderContext,
    RenderedInApp,
    RenderedPush,
    RenderedSms,
    RenderedWebhook,
    assign_variant,
)
from cjo_content.domain.sms import SmsEncoding, sms_encoding
from cjo_content.domain.snippets import resolve_snippets
from cjo_content.domain.templates import MAX_RENDER_SECONDS
from cjo_platform.errors import FailedPrecondition


@pytest.mark.parametrize(("text", "encoding", "segments"), [
    ("", SmsEncoding.GSM7, 0),
    ("a" * 160, SmsEncoding.GSM7, 1),
    ("a" * 161, SmsEncoding.GSM7, 2),            # split: 153 per segment
    ("a" * 306, SmsEncoding.GSM7, 2),
    ("a" * 307, SmsEncoding.GSM7, 3),
    ("€" * 80, SmsEncoding.GSM7, 1),             # extension table: 2 septets each = 160
    ("€" * 81, SmsEncoding.GSM7, 2),
    ("Grüße, Ñandù! @£$¥", SmsEncoding.GSM7, 1),  # basic set, not ASCII
    ("안" * 70, SmsEncoding.UCS2, 1),
    ("안" * 71, SmsEncoding.UCS2, 2),            # split: 67 per segment
    ("a" * 134 + "ç", SmsEncoding.UCS2, 3),      # one ç (not GSM 03.38) makes it all UCS-2
    ("😀" * 35, SmsEncoding.UCS2, 1),            # an emoji is two UTF-16 units
    ("😀" * 36, SmsEncoding.UCS2, 2),
])
def test_sms_encoding_and_segments(text: str, encoding: SmsEncoding, segments: int) -> None:
    assert sms_encoding(text) == (encoding, segments)


def compiled(draft: ContentDraft, snippets: dict[str, str] | None = None) -> CompiledContent:
    return CompiledContent("k", draft, snippets or {}, 1)


def test_every_channel_renders_its_fields() -> None:
    draft = ContentDraft(
        sms=SmsTemplate("Hi {{ profile.name }}, your code is {{ event.code }}"),
        push=PushTemplate(title="Cart\n{{ profile.name }}", body="{{ event.count }} items",
                          deep_link=" acme://cart/{{ event.cart }} ",
                          image_url="https://img.example/{{ event.cart }}.png"),
        in_app=InAppTemplate(title="Hello", body="<b>{{ profile.name }}</b>",
                             buttons=(InAppButtonTemplate("Open {{ event.cart }}",
                                                          "acme://cart/{{ event.cart }}"),
                                      InAppButtonTemplate("Later", ""))),
        webhook=WebhookTemplate('{"name": {{ profile.name | json }}, "n": {{ event.count }}}'))
    content = compiled(draft)
    context = RenderContext({"name": 'Ann "A" <x>'}, {"code": 42, "count": 3, "cart": "c9"})
    assert content.render("sms", context) == RenderedSms(
        'Hi Ann "A" <x>, your code is 42', SmsEncoding.GSM7, 1)
    assert content.render("push", context) == RenderedPush(
        'Cart Ann "A" <x>', "3 items", "acme://cart/c9", "https://img.example/c9.png")
    assert content.render("in_app", context) == RenderedInApp(
        "Hello", '<b>Ann "A" <x></b>', (("Open c9", "acme://cart/c9"), ("Later", "")))
    webhook = content.render("webhook", context)
    assert webhook == RenderedWebhook('{"name": "Ann \\"A\\" <x>", "n": 3}')
    with pytest.raises(FailedPrecondition) as missing:
        content.render("email", context)
    assert missing.value.reason == "CHANNEL_BODY_MISSING"


def test_a_webhook_body_that_is_not_json_after_rendering_fails_clearly() -> None:
    content = compiled(ContentDraft(webhook=WebhookTemplate('{"name": "{{ profile.name }}"}')))
    assert content.render("webhook", RenderContext({"name": "Ann"})).json_body \
        == '{"name": "Ann"}'  # type: ignore[union-attr]
    with pytest.raises(FailedPrecondition) as raised:
        content.render("webhook", RenderContext({"name": 'say "hi"'}))
    assert raised.value.reason == "RENDER_FAILED"
    assert raised.value.metadata["field"] == "webhook.json_body"
    assert "not valid JSON" in raised.value.message


def test_channel_bodies_need_their_required_parts() -> None:
    draft = ContentDraft(sms=SmsTemplate(" "), push=PushTemplate(deep_link="x"),
                         in_app=InAppTemplate(title="t", buttons=(InAppButtonTemplate(""),) * 6),
                         webhook=WebhookTemplate(""))
    fields = {v.field for v in check_draft(draft).items}
    assert fields == {"sms.text", "push.body", "in_app.buttons", "in_app.buttons[0].label",
                      "in_app.buttons[1].label", "in_app.buttons[2].label",
                      "in_app.buttons[3].label", "in_app.buttons[4].label",
                      "in_app.buttons[5].label", "webhook.json_body"}
    assert {v.field for v in check_draft(ContentDraft()).items} == {"email"}
    assert not check_draft(ContentDraft(sms=SmsTemplate("hi")))


def test_snippets_render_in_any_channel_and_escape_like_their_host() -> None:
    snippets = {"footer": "-- {{ profile.name }} {% render 'legal' %}", "legal": "(c) Acme"}
    draft = ContentDraft(email=EmailTemplate(subject="s", html="<p>{% render 'footer' %}</p>"),
                         sms=SmsTemplate("Hi {% render 'footer' %}"))
    content = compiled(draft, snippets)
    context = RenderContext({"name": "<Ann>"})
    email = content.render("email", context)
    assert email.html == "<p>-- &lt;Ann&gt; (c) Acme</p>"  # type: ignore[union-attr]
    assert content.render("sms", context).text == "Hi -- <Ann> (c) Acme"  # type: ignore[union-attr]


def test_only_registered_snippets_are_served() -> None:
    draft = ContentDraft(sms=SmsTemplate("{% render '/etc/passwd' %}{% include 'x' %}"))
    with pytest.raises(FailedPrecondition) as raised:
        compiled(draft, {"footer": "f"}).render("sms", RenderContext())
    assert "not registered" in raised.value.message


def test_resolving_snippets_follows_includes_and_names_a_missing_one() -> None:
    store = {"a": "{% render 'b' %}", "b": "{% render \"c\" %}", "c": "leaf", "d": "unused"}
    asked: list[set[str]] = []

    def load(keys: object) -> dict[str, str]:
        asked.append(set(keys))  # type: ignore[call-overload]
        return {k: store[k] for k in keys if k in store}  # type: ignore[attr-defined]

    assert resolve_snippets(["x {% render 'a' %}", "{%- render 'c' -%}"], load) == {
        "a": store["a"], "b": store["b"], "c": "leaf"}
    with pytest.raises(FailedPrecondition) as missing:
        resolve_snippets(["{% render 'zz' %}"], load)
    assert missing.value.reason == "SNIPPET_NOT_FOUND"
    assert missing.value.metadata == {"snippet_key": "zz"}
    # A cycle ends (each snippet is loaded once) instead of looping.
    store |= {"p": "{% render 'q' %}", "q": "{% render 'p' %}"}
    assert set(resolve_snippets(["{% render 'p' %}"], load)) == {"p", "q"}


def test_locale_bodies_fall_back_and_filters_follow_the_locale() -> None:
    text = ("{{ event.total | money: 'EUR' }} | {{ event.n | number }} | "
            "{{ event.at | local_date: 'long' }}")
    draft = ContentDraft(
        sms=SmsTemplate("EN " + text),
        localizations=(Localization("de", ChannelBodies(sms=SmsTemplate("DE " + text))),
                       Localization("ko", ChannelBodies(sms=SmsTemplate("KO " + text))),
                       Localization("ko-KR", ChannelBodies(push=PushTemplate(title="KR")))))
    content = compiled(draft)
    event = {"total": 1234.5, "n": 1234567.891, "at": "2026-03-01T10:00:00Z"}

    def sms(**context: object) -> tuple[str, str]:
        out = content.render_for("sms", RenderContext(event=event, **context))  # type: ignore[arg-type]
        return out.body.text, out.locale  # type: ignore[union-attr]

    assert sms(locale="en-US") == ("EN €1,234.50 | 1,234,567.891 | March 1, 2026", "en")
    assert sms(locale="de-DE") == ("DE 1.234,50\xa0€ | 1.234.567,891 | 1. März 2026", "de")
    # ko-KR has no SMS body: ko is next in the chain; formatting keeps the full tag.
    text_ko, locale_ko = sms(traits={"locale": "ko-KR"})
    assert (text_ko[:3], locale_ko) == ("KO ", "ko")
    assert "2026년 3월 1일" in text_ko
    # No body along the chain: the default locale's, formatted in the default locale.
    assert sms(locale="fr-FR") == ("EN €1,234.50 | 1,234,567.891 | March 1, 2026", "en")
    # The explicit locale wins over the trait; a trait that is not BCP 47 is ignored.
    assert sms(locale="de", traits={"locale": "ko"})[1] == "de"
    assert sms(traits={"locale": "not a tag"})[1] == "en"
    push = content.render_for("push", RenderContext(locale="ko-KR"))
    assert (push.body.title, push.locale) == ("KR", "ko-KR")  # type: ignore[union-attr]


def test_locales_and_variants_are_validated() -> None:
    draft = ContentDraft(
        sms=SmsTemplate("x"), default_locale="en_US",
        localizations=(Localization("ko", ChannelBodies()),
                       Localization("ko", ChannelBodies(sms=SmsTemplate("y"))),
                       Localization("xx-!", ChannelBodies(sms=SmsTemplate("")))),
        variants=(Variant("a", 0, ChannelBodies()), Variant("a", 1, ChannelBodies()),
                  Variant("B", 10_001, ChannelBodies())),
        experiment_key="Bad Key")
    fields = {v.field for v in check_draft(draft).items}
    assert fields == {"default_locale", "localizations[0]", "localizations[1].locale",
                      "localizations[2].locale", "localizations[2].sms.text",
                      "variants[0].weight", "variants[1].key", "variants[2].key",
                      "variants[2].weight", "experiment_key"}


def test_variants_are_assigned_by_weight_deterministically_per_profile() -> None:
    variants = (Variant("a", 1, ChannelBodies(sms=SmsTemplate("A"))),
                Variant("b", 3, ChannelBodies(sms=SmsTemplate("B"))),
                Variant("control", 1, ChannelBodies()))
    draft = ContentDraft(sms=SmsTemplate("BASE"), push=PushTemplate(title="T"),
                         variants=variants)
    content = compiled(draft)
    counts = {"a": 0, "b": 0, "control": 0}
    for n in range(5000):
        out = content.render_for("sms", RenderContext(profile_id=f"p{n}", workspace_id="ws"))
        counts[out.variant] += 1
        # The weight comes along: analytics' sample-ratio check of the exposures uses it.
        assert out.variant_weight == {"a": 1, "b": 3, "control": 1}[out.variant]
        expected = {"a": "A", "b": "B", "control": "BASE"}[out.variant]
        assert out.body.text == expected  # type: ignore[union-attr]
    assert 900 <= counts["a"] <= 1100 and 2800 <= counts["b"] <= 3200, counts
    # Sticky: the same person gets the same variant in every render, replica and channel
    # (push has no variant bodies, but the exposure is still named).
    first = assign_variant("ws", "k", "p42", variants)
    assert all(assign_variant("ws", "k", "p42", variants) == first for _ in range(10))
    assert content.render_for("push", RenderContext(profile_id="p42", workspace_id="ws")
                              ).variant == first.key
    # Another workspace or experiment reshuffles people independently.
    other = [assign_variant("ws2", "k", f"p{n}", variants).key for n in range(200)]
    same = [assign_variant("ws", "k", f"p{n}", variants).key for n in range(200)]
    assert other != same


def test_bcp47_and_the_fallback_chain() -> None:
    for good in ("en", "ko-KR", "zh-Hant-TW", "es-419", "de-CH-1901"):
        assert is_bcp47(good), good
    for bad in ("", "e", "english!", "ko_KR", "en-", "-en", "toolonglanguage"):
        assert not is_bcp47(bad), bad
    assert fallback_chain("ko-KR") == ["ko-KR", "ko", "en"]
    assert fallback_chain("zh-Hant-TW", "fr") == ["zh-Hant-TW", "zh-Hant", "zh", "fr"]
    assert fallback_chain("") == ["en"]


def test_strict_items_name_the_missing_variable_and_lenient_ones_render_empty() -> None:
    email = EmailTemplate(subject="Hi {{ profile.first_name }}", text="x")
    lenient = compiled(ContentDraft(email=email))
    assert lenient.render("email", RenderContext()).subject == "Hi"  # type: ignore[union-attr]
    strict = compiled(ContentDraft(email=email, missing_variables=MissingVariables.STRICT))
    assert strict.render("email", RenderContext({"first_name": "A"})).subject == "Hi A"  # type: ignore[union-attr]
    with pytest.raises(FailedPrecondition) as raised:
        strict.render("email", RenderContext())
    assert raised.value.reason == "RENDER_FAILED"
    assert raised.value.metadata["field"] == "email.subject"
    assert "first_name" in raised.value.message
    # `default` still works in strict mode: an author can opt a variable out.
    defaulted = compiled(ContentDraft(
        email=EmailTemplate(subject="Hi {{ profile.first_name | default: 'friend' }}", text="x"),
        missing_variables=MissingVariables.STRICT))
    assert defaulted.render("email", RenderContext()).subject == "Hi friend"  # type: ignore[union-attr]
    tested = compiled(ContentDraft(
        email=EmailTemplate(subject="{% if profile.vip %}VIP{% else %}Hi{% endif %}", text="x"),
        missing_variables=MissingVariables.STRICT))
    assert tested.render("email", RenderContext()).subject == "Hi"  # type: ignore[union-attr]


def test_output_size_and_render_time_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    huge = compiled(ContentDraft(sms=SmsTemplate(
        "{% for i in (1..20000) %}{{ event.block }}{% endfor %}")))
    with pytest.raises(FailedPrecondition, match="output stream limit"):
        huge.render("sms", RenderContext(event={"block": "x" * 1000}))

    import cjo_content.domain.templates as templates
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.0)
    slow = compiled(ContentDraft(sms=SmsTemplate(
        "{% for i in (1..5000) %}{{ i }}{% endfor %}")))
    with pytest.raises(FailedPrecondition, match="render time limit"):
        slow.render("sms", RenderContext())
    assert MAX_RENDER_SECONDS > 0


def test_compiled_money_and_number_formats_match_babel_everywhere() -> None:
    rng = random.Random(7)
    for tag in ("en", "en-US", "de-CH", "fr-FR", "ko-KR", "ja-JP", "pt-BR", "ar-EG", "hi-IN",
                "he-IL", "sv-SE", "zh-Hant-TW"):
        locale = babel.Locale.parse(tag, sep="-")
        for currency in ("USD", "EUR", "KRW", "JPY", "CHF", "BHD", "INR"):
            money = _money_formatter(tag, currency)
            for _ in range(50):
                value = Decimal(str(round(rng.uniform(-1e7, 1e7), rng.randint(0, 4))))
                assert money(value) == numbers.format_currency(value, currency, locale=locale)
        number = _number_formatter(tag)
        for _ in range(50):
            value = Decimal(str(round(rng.uniform(-1e7, 1e7), rng.randint(0, 5))))
            assert number(value) == numbers.format_decimal(value, locale=locale)


def test_formatting_filters_reject_what_is_not_a_number_or_date() -> None:
    content = compiled(ContentDraft(sms=SmsTemplate("{{ event.v | money: 'EUR' }}")))
    for bad in ("abc", True, "NaN", "Infinity"):
        with pytest.raises(FailedPrecondition, match="not a number"):
            content.render("sms", RenderContext(event={"v": bad}))
    dated = compiled(ContentDraft(sms=SmsTemplate("{{ event.v | local_date }}")))
    with pytest.raises(FailedPrecondition, match="not an ISO date"):
        dated.render("sms", RenderContext(event={"v": "yesterday"}))
