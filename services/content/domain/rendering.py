"""Rendering content for one person: which template field uses which escaping, what the
templates can read, and what each channel's result looks like."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import liquid

from cjo_content.domain import templates as liquid_templates
from cjo_content.domain.content_items import (
    ChannelTemplate,
    ContentDraft,
    EmailTemplate,
    InAppTemplate,
    MissingVariables,
    PushTemplate,
    SmsTemplate,
    Variant,
    WebhookTemplate,
    utf8_size,
)
from cjo_content.domain.locales import DEFAULT_LOCALE, fallback_chain, is_bcp47, locale_chain
from cjo_content.domain.plain_text import html_to_text
from cjo_content.domain.sms import SmsEncoding, sms_encoding
from cjo_content.domain.templates import (
    SnippetSet,
    TemplateKind,
    TemplateRenderError,
    check_templates,
    compile_template,
    render,
)
from cjo_content.domain.watchdog import WATCHDOG, DeadlinePassed
from cjo_platform.errors import FailedPrecondition, Violations
from cjo_platform.limits import MAX_EMAIL_BODY_BYTES

# A version renders on the event loop (see service_layer/rendering.py) once this many of its
# renders in a row each took less than FAST_RENDER_SECONDS of CPU; a slower one sends it back
# to worker threads until it has been fast that many times again.
FAST_RENDER_SECONDS = 0.002
FAST_RENDERS_TO_INLINE = 3

SLOW_RENDER_SECONDS = 0.1
"""A render of this much CPU or more (or one that reached a limit) has its version seen slow:
its renders then run in the workspace's slow lane (service_layer/rendering.py)."""

INLINE_RENDER_SECONDS = 0.03
"""What the renders of one call may take together on the event loop: a version seen fast
whose render for this person's data is slow is interrupted there (TooSlowInline) and rendered
again in a thread with the full limit (renders have no side effects). So however many versions
or calls turn slow, each holds the loop at most this long, once per FAST_RENDERS_TO_INLINE
fast renders."""


def kind_of(field_path: str) -> TemplateKind:
    """HTML-escaping applies to email HTML bodies only; everything else is text."""
    return TemplateKind.HTML if field_path.endswith("email.html") else TemplateKind.TEXT


def check_draft_templates(sources: Mapping[str, str]) -> Violations:
    """Liquid syntax problems of templates by field path (CPU work: parses each one)."""
    return check_templates(sources, {path: kind_of(path) for path in sources}, "")


@dataclass(frozen=True)
class RenderContext:
    """Who a render is for. Templates read ``profile.<trait>``, ``event.<property>``,
    ``vars.<name>`` and ``locale`` (the locale money, numbers and dates are formatted in).

    ``locale`` here is the requested locale; empty means the profile's ``locale`` trait.
    ``workspace_id`` and ``profile_id`` assign the variant of an experiment.
    ``workspace_locale`` is the workspace's default locale (its content settings), the last
    locale tried before an item's base bodies; empty means ``en``.
    """

    traits: Mapping[str, Any] = field(default_factory=dict)
    event: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)
    locale: str = ""
    profile_id: str = ""
    workspace_id: str = ""
    workspace_locale: str = ""

    def requested_locale(self) -> str:
        if self.locale:
            return self.locale
        trait = self.traits.get("locale")
        return trait if isinstance(trait, str) and is_bcp47(trait) else ""

    def data(self, locale: str) -> dict[str, object]:
        return {"profile": self.traits, "event": self.event, "vars": self.variables,
                "locale": locale}


def assign_variant(workspace_id: str, experiment: str, profile_id: str,
                   variants: Sequence[Variant]) -> Variant:
    """The variant a person sees: sha256 of (workspace, experiment, profile) mapped to [0, 1)
    and placed on the cumulative weights. No state, so every replica and every render agrees,
    and adding a variant moves as few people as the weights allow."""
    digest = hashlib.sha256(f"{workspace_id}\x00{experiment}\x00{profile_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(v.weight for v in variants)
    for variant in variants:
        point -= variant.weight
        if point < 0:
            return variant
    return variants[-1]


@dataclass(frozen=True)
class Rendering:
    """A rendered body with the locale of the body used and the variant assigned ("" if none)
    with its configured weight (0 if none)."""

    body: RenderedBody
    locale: str
    variant: str
    variant_weight: int = 0


@dataclass(frozen=True)
class RenderTarget:
    """What one render asks for: an item, its version, a channel and maybe a locale."""

    key: str
    version: int  # 0: the latest published version (a preview renders the draft)
    channel: str
    locale: str  # "" : the profile's locale trait, then the fallback chain


@dataclass(frozen=True)
class RenderedContent:
    """A rendering with what it was rendered from: item, draft revision, version (0 for a
    preview of the draft) and channel."""

    key: str
    revision: int
    version: int
    channel: str
    rendering: Rendering


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    html: str
    text: str


@dataclass(frozen=True)
class RenderedSms:
    text: str
    encoding: SmsEncoding
    segments: int


@dataclass(frozen=True)
class RenderedPush:
    title: str
    body: str
    deep_link: str
    image_url: str


@dataclass(frozen=True)
class RenderedInApp:
    title: str
    body: str
    buttons: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RenderedWebhook:
    json_body: str


RenderedBody = RenderedEmail | RenderedSms | RenderedPush | RenderedInApp | RenderedWebhook


class RenderTimeLimitExceeded(FailedPrecondition):
    """A render ran past MAX_RENDER_SECONDS and was interrupted: the version's template is
    too slow for anyone, so a batch fails its other requests for the version at once."""


class TooSlowInline(Exception):
    """A render on the event loop ran past its share of INLINE_RENDER_SECONDS on the wall
    clock: render it again in a thread. ``demoted``: its thread's CPU time passed
    FAST_RENDER_SECONDS, so the version is no longer seen fast; otherwise other threads held
    the GIL (the render itself is fast) and the version stays as it was."""

    def __init__(self, demoted: bool) -> None:
        super().__init__("render ran past its inline budget")
        self.demoted = demoted


def _one_line(value: str) -> str:
    # Header-like values: a newline in a subject would end the header (or inject another one).
    return " ".join(value.split())


class CompiledContent:
    """Every template of one draft or published version, parsed once, with its snippets.

    Immutable once built, so one instance serves all renders of a version on every thread.
    """

    def __init__(self, key: str, draft: ContentDraft, snippets: Mapping[str, str],
                 revision: int) -> None:
        self.key = key
        self.revision = revision
        self.draft = draft
        self.snippets = SnippetSet(snippets)
        strict = draft.missing_variables is MissingVariables.STRICT
        self.sources = draft.template_sources()
        self.templates: dict[str, liquid.BoundTemplate] = {}
        for path, source in self.sources.items():
            self.templates[path] = compile_template(source, kind_of(path), strict,
                                                    self.snippets)
        self._variant_index = {v.key: i for i, v in enumerate(draft.variants)}
        self._locale_index = {loc.locale.lower(): i for i, loc in enumerate(draft.localizations)}
        # Static HTML (no Liquid markup) has a static plain-text part: derive it once.
        self._static_text = {
            path: html_to_text(html) for path, html in self.sources.items()
            if path.endswith("email.html") and "{" not in html
            and path.removesuffix("html") + "text" not in self.sources}
        self._fast_renders = 0  # renders in a row that took under FAST_RENDER_SECONDS of CPU
        self._slow = False  # the last render measured took SLOW_RENDER_SECONDS, or a limit

    def seen_fast(self) -> bool:
        """Whether the last renders of this version were all fast (cheap enough for the
        event loop). Updated without a lock: a lost update only moves a render to a thread or
        back, and a slow version's renders are all slow."""
        return self._fast_renders >= FAST_RENDERS_TO_INLINE

    def seen_slow(self) -> bool:
        """Whether the last render measured took SLOW_RENDER_SECONDS or more of CPU or reached
        a time limit; a version never rendered is neither fast nor slow."""
        return self._slow

    def render(self, channel: str, context: RenderContext) -> RenderedBody:
        """Just the body of :meth:`render_for`."""
        return self.render_for(channel, context).body

    def render_for(self, channel: str, context: RenderContext, inline: float = 0.0) -> Rendering:
        """The ``channel`` body for one person: their variant's body if it has one, else the
        first body along the locale fallback chain. FAILED_PRECONDITION when there is no body
        for the channel or a template cannot be rendered for this context.

        ``inline``: the seconds the render may take on the event loop (0: it runs in a thread,
        limited to MAX_RENDER_SECONDS); past them it raises :class:`TooSlowInline`, and the
        version no longer counts as seen fast when the render used its budget of its own CPU
        (``demoted``; else other threads held the loop and it just renders again in a thread)."""
        draft = self.draft
        variant = (assign_variant(context.workspace_id, draft.experiment_key or self.key,
                                  context.profile_id, draft.variants)
                   if draft.variants else None)
        requested = context.requested_locale()
        body, prefix, locale = self._choose(channel, variant, requested,
                                             context.workspace_locale)
        if body is None:
            raise FailedPrecondition(f"content item {self.key!r} has no {channel} body",
                                     reason="CHANNEL_BODY_MISSING",
                                     metadata={"content_key": self.key, "channel": channel})
        # Format in the requested locale when the body is written in it or a parent of it
        # (a `ko` body for `ko-KR` formats as ko-KR); else in the body's own locale.
        formatting = requested if requested and locale.lower() in (
            tag.lower() for tag in fallback_chain(requested, requested)) else locale
        data = context.data(formatting)
        current = [prefix]  # the field being rendered, for a render interrupted in it
        # The CPU a render takes decides where the version renders next (seen_fast): read on
        # the event loop (whose wall clock also counts other threads' turns with the GIL)
        # and, in a thread, until the version is seen fast. The wall clock is the hard stop.
        clock = time.thread_time if inline or self._fast_renders < FAST_RENDERS_TO_INLINE \
            else None
        started = clock() if clock else 0.0
        limit = inline or liquid_templates.MAX_RENDER_SECONDS
        try:
            rendered = WATCHDOG.call(self._render, limit, body, data, prefix, current)
        except DeadlinePassed:
            if inline:
                demoted = time.thread_time() - started >= FAST_RENDER_SECONDS
                if demoted:
                    self._fast_renders, self._slow = 0, True
                raise TooSlowInline(demoted) from None
            self._fast_renders, self._slow = 0, True
            raise RenderTimeLimitExceeded(
                f"content item {self.key!r} cannot be rendered: {current[0]}: render time "
                f"limit of {limit:g} s reached",
                reason="RENDER_FAILED",
                metadata={"content_key": self.key, "field": current[0]}) from None
        except TemplateRenderError as err:
            self._fast_renders = 0
            metadata = {"content_key": self.key, "field": err.field}
            if err.position is not None:
                metadata |= {"line": str(err.position.line), "column": str(err.position.column)}
            raise FailedPrecondition(f"content item {self.key!r} cannot be rendered: {err}",
                                     reason="RENDER_FAILED", metadata=metadata) from None
        if clock:
            took = clock() - started
            if took < FAST_RENDER_SECONDS:
                self._fast_renders, self._slow = self._fast_renders + 1, False
            else:
                self._fast_renders, self._slow = 0, took >= SLOW_RENDER_SECONDS
        return Rendering(rendered, locale, variant.key if variant else "",
                         variant.weight if variant else 0)

    def _choose(self, channel: str, variant: Variant | None, requested: str,
                workspace_locale: str = "") -> tuple[ChannelTemplate | None, str, str]:
        """(body, field-path prefix, locale of the body).

        The chain: the requested locale and its parents (``ko-KR``, ``ko``), then the item's
        ``default_locale`` when it sets one (its base bodies), then the workspace default and
        its parents, then the base bodies. Base bodies of an item without ``default_locale``
        are taken to be written in the workspace default.
        """
        draft = self.draft
        workspace_locale = workspace_locale or DEFAULT_LOCALE
        base_locale = draft.default_locale or workspace_locale
        if variant is not None:
            body = variant.bodies.body(channel)
            if body is not None:
                return body, f"variants[{self._variant_index[variant.key]}].", base_locale
        if draft.localizations:
            for tag in locale_chain(requested, draft.default_locale, workspace_locale):
                if not tag:
                    break  # the item's own default locale: its base bodies
                index = self._locale_index.get(tag.lower())
                if index is not None:
                    body = draft.localizations[index].bodies.body(channel)
                    if body is not None:
                        return body, f"localizations[{index}].", \
                            draft.localizations[index].locale
        return draft.body(channel), "", base_locale

    def _field(self, name: str, data: Mapping[str, object], prefix: str,
               current: list[str]) -> str:
        path = prefix + name
        template = self.templates.get(path)
        if template is None:
            return ""
        current[0] = path
        return render(template, self.sources[path], data, path)

    def _render(self, body: object, data: Mapping[str, object], prefix: str,
                current: list[str]) -> RenderedBody:
        def f(name: str, data: Mapping[str, object]) -> str:
            return self._field(name, data, prefix, current)
        if isinstance(body, EmailTemplate):
            html = f("email.html", data)
            if prefix + "email.text" in self.sources:
                text = f("email.text", data)
            elif prefix + "email.html" in self._static_text:
                text = self._static_text[prefix + "email.html"]
            else:
                text = html_to_text(html)
            if (len(html) + len(text)) * 4 > MAX_EMAIL_BODY_BYTES:  # else surely within
                size = utf8_size(html) + utf8_size(text)
                if size > MAX_EMAIL_BODY_BYTES:
                    raise TemplateRenderError(
                        prefix + "email.html", f"the rendered html and text are {size} bytes "
                        f"together; at most {MAX_EMAIL_BODY_BYTES} can be sent", None)
            return RenderedEmail(subject=_one_line(f("email.subject", data)),
                                 preheader=_one_line(f("email.preheader", data)),
                                 html=html, text=text)
        if isinstance(body, SmsTemplate):
            text = f("sms.text", data)
            encoding, segments = sms_encoding(text)
            return RenderedSms(text, encoding, segments)
        if isinstance(body, PushTemplate):
            return RenderedPush(title=_one_line(f("push.title", data)), body=f("push.body", data),
                                deep_link=f("push.deep_link", data).strip(),
                                image_url=f("push.image_url", data).strip())
        if isinstance(body, InAppTemplate):
            buttons = tuple(
                (_one_line(f(f"in_app.buttons[{i}].label", data)),
                 f(f"in_app.buttons[{i}].link", data).strip())
                for i in range(len(body.buttons)))
            return RenderedInApp(title=_one_line(f("in_app.title", data)),
                                 body=f("in_app.body", data), buttons=buttons)
        assert isinstance(body, WebhookTemplate)
        text = f("webhook.json_body", data)
        try:
            json.loads(text)
        except ValueError as err:
            raise TemplateRenderError(
                "webhook.json_body",
                f"rendered body is not valid JSON ({err}); insert values with the json filter",
                None) from None
        return RenderedWebhook(text)


class CompiledCache:
    """A thread-safe LRU of compiled content, bounded by entries.

    Keys name a version (workspace, item, version); the fingerprint of what was compiled is
    kept with the entry and compared on every hit, so a key reused for different content (an
    item deleted and created again) can never serve a stale compilation.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[str, CompiledContent]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, fingerprint: str) -> CompiledContent | None:
        """The compiled content stored under ``key`` if it was compiled from ``fingerprint``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == fingerprint:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
            return None

    def put(self, key: Hashable, fingerprint: str, compiled: CompiledContent) -> None:
        with self._lock:
            self._entries[key] = (fingerprint, compiled)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
