"""Everything checked before content is written: structure first, then template syntax (only
of templates that passed the size limits; parsing an oversized one is wasted work)."""

from __future__ import annotations

from collections.abc import Mapping

from cjo_content.domain.content_items import (
    CHANNELS,
    MAX_DISPLAY_NAME_CHARS,
    MAX_TEMPLATE_BYTES,
    ContentDraft,
    UpdateMask,
    check_body,
    check_draft,
    check_key,
    check_locales,
    check_tags,
    check_variants,
)
from cjo_content.domain.rendering import check_draft_templates
from cjo_content.domain.templates import TemplateKind, check_templates
from cjo_platform.errors import Violations


def check_new_item(key: str, draft: ContentDraft) -> Violations:
    """Problems of an item about to be created (CPU work: parses every template)."""
    problems = Violations()
    check_key(key, "key", problems)
    problems.items.extend(check_draft(draft).items)
    _check_templates(draft.template_sources(), problems)
    return problems


def check_update(patch: ContentDraft, mask: UpdateMask) -> Violations:
    """Problems of the values an update writes, before the stored item is read (CPU work:
    parses the masked templates). The merged draft is checked again with :func:`check_draft`."""
    problems = Violations()
    if "display_name" in mask.paths:
        problems.check(len(patch.display_name) <= MAX_DISPLAY_NAME_CHARS, "display_name",
                       f"at most {MAX_DISPLAY_NAME_CHARS} characters")
    if "tags" in mask.paths:
        check_tags(patch.tags, problems)
    sources: dict[str, str] = {}
    for channel in CHANNELS:
        if channel in mask.paths:
            check_body(patch.body(channel), channel, problems)
            body = patch.body(channel)
            if body is not None:
                sources.update({f"{channel}.{n}": s for n, s in body.sources().items()})
    if "default_locale" in mask.paths or "localizations" in mask.paths:
        check_locales(patch, problems)
        if "localizations" in mask.paths:
            sources |= {path: source for path, source in patch.template_sources().items()
                        if path.startswith("localizations[")}
    if "variants" in mask.paths or "experiment_key" in mask.paths:
        check_variants(patch, problems)
        if "variants" in mask.paths:
            sources |= {path: source for path, source in patch.template_sources().items()
                        if path.startswith("variants[")}
    if patch.email is not None:
        for name in mask.email_fields():
            source = getattr(patch.email, name)
            if len(source.encode()) > MAX_TEMPLATE_BYTES:
                problems.add(f"email.{name}", f"at most {MAX_TEMPLATE_BYTES // 1024} KiB")
            elif source:
                sources[f"email.{name}"] = source
    _check_templates(sources, problems)
    return problems


def check_snippet(key: str, source: str, key_field: str = "key") -> Violations:
    """Problems of a snippet about to be written (CPU work: parses it)."""
    problems = Violations()
    if key_field:
        check_key(key, key_field, problems)
    if not source.strip():
        problems.add("source", "is required")
    elif len(source.encode()) > MAX_TEMPLATE_BYTES:
        problems.add("source", f"at most {MAX_TEMPLATE_BYTES // 1024} KiB")
    else:
        problems.items.extend(
            check_templates({"source": source}, {"source": TemplateKind.TEXT}, "").items)
    return problems


def _check_templates(sources: Mapping[str, str], problems: Violations) -> None:
    oversized = {v.field for v in problems.items}
    parse = {path: source for path, source in sources.items() if path not in oversized}
    problems.items.extend(check_draft_templates(parse).items)
