"""Content items: what a journey says at a step, with one body per channel it supports.

Validation here is structural (keys, sizes, required parts); template syntax is checked by
:mod:`cjo_content.domain.templates`. Field paths are relative to the item (``email.html``) so
the API layer can place them under whichever request field carried the item.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from cjo_platform.errors import InvalidArgument, Violations

KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
NAME_PREFIX = "contentItems/"

MAX_TEMPLATE_BYTES = 256 * 1024
"""Each template field (subject, preheader, html, text), in UTF-8 bytes."""

MAX_SUBJECT_CHARS = 998
"""RFC 5322 caps a header line at 998 characters; a longer subject cannot be sent unfolded."""

MAX_DISPLAY_NAME_CHARS = 256
MAX_TAGS = 50
MAX_TAG_CHARS = 64

EMAIL_FIELDS = ("subject", "preheader", "html", "text")


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
class ContentDraft:
    """The author-controlled part of a content item: what create and update write."""

    display_name: str = ""
    tags: tuple[str, ...] = ()
    email: EmailTemplate | None = None


@dataclass(frozen=True)
class ContentItem:
    key: str
    display_name: str
    tags: tuple[str, ...]
    email: EmailTemplate | None
    revision: int
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return NAME_PREFIX + self.key

    @property
    def etag(self) -> str:
        return etag_of(self.key, self.revision)

    @property
    def draft(self) -> ContentDraft:
        return ContentDraft(self.display_name, self.tags, self.email)


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
    key = name.removeprefix(NAME_PREFIX)
    if not name.startswith(NAME_PREFIX) or KEY_PATTERN.fullmatch(key) is None:
        raise InvalidArgument.one(field_path, "must be contentItems/{key}")
    return key


def check_draft(draft: ContentDraft) -> Violations:
    """Structural problems of a whole item (not template syntax); cheap, no parsing."""
    problems = Violations()
    problems.check(len(draft.display_name) <= MAX_DISPLAY_NAME_CHARS, "display_name",
                   f"at most {MAX_DISPLAY_NAME_CHARS} characters")
    check_tags(draft.tags, problems)
    if draft.email is None:
        # Only email exists so far; later channels join this check.
        problems.add("email", "at least one channel body is required")
    else:
        email = draft.email
        problems.check(bool(email.subject.strip()), "email.subject", "is required")
        problems.check(bool(email.html.strip() or email.text.strip()), "email.html",
                       "an HTML or a text body is required")
        check_template_sizes(email, EMAIL_FIELDS, problems)
    return problems


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


def check_template_sizes(email: EmailTemplate, fields: Sequence[str],
                         problems: Violations) -> None:
    if "subject" in fields:
        problems.check(len(email.subject) <= MAX_SUBJECT_CHARS, "email.subject",
                       f"at most {MAX_SUBJECT_CHARS} characters")
    for name in fields:
        source: str = getattr(email, name)
        # Cheap upper bound first: a UTF-8 character is at most 4 bytes.
        if len(source) * 4 > MAX_TEMPLATE_BYTES and len(source.encode()) > MAX_TEMPLATE_BYTES:
            problems.add(f"email.{name}", f"at most {MAX_TEMPLATE_BYTES // 1024} KiB")


# --- updates ---------------------------------------------------------------------------------

UPDATABLE_PATHS = ("display_name", "tags", "email", *(f"email.{f}" for f in EMAIL_FIELDS))


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
        """Email template fields this mask writes."""
        if "email" in self.paths:
            return EMAIL_FIELDS
        return tuple(f for f in EMAIL_FIELDS if f"email.{f}" in self.paths)


def check_patch(patch: ContentDraft, mask: UpdateMask) -> Violations:
    """Problems of the values an update writes, before the stored item is even read."""
    problems = Violations()
    if "display_name" in mask.paths:
        problems.check(len(patch.display_name) <= MAX_DISPLAY_NAME_CHARS, "display_name",
                       f"at most {MAX_DISPLAY_NAME_CHARS} characters")
    if "tags" in mask.paths:
        check_tags(patch.tags, problems)
    fields = mask.email_fields()
    if fields and patch.email is not None:
        check_template_sizes(patch.email, fields, problems)
    return problems


def apply_update(current: ContentDraft, patch: ContentDraft, mask: UpdateMask) -> ContentDraft:
    """The draft after replacing the masked fields of ``current`` with those of ``patch``.

    ``email`` replaces the whole body (an unset body removes it); ``email.<field>`` replaces one
    template and creates the body if there was none.
    """
    result = current
    if "display_name" in mask.paths:
        result = replace(result, display_name=patch.display_name)
    if "tags" in mask.paths:
        result = replace(result, tags=patch.tags)
    if "email" in mask.paths:
        result = replace(result, email=patch.email)
    else:
        changes = {f: getattr(patch.email or EmailTemplate(), f) for f in mask.email_fields()}
        if changes:
            result = replace(result, email=replace(result.email or EmailTemplate(), **changes))
    return result
