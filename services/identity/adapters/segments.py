"""Computed traits and segment membership, refreshed for the profiles a change touched.

One refresh costs a fixed number of queries: the segments, the events computed traits read,
the current memberships, then bulk writes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import (
    String,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from cjo_identity.adapters import backfills
from cjo_identity.adapters.profiles import IN_LIST_KEYS, memberships_statement
from cjo_identity.adapters.tables import (
    events,
    identifiers,
    profiles,
    segment_members,
    segment_revisions,
    segments,
)
from cjo_identity.domain.backfills import segment_target
from cjo_identity.domain.computed import EventFact, compute, earliest_needed, next_change
from cjo_identity.domain.golden import Golden
from cjo_identity.domain.segments import (
    INVALID_AFTER,
    Health,
    Segment,
    SegmentState,
    activation,
    evaluate,
)
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.cel import Expression
from cjo_platform.db import UtcDateTime, bulk_insert, keys_param, one_of, one_of_keys, pg_array
from cjo_platform.db.probes import pg_by_keys, pg_probes, pg_text
from cjo_platform.errors import InvalidArgument
from cjo_platform.revision_cache import RevisionCache
from cjo_platform.rpc.batch import chunks


@dataclass(frozen=True)
class Transition:
    """A profile entered (or left) a segment."""

    profile_id: str
    segment: Segment
    entered: bool


def _segment(row: Any) -> Segment:
    return Segment(
        segment_id=row.segment_id, display_name=row.display_name, condition=row.condition,
        create_time=row.create_time, state=SegmentState(row.state),
        error_count=int(row.error_count), consecutive_errors=int(row.consecutive_errors),
        last_error=row.last_error or "", last_error_time=row.last_error_time,
        last_error_profile_id=row.last_error_profile_id or "", update_time=row.update_time,
        etag=row.etag or "")


def load_segments(session: Session, workspace_id: str, revision: int | None = None
                  ) -> list[Segment]:
    """The segments to evaluate: the active ones. With ``revision`` (the workspace's
    segments' revision, read in this transaction before: :func:`read_revision`), the ones this
    process read at that revision, if it did (any write of a segment moves the revision), at
    most 5 s ago (:mod:`cjo_platform.revision_cache`: a write that did not move the revision,
    a restore or a fix made by hand in SQL, is evaluated within that bound)."""
    if revision is None:
        return _read_active(session, workspace_id)
    found = _kept_segments(session.get_bind().engine).get(
        {workspace_id: revision},
        lambda _: {workspace_id: tuple(_read_active(session, workspace_id))})
    return list(found[workspace_id])


def _read_active(session: Session, workspace_id: str) -> list[Segment]:
    rows = session.execute(_ACTIVE_SEGMENTS, {"workspace_id": workspace_id})
    return [_segment(r) for r in rows]


def _kept_segments(engine: Engine) -> RevisionCache[str, tuple[Segment, ...]]:
    """The workspaces' active segments this process keeps for one database (tests run several
    replicas in one process), by workspace."""
    kept = _kept.get(engine)
    if kept is None:
        kept = _kept.setdefault(engine, RevisionCache())
    return kept


_kept: WeakKeyDictionary[Engine, RevisionCache[str, tuple[Segment, ...]]] = WeakKeyDictionary()


def read_revision(session: Session, workspace_id: str) -> int:
    """The workspace's segments' revision (0 until a segment was written)."""
    found = session.execute(SEGMENTS_REVISION, {"workspace_id": workspace_id}).scalar()
    return int(found or 0)


def _bump_revision(session: Session, workspace_id: str) -> None:
    """Move the workspace's segments' revision (in the writer's transaction, after its
    segment rows: every writer takes the segments' locks first)."""
    dialect = session.get_bind().dialect.name
    session.execute(_bump(dialect), {"workspace_id": workspace_id})


@cache
def _bump(dialect: str) -> Executable:
    values = {"workspace_id": bindparam("workspace_id", type_=String), "revision": 1}
    upsert = (postgresql_insert(segment_revisions) if dialect == "postgresql"
              else sqlite_insert(segment_revisions)).values(values)
    return upsert.on_conflict_do_update(
        index_elements=[segment_revisions.c.workspace_id],
        set_={"revision": segment_revisions.c.revision + 1})


# Built once: folded into other reads (the settings' in an ingest transaction) as a subquery.
SEGMENTS_REVISION = (select(segment_revisions.c.revision)
                     .where(segment_revisions.c.workspace_id
                            == bindparam("workspace_id", type_=String)))


# Read by every ingest batch: built once.
_ACTIVE_SEGMENTS = (select(segments)
                    .where(segments.c.workspace_id == bindparam("workspace_id", type_=String),
                           segments.c.state == SegmentState.ACTIVE.value)
                    .order_by(segments.c.segment_id))


def count_segments(session: Session, workspace_id: str) -> int:
    """The workspace's segments, whatever their state."""
    return int(session.execute(select(func.count()).select_from(segments).where(
        segments.c.workspace_id == workspace_id)).scalar_one())


def read_segment(session: Session, workspace_id: str, segment_id: str, *,
                 for_update: bool = False) -> Segment | None:
    query = select(segments).where(segments.c.workspace_id == workspace_id,
                                   segments.c.segment_id == segment_id)
    row = session.execute(query.with_for_update() if for_update else query).first()
    return None if row is None else _segment(row)


def get_segment(session: Session, workspace_id: str, segment_id: str, *,
                for_update: bool = False) -> tuple[Segment, int] | None:
    """The segment and its member count."""
    found = read_segment(session, workspace_id, segment_id, for_update=for_update)
    if found is None:
        return None
    found = _with_backfills(session, workspace_id, [found])[0]
    return found, member_counts(session, workspace_id, [segment_id])[segment_id]


def _with_backfills(session: Session, workspace_id: str, found: list[Segment]) -> list[Segment]:
    jobs = backfills.read(session, workspace_id, [segment_target(s.segment_id) for s in found])
    return [replace(s, backfill=jobs.get(segment_target(s.segment_id))) for s in found]


def list_segments(session: Session, workspace_id: str, after: str, limit: int
                  ) -> list[tuple[Segment, int]]:
    """Up to ``limit`` segments by id after ``after``, with their member counts."""
    found = [_segment(r) for r in session.execute(
        select(segments).where(segments.c.workspace_id == workspace_id,
                               segments.c.segment_id > after)
        .order_by(segments.c.segment_id).limit(limit))]
    found = _with_backfills(session, workspace_id, found)
    counts = member_counts(session, workspace_id, [s.segment_id for s in found])
    return [(s, counts[s.segment_id]) for s in found]


def member_counts(session: Session, workspace_id: str, segment_ids: Sequence[str]
                  ) -> dict[str, int]:
    counts = dict.fromkeys(segment_ids, 0)
    if segment_ids:
        counts.update({r.segment_id: int(r.members) for r in session.execute(
            select(segment_members.c.segment_id, func.count().label("members"))
            .where(segment_members.c.workspace_id == workspace_id,
                   one_of(session, segment_members.c.segment_id, list(segment_ids)))
            .group_by(segment_members.c.segment_id))})
    return counts


def _columns(segment: Segment) -> dict[str, Any]:
    return {"display_name": segment.display_name, "condition": segment.condition,
            "state": segment.state.value, "error_count": segment.error_count,
            "consecutive_errors": segment.consecutive_errors,
            "last_error": segment.last_error or None, "last_error_time": segment.last_error_time,
            "last_error_profile_id": segment.last_error_profile_id or None,
            "update_time": segment.update_time, "etag": segment.etag or None}


def add_segment(session: Session, workspace_id: str, segment: Segment) -> None:
    session.execute(insert(segments).values(
        workspace_id=workspace_id, segment_id=segment.segment_id,
        create_time=segment.create_time, **_columns(segment)))
    _bump_revision(session, workspace_id)


def replace_segment(session: Session, workspace_id: str, segment: Segment) -> None:
    session.execute(update(segments).where(
        segments.c.workspace_id == workspace_id,
        segments.c.segment_id == segment.segment_id).values(**_columns(segment)))
    _bump_revision(session, workspace_id)


def delete_segment(session: Session, workspace_id: str, segment_id: str) -> None:
    """The segment and its memberships."""
    session.execute(delete(segment_members).where(
        segment_members.c.workspace_id == workspace_id,
        segment_members.c.segment_id == segment_id))
    session.execute(delete(segments).where(segments.c.workspace_id == workspace_id,
                                           segments.c.segment_id == segment_id))
    _bump_revision(session, workspace_id)


def lock_scan(session: Session, workspace_id: str, segment_id: str) -> None:
    """Serialise the chunks of scans of one segment (two scans of the same chunk would both
    see a member that no longer matches and both announce it left), until the transaction
    ends. PostgreSQL: an advisory lock, which ingest never takes (no lock order to keep with
    it); SQLite has one writer already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || :key))"),
                        {"key": f"segment scan {workspace_id} {segment_id}"})


def record_health(session: Session, workspace_id: str, evaluated: Mapping[str, Segment],
                  health: Mapping[str, Health], now: datetime) -> None:
    """Store a batch's evaluation errors: one statement for the segments that had errors, one
    for those whose run of errors a success ended, each row once, in segment id order (so that
    concurrent batches lock segments in one order). Counts are added in SQL, not overwritten,
    so concurrent batches do not lose each other's errors; a segment whose condition changed
    since the batch read it is left alone."""
    failed = [(segment_id, h) for segment_id, h in sorted(health.items()) if h.errors]
    if failed:
        consecutive = (segments.c.consecutive_errors * bindparam("b_keep")
                       + bindparam("b_trailing"))
        session.execute(
            update(segments)
            .where(segments.c.workspace_id == workspace_id,
                   segments.c.segment_id == bindparam("b_segment_id"),
                   segments.c.condition == bindparam("b_condition"))
            .values(error_count=segments.c.error_count + bindparam("b_errors"),
                    consecutive_errors=consecutive,
                    state=case((consecutive >= INVALID_AFTER, SegmentState.INVALID.value),
                               else_=segments.c.state),
                    last_error=bindparam("b_last_error"), last_error_time=now,
                    last_error_profile_id=bindparam("b_profile_id")),
            [{"b_segment_id": segment_id, "b_condition": evaluated[segment_id].condition,
              "b_keep": 0 if h.succeeded else 1, "b_trailing": h.trailing_errors,
              "b_errors": h.errors, "b_last_error": h.last_error,
              "b_profile_id": h.last_error_profile_id} for segment_id, h in failed])
    recovered = [segment_id for segment_id, h in sorted(health.items())
                 if not h.errors and h.worth_writing]
    if recovered:
        session.execute(
            update(segments)
            .where(segments.c.workspace_id == workspace_id,
                   segments.c.segment_id == bindparam("b_segment_id"),
                   segments.c.condition == bindparam("b_condition"))
            .values(consecutive_errors=0),
            [{"b_segment_id": segment_id, "b_condition": evaluated[segment_id].condition}
             for segment_id in recovered])
    if failed or recovered:
        _bump_revision(session, workspace_id)


def list_members(session: Session, workspace_id: str, segment_id: str, limit: int,
                 after: str) -> list[str]:
    return list(session.execute(
        select(segment_members.c.profile_id)
        .where(segment_members.c.workspace_id == workspace_id,
               segment_members.c.segment_id == segment_id,
               segment_members.c.profile_id > after)
        .order_by(segment_members.c.profile_id).limit(limit)).scalars())


def remove_members(session: Session, workspace_id: str, segment_id: str,
                   profile_ids: Sequence[str]) -> list[str]:
    """Remove these members of the segment; returns those this call removed (not a concurrent
    one), so each leaving is announced once."""
    removed: list[str] = []
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        removed += session.execute(
            delete(segment_members)
            .where(segment_members.c.workspace_id == workspace_id,
                   segment_members.c.segment_id == segment_id,
                   one_of(session, segment_members.c.profile_id, chunk))
            .returning(segment_members.c.profile_id)).scalars()
    return sorted(removed)


def memberships(session: Session, workspace_id: str, profile_ids: Iterable[str]
                ) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    dialect = session.get_bind().dialect.name
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        for row in session.execute(memberships_statement(dialect), {
                "workspace_id": workspace_id, "keys": keys_param(dialect, chunk)}):
            found[row.profile_id].add(row.segment_id)
    return found


# Statements of every ingest batch, built once per dialect (see one_of_keys).

# On PostgreSQL a batch's reads by profile (its memberships, profiles.memberships_statement;
# its stored states; the events its computed traits count) probe the index on (workspace_id,
# profile_id) once per profile (cjo_platform.db.probes), also for a workspace the planner's
# statistics do not know yet (a new tenant, a fresh database): with the workspace a constant,
# such a workspace's every membership, identifier, profile (or event) was read through an
# index's workspace prefix and filtered by the batch's profiles, on every ingest batch.

@cache
def _profile_states(dialect: str) -> Executable:
    """A chunk of profiles' memberships, identifiers and computed traits in one statement
    (UNION ALL: one round trip instead of three), built once per dialect. A row's ``kind``
    says which: "segment" (``segment_id``), "identifier" (``type``, ``value``, in the order
    they were linked) or "profile" (``computed``: one row per stored profile). The first
    select types the columns, so its NULLs carry the types the others fill in."""
    if dialect == "postgresql":
        return _pg_profile_states()
    workspace = bindparam("workspace_id", type_=String)
    # Typed NULLs (PostgreSQL resolves a UNION's column types pair by pair: two untyped NULLs
    # would make a text column that the computed traits' JSON cannot join).
    text_null = cast(null(), String)
    time_null = cast(null(), UtcDateTime)
    json_null = cast(null(), profiles.c.computed.type)
    # A membership's time as its create_time (nothing reads it): SQLite then searches
    # ix_segment_members_profile by (workspace, profile); with the two key columns alone it
    # took the covering primary key (workspace_id, segment_id, profile_id) by the workspace
    # alone and read every membership of the workspace per batch.
    members = (select(literal("segment", String).label("kind"),
                      segment_members.c.profile_id, segment_members.c.segment_id,
                      text_null.label("type"), text_null.label("value"),
                      segment_members.c.enter_time.label("create_time"),
                      json_null.label("computed"))
               .where(segment_members.c.workspace_id == workspace,
                      one_of_keys(dialect, segment_members.c.profile_id)))
    linked = (select(literal("identifier", String), identifiers.c.profile_id, text_null,
                     identifiers.c.type, identifiers.c.value, identifiers.c.create_time,
                     json_null)
              .where(identifiers.c.workspace_id == workspace,
                     one_of_keys(dialect, identifiers.c.profile_id)))
    computed = (select(literal("profile", String), profiles.c.profile_id, text_null,
                       text_null, text_null, time_null, profiles.c.computed)
                .where(profiles.c.workspace_id == workspace,
                       one_of_keys(dialect, profiles.c.profile_id)))
    union = union_all(members, linked, computed).subquery("profile_states")
    # The time orders the rows and is not read: left out of the result, no row pays for
    # its conversion (on SQLite a string parsed into a datetime, ~2% of an ingest batch).
    return (select(union.c.kind, union.c.profile_id, union.c.segment_id, union.c.type,
                   union.c.value, union.c.computed)
            .order_by(union.c.create_time, union.c.type, union.c.value))


def _pg_profile_states() -> Executable:
    """:func:`_profile_states` on PostgreSQL: each branch probes per profile (the first
    names the columns)."""
    members = pg_probes(segment_members.name, (
        "'segment'::text AS kind, t.profile_id, t.segment_id::text AS segment_id, "
        "NULL::text AS type, NULL::text AS value, NULL::timestamptz AS create_time, "
        "NULL::json AS computed"), {"profile_id": "keys"})
    linked = pg_probes(identifiers.name, (
        "'identifier'::text, t.profile_id, NULL::text, t.type::text, t.value::text, "
        "t.create_time, NULL::json"), {"profile_id": "keys"})
    computed = pg_probes(profiles.name, (
        "'profile'::text, t.profile_id, NULL::text, NULL::text, NULL::text, "
        "NULL::timestamptz, t.computed"), {"profile_id": "keys"})
    return pg_text(
        "SELECT kind, profile_id, segment_id, type, value, computed FROM "
        f"({members} UNION ALL {linked} UNION ALL {computed}) AS profile_states "
        "ORDER BY create_time, type, value", ["keys"]).columns(
        kind=String, profile_id=String, segment_id=String, type=String, value=String,
        computed=profiles.c.computed.type)


def profile_states(session: Session, workspace_id: str, profile_ids: Iterable[str]
                   ) -> dict[str, tuple[dict[str, Any], list[str], list[tuple[str, str]]]]:
    """Stored computed traits, segment ids and identifiers (type, value; in the order they were
    linked) of the profiles (one query per chunk): what identity forwards with their events,
    read after the batch refreshed them. A profile not stored (merged away) is left out."""
    dialect = session.get_bind().dialect.name
    member_of: dict[str, list[str]] = defaultdict(list)
    linked: dict[str, list[tuple[str, str]]] = defaultdict(list)
    computed: dict[str, dict[str, Any]] = {}
    for chunk in chunks(sorted(set(profile_ids)), IN_LIST_KEYS):
        # By position: a Row's access by name costs ~0.4 us a column.
        for kind, profile_id, segment_id, type_, value, values in session.execute(
                _profile_states(dialect),
                {"workspace_id": workspace_id, "keys": keys_param(dialect, chunk)}):
            if kind == "identifier":
                linked[profile_id].append((type_, value))
            elif kind == "segment":
                member_of[profile_id].append(segment_id)
            else:
                computed[profile_id] = dict(values or {})
    return {p: (values, sorted(member_of.get(p, ())), linked.get(p, []))
            for p, values in computed.items()}


def states_of(session: Session, workspace_id: str, transitions: Sequence[Transition]
              ) -> dict[str, tuple[dict[str, Any], list[str], list[tuple[str, str]]]]:
    """:func:`profile_states` of the profiles that entered or left a segment (none: no query)."""
    if not transitions:
        return {}
    return profile_states(session, workspace_id, {t.profile_id for t in transitions})


def computed_values(session: Session, workspace_id: str, profile_ids: Iterable[str],
                    settings: IdentitySettings, now: datetime
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, datetime | None]]:
    """Fresh computed traits of the profiles, from their events, and when each profile's
    traits next change with no new event (:func:`~cjo_identity.domain.computed.next_change`)."""
    definitions = settings.computed_traits
    ids = sorted(set(profile_ids))
    if not definitions or not ids:
        return {p: {} for p in ids}, dict.fromkeys(ids)
    names = sorted({d.event_name for d in definitions})
    since = earliest_needed(definitions, now)
    facts: dict[str, list[EventFact]] = defaultdict(list)
    postgresql = session.get_bind().dialect.name == "postgresql"
    for chunk in chunks(ids, IN_LIST_KEYS):
        if postgresql:
            parameters: dict[str, Any] = {"workspace_id": workspace_id,
                                          "keys": pg_array(chunk), "names": pg_array(names)}
            if since is not None:
                parameters["since"] = since
            rows = session.execute(_PG_EVENT_FACTS[since is not None], parameters)
        else:
            query = select(*_EVENT_FACT_COLUMNS).where(
                events.c.workspace_id == workspace_id,
                one_of(session, events.c.profile_id, chunk),
                one_of(session, events.c.name, names))
            if since is not None:
                query = query.where(events.c.timestamp >= since)
            rows = session.execute(query)
        for row in rows:
            facts[row.profile_id].append(EventFact(row.name, row.properties, row.timestamp))
    return ({p: compute(definitions, facts[p], now) for p in ids},
            {p: next_change(definitions, facts[p], now) for p in ids})


_EVENT_FACT_COLUMNS = (events.c.profile_id, events.c.name, events.c.properties,
                       events.c.timestamp)
# The events of a batch's profiles that computed traits read (see _profile_states), those since
# a time (True) or all of them (False).
_PG_EVENT_FACTS = {
    since: pg_by_keys(_EVENT_FACT_COLUMNS, events.c.profile_id,
                      where="t.name = ANY(CAST(:names AS text[]))"
                            + (" AND t.timestamp >= :since" if since else ""),
                      binds=[bindparam("since", type_=UtcDateTime)] if since else [],
                      arrays=["names"])
    for since in (False, True)}


def _store_due(session: Session, workspace_id: str, due: Mapping[str, datetime | None]) -> None:
    """The time each profile's computed traits next change with no new event; a row whose
    time is already right is not written."""
    if not due:
        return
    when = bindparam("b_due", type_=UtcDateTime)
    session.execute(
        update(profiles)
        .where(profiles.c.workspace_id == workspace_id,
               profiles.c.profile_id == bindparam("b_profile_id"),
               profiles.c.recompute_due.is_distinct_from(when))
        .values(recompute_due=when),
        [{"b_profile_id": p, "b_due": time} for p, time in sorted(due.items())])


def refresh(session: Session, workspace_id: str, golden: Mapping[str, Golden],
            removed: Iterable[str], settings: IdentitySettings, now: datetime,
            only: Sequence[Segment] | None = None,
            before: Mapping[str, tuple[Golden, Mapping[str, Any]]] | None = None,
            stored: Mapping[str, dict[str, Any]] | None = None,
            computed_out: dict[str, dict[str, Any]] | None = None,
            fresh: Set[str] = frozenset(),
            segments_revision: int | None = None,
            merged_into: Mapping[str, str] | None = None) -> list[Transition]:
    """Recompute computed traits and memberships of the profiles in ``golden``; drop the
    memberships of ``removed`` profiles (merged away or erased). Returns who entered or left.

    ``merged_into``: the survivor of each profile merged away (also in ``removed``, its
    survivor in ``golden``). The merged profile's memberships move to its survivor before the
    survivor is evaluated: the person was in those segments, so a survivor that no longer
    matches leaves them (a segment_exited under its id, which orchestration applies to the
    enrollments the merge moved to it) and one that matches does not enter them again.

    ``before``: the stored record and computed traits of profiles that existed (when known).
    Computed traits equal to the stored ones are not rewritten, and a profile whose record and
    computed traits are both unchanged keeps its memberships without evaluating a condition:
    membership is a function of exactly those inputs.

    ``stored``: evaluate with these (stored) computed traits instead of recomputing them (a
    segment's backfill: ingest and the time worker keep computed traits current).

    ``computed_out``: filled with the computed traits of the profiles in ``golden`` as stored
    after the refresh (when they were recomputed, not ``stored``). ``fresh``: profiles created
    in this transaction (no memberships to read). ``segments_revision``: the workspace's
    segments' revision read in this transaction (see :func:`load_segments`)."""
    before = before or {}
    merged_into = merged_into or {}
    _move_memberships(session, workspace_id, merged_into)
    removed = sorted(set(removed))
    for chunk in chunks(removed, IN_LIST_KEYS):
        session.execute(delete(segment_members).where(
            segment_members.c.workspace_id == workspace_id,
            one_of(session, segment_members.c.profile_id, chunk)))
    if not golden:
        return []
    if stored is not None:
        return _evaluate(session, workspace_id, golden, dict(stored), before, only, now, fresh,
                         segments_revision, set(merged_into.values()))
    computed, due = computed_values(session, workspace_id, golden, settings, now)
    if computed_out is not None:
        computed_out.update(computed)
    # Written when they differ from the stored ones; a new profile's (or a scanned one's,
    # ``before`` unknown) only when there are some, so a workspace without computed traits
    # writes nothing here.
    stale = [(p, values) for p, values in sorted(computed.items())
             if (before[p][1] != values if p in before else bool(values))]
    if stale:
        session.execute(
            update(profiles)
            .where(profiles.c.workspace_id == workspace_id,
                   profiles.c.profile_id == bindparam("b_profile_id"))
            .values(computed=bindparam("b_computed"), recompute_due=bindparam("b_due")),
            [{"b_profile_id": p, "b_computed": values, "b_due": due[p]}
             for p, values in stale])
    if settings.computed_traits:
        _store_due(session, workspace_id,
                   {p: due[p] for p in set(golden) - {p for p, _ in stale}})
    return _evaluate(session, workspace_id, golden, computed, before, only, now, fresh,
                     segments_revision, set(merged_into.values()))


def _move_memberships(session: Session, workspace_id: str, merged_into: Mapping[str, str]
                      ) -> None:
    """Give each merged profile's memberships to its survivor, one statement per merged
    profile (a membership the survivor holds already stays its own; the merged profile's
    copy is deleted with its other rows)."""
    if not merged_into:
        return
    held = segment_members.alias("held")
    survivor = bindparam("b_survivor", type_=String)
    session.execute(
        update(segment_members)
        .where(segment_members.c.workspace_id == workspace_id,
               segment_members.c.profile_id == bindparam("b_merged", type_=String),
               ~exists().where(held.c.workspace_id == workspace_id,
                               held.c.segment_id == segment_members.c.segment_id,
                               held.c.profile_id == survivor))
        .values(profile_id=survivor),
        [{"b_merged": merged, "b_survivor": kept}
         for merged, kept in sorted(merged_into.items())])


def _evaluate(session: Session, workspace_id: str, golden: Mapping[str, Golden],
              computed: Mapping[str, Mapping[str, Any]],
              before: Mapping[str, tuple[Golden, Mapping[str, Any]]],
              only: Sequence[Segment] | None, now: datetime,
              fresh: Set[str] = frozenset(),
              segments_revision: int | None = None,
              inherited: Set[str] = frozenset()) -> list[Transition]:
    """Memberships of the profiles whose record or computed traits changed, or that
    ``inherited`` memberships (merge survivors): who entered or left (the conditions' errors
    recorded on their segments). A leaving is returned only when this transaction deleted the
    membership: a concurrent DeleteSegment's drain that removed it announced it already."""
    all_segments = [s for s in (only if only is not None
                                else load_segments(session, workspace_id, segments_revision))
                    if s.evaluated]
    if not all_segments:
        return []
    changed = [p for p in sorted(golden) if p not in before or p in inherited
               or before[p][0] != golden[p] or before[p][1] != computed[p]]
    held = memberships(session, workspace_id,
                       [p for p in changed if p not in fresh or p in inherited])
    transitions: list[Transition] = []
    health = {s.segment_id: Health(held=s.consecutive_errors) for s in all_segments}
    programs: dict[str, Expression] = {}
    for segment in all_segments:
        try:
            programs[segment.segment_id] = segment.expression
        except InvalidArgument as exc:
            health[segment.segment_id].broken(f"the condition no longer compiles: {exc.message}")
    for profile_id in changed:
        facts = activation(golden[profile_id], computed[profile_id])
        for segment in all_segments:
            counted = health[segment.segment_id]
            if counted.invalid:
                continue  # switched off by this batch: the rest keep their memberships
            verdict = evaluate(programs[segment.segment_id], facts)
            counted.record(profile_id, verdict)
            if verdict.error:
                continue  # membership unknown: left as it was
            if verdict.member != (segment.segment_id in held.get(profile_id, set())):
                transitions.append(Transition(profile_id, segment, verdict.member))
    record_health(session, workspace_id, {s.segment_id: s for s in all_segments},
                  {k: h for k, h in health.items() if h.worth_writing}, now)
    entered = [t for t in transitions if t.entered]
    left = [t for t in transitions if not t.entered]
    if entered:
        bulk_insert(session, segment_members, [
            {"workspace_id": workspace_id, "segment_id": t.segment.segment_id,
             "profile_id": t.profile_id, "enter_time": now} for t in entered])
    if left:
        gone = _remove_pairs(session, workspace_id,
                             [(t.segment.segment_id, t.profile_id) for t in left])
        transitions = [t for t in transitions
                       if t.entered or (t.segment.segment_id, t.profile_id) in gone]
    return transitions


def _remove_pairs(session: Session, workspace_id: str, pairs: Sequence[tuple[str, str]]
                  ) -> set[tuple[str, str]]:
    """Delete these (segment id, profile id) memberships; returns those this statement
    deleted (not a concurrent one: each leaving is announced once)."""
    # A statement per segment, its profile ids in one array (review rsegmerge: a row-value IN
    # of 5,000 pairs was an OR of 5,000 index scans on PostgreSQL, 15-22 s).
    by_segment: dict[str, list[str]] = defaultdict(list)
    for segment_id, profile_id in pairs:
        by_segment[segment_id].append(profile_id)
    return {(segment_id, profile_id) for segment_id, profile_ids in sorted(by_segment.items())
            for profile_id in remove_members(session, workspace_id, segment_id, profile_ids)}
