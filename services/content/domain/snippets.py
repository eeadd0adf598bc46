"""Snippets: reusable Liquid blocks that items include with ``{% render 'key' %}``."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from cjo_content.domain.content_items import KEY_PATTERN, etag_of
from cjo_content.domain.templates import referenced_snippets
from cjo_platform.errors import FailedPrecondition, InvalidArgument

SNIPPET_PREFIX = "snippets/"
MAX_SNIPPETS_PER_RENDER = 100


@dataclass(frozen=True)
class Snippet:
    key: str
    source: str
    revision: int
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return SNIPPET_PREFIX + self.key

    @property
    def etag(self) -> str:
        return etag_of("snippet:" + self.key, self.revision)


def snippet_key_from_name(name: str, field_path: str = "name") -> str:
    key = name.removeprefix(SNIPPET_PREFIX)
    if not name.startswith(SNIPPET_PREFIX) or KEY_PATTERN.fullmatch(key) is None:
        raise InvalidArgument.one(field_path, "must be snippets/{key}")
    return key


def resolve_snippets(sources: Collection[str],
                     load: Callable[[Collection[str]], Mapping[str, str]]) -> dict[str, str]:
    """Sources of every snippet ``sources`` include, directly or through other snippets;
    ``load`` reads snippet sources by key. FAILED_PRECONDITION naming a missing snippet."""
    found: dict[str, str] = {}
    wanted = set().union(*(referenced_snippets(s) for s in sources)) if sources else set()
    while wanted:
        loaded = load(wanted)
        missing = sorted(wanted - loaded.keys())
        if missing:
            raise FailedPrecondition(f"snippet {missing[0]!r} is included but does not exist",
                                     reason="SNIPPET_NOT_FOUND",
                                     metadata={"snippet_key": missing[0]})
        found.update(loaded)
        if len(found) > MAX_SNIPPETS_PER_RENDER:
            raise FailedPrecondition(
                f"more than {MAX_SNIPPETS_PER_RENDER} snippets are included",
                reason="TOO_MANY_SNIPPETS")
        wanted = set().union(*(referenced_snippets(s) for s in loaded.values())) - found.keys()
    return found
