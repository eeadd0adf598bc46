"""Plain text from rendered HTML, for emails whose author wrote no text body.

Mail clients that cannot show HTML (and spam filters that compare both parts) read the text
part, so it keeps the words, the paragraph breaks and where each link goes.

This runs once per rendered email, so it scans with one regular expression instead of
``html.parser`` (which costs more than rendering the Liquid template itself). Email HTML is
forgiving input: anything that is not a recognisable tag is kept as text.
"""

from __future__ import annotations

import re
from html import unescape

# Elements whose content is never shown as text.
_HIDDEN = frozenset({"head", "script", "style", "template", "noscript", "title"})
# Elements that start a new line.
_LINE = frozenset({
    "address", "article", "aside", "dd", "div", "dl", "dt", "fieldset", "figcaption",
    "figure", "footer", "form", "header", "li", "main", "nav", "ol", "pre", "section", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
})
# Elements set apart by a blank line.
_PARAGRAPH = frozenset({"blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "p"})

_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"                      # comment (also Outlook's conditional ones)
    r"|<![^>]*>|<\?[^>]*>"                    # doctype, CDATA-ish, processing instruction
    r"|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)"         # tag name
    r"((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>",    # attributes, quoted values may hold '>'
    re.DOTALL)
_ATTRIBUTE = re.compile(r"([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+)")
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0]+")


class _Break:
    """A line break the markup asks for (text nodes' own newlines are just spaces)."""

    def __init__(self, paragraph: bool) -> None:
        self.paragraph = paragraph


_BREAK = _Break(paragraph=False)
_PARAGRAPH_BREAK = _Break(paragraph=True)


def html_to_text(html: str) -> str:
    """Readable plain text of ``html``: tags stripped, entities decoded, whitespace collapsed,
    block elements on their own lines, and links kept as ``text (url)``."""
    parts: list[str | _Break] = []
    links: list[tuple[str, int]] = []  # (href, index of the first part inside the link)
    position = 0
    length = len(html)
    while position < length:
        match = _TOKEN.search(html, position)
        if match is None:
            parts.append(unescape(html[position:]))
            break
        if match.start() > position:
            parts.append(unescape(html[position:match.start()]))
        position = match.end()
        name = match.group(2)
        if name is None:
            continue  # comment, doctype ...
        tag = name.lower()
        closing = bool(match.group(1))
        if tag in _HIDDEN:
            if not closing:
                end = re.compile(rf"</{tag}\s*>", re.IGNORECASE).search(html, position)
                position = end.end() if end else length
            continue
        if not closing:
            _block(parts, tag)
            if tag == "br":
                parts.append(_BREAK)
            elif tag == "li":
                parts.append("- ")
            elif tag == "img":
                alt = _attribute(match.group(3), "alt")
                if alt.strip():
                    parts.append(f" {alt} ")
            elif tag == "a":
                links.append((_attribute(match.group(3), "href").strip(), len(parts)))
            if tag == "hr":
                _block(parts, tag)
        else:
            if tag == "a" and links:
                href, start = links.pop()
                _close_link(parts, href, start)
            _block(parts, tag)
    return _lines(parts)


def _attribute(attributes: str, wanted: str) -> str:
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower() == wanted:
            value = match.group(2)
            if value[:1] in ("'", '"'):
                value = value[1:-1]
            return unescape(value)
    return ""


def _block(parts: list[str | _Break], tag: str) -> None:
    if tag in _PARAGRAPH:
        parts.append(_PARAGRAPH_BREAK)
    elif tag in _LINE:
        parts.append(_BREAK)


def _close_link(parts: list[str | _Break], href: str, start: int) -> None:
    if not href or href.startswith(("#", "javascript:")):
        return
    label = _SPACES.sub(" ", "".join(p for p in parts[start:] if isinstance(p, str))).strip()
    shown = href.removeprefix("mailto:")
    if not label:
        parts.append(f" {shown} ")
    elif label not in (href, shown):
        parts.append(f" ({shown})")


def _lines(parts: list[str | _Break]) -> str:
    lines: list[str] = []
    blank_pending = False
    current: list[str] = []

    def flush() -> None:
        nonlocal blank_pending
        line = _SPACES.sub(" ", "".join(current)).strip()
        current.clear()
        if not line:
            return
        if blank_pending and lines:
            lines.append("")
        blank_pending = False
        lines.append(line)

    for part in parts:
        if isinstance(part, _Break):
            flush()
            if part.paragraph:
                blank_pending = bool(lines)
        else:
            current.append(part)
    flush()
    return "\n".join(lines)
