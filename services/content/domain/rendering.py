"""Rendering a content item for one person: which template field uses which escaping, what
the templates can read, and how the plain-text part is derived."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cjo_content.domain.content_items import EMAIL_FIELDS, ContentItem, EmailTemplate
from cjo_content.domain.plain_text import html_to_text
from cjo_content.domain.templates import (
    TemplateCache,
    TemplateKind,
    TemplateRenderError,
    check_templates,
    render,
)
from cjo_platform.errors import FailedPrecondition, Violations

FIELD_KINDS: Mapping[str, TemplateKind] = {
    "subject": TemplateKind.TEXT,
    "preheader": TemplateKind.TEXT,
    "html": TemplateKind.HTML,
    "text": TemplateKind.TEXT,
}


def check_email_templates(email: EmailTemplate,
                          fields: Sequence[str] = EMAIL_FIELDS) -> Violations:
    """Liquid syntax problems of the named email fields (CPU work: parses each template)."""
    sources = {name: source for name in fields if (source := getattr(email, name))}
    return check_templates(sources, FIELD_KINDS, "email.")


@dataclass(frozen=True)
class RenderContext:
    """What templates read: ``profile.<trait>``, ``event.<property>``, ``vars.<name>``."""

    traits: Mapping[str, Any] = field(default_factory=dict)
    event: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, object]:
        return {"profile": self.traits, "event": self.event, "vars": self.variables}


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    html: str
    text: str


def _one_line(value: str) -> str:
    # Header values: a newline in a subject would end the header (or inject another one).
    return " ".join(value.split())


class EmailRenderer:
    """Renders email bodies with compiled templates from a shared cache."""

    def __init__(self, cache: TemplateCache) -> None:
        self.cache = cache

    def render_email(self, workspace_id: str, item: ContentItem,
                     context: RenderContext) -> RenderedEmail:
        """The item's email for one person; FAILED_PRECONDITION when the item has no email
        body or a template cannot be rendered for this context."""
        if item.email is None:
            raise FailedPrecondition(f"content item {item.key!r} has no email body",
                                     reason="CHANNEL_BODY_MISSING",
                                     metadata={"content_key": item.key})
        try:
            return self._render(workspace_id, item, item.email, context)
        except TemplateRenderError as err:
            metadata = {"content_key": item.key, "revision": str(item.revision),
                        "field": err.field}
            if err.position is not None:
                metadata |= {"line": str(err.position.line), "column": str(err.position.column)}
            raise FailedPrecondition(f"content item {item.key!r} cannot be rendered: {err}",
                                     reason="RENDER_FAILED", metadata=metadata) from None

    def _render(self, workspace_id: str, item: ContentItem, email: EmailTemplate,
                context: RenderContext) -> RenderedEmail:
        data = context.data()
        out: dict[str, str] = {}
        for name, source in email.sources().items():
            template = self.cache.get((workspace_id, item.key, item.revision, name), source,
                                      FIELD_KINDS[name])
            out[name] = render(template, source, data, f"email.{name}")
        html = out.get("html", "")
        text = out["text"] if "text" in out else html_to_text(html)
        return RenderedEmail(subject=_one_line(out.get("subject", "")),
                             preheader=_one_line(out.get("preheader", "")), html=html, text=text)
