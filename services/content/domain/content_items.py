"""Content items: what a journey says at a step, with one body per channel it supports.

Validation here is structural (keys, sizes, required parts); template syntax is checked by
:mod:`cjo_content.domain.templates`. Field paths are relative to the item (``email.html``) so
the API layer can place them under whichever request field carried the item.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum

from cjo_content.domain.locales import DEFAULT_LOCALE, is_bcp47
from cjo_platform import paging
from cjo_platform.errors import InvalidArgument, Violations

KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
NAME_PREFIX = "contentItems/"

MAX_TEMPLATE_BYTES = 256 * 1024
"""Each template field (subject, preheader, html, text), in UTF-8 bytes."""

MAX_ITEM_TEMPLATE_BYTES = 8 * 1024 * 1024
"""All the templates of one item (its bodies, localizations and variants) together, in UTF-8
bytes: an item or a page of them stays well inside one gRPC message (32 MiB), which 100
localizations x 26 variants of fields within MAX_TEMPLATE_BYTES did not. A version adds the
snippets it includes; MAX_VERSION_BYTES bounds the two together."""

MAX_VERSION_BYTES = 24 * 1024 * 1024
"""A published version's templates and the snippets it includes together, in UTF-8 bytes:
publish refuses a draft past it (FAILED_PRECONDITION), so a version always fits one gRPC
message (32 MiB) with room for its other fields."""

MAX_PAGE_TEMPLATE_BYTES = 16 * 1024 * 1024
"""A page of items or versions ends early once their templates (and a version's snippets)
would pass this, so it too fits one message; it always holds at least one."""

MAX_SUBJECT_CHARS = 998
"""RFC 5322 caps a header line at 998 characters; a longer subject cannot be sent unfolded."""

MAX_DISPLAY_NAME_CHARS = 256
MAX_TAGS = 50
MAX_TAG_CHARS = 64

EMAIL_FIELDS = ("subject", "preheader", "html", "text")
CHANNELS = ("email", "sms", "push", "in_app", "webhook")
MAX_BUTTONS = 5
MAX_LOCALIZATIONS = 100
MAX_VARIANTS = 26
MAX_VARIANT_WEIGHT = 10_000
BCP47_HINT = "must be a BCP 47 language tag such as 'en' or 'ko-KR'"


class MissingVariables(Enum):
    """What a render does with a variable that has no value."""

    LENIENT = "lenient"  # empty text
    STRICT = "strict"  # a render error naming the variable


@dataclass(frozen=True)
class EmailTemplate:
    """Liquid sources of an email body."""

    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""

    def sources(self) -> dict[str, str]:
        """Template field -> source, for the fields that are set."""
        return {name: value for name in EMAIL_FIELDS if (value := getattr(self, name))}


@dataclass(frozen=True)
class SmsTemplate:
    text: str = ""

    def sources(self) -> dict[str, str]:
        return {"text": self.text} if self.text else {}


@dataclass(frozen=True)
class PushTemplate:
    title: str = ""
    body: str = ""
    deep_link: str = ""
    image_url: str = ""

    def sources(self) -> dict[str, str]:
        return {name: value for name in ("title", "body", "deep_link", "image_url")
                if (value := getattr(self, name))}


@dataclass(frozen=True)
class InAppButtonTemplate:
    label: str = ""
    link: str = ""


@dataclass(frozen=True)
class InAppTemplate:
    title: str = ""
    body: str = ""
    buttons: tuple[InAppButtonTemplate, ...] = ()

    def sources(self) -> dict[str, str]:
        out = {name: value for name in ("title", "body") if (value := getattr(self, name))}
        for index, button in enumerate(self.buttons):
            out[f"buttons[{index}].label"] = button.label
            if button.link:
                out[f"buttons[{index}].link"] = button.link
        return out


@dataclass(frozen=True)
class WebhookTemplate:
    json_body: str = ""

    def sources(self) -> dict[str, str]:
        return {"json_body": self.json_body} if self.json_body else {}


ChannelTemplate = EmailTemplate | SmsTemplate | PushTemplate | InAppTemplate | WebhookTemplate


@dataclass(frozen=True)
class ChannelBodies:
    """One body per channel, any of them unset: what a localization or a variant overrides."""

    email: EmailTemplate | None = None
    sms: SmsTemplate | None = None
    push: PushTemplate | None = None
    in_app: InAppTemplate | None = None
    webhook: WebhookTemplate | None = None

    def body(self, channel: str) -> ChannelTemplate | None:
        body: ChannelTemplate | None = getattr(self, channel)
        return body

    def template_sources(self, prefix: str = "") -> dict[str, str]:
        """Every template of every body, by field path (``{prefix}push.title``)."""
        out: dict[str, str] = {}
        for channel in CHANNELS:
            body = self.body(channel)
            if body is not None:
                out.update({f"{prefix}{channel}.{name}": src
                            for name, src in body.sources().items()})
        return out

    def is_empty(self) -> bool:
        return all(self.body(channel) is None for channel in CHANNELS)


@dataclass(frozen=True)
class Localization:
    """The bodies of an item in one more locale."""

    locale: str
    bodies: ChannelBodies


@dataclass(frozen=True)
class Variant:
    """One arm of an A/B/n test: bodies that replace the item's for the people assigned to it."""

    key: str
    weight: int
    bodies: ChannelBodies


@dataclass(frozen=True)
class ContentDraft:
    """The author-controlled part of a content item: what create and update write, and what
    publishing freezes into a version."""

    display_name: str = ""
    tags: tuple[str, ...] = ()
    email: EmailTemplate | None = None
    sms: SmsTemplate | None = None
    push: PushTemplate | None = None
    in_app: InAppTemplate | None = None
    webhook: WebhookTemplate | None = None
    missing_variables: MissingVariables = MissingVariables.LENIENT
    default_locale: str = ""
    localizations: tuple[Localization, ...] = ()
    variants: tuple[Variant, ...] = ()
    experiment_key: str = ""

    @property
    def bodies(self) -> ChannelBodies:
        """The item's own bodies, in its default locale."""
        return ChannelBodies(self.email, self.sms, self.push, self.in_app, self.webhook)

    @property
    def locale(self) -> str:
        return self.default_locale or DEFAULT_LOCALE

    def body(self, channel: str) -> ChannelTemplate | None:
        body: ChannelTemplate | None = getattr(self, channel)
        return body

    def template_sources(self) -> dict[str, str]:
        """Every template of the item, its localizations and variants, by field path
        (``push.title``, ``localizations[0].sms.text``, ``variants[1].email.subject``)."""
        out = self.bodies.template_sources()
        for index, localization in enumerate(self.localizations):
            out |= localization.bodies.template_sources(f"localizations[{index}].")
        for index, variant in enumerate(self.variants):
            out |= variant.bodies.template_sources(f"variants[{index}].")
        return out


@dataclass(frozen=True)
class ContentItem:
    key: str
    draft: ContentDraft
    revision: int
    create_time: datetime
    update_time: datetime
    latest_version: int = 0

    @property
    def name(self) -> str:
        return NAME_PREFIX + self.key

    @property
    def etag(self) -> str:
        return etag_of(self.key, self.revision)

    @property
    def email(self) -> EmailTemplate | None:
        return self.draft.email


@dataclass(frozen=True)
class ContentVersion:
    """An immutable published snapshot of a draft, with the snippets it includes."""

    key: str
    version: int
    revision: int
    draft: ContentDraft
    snippets: Mapping[str, str]
    create_time: datetime
    rolled_back_from: int = 0

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}{self.key}/versions/{self.version}"


def etag_of(key: str, revision: int) -> str:
    """Stable across processes and replicas (no salt), short enough to log."""
    return hashlib.sha256(f"{key}\x00{revision}".encode()).hexdigest()[:16]


def check_key(key: str, field_path: str, problems: Violations) -> bool:
    if not key:
        problems.add(field_path, "is required")
        return False
    return problems.check(
        KEY_PATTERN.fullmatch(key) is not None, field_path,
        "must be 1 to 128 lower-case letters, digits, '-' or '_', starting with a letter or digit")


def key_from_name(name: str, field_path: str = "name") -> str:
    """The key of ``contentItems/{key}``; INVALID_ARGUMENT naming ``field_path`` otherwise."""
    return paging.key_from_name(name, NAME_PREFIX, KEY_PATTERN, field_path)


def check_draft(draft: ContentDraft, stored_bytes: int = 0) -> Violations:
    """Structural problems of a whole item (not template syntax); cheap, no parsing.
    ``stored_bytes``: what the stored item's templates take, when it is an update (an item
    stored past MAX_ITEM_TEMPLATE_BYTES before it was set may change without growing)."""
    problems = Violations()
    problems.check(len(draft.display_name) <= MAX_DISPLAY_NAME_CHARS, "display_name",
                   f"at most {MAX_DISPLAY_NAME_CHARS} characters")
    check_tags(draft.tags, problems)
    if draft.bodies.is_empty():
        problems.add("email", "at least one channel body (email, sms, push, in_app, webhook) "
                              "is required")
    check_bodies(draft.bodies, "", problems)
    check_locales(draft, problems)
    check_variants(draft, problems)
    check_item_size(draft, problems, stored_bytes)
    return problems


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def template_bytes(draft: ContentDraft) -> int:
    """What the item's templates take in UTF-8 bytes."""
    return sum(utf8_size(source) for source in draft.template_sources().values())


def check_item_size(draft: ContentDraft, problems: Violations, stored_bytes: int = 0) -> None:
    """The item's templates together within MAX_ITEM_TEMPLATE_BYTES, or within
    ``stored_bytes`` when the stored item already takes more; the violation names the field
    that passes it."""
    bound = max(MAX_ITEM_TEMPLATE_BYTES, stored_bytes)
    total = 0
    for path, source in draft.template_sources().items():
        total += utf8_size(source)
        if total > bound:
            also = (f" (or no more than the {stored_bytes} bytes they take now)"
                    if stored_bytes > MAX_ITEM_TEMPLATE_BYTES else "")
            problems.add(path, f"the item's templates (bodies, localizations and variants) "
                               f"together must be at most {MAX_ITEM_TEMPLATE_BYTES // 2**20} "
                               f"MiB{also}; this field takes them past it")
            return


def version_bytes(draft: ContentDraft, snippets: Mapping[str, str]) -> int:
    """What a version of ``draft`` including ``snippets`` takes in UTF-8 bytes."""
    return template_bytes(draft) + sum(map(utf8_size, snippets.values()))


def fit_page(sizes: Iterable[int]) -> int:
    """How many leading entries of a page, each of ``sizes`` bytes, to answer: as many as fit
    MAX_PAGE_TEMPLATE_BYTES, and at least one."""
    return paging.fit(sizes, MAX_PAGE_TEMPLATE_BYTES)


def check_bodies(bodies: ChannelBodies, prefix: str, problems: Violations) -> None:
    for channel in CHANNELS:
        check_body(bodies.body(channel), f"{prefix}{channel}", problems)


def check_locales(draft: ContentDraft, problems: Violations) -> None:
    if draft.default_locale:
        problems.check(is_bcp47(draft.default_locale), "default_locale", BCP47_HINT)
    problems.check(len(draft.localizations) <= MAX_LOCALIZATIONS, "localizations",
                   f"at most {MAX_LOCALIZATIONS} localizations")
    seen = {draft.locale.lower()}
    for index, localization in enumerate(draft.localizations):
        path = f"localizations[{index}]"
        tag = localization.locale
        if not is_bcp47(tag):
            problems.add(f"{path}.locale", BCP47_HINT)
        elif tag.lower() in seen:
            problems.add(f"{path}.locale",
                         f"{tag!r} is the default locale or appears twice")
        seen.add(tag.lower())
        if localization.bodies.is_empty():
            problems.add(path, "at least one channel body is required")
        check_bodies(localization.bodies, f"{path}.", problems)


def check_variants(draft: ContentDraft, problems: Violations) -> None:
    if draft.experiment_key:
        check_key(draft.experiment_key, "experiment_key", problems)
    problems.check(len(draft.variants) <= MAX_VARIANTS, "variants",
                   f"at most {MAX_VARIANTS} variants")
    seen: set[str] = set()
    for index, variant in enumerate(draft.variants):
        path = f"variants[{index}]"
        if check_key(variant.key, f"{path}.key", problems):
            problems.check(variant.key not in seen, f"{path}.key",
                           f"duplicate variant {variant.key!r}")
        seen.add(variant.key)
        problems.check(1 <= variant.weight <= MAX_VARIANT_WEIGHT, f"{path}.weight",
                       f"must be 1 to {MAX_VARIANT_WEIGHT}")
        check_bodies(variant.bodies, f"{path}.", problems)


def check_tags(tags: Sequence[str], problems: Violations) -> None:
    if len(tags) > MAX_TAGS:
        problems.add("tags", f"at most {MAX_TAGS} tags")
    seen: set[str] = set()
    for index, tag in enumerate(tags):
        path = f"tags[{index}]"
        if not tag.strip():
            problems.add(path, "must not be empty")
        elif len(tag) > MAX_TAG_CHARS:
            problems.add(path, f"at most {MAX_TAG_CHARS} characters")
        elif tag in seen:
            problems.add(path, f"duplicate tag {tag!r}")
        seen.add(tag)


def check_body(body: ChannelTemplate | None, path: str, problems: Violations) -> None:
    """Required parts and sizes of one channel body at ``path`` (``email``,
    ``localizations[0].sms``), when it is set."""
    if body is None:
        return
    if isinstance(body, EmailTemplate):
        problems.check(bool(body.subject.strip()), f"{path}.subject", "is required")
        problems.check(bool(body.html.strip() or body.text.strip()), f"{path}.html",
                       "an HTML or a text body is required")
        problems.check(len(body.subject) <= MAX_SUBJECT_CHARS, f"{path}.subject",
                       f"at most {MAX_SUBJECT_CHARS} characters")
    elif isinstance(body, SmsTemplate):
        problems.check(bool(body.text.strip()), f"{path}.text", "is required")
    elif isinstance(body, PushTemplate):
        problems.check(bool(body.title.strip() or body.body.strip()), f"{path}.body",
                       "a title or a body is required")
    elif isinstance(body, InAppTemplate):
        problems.check(bool(body.title.strip() or body.body.strip()), f"{path}.body",
                       "a title or a body is required")
        problems.check(len(body.buttons) <= MAX_BUTTONS, f"{path}.buttons",
                       f"at most {MAX_BUTTONS} buttons")
        for index, button in enumerate(body.buttons):
            problems.check(bool(button.label.strip()), f"{path}.buttons[{index}].label",
                           "is required")
    else:
        problems.check(bool(body.json_body.strip()), f"{path}.json_body", "is required")
    for name, source in body.sources().items():
        # Cheap upper bound first: a UTF-8 character is at most 4 bytes.
        if len(source) * 4 > MAX_TEMPLATE_BYTES and len(source.encode()) > MAX_TEMPLATE_BYTES:
            problems.add(f"{path}.{name}", f"at most {MAX_TEMPLATE_BYTES // 1024} KiB")


# --- updates ---------------------------------------------------------------------------------

UPDATABLE_PATHS = ("display_name", "tags", "missing_variables", "default_locale",
                   "localizations", "variants", "experiment_key", *CHANNELS,
                   *(f"email.{f}" for f in EMAIL_FIELDS))


@dataclass(frozen=True)
class UpdateMask:
    """A validated field mask: which parts of a draft an update replaces."""

    paths: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, paths: Sequence[str], field_path: str = "update_mask") -> UpdateMask:
        if not paths:
            raise InvalidArgument.one(
                field_path, f"is required; allowed paths: {', '.join(UPDATABLE_PATHS)}")
        problems = Violations()
        for path in paths:
            problems.check(path in UPDATABLE_PATHS, field_path,
                           f"unknown path {path!r}; allowed: {', '.join(UPDATABLE_PATHS)}")
        problems.raise_if_any()
        return cls(frozenset(paths))

    def email_fields(self) -> tuple[str, ...]:
        """Email template fields this mask writes one by one (not the whole body)."""
        if "email" in self.paths:
            return ()
        return tuple(f for f in EMAIL_FIELDS if f"email.{f}" in self.paths)


def apply_update(current: ContentDraft, patch: ContentDraft, mask: UpdateMask) -> ContentDraft:
    """The draft after replacing the masked fields of ``current`` with those of ``patch``.

    A channel path replaces the whole body (an unset body removes it); ``email.<field>``
    replaces one template and creates the body if there was none.
    """
    result = current
    for name in ("display_name", "tags", "missing_variables", "default_locale", "localizations",
                 "variants", "experiment_key", *CHANNELS):
        if name in mask.paths:
            result = replace(result, **{name: getattr(patch, name)})
    changes = {f: getattr(patch.email or EmailTemplate(), f) for f in mask.email_fields()}
    if changes:
        result = replace(result, email=replace(result.email or EmailTemplate(), **changes))
    return result
