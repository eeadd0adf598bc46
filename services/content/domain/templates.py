"""Liquid templates: validated when saved, compiled once, rendered per person.

Templates are written by workspace users, so they are treated as untrusted: no loader (nothing
can be included from disk or anywhere else), and limits on loop iterations, output size and
local variables so one template cannot stall a worker or exhaust memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import liquid
from liquid.exceptions import LiquidError, TemplateNotFoundError
from liquid.stream import TokenStream
from liquid.token import Token

from cjo_platform.errors import Violations


class TemplateKind(Enum):
    HTML = "html"  # values inserted are HTML-escaped
    TEXT = "text"  # subject, preheader, plain text: inserted verbatim


@dataclass(frozen=True)
class TemplatePosition:
    """1-based line and column, as editors show them."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}"


class TemplateSyntaxError(Exception):
    def __init__(self, message: str, position: TemplatePosition) -> None:
        super().__init__(f"{position}: {message}")
        self.message = message
        self.position = position


class TemplateRenderError(Exception):
    """A template that parsed could not be rendered for this context (unknown partial, loop
    limit, bad filter argument ...). ``field`` is the template field, e.g. ``email.html``."""

    def __init__(self, field: str, message: str, position: TemplatePosition | None) -> None:
        where = f" at {position}" if position else ""
        super().__init__(f"{field}{where}: {message}")
        self.field = field
        self.message = message
        self.position = position


# --- environments ----------------------------------------------------------------------------


class _PositionedTag:
    """Wraps a tag so parse errors that reached the end of a tag's tokens without a position
    (e.g. an ``if`` never closed, ``{% for x in %}``) point at the tag instead of nowhere."""

    def __init__(self, tag: liquid.Tag) -> None:
        self._tag = tag

    def get_node(self, stream: TokenStream) -> liquid.Node:
        start = stream.current
        try:
            return self._tag.get_node(stream)
        except LiquidError as err:
            if err.token is None or err.token.start_index < 0:
                err.token = start
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tag, name)


class _Environment(liquid.Environment):
    # Class-level in python-liquid; generous for real emails (product loops, long bodies).
    loop_iteration_limit: ClassVar[int | None] = 20_000
    output_stream_limit: ClassVar[int | None] = 4 * 1024 * 1024
    local_namespace_limit: ClassVar[int | None] = 4 * 1024 * 1024
    context_depth_limit: ClassVar[int] = 10

    def __init__(self, *, autoescape: bool) -> None:
        # No loader: {% include %} / {% render %} fail at render with "template not found".
        super().__init__(autoescape=autoescape, strict_filters=True)
        self.tags = {name: _PositionedTag(tag) for name, tag in self.tags.items()}  # type: ignore[misc]


_ENVIRONMENTS = {
    TemplateKind.HTML: _Environment(autoescape=True),
    TemplateKind.TEXT: _Environment(autoescape=False),
}


def _position(source: str, index: int) -> TemplatePosition:
    line_start = source.rfind("\n", 0, index) + 1
    return TemplatePosition(source.count("\n", 0, index) + 1, index - line_start + 1)


def _error_position(err: LiquidError, source: str) -> TemplatePosition | None:
    token: Token | None = err.token
    if token is None or token.start_index < 0 or token.source != source:
        return None
    return _position(source, token.start_index)


def _end_position(source: str) -> TemplatePosition:
    return _position(source, len(source))


def compile_template(source: str, kind: TemplateKind) -> liquid.BoundTemplate:
    """Parse ``source``; unknown filters are syntax errors too, so they surface on save."""
    env = _ENVIRONMENTS[kind]
    try:
        template = env.from_string(source)
    except LiquidError as err:
        position = _error_position(err, source) or _end_position(source)
        raise TemplateSyntaxError(str(err.message), position) from None
    for name, spans in template.analyze(include_partials=False).filters.items():
        if name not in env.filters:
            raise TemplateSyntaxError(f"unknown filter {name!r}",
                                      _position(source, spans[0].index))
    return template


def check_templates(sources: Mapping[str, str], kinds: Mapping[str, TemplateKind],
                    prefix: str) -> Violations:
    """Compile each named source; one violation per broken field, naming line and column."""
    problems = Violations()
    for field, source in sources.items():
        try:
            compile_template(source, kinds[field])
        except TemplateSyntaxError as err:
            problems.add(f"{prefix}{field}", f"Liquid syntax error at {err}")
    return problems


def render(template: liquid.BoundTemplate, source: str, data: Mapping[str, object],
           field: str) -> str:
    """Render a compiled ``source``; any Liquid failure becomes a :class:`TemplateRenderError`
    naming ``field`` and, where Liquid knows it, the line and column."""
    try:
        return template.render(data)
    except TemplateNotFoundError as err:
        raise TemplateRenderError(
            field, f"cannot include {err.message!r}: includes and snippets are not available",
            _error_position(err, source)) from None
    except LiquidError as err:
        raise TemplateRenderError(field, str(err.message), _error_position(err, source)) from None


# --- compiled-template cache -----------------------------------------------------------------


class TemplateCache:
    """A thread-safe LRU of compiled templates, bounded by entries and by total source size.

    Keys name a template (workspace, item, revision, field); the source is kept with the entry
    and compared on every hit, so a key reused for different text (an item deleted and created
    again) can never serve a stale template.
    """

    def __init__(self, max_entries: int = 2048, max_source_chars: int = 64 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_source_chars = max_source_chars
        self._entries: OrderedDict[Hashable, tuple[str, liquid.BoundTemplate]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, source: str, kind: TemplateKind) -> liquid.BoundTemplate:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (entry[0] is source or entry[0] == source):
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
        # Compile outside the lock: parsing a large template must not stall other renders.
        template = compile_template(source, kind)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._chars -= len(old[0])
            self._entries[key] = (source, template)
            self._chars += len(source)
            while self._entries and (len(self._entries) > self.max_entries
                                     or self._chars > self.max_source_chars):
                _, (evicted, _) = self._entries.popitem(last=False)
                self._chars -= len(evicted)
        return template
