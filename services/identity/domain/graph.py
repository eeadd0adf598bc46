"""The identity graph: which identifiers belong to one person.

Each event is an edge linking its (not blocked) identifiers. The partition of identifiers into
profiles is a function of the SET of edges, never of arrival order: edges are applied in a
canonical order (earliest event time of the identifier set, then message id), each linking its
identifiers to its strongest one, and a link that would give a profile more identifiers of a
type than the workspace's limit is dropped (the lower-priority link loses; the profile that
used the identifier first keeps it). A late event with an early time is placed where it belongs
by recomputing the partition of the cluster it touches (the identifiers connected when limits
are ignored), so the result equals ingesting everything in event-time order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.settings import IdentitySettings


@dataclass(frozen=True)
class Edge:
    """A distinct set of identifiers seen together, and its earliest event."""

    identifiers: tuple[Identifier, ...]  # sorted by (type, value)
    first_time: datetime
    first_message_id: str

    @cached_property
    def key(self) -> str:
        return edge_key(self.identifiers)

    @cached_property
    def order(self) -> tuple[datetime, str, str]:
        return self.first_time, self.first_message_id, self.key

    def earliest(self, other: Edge) -> Edge:
        return self if self.order <= other.order else other


def edge_key(identifiers: Iterable[Identifier]) -> str:
    text = "\x1e".join(f"{i.type}\x1f{i.value}" for i in sorted(identifiers))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Link:
    """Why two groups of identifiers became one: the identifier and event that joined them."""

    identifier: Identifier
    message_id: str


class _Groups:
    def __init__(self, settings: IdentitySettings) -> None:
        self.parent: dict[Identifier, Identifier] = {}
        self.counts: dict[Identifier, dict[str, int]] = {}
        self.limits = settings.limits

    def add(self, item: Identifier) -> None:
        if item not in self.parent:
            self.parent[item] = item
            # Only limited types are counted: plain dicts, since this runs for every identifier.
            self.counts[item] = {item.type: 1} if item.type in self.limits else {}

    def find(self, item: Identifier) -> Identifier:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def join(self, a: Identifier, b: Identifier) -> bool:
        """Join the groups of a and b unless a limit forbids it; True when they are one."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        held, joining = self.counts[ra], self.counts[rb]
        if any(held.get(kind, 0) + joining.get(kind, 0) > limit
               for kind, limit in self.limits.items()):
            return False
        self.parent[rb] = ra
        for kind, count in joining.items():
            held[kind] = held.get(kind, 0) + count
        return True


def partition(edges: Iterable[Edge], settings: IdentitySettings
              ) -> tuple[dict[Identifier, Identifier], list[tuple[Identifier, Link]]]:
    """Each identifier's group (named by its anchor) and the links that joined groups, in
    canonical order: (identifier of the joined group, link)."""
    groups = _Groups(settings)
    links: list[tuple[Identifier, Link]] = []
    for edge in sorted(edges, key=lambda e: e.order):
        members = sorted(edge.identifiers, key=settings.strength)
        for item in members:
            groups.add(item)
        anchor = members[0]
        for item in members[1:]:
            separate = groups.find(anchor) != groups.find(item)
            if groups.join(anchor, item) and separate:
                links.append((item, Link(item, edge.first_message_id)))
    return {item: groups.find(item) for item in groups.parent}, links
