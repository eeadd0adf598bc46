"""Ingest: a batch of parsed events becomes stored events, resolved profiles, segment
transitions and outbox rows, in one unit of work.

The guarantees live here: a message id is applied once (a repeat answers the first outcome),
erased identifiers never identify anyone again, merges reach orchestration before the events
that carry the survivor's id, and every write of the batch commits together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from cjo_identity.adapters import profiles, segments
from cjo_identity.adapters.outbox_payloads import (
    EVENTS_TOPIC,
    ProfileState,
    conversion_fact,
    forwarded_event,
    merge_event,
    merge_fact,
    segment_event,
    traits_size,
)
from cjo_identity.domain.events import Event, EventType
from cjo_identity.domain.graph import Edge
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.ingest import (
    Accepted,
    BatchPlan,
    Merge,
    Outcome,
    batch_edges,
    changed_edges,
    conversions_of,
    linkable,
    plan_batch,
    plan_graph,
    relinks,
)
from cjo_identity.domain.settings import IdentitySettings
from cjo_identity.service_layer.settings import Cached, check_unchanged
from cjo_platform.db.item_writes import item_at_fault
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.decisioning import DECISIONING_EVENTS_TOPIC
from cjo_platform.errors import InvalidArgument
from cjo_platform.facts import FACTS_TOPIC
from cjo_platform.group_commit import GroupCommit
from cjo_platform.ids import new_hex_id
from cjo_platform.limits import MAX_PROFILE_TRAITS_BYTES
from cjo_platform.logging import get_logger
from cjo_platform.secret_box import SecretBox
from cjo_platform.telemetry import batch_span

log = get_logger(__name__)

# A batch whose profiles a concurrent batch merged or moved between its read and its lock plans
# again from fresh reads; more than a few in a row means something else is wrong.
STALE_ATTEMPTS = 5

UNRESOLVABLE = InvalidArgument.one(
    "identifiers", "every identifier is blocked or erased; nothing to resolve the event to")
NO_PROFILE = InvalidArgument.one("profile_id", "no such profile (it was erased)")
TRAITS_TOO_LARGE = InvalidArgument.one(
    "traits", f"would make the profile's traits larger than "
    f"{MAX_PROFILE_TRAITS_BYTES // 1024} KiB encoded")


class StaleGraph(Exception):
    """The identity graph changed under a batch before it locked its profiles, or the batch
    needs a profile whose id is lower than one it already locked; run it again, locking
    ``lock_first`` with the others from the start."""

    def __init__(self, lock_first: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.lock_first = lock_first


class TraitsTooLarge(Exception):
    """Events of a batch (``message_ids``) whose traits would make their profile's traits
    larger than :data:`~cjo_platform.limits.MAX_PROFILE_TRAITS_BYTES` (every forwarded event
    of the profile carries them); run the batch again refusing them."""

    def __init__(self, message_ids: frozenset[str]) -> None:
        super().__init__()
        self.message_ids = message_ids


def new_id() -> str:
    return new_hex_id()


@dataclass(frozen=True)
class Applied:
    """One committed batch: an outcome (or the event's own error) per event, and the plan."""

    outcomes: list[Outcome | InvalidArgument]
    plan: BatchPlan | None


async def ingest_events(transactions: Transactions, workspace_id: str, batch: Sequence[Event],
                        settings: IdentitySettings, traceparent: str | Sequence[str],
                        forward_to_decisioning: bool = True,
                        check_settings: SecretBox | None = None
                        ) -> list[Outcome | InvalidArgument]:
    """Apply the events (parsed with ``settings``); one outcome or error per event, in order.
    ``traceparent``: the trace the events belong to, or each event's own (see
    :func:`apply_events`). With ``forward_to_decisioning``, track events and merges also go to
    decisioning. With ``check_settings`` (``settings`` came from a cache; the box opens the
    stored ones), raises :class:`~cjo_identity.service_layer.settings.SettingsChanged`,
    writing nothing, when they are not the stored ones."""
    lock_first: frozenset[str] = frozenset()
    refused: frozenset[str] = frozenset()
    attempt = 1
    while True:
        try:
            applied = await transactions.run(partial(
                apply_events, workspace_id=workspace_id, batch=batch, settings=settings,
                traceparent=traceparent, lock_first=lock_first,
                forward_to_decisioning=forward_to_decisioning, check_settings=check_settings,
                refused=refused))
        except StaleGraph as stale:
            if attempt == STALE_ATTEMPTS:
                raise
            attempt += 1
            lock_first = lock_first | stale.lock_first
            continue
        except TraitsTooLarge as large:
            # Each time at least one more event is refused: this ends.
            refused = refused | large.message_ids
            continue
        if applied.plan is not None:
            _log_committed(applied.plan, settings)
        return applied.outcomes


@dataclass(frozen=True)
class GroupCommitSettings:
    # How long a call to a busy workspace (written within the window) waits for others to share
    # its transaction; a call to an idle one goes at once. 0: every call alone.
    window_seconds: float
    max_events: int  # events in one group; a call of this many or more goes alone


# Every call in a transaction of its own.
NO_GROUP_COMMIT = GroupCommitSettings(window_seconds=0.0, max_events=1)


@dataclass(frozen=True)
class _Lane:
    """Calls whose events may share a transaction: one workspace, parsed with the same
    settings."""

    workspace_id: str
    revision: int
    settings: IdentitySettings = field(compare=False)


class IngestGroups:
    """Ingest for the servicer: the events of concurrent calls to one workspace (each call's
    events in order, calls in arrival order) applied in one transaction (group commit,
    :mod:`cjo_platform.group_commit`), each call answered with its own outcomes.

    The guarantees of :func:`ingest_events` hold for the group as a whole: a message id sent
    by two calls of one group is applied once (the second is a duplicate of the first), and
    an event the database refuses fails alone (the group is written again per call, then the
    call per event). Every event keeps its own call's trace. A workspace's groups never mix
    with another's, and calls parsed with different settings never share one."""

    def __init__(self, transactions: Transactions, settings: GroupCommitSettings,
                 box: SecretBox, forward_to_decisioning: bool = True) -> None:
        self._transactions = transactions
        self._box = box  # opens the stored settings' secret (to check them unchanged)
        self._forward_to_decisioning = forward_to_decisioning
        self._groups: GroupCommit[_Lane, tuple[Event, str], Outcome | InvalidArgument] = \
            GroupCommit(self._apply, window=settings.window_seconds,
                        max_items=settings.max_events, split=item_at_fault)

    async def ingest(self, workspace_id: str, settings: Cached, batch: Sequence[Event],
                     traceparent: str) -> list[Outcome | InvalidArgument]:
        """One outcome or error per event, in order; raises
        :class:`~cjo_identity.service_layer.settings.SettingsChanged` when ``settings`` are
        no longer the stored ones (nothing of the call was written: parse it again)."""
        return await self._groups.submit(
            _Lane(workspace_id, settings.revision, settings.settings),
            [(event, traceparent) for event in batch])

    async def _apply(self, lane: _Lane, items: list[tuple[Event, str]]
                     ) -> list[Outcome | InvalidArgument]:
        traces = [trace for _, trace in items]
        # One call's events are its server span's work; a group links to each call's trace.
        with batch_span("identity.ingest", traces, only_to_link=True):
            return await ingest_events(
                self._transactions, lane.workspace_id, [event for event, _ in items],
                lane.settings, traces, self._forward_to_decisioning, check_settings=self._box)


def apply_events(uow: UnitOfWork, workspace_id: str, batch: Sequence[Event],
                 settings: IdentitySettings, traceparent: str | Sequence[str],
                 lock_first: frozenset[str] = frozenset(),
                 forward_to_decisioning: bool = True, check_settings: SecretBox | None = None,
                 refused: frozenset[str] = frozenset()) -> Applied:
    """One attempt at the batch; raises :class:`StaleGraph` when the graph changed under it
    or it must lock more profiles out of order (run it again in a new unit of work, locking
    the profiles of ``lock_first`` from the start).

    ``traceparent`` is one for the whole batch, or one per event (a group of calls, each in
    its own trace): an event's outbox rows carry its own; a merge carries the trace of the
    event that linked it, a segment transition that of the profile's last event here.

    Raises :class:`TraitsTooLarge`, writing nothing, when an event's traits would make its
    profile's too large; the events of the message ids ``refused`` fail with that error."""
    session = uow.session
    held_writes = profiles.hold_writes(session)
    segments_revision = (check_unchanged(uow, workspace_id, settings, check_settings)
                         if check_settings is not None else None)
    traces = _Traces(batch, traceparent)
    wanted = {i for event in batch for i in event.identifiers}
    # The identifiers' owners and the message ids' earlier outcomes too, in the same
    # statement: resolution needs those of the batch's (unerased) identifiers.
    read = profiles.first_reads(session, workspace_id, wanted,
                                {event.message_id for event in batch})
    erased = read.erased
    # Events that name their profile go to it, or to the profile it was merged into.
    named = {event.profile_id for event in batch if event.profile_id}
    resolved = profiles.resolve_profile_ids(session, workspace_id, named) if named else {}
    existing = (profiles.existing_profiles(session, workspace_id, resolved.values())
                if resolved else set())
    outcomes: list[Outcome | InvalidArgument | None] = []
    valid: list[Event] = []
    for event in batch:
        if event.message_id in refused:
            outcomes.append(TRAITS_TOO_LARGE)
            continue
        if event.profile_id:
            if resolved[event.profile_id] not in existing:
                outcomes.append(NO_PROFILE)
                continue
            outcomes.append(None)
            valid.append(replace(event, profile_id=resolved[event.profile_id]))
            continue
        if erased & set(event.identifiers):
            event = replace(event, identifiers=tuple(
                i for i in event.identifiers if i not in erased))
        if not event.identifiers or not linkable(event, settings):
            outcomes.append(UNRESOLVABLE)
            continue
        outcomes.append(None)
        valid.append(event)
    if not valid:
        return Applied([o for o in outcomes if o is not None], None)
    now = uow.now()
    plan = _resolve_and_store(session, workspace_id, valid, now, settings, read,
                              looked_up=wanted, lock_first=lock_first, reread=not held_writes)
    merged = {m.merged_profile_id: m.survivor_profile_id for m in plan.graph.merges}
    computed: dict[str, dict[str, Any]] = {}
    # A merged profile's memberships go to its survivor (its enrollments do, in orchestration):
    # the survivor leaves what it no longer matches and enters nothing the person was in.
    transitions = segments.refresh(
        session, workspace_id, {p: g for p, g in plan.golden.items() if p not in merged},
        merged, settings, now, before=plan.before, computed_out=computed,
        fresh=plan.new_profiles, segments_revision=segments_revision, merged_into=merged)
    # Journeys' conditions on these events read the profile's computed traits and segments
    # as this batch left them: the batch's new profiles' as it wrote them, the others' read.
    states: dict[str, ProfileState] = _new_profile_states(plan, computed, transitions)
    states.update(segments.profile_states(
        session, workspace_id, ({a.profile_id for a in plan.accepted}
                                | {t.profile_id for t in transitions}
                                | {m.survivor_profile_id for m in plan.graph.merges})
        - set(states)))
    traces.follow(plan.accepted)
    # Merges first: the batch's events (and all later ones) carry the survivor's id, and must
    # find the merged profile's enrollments (and, in decisioning, its decisions) moved to it.
    merges = [(merge_event(m, plan.golden.get(m.survivor_profile_id), now, trace,
                           states.get(m.survivor_profile_id)), trace)
              for m, trace in ((m, traces.of_merge(m)) for m in plan.graph.merges)]
    accepted = [(a, trace, forwarded_event(a, trace, states.get(a.profile_id)))
                for a, trace in ((a, traces.of_event(a.event)) for a in plan.accepted)]
    uow.publish(EVENTS_TOPIC, workspace_id, [
        *merges,
        *((payload, trace) for _, trace, payload in accepted),
        *((segment_event(t, plan.golden[t.profile_id], now, trace,
                         state=states.get(t.profile_id)), trace)
          for t, trace in ((t, traces.of_profile(t.profile_id)) for t in transitions))])
    if forward_to_decisioning:
        # The same bytes orchestration gets: decisioning rewards its decisions with the track
        # events and follows merges. Identify-only events reward nothing, so they stay here.
        uow.publish(DECISIONING_EVENTS_TOPIC, workspace_id, [
            *merges, *((payload, trace) for a, trace, payload in accepted
                       if a.event.type is EventType.TRACK)])
    uow.publish(FACTS_TOPIC, workspace_id, [
        # Merges too, in the same transaction: analytics counts a merged profile's exposures
        # and conversions on the survivor.
        *((merge_fact(m, now), traces.of_merge(m)) for m in plan.graph.merges),
        *((conversion_fact(a, c), traces.of_event(a.event))
          for a, c in conversions_of(plan.accepted, settings))])
    applied = iter(plan.outcomes)
    return Applied([o if o is not None else next(applied) for o in outcomes], plan)


def _new_profile_states(plan: BatchPlan, computed: Mapping[str, dict[str, Any]],
                        transitions: Sequence[segments.Transition]) -> dict[str, ProfileState]:
    """What :func:`~cjo_identity.adapters.segments.profile_states` would read back for the
    profiles this batch created, from what it wrote: their computed traits, the segments they
    entered (a new profile had none) and their identifiers (all new, linked now: by type and
    value). A profile the graph also moved identifiers to, merged, absorbed or refolded is
    left out (read back)."""
    graph = plan.graph
    entangled = ({m.merged_profile_id for m in graph.merges}
                 | {m.survivor_profile_id for m in graph.merges}
                 | {o.profile_id for o in graph.moved_identifiers.values()}
                 | set(graph.absorbed) | set(graph.absorbed.values()) | graph.refold)
    new = {p for p in plan.new_profiles - entangled if p in computed}
    if not new:
        return {}
    linked: dict[str, list[tuple[str, str]]] = {p: [] for p in new}
    for item, owner in sorted(graph.new_identifiers.items()):
        if owner.profile_id in linked:
            linked[owner.profile_id].append((item.type, item.value))
    entered: dict[str, list[str]] = {p: [] for p in new}
    for t in transitions:
        if t.entered and t.profile_id in entered:
            entered[t.profile_id].append(t.segment.segment_id)
    return {p: (dict(computed[p]), sorted(entered[p]), linked[p]) for p in new}


class _Traces:
    """Which trace each outbox row of a batch belongs to."""

    def __init__(self, batch: Sequence[Event], traceparent: str | Sequence[str]) -> None:
        self._one = traceparent if isinstance(traceparent, str) else None
        self._by_message: dict[str, str] = {}
        self._by_profile: dict[str, str] = {}
        if self._one is None:
            # A repeated message id was applied (and is traced) as its first occurrence.
            for event, trace in zip(batch, traceparent, strict=True):
                self._by_message.setdefault(event.message_id, trace)
        self._first = self._one if self._one is not None else next(iter(traceparent), "")

    def follow(self, accepted: Sequence[Accepted]) -> None:
        if self._one is None:
            self._by_profile = {a.profile_id: self._by_message[a.event.message_id]
                                for a in accepted}

    def of_event(self, event: Event) -> str:
        return self._one if self._one is not None else self._by_message[event.message_id]

    def of_profile(self, profile_id: str) -> str:
        if self._one is not None:
            return self._one
        return self._by_profile.get(profile_id, self._first)

    def of_merge(self, merge: Merge) -> str:
        if self._one is not None:
            return self._one
        found = self._by_message.get(merge.link.message_id)
        return found if found is not None else self.of_profile(merge.survivor_profile_id)


def _resolve_and_store(session: Session, workspace_id: str, batch: Sequence[Event],
                       now: datetime, settings: IdentitySettings, read: profiles.FirstReads,
                       looked_up: set[Identifier], lock_first: frozenset[str] = frozenset(),
                       reread: bool = True) -> BatchPlan:
    """Dedupe, resolve, merge and fold the (resolvable) events, and store the result.

    Reads what the batch touches (a fixed number of queries whatever its size), locks the
    profiles it changes, lets the domain plan everything, then writes in bulk.

    Lock order: every transaction that waits for profile locks (this one, and a backfill's
    chunk, which locks up to 1,000 profiles of a workspace) takes them in ascending profile
    id, so no two can wait for each other (a deadlock). The cluster members a relinking batch
    needs are only known once its owners are locked; when one of them has an id below a
    profile already locked, taking it now would break the order, so the batch rolls back
    (releasing every lock) and runs again locking them all in one sorted pass. The time
    worker's lapses never wait (SKIP LOCKED).

    ``read``: what this transaction read first (:func:`~cjo_identity.adapters.profiles.
    first_reads`) of the identifiers ``looked_up`` and of (at least) the batch's message ids;
    ``reread``: whether the owners must be read again once their profiles are locked (not when
    the transaction holds the database's writes: :func:`~cjo_identity.adapters.profiles.
    hold_writes`)."""
    seen = read.seen
    fresh = list({e.message_id: e for e in reversed(batch)
                  if e.message_id not in seen}.values())
    # An event that names its profile links nothing: it makes no edge.
    wanted_edges = batch_edges((e for e in fresh if not e.profile_id), settings)
    needed = {i for edge in wanted_edges.values() for i in edge.identifiers}
    owners = {i: o for i, o in read.owners.items() if i in needed}
    if needed - looked_up:
        owners.update(profiles.owners(session, workspace_id, needed - looked_up))
    known = profiles.edge_firsts(session, workspace_id, set(wanted_edges))
    changed = changed_edges(wanted_edges, known)
    locked = {o.profile_id for o in owners.values()} | {e.profile_id for e in fresh
                                                         if e.profile_id}
    held, computed = profiles.golden_for_update(session, workspace_id, locked | lock_first)
    # Profiles locked ahead (an earlier attempt needed them) join the batch only if its
    # clusters still include them.
    ahead = {p: (held.pop(p), computed.pop(p)) for p in lock_first - locked if p in held}
    if set(held) != locked or (
            reread and owners and profiles.owners(session, workspace_id, set(owners)) != owners):
        # A concurrent batch merged, moved or erased these profiles between our read and our
        # lock.
        raise StaleGraph()
    cluster_edges: dict[str, list[Edge]] = {}
    if any(relinks(edge, owners) for edge in changed):
        dirty = {owners[i].cluster_id for edge in changed if relinks(edge, owners)
                 for i in edge.identifiers if i in owners}
        members = profiles.cluster_members(session, workspace_id, dirty)
        owners.update(members)
        cluster_edges = profiles.cluster_edges(session, workspace_id, dirty)
        more = {o.profile_id for o in members.values()} - locked
        for p in more & set(ahead):
            held[p], computed[p] = ahead[p]
        unlocked = more - set(ahead)
        highest = max(locked | set(ahead), default="")
        if unlocked and min(unlocked) < highest:
            raise StaleGraph(frozenset(locked | more))
        more_held, more_computed = profiles.golden_for_update(session, workspace_id, unlocked)
        held.update(more_held)
        computed.update(more_computed)
    graph = plan_graph(changed, cluster_edges, owners, settings, new_id)
    stored = (profiles.stored_refs(session, workspace_id, graph.sources) if graph.sources
              else [])
    plan = plan_batch(batch, seen=seen, graph=graph, held=held, stored=stored,
                      settings=settings, new_id=new_id)
    # Every forwarded event carries its profile's traits: they stay within the bus's limit.
    too_large = frozenset(a.event.message_id for a in plan.accepted if a.event.traits
                          and traits_size(a.golden) > MAX_PROFILE_TRAITS_BYTES)
    if too_large:
        raise TraitsTooLarge(too_large)
    plan.before = {p: (golden, computed[p]) for p, golden in held.items()}
    profiles.write_batch(session, workspace_id, plan, now, stored_edges=set(known) | {
        edge.key for cluster in cluster_edges.values() for edge in cluster})
    return plan


def _log_committed(plan: BatchPlan, settings: IdentitySettings) -> None:
    for accepted, conversion in conversions_of(plan.accepted, settings):
        if conversion.problem:
            log.warning("conversion recorded with revenue 0", event_id=accepted.event_id,
                        message_id=accepted.event.message_id,
                        event_name=accepted.event.name, reason=conversion.problem)
    for merge in plan.graph.merges:
        log.info("profiles merged", merged_profile_id=merge.merged_profile_id,
                 profile_id=merge.survivor_profile_id,
                 identifier_type=merge.link.identifier.type)
