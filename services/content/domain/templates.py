"""Liquid templates: validated when saved, compiled once, rendered per person.

Templates are written by workspace users, so they are treated as untrusted: the only loader
serves the workspace's registered snippets (nothing from disk or the network), and limits on
loop iterations, output size, local variables and render time so one template cannot stall a
worker or exhaust memory.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from io import StringIO
from typing import Any, ClassVar

import liquid
from liquid.exceptions import (
    LiquidError,
    OutputStreamLimitError,
    TemplateNotFoundError,
    UndefinedError,
)
from liquid.loader import BaseLoader, TemplateSource
from liquid.stream import TokenStream
from liquid.token import Token
from liquid.undefined import FalsyStrictUndefined

from cjo_content.domain.locales import register_locale_filters
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

MAX_RENDER_SECONDS = 2.0
"""Wall time one render (all the fields of one body for one person) may take: the render is
interrupted by the watchdog (domain/watchdog.py) once past it, however little it writes. A
render on the event loop gets far less (rendering.INLINE_RENDER_SECONDS) before it moves to a
thread."""


class _Output(StringIO):
    """Output buffer with a size limit, in characters, so no per-write encoding. (Time is the
    watchdog's: a check here would only end a render with another error than its.)"""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.size = 0

    def write(self, text: str) -> int:
        self.size += len(text)
        if self.size > self.limit:
            raise OutputStreamLimitError("output stream limit reached", token=None)
        return super().write(text)


class _Template(liquid.BoundTemplate):
    snippets: SnippetSet | None = None

    def _get_buffer(self) -> StringIO:
        return _Output(self.env.output_stream_limit or 4 * 1024 * 1024)


class SnippetSet:
    """The snippets one render may include, by key; each is compiled once per environment.

    Published versions carry the snippet sources frozen at publish time, so the set is
    immutable and can be shared by every render of that version.
    """

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = dict(sources)
        self._compiled: dict[tuple[int, str], liquid.BoundTemplate] = {}
        self._lock = threading.Lock()

    def template(self, env: liquid.Environment, key: str) -> liquid.BoundTemplate | None:
        found = self._compiled.get((id(env), key))
        if found is not None:
            return found
        source = self.sources.get(key)
        if source is None:
            return None
        template = env.from_string(source, name=key)
        assert isinstance(template, _Template)  # every environment's template_class
        template.snippets = self
        with self._lock:
            self._compiled[(id(env), key)] = template
        return template


class _SnippetLoader(BaseLoader):
    """Serves only the registered snippets of the render's content (no file system): the set
    travels with the outermost template of the render."""

    def get_source(self, env: liquid.Environment, template_name: str, *,
                   context: liquid.RenderContext | None = None, **kwargs: object,
                   ) -> TemplateSource:  # pragma: no cover - load() is what tags call
        raise TemplateNotFoundError(template_name)

    def load(self, env: liquid.Environment, name: str, *,
             globals: Mapping[str, object] | None = None,
             context: liquid.RenderContext | None = None, **kwargs: object,
             ) -> liquid.BoundTemplate:
        root = context
        while root is not None and root.parent_context is not None:
            root = root.parent_context
        outermost = root.template if root is not None else None
        snippets = outermost.snippets if isinstance(outermost, _Template) else None
        template = snippets.template(env, name) if snippets is not None else None
        if template is None:
            raise TemplateNotFoundError(name)
        return template


SNIPPET_REFERENCE = re.compile(r"""\{%-?\s*(?:render|include)\s+(?:'([^']*)'|"([^"]*)")""")


def referenced_snippets(source: str) -> set[str]:
    """Keys of the snippets ``source`` includes by name."""
    return {a or b for a, b in SNIPPET_REFERENCE.findall(source)}


def _json_filter(value: object) -> str:
    # Undefined values become null, so a webhook body stays valid JSON in lenient mode.
    if isinstance(value, liquid.Undefined):
        return "null"
    return json.dumps(value, ensure_ascii=False, default=str)


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



class _StrictUndefined(FalsyStrictUndefined):
    """Strict mode: output of a missing variable fails the render, but authors can still test
    for it (``{% if profile.vip %}``) and give it a fallback (``| default: "friend"``)."""

    force_liquid_default = True


class _Environment(liquid.Environment):
    # Class-level in python-liquid; generous for real emails (product loops, long bodies).
    loop_iteration_limit: ClassVar[int | None] = 20_000
    output_stream_limit: ClassVar[int | None] = 4 * 1024 * 1024
    local_namespace_limit: ClassVar[int | None] = 4 * 1024 * 1024
    context_depth_limit: ClassVar[int] = 10
    template_class = _Template

    def __init__(self, *, autoescape: bool, strict: bool) -> None:
        # Includes resolve registered snippets only; there is no file system loader.
        super().__init__(autoescape=autoescape, strict_filters=True, loader=_SnippetLoader(),
                         undefined=_StrictUndefined if strict else liquid.Undefined)
        self.tags = {name: _PositionedTag(tag) for name, tag in self.tags.items()}  # type: ignore[misc]
        self.filters["json"] = _json_filter
        register_locale_filters(self.filters)


_ENVIRONMENTS = {
    (kind, strict): _Environment(autoescape=kind is TemplateKind.HTML, strict=strict)
    for kind in TemplateKind for strict in (False, True)
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


def compile_template(source: str, kind: TemplateKind, strict: bool = False,
                     snippets: SnippetSet | None = None) -> liquid.BoundTemplate:
    """Parse ``source``; unknown filters are syntax errors too, so they surface on save.
    ``snippets`` are the ones its renders may include."""
    env = _ENVIRONMENTS[(kind, strict)]
    try:
        template = env.from_string(source)
    except LiquidError as err:
        position = _error_position(err, source) or _end_position(source)
        raise TemplateSyntaxError(str(err.message), position) from None
    assert isinstance(template, _Template)  # every environment's template_class
    template.snippets = snippets
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
            field, f"snippet {err.message!r} is not registered", _error_position(err, source),
        ) from None
    except UndefinedError as err:
        raise TemplateRenderError(field, f"missing variable: {err.message}",
                                  _error_position(err, source)) from None
    except LiquidError as err:
        raise TemplateRenderError(field, str(err.message), _error_position(err, source)) from None
