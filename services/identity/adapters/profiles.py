"""Profile, identity graph and event storage.

An ingest batch costs a fixed number of round trips whatever its size (per 500 keys of an IN
list): earlier message ids, the owners of its identifiers, the known edges, the touched profiles
(locked); when links change, the identifiers and edges of the touched clusters and the events of
the profiles that change hands; then one bulk statement per table written.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import zip_longest
from typing import Any, TypeVar

from sqlalchemy import (
    LargeBinary,
    Row,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable, TextClause

from cjo_identity.adapters.tables import (
    edges,
    erased_identifiers,
    events,
    identifiers,
    profile_merges,
    profiles,
    segment_members,
)
from cjo_identity.domain.events import Event, EventType, StoredEvent
from cjo_identity.domain.golden import ConsentRecord, Golden, Trait
from cjo_identity.domain.graph import Edge, Link
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.ingest import (
    BatchPlan,
    Merge,
    Outcome,
    Owner,
    StoredRef,
)
from cjo_identity.domain.profiles import MergeRecord, Profile
from cjo_platform.db import (
    bulk_insert,
    bulk_update,
    insert_ignore,
    keys_param,
    one_of,
    one_of_keys,
    pg_array,
)
from cjo_platform.db.json_columns import encode_json
from cjo_platform.db.probes import by_keys, pg_probes, pg_text
from cjo_platform.rpc.batch import chunks

T = TypeVar("T")

# A result row of any number of columns.
AnyRow = Row[*tuple[Any, ...]]

# Keys per IN list. PostgreSQL gets one array parameter whatever the size; SQLite allows 32,766
# bind parameters per statement. Every statement costs a round trip (and, on a busy process, a
# wait for the GIL on return), so a whole batch's keys go in one statement.
IN_LIST_KEYS = 5000


# Statements of every ingest batch, built once per dialect (see one_of_keys).

@cache
def _edge_firsts(dialect: str) -> Executable:
    return by_keys(dialect, [edges.c.edge_key, edges.c.first_time, edges.c.first_message_id],
                   edges.c.edge_key)


@cache
def _golden_for_update(dialect: str) -> Executable:
    return by_keys(dialect, [profiles.c.profile_id, profiles.c.traits, profiles.c.trait_times,
                              profiles.c.consents, profiles.c.computed],
                    profiles.c.profile_id, order_by=[profiles.c.profile_id], lock=True)


@cache
def _touch(dialect: str) -> Executable:
    """The update time alone (``b_now``) of the workspace's (``b_workspace_id``) profiles by
    id (``keys``): what an event that changes no trait writes, the usual track event of a known
    person. Built per batch it cost ~10% of a group commit's CPU on SQLite (its construction
    and cache key, more than running it)."""
    return (update(profiles)
            .where(profiles.c.workspace_id == bindparam("b_workspace_id",
                                                        type_=profiles.c.workspace_id.type),
                   one_of_keys(dialect, profiles.c.profile_id))
            .values(update_time=bindparam("b_now", type_=profiles.c.update_time.type)))


@cache
def _stored_refs_probes() -> Executable:
    return by_keys("postgresql", list(events.c), events.c.profile_id)


def _owner(row: AnyRow) -> Owner:
    return Owner(row.profile_id, row.cluster_id)


def _keyed_by_identifier(session: Session, lookup: Callable[[str], Executable],
                         workspace_id: str, wanted: set[Identifier]) -> list[AnyRow]:
    """Rows of a table keyed by (workspace_id, type, value) for the wanted identifiers, by the
    statement ``lookup`` builds for the session's dialect (``_owners_lookup`` and the like), each
    found by one probe of the primary key, so the cost follows the batch, not the workspace.

    The obvious "type = t AND value IN (...) OR ..." is planned as a scan of the workspace's
    whole index by SQLite (the OR defeats the primary key), and by PostgreSQL when statistics
    are missing or stale (a young or fast-growing table, autovacuum behind): each batch then
    cost more as the workspace grew. Both get one statement whatever the types: PostgreSQL a
    lateral join over the (type, value) arrays, whose OFFSET 0 keeps the planner from
    flattening it into a hash join over the workspace; SQLite a CROSS JOIN (which fixes the
    join order) of the (type, value) pairs, one JSON parameter, with the table. Both
    statements are built once."""
    found: list[AnyRow] = []
    dialect = session.get_bind().dialect.name
    statement = lookup(dialect)
    for chunk in chunks(sorted(wanted), IN_LIST_KEYS):
        params: dict[str, Any]
        if dialect == "postgresql":
            params = {"types": pg_array([i.type for i in chunk]),
                      "values": pg_array([i.value for i in chunk])}
        else:
            params = {"pairs": encode_json([[i.type, i.value] for i in chunk])}
        found.extend(session.execute(statement, {"workspace_id": workspace_id, **params}))
    return found


# The statements of _keyed_by_identifier, built once per dialect: every value is a bound
# parameter, so each execution finds its compiled form by a cache key computed once, instead
# of building a new statement (and its key) per batch, which cost more than the look-up itself
# for a batch of a few events.

@cache
def _owners_lookup(dialect: str) -> Executable:
    return _lookup_text(dialect, _lookup_sql(
        dialect, identifiers.name, "t.type, t.value, t.profile_id, t.cluster_id"))


def _lookup_sql(dialect: str, table: str, picked: str) -> str:
    if dialect == "postgresql":
        return pg_probes(table, picked, {"type": "types", "value": "values"})
    # The pairs as one JSON array parameter, not an IN list of one parameter each: the
    # statement is then the same for any batch (compiled once, not expanded per value), and
    # SQLite probes the primary key once per pair (json_each is the outer loop).
    return (f"SELECT {picked} FROM json_each(:pairs) AS k CROSS JOIN {table} AS t "
            f"WHERE t.workspace_id = :workspace_id AND t.type = json_extract(k.value, '$[0]') "
            f"AND t.value = json_extract(k.value, '$[1]')")


def _lookup_text(dialect: str, sql: str) -> TextClause:
    if dialect == "postgresql":
        return pg_text(sql, ("types", "values", "keys"))
    return text(sql)


def _earlier_sql(dialect: str) -> str:
    """The events already stored under the message ids of ``:keys`` (see keys_param), in the
    columns of :func:`_first_reads_lookup`."""
    picked = "'seen' AS kind, t.message_id, t.event_id, t.profile_id, NULL"
    if dialect == "postgresql":
        # Probed by uq_events_message, also for a workspace the statistics do not know (with
        # "workspace_id = :workspace_id AND message_id = ANY(:keys)" PostgreSQL read such a
        # workspace's events through ix_events_profile_time, filtering each by the keys).
        return pg_probes(events.name, picked, {"message_id": "keys"})
    return (f"SELECT {picked} FROM {events.name} AS t WHERE t.workspace_id = :workspace_id "
            f"AND t.message_id IN (SELECT value FROM json_each(:keys))")


@cache
def _first_reads_lookup(dialect: str) -> Executable:
    """A batch's first reads in one statement (UNION ALL), built once: the erased identifiers,
    the owners of the wanted ones, and the events already stored under its message ids."""
    return _lookup_text(dialect, " UNION ALL ".join((
        _lookup_sql(dialect, erased_identifiers.name,
                    "'erased' AS kind, t.type, t.value, NULL AS profile_id, NULL AS cluster_id"),
        _lookup_sql(dialect, identifiers.name,
                    "'owner' AS kind, t.type, t.value, t.profile_id, t.cluster_id"),
        _earlier_sql(dialect))))


@dataclass(frozen=True)
class FirstReads:
    """What a batch reads before it plans: which of its identifiers were erased (they never
    identify anyone again), the owners of those that have one, and the outcomes of its
    message ids already applied."""

    erased: set[Identifier]
    owners: dict[Identifier, Owner]
    seen: dict[str, Outcome]


def hold_writes(session: Session) -> bool:
    """On SQLite, take the database's write lock before the batch's first read (``BEGIN
    IMMEDIATE``) and return True: until the commit no other writer (another replica on the
    file) can change what the batch reads, so nothing read needs reading again after the
    profiles are locked. pysqlite would otherwise begin the transaction only at the first
    write, leaving every earlier read to see the file as it was at that read. PostgreSQL:
    False (rows are locked one by one, ``FOR UPDATE``). A transaction that already began is
    left as it is (False)."""
    if session.get_bind().dialect.name != "sqlite":
        return False
    driver = session.connection().connection.driver_connection
    if driver is None or driver.in_transaction:
        return False
    # Straight to the driver: a statement of SQLAlchemy's would cost more than the lock.
    try:
        driver.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        # A file locked past the busy timeout is an outage (UNAVAILABLE, the consumers
        # wait), as SQLAlchemy's own statement meeting the lock says: wrapped as it would be.
        raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc
    return True


def first_reads(session: Session, workspace_id: str, wanted: set[Identifier],
                message_ids: set[str]) -> FirstReads:
    """:class:`FirstReads` of the identifiers and message ids: one statement (per
    IN_LIST_KEYS of each) for the three look-ups."""
    read = FirstReads(set(), {}, {})
    dialect = session.get_bind().dialect.name
    statement = _first_reads_lookup(dialect)
    chunk: Sequence[Identifier]
    ids: Sequence[str]
    for chunk, ids in zip_longest(chunks(sorted(wanted), IN_LIST_KEYS),
                                  chunks(sorted(message_ids), IN_LIST_KEYS), fillvalue=()):
        params: dict[str, Any] = {"workspace_id": workspace_id,
                                  "keys": keys_param(dialect, ids)}
        if dialect == "postgresql":
            params.update(types=pg_array([i.type for i in chunk]),
                          values=pg_array([i.value for i in chunk]))
        else:
            params["pairs"] = encode_json([[i.type, i.value] for i in chunk])
        # By position: a Row's access by name costs ~0.4 us a column, per identifier.
        for kind, first, second, profile_id, cluster_id in session.execute(statement, params):
            if kind == "seen":
                read.seen[first] = Outcome(second, profile_id, duplicate=True)
            elif kind == "erased":
                read.erased.add(Identifier(first, second))
            else:
                read.owners[Identifier(first, second)] = Owner(profile_id, cluster_id)
    return read


def owners(session: Session, workspace_id: str, wanted: set[Identifier]
           ) -> dict[Identifier, Owner]:
    rows = _keyed_by_identifier(session, _owners_lookup, workspace_id, wanted)
    return {Identifier(kind, value): Owner(profile_id, cluster_id)
            for kind, value, profile_id, cluster_id in rows}


def _edge(row: AnyRow) -> Edge:
    return Edge(tuple(sorted(Identifier(t, v) for t, v in row.identifiers)),
                row.first_time, row.first_message_id)


def edge_firsts(session: Session, workspace_id: str, keys: set[str]
                ) -> dict[str, tuple[datetime, str]]:
    """The first event (time, message id) of each stored edge of ``keys``: all a batch needs
    to tell whether its edges change anything (domain ``changed_edges``). Not the edges
    themselves: decoding a thousand identifier lists and hashing them again for the order
    cost ~8% of a 1,000-event batch of known people."""
    found: dict[str, tuple[datetime, str]] = {}
    dialect = session.get_bind().dialect.name
    for chunk in chunks(sorted(keys), IN_LIST_KEYS):
        rows = session.execute(_edge_firsts(dialect), {
            "workspace_id": workspace_id, "keys": keys_param(dialect, chunk)})
        found.update({key: (time, message_id) for key, time, message_id in rows})
    return found


def cluster_members(session: Session, workspace_id: str, clusters: set[str]
                    ) -> dict[Identifier, Owner]:
    found: dict[Identifier, Owner] = {}
    for chunk in chunks(sorted(clusters), IN_LIST_KEYS):
        rows = session.execute(
            select(identifiers.c.type, identifiers.c.value, identifiers.c.profile_id,
                   identifiers.c.cluster_id)
            .where(identifiers.c.workspace_id == workspace_id,
                   one_of(session, identifiers.c.cluster_id, chunk)))
        found.update({Identifier(r.type, r.value): _owner(r) for r in rows})
    return found


def cluster_edges(session: Session, workspace_id: str, clusters: set[str]
                  ) -> dict[str, list[Edge]]:
    found: dict[str, list[Edge]] = defaultdict(list)
    for chunk in chunks(sorted(clusters), IN_LIST_KEYS):
        rows = session.execute(select(edges).where(
            edges.c.workspace_id == workspace_id, one_of(session, edges.c.cluster_id, chunk)))
        for row in rows:
            found[row.cluster_id].append(_edge(row))
    return found


def golden_for_update(session: Session, workspace_id: str, profile_ids: set[str]
                      ) -> tuple[dict[str, Golden], dict[str, dict[str, Any]]]:
    """Current records and computed traits of the profiles, locked (PostgreSQL) in a fixed
    order so that concurrent batches neither lose each other's updates nor deadlock."""
    held: dict[str, Golden] = {}
    computed: dict[str, dict[str, Any]] = {}
    moments: dict[str, datetime] = {}
    dialect = session.get_bind().dialect.name
    for chunk in chunks(sorted(profile_ids), IN_LIST_KEYS):
        rows = session.execute(_golden_for_update(dialect), {
            "workspace_id": workspace_id, "keys": keys_param(dialect, chunk)})
        for r in rows:
            held[r.profile_id] = _load_golden(r, moments)
            computed[r.profile_id] = dict(r.computed or {})
    return held, computed


def stored_refs(session: Session, workspace_id: str, profile_ids: set[str]
                ) -> list[StoredRef]:
    found: list[StoredRef] = []
    postgresql = session.get_bind().dialect.name == "postgresql"
    for chunk in chunks(sorted(profile_ids), IN_LIST_KEYS):
        if postgresql:
            rows = session.execute(_stored_refs_probes(), {
                "workspace_id": workspace_id, "keys": pg_array(chunk)})
        else:
            rows = session.execute(select(events).where(
                events.c.workspace_id == workspace_id,
                one_of(session, events.c.profile_id, chunk)))
        found.extend(StoredRef(r.event_id, r.profile_id, _event(r)) for r in rows)
    return found


def write_batch(session: Session, workspace_id: str, plan: BatchPlan, now: datetime,
                stored_edges: Set[str]) -> None:
    """Store the batch's plan. ``stored_edges``: the keys of the edges the batch read (the
    only ones of ``plan.graph.edges`` that can have a row already)."""
    graph = plan.graph

    times: dict[datetime, str] = {}

    def record(profile_id: str) -> dict[str, Any]:
        return _golden_columns(plan.golden[profile_id], times)

    if plan.new_profiles:
        bulk_insert(session, profiles, [
            {"workspace_id": workspace_id, "profile_id": p, "create_time": now,
             "update_time": now, **record(p)}
            for p in sorted(plan.new_profiles)])
    rewritten = sorted(p for p in plan.changed_profiles if plan.record_changed(p))
    if rewritten:
        bulk_update(session, profiles, ("workspace_id", "profile_id"), [
            {"workspace_id": workspace_id, "profile_id": p, "update_time": now, **record(p)}
            for p in rewritten])
    # Touched, but the record came out the same (an event without traits): the time alone.
    dialect = session.get_bind().dialect.name
    for chunk in chunks(sorted(plan.changed_profiles - set(rewritten)), IN_LIST_KEYS):
        session.execute(_touch(dialect), {"b_workspace_id": workspace_id, "b_now": now,
                                          "keys": keys_param(dialect, chunk)})
    if graph.merges:
        _record_merges(session, workspace_id, graph.merges, now)
    if graph.moved_identifiers:
        session.execute(
            update(identifiers)
            .where(identifiers.c.workspace_id == workspace_id,
                   identifiers.c.type == bindparam("b_type"),
                   identifiers.c.value == bindparam("b_value"))
            .values(profile_id=bindparam("b_profile_id"), cluster_id=bindparam("b_cluster_id")),
            [{"b_type": i.type, "b_value": i.value, "b_profile_id": o.profile_id,
              "b_cluster_id": o.cluster_id} for i, o in sorted(graph.moved_identifiers.items())])
    if graph.new_identifiers:
        # Sorted, so concurrent batches take unique-index locks in the same order.
        bulk_insert(session, identifiers, [
            {"workspace_id": workspace_id, "type": i.type, "value": i.value,
             "profile_id": o.profile_id, "cluster_id": o.cluster_id, "create_time": now}
            for i, o in sorted(graph.new_identifiers.items())])
    if graph.edges:
        # Rewritten edges go first; a new one (the usual: a new person's first event) has no
        # row to delete. Should a concurrent batch have inserted it since our read, the
        # insert fails on the key and the unit of work runs again on fresh reads.
        keys = sorted(edge.key for edge, _ in graph.edges if edge.key in stored_edges)
        for chunk in chunks(keys, IN_LIST_KEYS):
            session.execute(delete(edges).where(edges.c.workspace_id == workspace_id,
                                                one_of(session, edges.c.edge_key, chunk)))
        bulk_insert(session, edges, [
            {"workspace_id": workspace_id, "edge_key": edge.key, "cluster_id": cluster,
             # Identifiers are (type, value) tuples: stored as [type, value] arrays.
             "identifiers": edge.identifiers,
             "first_time": edge.first_time, "first_message_id": edge.first_message_id}
            for edge, cluster in sorted(graph.edges, key=lambda ec: ec[0].key)])
    if graph.absorbed:
        session.execute(
            update(events)
            .where(events.c.workspace_id == workspace_id,
                   events.c.profile_id == bindparam("b_merged"))
            .values(profile_id=bindparam("b_survivor")),
            [{"b_merged": m, "b_survivor": s} for m, s in sorted(graph.absorbed.items())])
    if plan.repointed:
        session.execute(
            update(events)
            .where(events.c.workspace_id == workspace_id,
                   events.c.event_id == bindparam("b_event_id"))
            .values(profile_id=bindparam("b_profile_id")),
            [{"b_event_id": e, "b_profile_id": p} for e, p in sorted(plan.repointed.items())])
    if plan.accepted:
        bulk_insert(session, events, [
            {"workspace_id": workspace_id, "event_id": a.event_id, "message_id": e.message_id,
             "profile_id": a.profile_id, "type": e.type.value, "name": e.name,
             "identifiers": e.identifiers, "properties": e.properties, "traits": e.traits,
             "timestamp": e.timestamp, "source": e.source, "receive_time": now,
             "original_timestamp": e.original_timestamp}
            for a in plan.accepted for e in [a.event]])


def _record_merges(session: Session, workspace_id: str, merges: Sequence[Merge],
                   now: datetime) -> None:
    merged = sorted(m.merged_profile_id for m in merges)
    survivor = {m.merged_profile_id: m.survivor_profile_id for m in merges}
    # Keep the table flat: whatever had merged into a profile merged away now points on.
    session.execute(
        update(profile_merges)
        .where(profile_merges.c.workspace_id == workspace_id,
               profile_merges.c.survivor_profile_id == bindparam("b_old"))
        .values(survivor_profile_id=bindparam("b_new")),
        [{"b_old": old, "b_new": survivor[old]} for old in merged])
    for chunk in chunks(merged, IN_LIST_KEYS):
        session.execute(delete(profiles).where(profiles.c.workspace_id == workspace_id,
                                               one_of(session, profiles.c.profile_id, chunk)))
    bulk_insert(session, profile_merges, [
        {"workspace_id": workspace_id, "merged_profile_id": m.merged_profile_id,
         "survivor_profile_id": m.survivor_profile_id,
         "identifier_type": m.link.identifier.type, "identifier_value": m.link.identifier.value,
         "message_id": m.link.message_id, "merge_time": now}
        for m in sorted(merges, key=lambda m: m.merged_profile_id)])


def resolve_profile_ids(session: Session, workspace_id: str,
                        profile_ids: Iterable[str]) -> dict[str, str]:
    """Each id as it resolves today: itself, or the profile it was merged into."""
    ids = sorted(set(profile_ids))
    resolved = {p: p for p in ids}
    dialect = session.get_bind().dialect.name
    for chunk in chunks(ids, IN_LIST_KEYS):
        rows = session.execute(_survivors(dialect), {
            "workspace_id": workspace_id, "keys": keys_param(dialect, chunk)})
        resolved.update({r.merged_profile_id: r.survivor_profile_id for r in rows})
    return resolved


# Statements of every read of profiles by id (orchestration's BatchGetProfiles per step,
# delivery's BatchCheckConsent per send, ingest's named profiles), built once per dialect (see
# one_of_keys): built per call, their construction and cache key cost more CPU than the
# look-ups.

@cache
def _survivors(dialect: str) -> Executable:
    return by_keys(dialect, [profile_merges.c.merged_profile_id,
                             profile_merges.c.survivor_profile_id],
                   profile_merges.c.merged_profile_id)


@cache
def _existing(dialect: str) -> Executable:
    return by_keys(dialect, [profiles.c.profile_id], profiles.c.profile_id)


@cache
def _profile_rows(dialect: str) -> Executable:
    return by_keys(dialect, list(profiles.c), profiles.c.profile_id)


@cache
def _owned_identifiers(dialect: str) -> Executable:
    return by_keys(dialect, [identifiers.c.profile_id, identifiers.c.type, identifiers.c.value],
                    identifiers.c.profile_id, order_by=[identifiers.c.create_time,
                                                        identifiers.c.type, identifiers.c.value])


@cache
def _merges_into(dialect: str) -> Executable:
    return by_keys(dialect, list(profile_merges.c), profile_merges.c.survivor_profile_id,
                   order_by=[profile_merges.c.merge_time, profile_merges.c.merged_profile_id])


@cache
def memberships_statement(dialect: str) -> Executable:
    """The segment memberships (profile_id, segment_id) of the parameter ``keys``'s profiles
    (keys_param) in the workspace ``workspace_id``, by segment id: probed by
    ix_segment_members_profile per profile on both databases."""
    if dialect == "sqlite":
        # Without statistics (SQLite's are never gathered here) the planner took the primary
        # key (workspace_id, segment_id, profile_id) for the workspace alone, covering and in
        # the ORDER BY's order: every membership of the workspace read per profile read.
        return text(
            "SELECT profile_id, segment_id FROM segment_members "
            "INDEXED BY ix_segment_members_profile "
            "WHERE workspace_id = :workspace_id "
            "AND profile_id IN (SELECT value FROM json_each(:keys)) ORDER BY segment_id"
        ).columns(segment_members.c.profile_id, segment_members.c.segment_id)
    return by_keys(dialect, [segment_members.c.profile_id, segment_members.c.segment_id],
                   segment_members.c.profile_id, order_by=[segment_members.c.segment_id])


@cache
def _golden_of(dialect: str) -> Executable:
    return by_keys(dialect, [profiles.c.profile_id, profiles.c.traits, profiles.c.trait_times,
                              profiles.c.consents], profiles.c.profile_id)


@cache
def _consents_of(dialect: str) -> Executable:
    return by_keys(dialect, [profiles.c.profile_id, profiles.c.consents], profiles.c.profile_id)


def existing_profiles(session: Session, workspace_id: str, profile_ids: Iterable[str]
                      ) -> set[str]:
    """Those of ``profile_ids`` that are profiles today (not merged away, not erased)."""
    found: set[str] = set()
    dialect = session.get_bind().dialect.name
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        found.update(session.scalars(_existing(dialect), {
            "workspace_id": workspace_id, "keys": keys_param(dialect, chunk)}))
    return found


# How many times a read resolves again an id whose profile went missing after it was resolved.
MERGE_ROUNDS = 3


def following_merges(session: Session, workspace_id: str, profile_ids: Iterable[str],
                     load: Callable[[Session, str, list[str]], dict[str, T]]
                     ) -> tuple[dict[str, str], dict[str, T]]:
    """Each id resolved (:func:`resolve_profile_ids`) and what ``load`` found for the resolved
    ids. The reads share no snapshot (the profile and consent reads run in no transaction, and
    each statement of a READ COMMITTED one sees its own): a merge that commits between the two
    deletes a profile just resolved to itself. An id whose profile went missing is resolved again
    and, if it now points elsewhere, loaded again, so a merge landing mid-read answers with its
    survivor, not as missing (which a journey would take for an erased person)."""
    resolved = resolve_profile_ids(session, workspace_id, profile_ids)
    found = load(session, workspace_id, sorted(set(resolved.values())))
    for _ in range(MERGE_ROUNDS):
        lost = [asked for asked, held in resolved.items() if held not in found]
        moved = {asked: held for asked, held in
                 resolve_profile_ids(session, workspace_id, lost).items()
                 if held != resolved[asked]} if lost else {}
        if not moved:
            break
        resolved.update(moved)
        found.update(load(session, workspace_id, sorted(set(moved.values()))))
    return resolved, found


def _profiles_by_id(session: Session, workspace_id: str, profile_ids: list[str]
                    ) -> dict[str, Profile]:
    return {p.profile_id: p for p in load_profiles(session, workspace_id, profile_ids)}


def get_profiles(session: Session, workspace_id: str, profile_ids: Iterable[str]
                 ) -> dict[str, Profile]:
    """The profiles that exist among ``profile_ids``, following merges (a merged-away id
    answered by its survivor), keyed by the id asked for."""
    resolved, found = following_merges(session, workspace_id, profile_ids, _profiles_by_id)
    return {asked: found[held] for asked, held in resolved.items() if held in found}


def get_profile(session: Session, workspace_id: str, profile_id: str) -> Profile | None:
    """The profile, following a merge: a merged-away id returns its survivor."""
    return get_profiles(session, workspace_id, [profile_id]).get(profile_id)


def load_profiles(session: Session, workspace_id: str, profile_ids: Sequence[str]
                  ) -> list[Profile]:
    """The profiles that exist among ``profile_ids``, in that order, in four queries."""
    ids = sorted(set(profile_ids))
    rows: dict[str, AnyRow] = {}
    owned: dict[str, list[Identifier]] = defaultdict(list)
    merged: dict[str, list[MergeRecord]] = defaultdict(list)
    member_of: dict[str, list[str]] = defaultdict(list)
    dialect = session.get_bind().dialect.name
    for chunk in chunks(ids, IN_LIST_KEYS):
        params = {"workspace_id": workspace_id, "keys": keys_param(dialect, chunk)}
        rows.update({r.profile_id: r for r in session.execute(_profile_rows(dialect), params)})
        for r in session.execute(_owned_identifiers(dialect), params):
            owned[r.profile_id].append(Identifier(r.type, r.value))
        for m in session.execute(_merges_into(dialect), params):
            merged[m.survivor_profile_id].append(MergeRecord(
                Merge(m.merged_profile_id, m.survivor_profile_id,
                      Link(Identifier(m.identifier_type, m.identifier_value), m.message_id)),
                m.merge_time))
        for member in session.execute(memberships_statement(dialect), params):
            member_of[member.profile_id].append(member.segment_id)
    return [Profile(p, tuple(owned[p]), _load_golden(row), row.create_time, row.update_time,
                    tuple(merged[p]), dict(row.computed or {}), tuple(member_of[p]))
            for p in profile_ids if (row := rows.get(p)) is not None]


def scan_profiles(session: Session, workspace_id: str, after: str, limit: int, *,
                  for_update: bool = False) -> list[tuple[str, Golden, dict[str, Any]]]:
    """Profiles by id after ``after``: (id, record, computed traits); ``for_update`` locks them
    (PostgreSQL) in id order, ingest's lock order."""
    query = (select(profiles.c.profile_id, profiles.c.traits, profiles.c.trait_times,
                    profiles.c.consents, profiles.c.computed)
             .where(profiles.c.workspace_id == workspace_id, profiles.c.profile_id > after)
             .order_by(profiles.c.profile_id).limit(limit))
    rows = session.execute(query.with_for_update() if for_update else query)
    return [(r.profile_id, _load_golden(r), dict(r.computed or {})) for r in rows]


def claim_due(session: Session, now: datetime, limit: int, until: datetime
              ) -> dict[str, list[str]]:
    """Claim up to ``limit`` profiles whose computed traits are due to be recomputed, earliest
    first, by workspace: listed and locked in one statement (SKIP LOCKED on PostgreSQL, so a
    concurrent replica claims the next ones instead of the same ones) and leased by moving
    their due time to ``until``, which other replicas do not see as due. The recompute
    (:func:`take_claimed`, a transaction per workspace) finds them by that lease; a replica
    that dies leaves them due again at ``until``. SQLite has one writer: the claim is one
    transaction, which is enough."""
    found: dict[str, list[str]] = defaultdict(list)
    for row in session.execute(
            select(profiles.c.workspace_id, profiles.c.profile_id)
            .where(profiles.c.recompute_due <= now)
            .order_by(profiles.c.recompute_due).limit(limit)
            .with_for_update(skip_locked=True)):
        found[row.workspace_id].append(row.profile_id)
    for workspace_id, profile_ids in found.items():
        for chunk in chunks(sorted(profile_ids), IN_LIST_KEYS):
            session.execute(update(profiles)
                            .where(profiles.c.workspace_id == workspace_id,
                                   one_of(session, profiles.c.profile_id, chunk))
                            .values(recompute_due=until))
    return dict(found)


def take_claimed(session: Session, workspace_id: str, profile_ids: Sequence[str],
                 lease: datetime) -> tuple[dict[str, Golden], dict[str, dict[str, Any]]]:
    """Lock those of the claimed profiles still under this claim's ``lease`` (SKIP LOCKED: a
    profile an ingest is writing is left to it, and ingest recomputes it, replacing the lease)
    and clear their due time; returns their records and stored computed traits. A profile
    recomputed since it was claimed (by ingest, or by another replica after the lease ran out)
    has another due time and is left alone, so each due time is handled once."""
    held: dict[str, Golden] = {}
    computed: dict[str, dict[str, Any]] = {}
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        rows = session.execute(
            select(profiles.c.profile_id, profiles.c.traits, profiles.c.trait_times,
                   profiles.c.consents, profiles.c.computed)
            .where(profiles.c.workspace_id == workspace_id,
                   one_of(session, profiles.c.profile_id, chunk),
                   profiles.c.recompute_due == lease)
            .order_by(profiles.c.profile_id).with_for_update(skip_locked=True))
        for r in rows:
            held[r.profile_id] = _load_golden(r)
            computed[r.profile_id] = dict(r.computed or {})
    for chunk in chunks(sorted(held), IN_LIST_KEYS):
        session.execute(update(profiles)
                        .where(profiles.c.workspace_id == workspace_id,
                               one_of(session, profiles.c.profile_id, chunk))
                        .values(recompute_due=None))
    return held, computed


def defer_due(session: Session, workspace_id: str, profile_ids: Sequence[str],
              lease: datetime, until: datetime) -> None:
    """Push the due time of claimed profiles whose recompute failed to ``until``, so they do
    not stay first in line ahead of every other workspace's (those recomputed meanwhile, no
    longer under ``lease``, keep theirs)."""
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        session.execute(update(profiles)
                        .where(profiles.c.workspace_id == workspace_id,
                               one_of(session, profiles.c.profile_id, chunk),
                               profiles.c.recompute_due == lease)
                        .values(recompute_due=until))


def erase_profile(session: Session, workspace_id: str, profile_id: str, block: bool,
                  now: datetime) -> bool:
    """Erase everything held about the profile (and the profiles merged into it); False when
    it does not exist."""
    if not profile_exists(session, workspace_id, profile_id):
        return False
    owned = [Identifier(r.type, r.value) for r in session.execute(
        select(identifiers.c.type, identifiers.c.value, identifiers.c.cluster_id)
        .where(identifiers.c.workspace_id == workspace_id,
               identifiers.c.profile_id == profile_id))]
    clusters = {r for r in session.execute(
        select(identifiers.c.cluster_id).where(identifiers.c.workspace_id == workspace_id,
                                               identifiers.c.profile_id == profile_id))
        .scalars() if r}
    mine = set(owned)
    doomed = [key for key, edge in _cluster_edge_keys(session, workspace_id, clusters)
              if mine & set(edge.identifiers)]
    for chunk in chunks(doomed, IN_LIST_KEYS):
        session.execute(delete(edges).where(edges.c.workspace_id == workspace_id,
                                            one_of(session, edges.c.edge_key, chunk)))
    for table in (events, identifiers, profiles):
        session.execute(delete(table).where(table.c.workspace_id == workspace_id,
                                            table.c.profile_id == profile_id))
    session.execute(delete(profile_merges).where(
        profile_merges.c.workspace_id == workspace_id,
        profile_merges.c.survivor_profile_id == profile_id))
    if block and owned:
        insert_ignore(session, erased_identifiers, [
            {"workspace_id": workspace_id, "type": i.type, "value": i.value, "erase_time": now}
            for i in sorted(owned)])
    return True


def _cluster_edge_keys(session: Session, workspace_id: str, clusters: set[str]
                       ) -> list[tuple[str, Edge]]:
    found: list[tuple[str, Edge]] = []
    for chunk in chunks(sorted(clusters), IN_LIST_KEYS):
        found.extend((r.edge_key, _edge(r)) for r in session.execute(select(edges).where(
            edges.c.workspace_id == workspace_id, one_of(session, edges.c.cluster_id, chunk))))
    return found


def golden_of(session: Session, workspace_id: str, profile_ids: Iterable[str]
              ) -> dict[str, Golden]:
    """Records of the (resolved) profiles that exist; no lock."""
    found: dict[str, Golden] = {}
    dialect = session.get_bind().dialect.name
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        rows = session.execute(_golden_of(dialect), {
            "workspace_id": workspace_id, "keys": keys_param(dialect, chunk)})
        found.update({r.profile_id: _load_golden(r) for r in rows})
    return found


def consents_of(session: Session, workspace_id: str, profile_ids: Iterable[str]
                ) -> dict[str, dict[tuple[str, str], ConsentRecord]]:
    """The consents of the (resolved) profiles that exist, by (channel, topic); no lock. Only
    that column: a consent check (delivery asks before every send) has no use for the traits,
    which :func:`golden_of` decodes with each trait's time."""
    found: dict[str, dict[tuple[str, str], ConsentRecord]] = {}
    dialect = session.get_bind().dialect.name
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        rows = session.execute(_consents_of(dialect), {
            "workspace_id": workspace_id, "keys": keys_param(dialect, chunk)})
        found.update({r.profile_id: _load_consents(r.consents) for r in rows})
    return found


def owner_of(session: Session, workspace_id: str, identifier: Identifier) -> str | None:
    return session.execute(select(identifiers.c.profile_id).where(
        identifiers.c.workspace_id == workspace_id,
        identifiers.c.type == identifier.type,
        identifiers.c.value == identifier.value)).scalar_one_or_none()


def partition_of(session: Session, workspace_id: str) -> dict[str, set[Identifier]]:
    """Every profile's identifiers (for tests and exports of small workspaces)."""
    found: dict[str, set[Identifier]] = defaultdict(set)
    for row in session.execute(select(identifiers.c.type, identifiers.c.value,
                                      identifiers.c.profile_id)
                               .where(identifiers.c.workspace_id == workspace_id)):
        found[row.profile_id].add(Identifier(row.type, row.value))
    return dict(found)


def profile_exists(session: Session, workspace_id: str, profile_id: str) -> bool:
    return session.execute(select(profiles.c.profile_id).where(
        profiles.c.workspace_id == workspace_id,
        profiles.c.profile_id == profile_id)).first() is not None


# What an event holds beyond its JSON columns (ids, name, source, times), at most, in bytes.
EVENT_OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class EventPage:
    """Events of a page, newest first; the (time, id) to continue after, None on the last
    page; and the events' stored size (their JSON columns, plus EVENT_OVERHEAD_BYTES each)."""

    events: list[StoredEvent]
    more: tuple[datetime, str] | None
    size: int


# Rows of a page's first query; each next query of the page reads four times as many. A page
# of large events so reads (and, on PostgreSQL, transfers) at most a chunk past its end.
FIRST_EVENT_CHUNK = 128


def page_events(session: Session, workspace_id: str, profile_id: str, limit: int,
                after: tuple[datetime, str] | None, max_bytes: int, least: int = 1,
                overhead: int = EVENT_OVERHEAD_BYTES,
                measure: Callable[[StoredEvent], int] | None = None) -> EventPage:
    """Up to ``limit`` of a profile's events, newest (by event time) first, continuing after
    ``after``, fewer when their stored size (JSON columns, and ``overhead`` each) would pass
    ``max_bytes`` (``least`` at least). Each row is read with its size, in queries of growing
    chunks (one for a page of up to FIRST_EVENT_CHUNK - 1 events), left once the page is
    full: an event past the page is not decoded. With ``measure``, an event's size is what
    ``measure`` answers for it instead (each event is decoded to be measured: the one past
    the page too)."""
    binary = session.get_bind().dialect.name != "postgresql"

    def size(column: Any) -> Any:
        # Bytes on both: PostgreSQL's json as text, SQLite's TEXT as a BLOB.
        return func.length(cast(column, LargeBinary)) if binary \
            else func.octet_length(cast(column, Text))

    query = select(events, (size(events.c.identifiers) + size(events.c.properties)
                            + size(events.c.traits)).label("stored_bytes")).where(
        events.c.workspace_id == workspace_id, events.c.profile_id == profile_id
    ).order_by(events.c.timestamp.desc(), events.c.event_id.desc())
    found: list[StoredEvent] = []
    total = 0
    cursor, chunk = after, FIRST_EVENT_CHUNK
    while True:
        chunked = query
        if cursor is not None:
            time, event_id = cursor
            chunked = query.where(or_(events.c.timestamp < time, and_(
                events.c.timestamp == time, events.c.event_id < event_id)))
        want = min(limit - len(found) + 1, chunk)
        result = session.execute(chunked.limit(want))
        read = 0
        try:
            for row in result:
                read += 1
                if len(found) == limit:
                    return EventPage(found, cursor, total)  # full, by number
                event = None
                if measure is None:
                    stored = int(row.stored_bytes or 0) + overhead
                else:
                    event = StoredEvent(row.event_id, row.profile_id, _event(row),
                                        row.receive_time)
                    stored = measure(event)
                if len(found) >= least and total + stored > max_bytes:
                    # Full: the next page starts after the last event kept.
                    return EventPage(found, cursor, total)
                total += stored
                found.append(event or StoredEvent(row.event_id, row.profile_id, _event(row),
                                                  row.receive_time))
                cursor = (row.timestamp, row.event_id)
        finally:
            result.close()
        if read < want:
            return EventPage(found, None, total)  # no more events
        chunk *= 4


def count_events_through(session: Session, workspace_id: str, profile_id: str,
                         received_by: datetime, through: tuple[datetime, str] | None) -> int:
    """How many of the profile's events received by ``received_by`` come, newest (by event
    time) first, before or at ``through`` (all of them when None)."""
    query = select(func.count()).select_from(events).where(
        events.c.workspace_id == workspace_id, events.c.profile_id == profile_id,
        events.c.receive_time <= received_by)
    if through is not None:
        time, event_id = through
        query = query.where(or_(events.c.timestamp > time, and_(
            events.c.timestamp == time, events.c.event_id >= event_id)))
    return int(session.execute(query).scalar_one())


def latest_receive_time(session: Session, workspace_id: str, profile_id: str
                        ) -> datetime | None:
    """When the profile's latest event was received (None without events)."""
    latest: datetime | None = session.execute(select(func.max(events.c.receive_time)).where(
        events.c.workspace_id == workspace_id, events.c.profile_id == profile_id)).scalar_one()
    return latest


def _event(row: AnyRow) -> Event:
    return Event(
        message_id=row.message_id, type=EventType(row.type), name=row.name,
        identifiers=tuple(Identifier(t, v) for t, v in row.identifiers),
        properties=row.properties, traits=row.traits, timestamp=row.timestamp,
        source=row.source, original_timestamp=row.original_timestamp)


def _golden_columns(golden: Golden, times: dict[datetime, str] | None = None
                    ) -> dict[str, Any]:
    """The record's columns. ``times``: the text of the moments written so far (a batch's
    records share a few: each event's traits one, a batch's defaulted times one)."""
    texts = {} if times is None else times
    trait_times: dict[str, dict[str, str]] = {}
    for name, trait in golden.traits.items():
        moment = trait.time
        text = texts.get(moment)
        if text is None:
            text = texts[moment] = moment.isoformat()
        trait_times[name] = {"t": text, "m": trait.message_id, "s": trait.source}
    return {
        "traits": {n: t.value for n, t in golden.traits.items()},
        "trait_times": trait_times,
        "consents": [{"channel": c.channel, "topic": c.topic, "subscribed": c.subscribed,
                      "t": c.time.isoformat(), "m": c.message_id, "s": c.source}
                     for c in sorted(golden.consents.values(),
                                     key=lambda c: (c.channel, c.topic))] or None,
    }


def _load_golden(row: Any, moments: dict[str, datetime] | None = None) -> Golden:
    """The record of a profile's row. ``moments``: the times read so far by their text (the
    profiles a batch locks share a few: each event's traits one)."""
    known = {} if moments is None else moments
    traits: dict[str, Trait] = {}
    times = row.trait_times  # a Row's column by name costs ~0.4 us: once, not per trait
    for name, value in row.traits.items():
        held = times[name]
        if isinstance(held, str):  # written before provenance was kept
            traits[name] = Trait(value, datetime.fromisoformat(held))
        else:
            text = held["t"]
            moment = known.get(text)
            if moment is None:
                moment = known[text] = datetime.fromisoformat(text)
            traits[name] = Trait(value, moment, held["m"], held["s"])
    return Golden(traits, _load_consents(row.consents))


def _load_consents(stored: Any) -> dict[tuple[str, str], ConsentRecord]:
    return {(c["channel"], c["topic"]): ConsentRecord(
        c["channel"], c["topic"], c["subscribed"], datetime.fromisoformat(c["t"]), c["m"],
        c["s"]) for c in stored or ()}

