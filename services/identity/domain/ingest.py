"""Applying a batch of events to the identity graph and the profiles, in memory.

The ingest use-case (service_layer/ingest.py) loads what the batch touches through the adapter
in a fixed number of queries (earlier message ids, the owners of the batch's identifiers, the
known edges, and for clusters whose graph changes their identifiers, edges and events), this
module decides everything, and the adapter writes the result in bulk.

Fast path: an event whose identifier set was seen before (at an earlier event time) changes no
link; it goes to the profile of its strongest identifier and its traits are folded in. So does a
new set made of one identifier that is already known (see relinks). Otherwise
the partition of the touched clusters is recomputed (graph.partition) and profiles are merged
or split to match; a profile whose identifiers changed hands gets its golden record refolded
from all its events, so the result never depends on arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from cjo_identity.domain.conversions import Conversion, value_of
from cjo_identity.domain.events import Event, EventType
from cjo_identity.domain.golden import Golden, apply_event, combine, fold
from cjo_identity.domain.graph import Edge, Link, partition
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.settings import IdentitySettings


class Outcome(NamedTuple):
    """What became of one event of the batch."""

    event_id: str
    profile_id: str
    duplicate: bool = False


class Owner(NamedTuple):
    """The profile and cluster an identifier belongs to."""

    profile_id: str
    cluster_id: str


@dataclass(frozen=True)
class Accepted:
    """An event applied by this batch, to store and forward."""

    event_id: str
    profile_id: str
    event: Event
    golden: Golden  # the profile's record right after this event


@dataclass(frozen=True)
class Merge:
    merged_profile_id: str
    survivor_profile_id: str
    link: Link


@dataclass(frozen=True)
class StoredRef:
    """An event already stored, as far as resolution needs it."""

    event_id: str
    profile_id: str
    event: Event


def linkable(event: Event, settings: IdentitySettings,
             strongest_first: bool = True) -> tuple[Identifier, ...]:
    """The event's identifiers that may link, strongest first (or in (type, value) order)."""
    identifiers = event.identifiers
    if len(identifiers) == 1:  # the usual event: nothing to sort
        return () if settings.is_blocked(identifiers[0]) else identifiers
    key = settings.strength if strongest_first else None
    if settings.blocks_nothing:  # no blocked values: nothing to leave out
        return tuple(sorted(identifiers, key=key))
    return tuple(sorted((i for i in identifiers if not settings.is_blocked(i)), key=key))


def batch_edges(events: Iterable[Event], settings: IdentitySettings) -> dict[str, Edge]:
    edges: dict[str, Edge] = {}
    for event in events:
        # An edge's identifiers are a set in (type, value) order: a sort by strength first
        # would only be undone.
        edge = Edge(linkable(event, settings, strongest_first=False), event.timestamp,
                    event.message_id)
        held = edges.get(edge.key)
        edges[edge.key] = edge if held is None else held.earliest(edge)
    return edges


def changed_edges(batch: Mapping[str, Edge], known: Mapping[str, tuple[datetime, str]]
                  ) -> list[Edge]:
    """Edges that are new, or now have an earlier first event: only these can move links.
    ``known``: the stored edges' first events (time, message id) by key (an edge's order is
    its first event, then its key: the same key here)."""
    return [edge for key, edge in batch.items()
            if key not in known or (edge.first_time, edge.first_message_id) < known[key]]


def relinks(edge: Edge, owners: Mapping[Identifier, Owner]) -> bool:
    """Whether the edge can change the partition. A lone identifier that already has an owner
    cannot: at any place in the canonical order it only adds an identifier that is already
    there, joins nothing and counts nothing against a limit. Such edges (the usual event of a
    known person) are stored without recomputing their cluster."""
    return len(edge.identifiers) != 1 or edge.identifiers[0] not in owners


@dataclass
class GraphChange:
    owners: dict[Identifier, Owner] = field(default_factory=dict)  # final, for all touched
    new_identifiers: dict[Identifier, Owner] = field(default_factory=dict)
    moved_identifiers: dict[Identifier, Owner] = field(default_factory=dict)
    edges: list[tuple[Edge, str]] = field(default_factory=list)  # to (re)write, with cluster
    new_profiles: set[str] = field(default_factory=set)
    merges: list[Merge] = field(default_factory=list)
    # Profiles whose identifiers changed hands: their records are refolded from their events.
    refold: set[str] = field(default_factory=set)
    # Old profiles whose events must be loaded (and re-pointed) for the refold.
    sources: set[str] = field(default_factory=set)
    # Where each old profile's events go when their identifiers no longer decide.
    successor: dict[str, str] = field(default_factory=dict)
    # Profiles merged away whole into a survivor that lost nothing (the usual case): their
    # records combine (every survivorship rule is order-free) and their events move in bulk,
    # without reading them back.
    absorbed: dict[str, str] = field(default_factory=dict)


def plan_graph(changed: Sequence[Edge], cluster_edges: Mapping[str, Sequence[Edge]],
               owners: Mapping[Identifier, Owner], settings: IdentitySettings,
               new_id: Callable[[], str]) -> GraphChange:
    """Recompute the partition of every cluster the changed edges touch.

    ``cluster_edges``: the stored edges of those clusters; ``owners``: the owner of every
    identifier of those clusters (and of the batch)."""
    change = GraphChange(owners=dict(owners))
    lone = [edge for edge in changed if not relinks(edge, owners)]
    changed = [edge for edge in changed if relinks(edge, owners)]
    # Clusters (and new identifiers) joined by the changed edges, ignoring limits.
    parent: dict[str, str] = {}

    def node(item: Identifier) -> str:
        owner = owners.get(item)
        return f"c:{owner.cluster_id}" if owner else f"i:{item.type}\x1f{item.value}"

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for edge in changed:
        first = find(node(edge.identifiers[0])) if edge.identifiers else None
        for item in edge.identifiers[1:]:
            other = find(node(item))
            if other != first and first is not None:
                parent[other] = first
    super_clusters: dict[str, list[Edge]] = {}
    for edge in changed:
        if edge.identifiers:
            super_clusters.setdefault(find(node(edge.identifiers[0])), []).append(edge)

    members_of: dict[str, list[str]] = {}
    for x in list(parent):
        members_of.setdefault(find(x), []).append(x)
    # A lone edge (an earlier first event, nothing linked anew) of a cluster recomputed here is
    # that cluster's: stored once with it, and its partition sees the earlier order.
    recomputed = {x[2:]: root for root in super_clusters for x in members_of[root]
                  if x.startswith("c:")}
    if recomputed and lone:
        kept: list[Edge] = []
        for edge in lone:
            owner = owners.get(edge.identifiers[0]) if edge.identifiers else None
            root = recomputed.get(owner.cluster_id) if owner is not None else None
            if root is None:
                kept.append(edge)
            else:
                super_clusters[root].append(edge)
        lone = kept
    claimed: set[str] = set()
    for root in sorted(super_clusters):
        clusters = sorted(x[2:] for x in members_of[root] if x.startswith("c:"))
        cluster_id = clusters[0] if clusters else new_id()
        edges: dict[str, Edge] = {}
        stored_cluster: dict[str, str] = {}
        for old in clusters:
            for edge in cluster_edges.get(old, ()):
                edges[edge.key] = edge
                stored_cluster[edge.key] = old
        stored_order = {key: edge.order for key, edge in edges.items()}
        for edge in super_clusters[root]:
            held = edges.get(edge.key)
            edges[edge.key] = edge if held is None else held.earliest(edge)
        for key, edge in edges.items():
            if stored_cluster.get(key) != cluster_id or stored_order.get(key) != edge.order:
                change.edges.append((edge, cluster_id))
        _assign(change, edges.values(), cluster_id, settings, new_id, claimed)
    # Stored in the cluster their identifier ends up in (it may have just been renamed).
    change.edges += [(edge, change.owners[edge.identifiers[0]].cluster_id) for edge in lone]
    return change


def _assign(change: GraphChange, edges: Iterable[Edge], cluster_id: str,
            settings: IdentitySettings, new_id: Callable[[], str], claimed: set[str]) -> None:
    """Give each group of identifiers a profile: the existing profile that used one of its
    identifiers first survives; the others are merged into it (or a new profile is made)."""
    ordered = sorted(edges, key=lambda e: e.order)
    groups, links = partition(ordered, settings)
    first_seen: dict[Identifier, int] = {}
    for rank, edge in enumerate(ordered):
        for item in edge.identifiers:
            first_seen.setdefault(item, rank)
    by_group: dict[Identifier, list[Identifier]] = {}
    for item in sorted(groups, key=lambda i: (first_seen[i], settings.strength(i))):
        by_group.setdefault(groups[item], []).append(item)
    before = {item: change.owners[item] for item in groups if item in change.owners}
    old_profiles = {owner.profile_id for owner in before.values()}
    survivor_of_group: dict[Identifier, str] = {}
    losers: set[str] = set()
    refold: set[str] = set()
    sources: set[str] = set()
    merges: list[Merge] = []
    for group, items in sorted(by_group.items(), key=lambda kv: first_seen[kv[1][0]]):
        survivor = next((before[i].profile_id for i in items
                         if i in before and before[i].profile_id not in claimed), None)
        if survivor is None:
            survivor = new_id()
            change.new_profiles.add(survivor)
        claimed.add(survivor)
        survivor_of_group[group] = survivor
        for item in items:
            owner = Owner(survivor, cluster_id)
            held = before.get(item)
            if held is None:
                change.new_identifiers[item] = owner
            elif held != owner:
                change.moved_identifiers[item] = owner
                if held.profile_id != survivor:
                    losers.add(held.profile_id)
                    refold.add(survivor)
                    sources.add(held.profile_id)
                    if survivor not in change.new_profiles:
                        sources.add(survivor)
            change.owners[item] = owner
    for old in sorted(old_profiles):
        if old in claimed:
            change.successor[old] = old
            continue
        # Merged away: it joins the group that holds the identifier it used first.
        items = sorted((i for i, o in before.items() if o.profile_id == old),
                       key=lambda i: (first_seen[i], settings.strength(i)))
        group = groups[items[0]]
        survivor = survivor_of_group[group]
        change.successor[old] = survivor
        link = next((lk for joined, lk in links
                     if groups[joined] == group and joined in items),
                    next((lk for joined, lk in links if groups[joined] == group),
                         Link(items[0], "")))
        merges.append(Merge(old, survivor, link))
    change.merges += merges
    split = {p for p in losers if change.successor.get(p) == p}
    if split:
        # A profile kept its id but lost identifiers: the records of everyone involved are
        # refolded from their events.
        change.refold |= refold | split
        change.sources |= sources
    else:
        change.absorbed.update((m.merged_profile_id, m.survivor_profile_id) for m in merges)


@dataclass
class BatchPlan:
    outcomes: list[Outcome] = field(default_factory=list)  # one per event, in order
    accepted: list[Accepted] = field(default_factory=list)
    golden: dict[str, Golden] = field(default_factory=dict)  # per written profile, after
    new_profiles: set[str] = field(default_factory=set)
    changed_profiles: set[str] = field(default_factory=set)  # existing ones to rewrite
    repointed: dict[str, str] = field(default_factory=dict)  # stored event id -> profile
    graph: GraphChange = field(default_factory=GraphChange)
    # The existing profiles as they were before the batch: their record and computed traits.
    # What equals its earlier value is not rewritten, and segment conditions are not evaluated
    # again for a profile whose inputs did not change.
    before: dict[str, tuple[Golden, dict[str, Any]]] = field(default_factory=dict)

    def record_changed(self, profile_id: str) -> bool:
        held = self.before.get(profile_id)
        return held is None or held[0] != self.golden[profile_id]


def plan_batch(events: Sequence[Event], *, seen: Mapping[str, Outcome], graph: GraphChange,
               held: Mapping[str, Golden], stored: Sequence[StoredRef],
               settings: IdentitySettings, new_id: Callable[[], str]) -> BatchPlan:
    """Decide the outcome of each event once the graph is settled.

    ``seen``: outcomes of message ids ingested before; ``held``: the current records of the
    profiles involved; ``stored``: the events of ``graph.sources`` (profiles being refolded)."""
    plan = BatchPlan(graph=graph, new_profiles=set(graph.new_profiles))
    owners = graph.owners

    def profile_of(event: Event, fallback: str | None) -> str | None:
        for item in linkable(event, settings):
            if item in owners:
                return owners[item].profile_id
        return fallback

    refold: dict[str, list[Event]] = {p: [] for p in graph.refold}
    for ref in stored:
        target = profile_of(ref.event, graph.successor.get(ref.profile_id, ref.profile_id))
        assert target is not None
        if target != ref.profile_id:
            plan.repointed[ref.event_id] = target
        if target in refold:
            refold[target].append(ref.event)
    seen = dict(seen)
    fresh: list[tuple[Event, Outcome]] = []
    for event in events:
        earlier = seen.get(event.message_id)
        if earlier is not None:
            plan.outcomes.append(Outcome(earlier.event_id, earlier.profile_id, duplicate=True))
            continue
        # An event naming its profile follows it if this batch merges it away.
        profile_id = (graph.successor.get(event.profile_id, event.profile_id)
                      if event.profile_id else profile_of(event, None))
        if profile_id is None:  # only reachable if the adapter missed an identifier
            raise RuntimeError("an accepted event resolved to no profile")
        outcome = Outcome(new_id(), profile_id)
        seen[event.message_id] = outcome
        plan.outcomes.append(outcome)
        fresh.append((event, outcome))
        if profile_id in refold:
            refold[profile_id].append(event)
    for profile_id, folded in refold.items():
        plan.golden[profile_id] = fold(folded, settings)
    for merged, survivor in sorted(graph.absorbed.items()):
        golden = plan.golden.get(survivor)
        if golden is None:
            golden = plan.golden[survivor] = (held[survivor].copy() if survivor in held
                                              else Golden())
        if merged in held:
            combine(golden, held[merged], settings)
    # Each accepted event keeps the record as it left it: a record is copied only before a
    # later event of the batch changes it (the usual batch has one event per profile).
    kept: set[str] = set()
    for event, outcome in fresh:
        profile_id = outcome.profile_id
        if profile_id not in refold:
            golden = plan.golden.get(profile_id)
            if golden is None:
                golden = held[profile_id].copy() if profile_id in held else Golden()
            elif profile_id in kept:
                golden = golden.copy()
            plan.golden[profile_id] = golden
            apply_event(golden, event, settings)
            kept.add(profile_id)
            snapshot = golden
        else:
            snapshot = plan.golden[profile_id]
        plan.accepted.append(Accepted(outcome.event_id, profile_id, event, snapshot))
    touched = set(plan.golden) | {o.profile_id for o in graph.moved_identifiers.values()} \
        | {o.profile_id for o in graph.new_identifiers.values()}
    for profile_id in touched:
        if profile_id not in plan.new_profiles:
            plan.changed_profiles.add(profile_id)
        plan.golden.setdefault(profile_id, held[profile_id].copy() if profile_id in held
                               else Golden())
    return plan


def conversions_of(accepted: Sequence[Accepted], settings: IdentitySettings
                   ) -> list[tuple[Accepted, Conversion]]:
    """The accepted track events that are conversions, with their value."""
    if not settings.conversions:
        return []
    found = []
    for item in accepted:
        definition = settings.conversions.get(item.event.name)
        if definition is not None and item.event.type is EventType.TRACK:
            found.append((item, value_of(definition, item.event.properties)))
    return found
