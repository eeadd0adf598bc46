"""Everything checked before a content item is written: structure first, then template syntax
(only of templates that passed the size limits; parsing an oversized one is wasted work)."""

from __future__ import annotations

from collections.abc import Sequence

from cjo_content.domain.content_items import (
    EMAIL_FIELDS,
    ContentDraft,
    UpdateMask,
    check_draft,
    check_key,
    check_patch,
)
from cjo_content.domain.rendering import check_email_templates
from cjo_platform.errors import Violations


def check_new_item(key: str, draft: ContentDraft) -> Violations:
    """Problems of an item about to be created (CPU work: parses every template)."""
    problems = Violations()
    check_key(key, "key", problems)
    problems.items.extend(check_draft(draft).items)
    _check_templates(draft, EMAIL_FIELDS, problems)
    return problems


def check_update(patch: ContentDraft, mask: UpdateMask) -> Violations:
    """Problems of the values an update writes (CPU work: parses the masked templates)."""
    problems = check_patch(patch, mask)
    _check_templates(patch, mask.email_fields(), problems)
    return problems


def _check_templates(draft: ContentDraft, fields: Sequence[str], problems: Violations) -> None:
    if draft.email is None:
        return
    oversized = {v.field for v in problems.items}
    parse = [f for f in fields if f"email.{f}" not in oversized]
    problems.items.extend(check_email_templates(draft.email, parse).items)
