"""Storage of the engine: the event inbox, enrollments and their steps.

Every function works on a caller's session, so a worker puts a whole batch (enrollments, steps,
outbox facts, inbox marks) in one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from functools import cache
from operator import attrgetter
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Row,
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters.tables import (
    dead_letters,
    enrollments,
    inbox,
    journeys,
    retired_profiles,
    steps,
)
from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    Step,
    StepOutcome,
    check_fields,
    restore,
)
from cjo_orchestration.domain.entry import ActiveKey, History, InboxEvent
from cjo_orchestration.domain.lifecycle import (
    PROFILE_MERGED,
    Retirement,
    merged_profile_id,
    resolve_profile,
)
from cjo_platform.db import (
    bulk_insert,
    bulk_update,
    insert_ignore,
    keys_in,
    keys_param,
    one_of,
    one_of_keys,
)
from cjo_platform.db.probes import by_keys, in_byte_order, pg_by_keys, pg_probes, pg_text
from cjo_platform.errors import NotFound

# Keys are matched by one index probe per key, their values one parameter per column, whatever
# their number: see cjo_platform.db.keys_in, shared with the scheduler's occurrence claims.
_keys_in = keys_in


# Literal, not a bound parameter: the partial indexes (WHERE state = 'active') then match in
# every plan, including PostgreSQL's generic plans of statements psycopg has prepared.
_ACTIVE: ColumnElement[str] = literal_column(f"'{EnrollmentState.ACTIVE.value}'")


# --- inbox -----------------------------------------------------------------------------------

# The dead letters' source of events the event round gave up (their item key is the event id).
INBOX_SOURCE = "inbox:events"


class Receipt(NamedTuple):
    """What a receipt checks before it stores a workspace's events (:func:`receipt`)."""

    pending: bool  # an event waits in the inbox
    revision: int  # the workspace's journeys revision (journeys.REVISION)
    retired: bool  # one of the events' profiles was merged away or erased


@cache
def _receipt_statement(dialect: str) -> Any:
    """:func:`receipt` in one round trip (the profile ids as one parameter), built once."""
    r = retired_profiles.c
    return select(
        exists(select(inbox.c.seq).where(not_(inbox.c.processed))).label("pending"),
        select(journey_store.REVISION).where(journeys.c.workspace_id == bindparam("ws"))
        .scalar_subquery().label("revision"),
        exists(by_keys(dialect, [r.profile_id], r.profile_id, workspace="ws", keys="ids"))
        .label("retired"))


def receipt(session: Session, workspace_id: str, profile_ids: Sequence[str]) -> Receipt:
    """Before a receipt stores a workspace's events: whether any event waits in the inbox
    (none: the events stored now are every profile's oldest pending ones, so they may be
    applied at once and stored processed); the workspace's journeys revision (for the trigger
    cache); and whether any of ``profile_ids`` is retired (none: no need to look up
    :func:`retired_successors`)."""
    dialect = session.get_bind().dialect.name
    row = session.execute(_receipt_statement(dialect), {
        "ws": workspace_id, "ids": keys_param(dialect, sorted(set(profile_ids)))}).one()
    return Receipt(bool(row.pending), int(row.revision), bool(row.retired))


def receive(session: Session, rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Store events not seen before; returns the seq of each (workspace, event id) that was
    new."""
    c = inbox.c
    return {(w, e): seq for w, e, seq in insert_ignore(
        session, inbox, rows, returning=(c.workspace_id, c.event_id, c.seq))}


def pending_events(session: Session, limit: int, seqs: Sequence[int] | None = None, *,
                   now: datetime | None = None) -> list[InboxEvent]:
    """The oldest unprocessed events (of ``seqs`` only, when given; due at ``now``, when given:
    an event backing off after a failed attempt is not), locked for this transaction, leaving
    out every event of a profile whose older unprocessed event another replica holds (or that
    is backing off).

    Rows are locked with SKIP LOCKED, so replicas take different events (different profiles) at
    once; a pending event of a profile that this claim skipped is being applied elsewhere, so the
    profile's later events here wait for a later round and never overtake it. A merge concerns
    two profiles (the survivor and the merged one): it waits while an older event of either is
    held elsewhere, and both profiles' later events wait while it is. On SQLite (one writer) the
    lock clause is not emitted and nothing is ever skipped.
    """
    c = inbox.c
    query = (select(c.seq, c.workspace_id, c.event_id, c.profile_id, c.event_name,
                    c.properties, c.traits, c.traceparent, c.attempts)
             .where(not_(c.processed)))
    if seqs is not None:
        query = query.where(c.seq.in_(sorted(seqs)))
    if now is not None:
        query = query.where(or_(c.not_before.is_(None), c.not_before <= now))
    rows = session.execute(
        query.order_by(c.seq).limit(limit).with_for_update(skip_locked=True)).all()
    return in_order(session, [
        InboxEvent(r.workspace_id, r.seq, r.event_id, r.profile_id, r.event_name, r.properties,
                   r.traits, r.traceparent, r.attempts) for r in rows])


def in_order(session: Session, events: list[InboxEvent]) -> list[InboxEvent]:
    """Of ``events`` (pending, in seq order, this transaction's: claimed by
    :func:`pending_events`, or inserted by this transaction, which no other one sees or can
    lock before it commits), those that may be applied now: an event waits while an older
    pending event of its person is not among them."""
    c = inbox.c
    if not events:
        return []
    claimed = {e.seq for e in events}
    last = max(claimed)
    # The usual case, in one cheap statement: no other event up to the last claimed one is
    # pending (none held elsewhere, backing off or left out by ``seqs``), so none can be
    # overtaken and every claimed event applies here.
    older = session.execute(
        select(func.count()).select_from(inbox).where(not_(c.processed), c.seq <= last)).scalar()
    if older == len(claimed):
        return events
    # Events are ordered by person: a profile merged earlier is the same person as its survivor
    # (its events are applied to the survivor), so the ids of both count as one key.
    addressed = {k for e in events for k in _concerns(e)}
    person, aliases = _people(session, addressed)
    wanted = sorted(aliases)
    # The older pending events of these people: addressed to them, or merges of them into
    # another profile (found by the merged id in their properties; merges are rare).
    pending: dict[int, set[tuple[str, str]]] = {}
    for r in session.execute(
            select(c.seq, c.workspace_id, c.profile_id)
            .where(not_(c.processed), c.seq <= last,
                   _keys_in(session, (c.workspace_id, c.profile_id), wanted))).all():
        pending[r.seq] = {(r.workspace_id, r.profile_id)}
    for m in session.execute(
            select(c.seq, c.workspace_id, c.event_id, c.profile_id, c.event_name, c.properties)
            .where(not_(c.processed), c.seq <= last, c.event_name == PROFILE_MERGED,
                   one_of(session, c.workspace_id, sorted({w for w, _ in wanted})))).all():
        merge = InboxEvent(m.workspace_id, m.seq, m.event_id, m.profile_id, m.event_name,
                           m.properties, {}, "", 0)
        if aliases & (concerned := _concerns(merge)):
            pending.setdefault(m.seq, set()).update(concerned)
    if _people(session, addressed)[0] != person:
        return []  # a merge of these people committed meanwhile: claim again next round
    # In receive order, a person is blocked from their first event this claim cannot apply (held
    # elsewhere, or a merge blocked by its other profile) on: what is left cannot overtake it.
    blocked: set[tuple[str, str]] = set()
    for seq in sorted(pending):
        people = {person.get(k, k) for k in pending[seq]}
        if seq not in claimed or blocked & people:
            blocked |= people
            pending[seq] = set()  # not applied here
    return [e for e in events if pending.get(e.seq)]


def _people(session: Session, keys: set[tuple[str, str]],
            ) -> tuple[dict[tuple[str, str], tuple[str, str]], set[tuple[str, str]]]:
    """Who each (workspace, profile) key is now (itself, or the survivor it was merged into),
    and every key of those people: theirs, and those of the profiles merged into them."""
    successors = retired_successors(session, keys)
    person = {(w, p): (w, resolve_profile(successors, w, p) or p) for w, p in keys}
    c = retired_profiles.c
    found = sorted(set(person.values()))
    merged = session.execute(
        select(c.workspace_id, c.profile_id, c.successor_profile_id)
        .where(_keys_in(session, (c.workspace_id, c.successor_profile_id), found))).all() \
        if found else []
    for r in merged:  # chains are stored one hop long: the survivor is the person
        person[(r.workspace_id, r.profile_id)] = (r.workspace_id, r.successor_profile_id)
    return person, set(person) | set(person.values())


def _concerns(event: InboxEvent) -> set[tuple[str, str]]:
    """The (workspace, profile) keys an event concerns: its profile, and a merge's merged one."""
    keys = {(event.workspace_id, event.profile_id)}
    if event.event_name == PROFILE_MERGED and (merged := merged_profile_id(event)):
        keys.add((event.workspace_id, merged))
    return keys


def events_pending(session: Session, profiles: Iterable[tuple[str, str]]) -> bool:
    """Whether an event of any of these (workspace, profile) pairs waits in the inbox: the
    event round defers a profile's events while a step worker holds one of its enrollments,
    so the step that hands them back knows to wake it (ix_inbox_pending_profile)."""
    dialect = session.get_bind().dialect.name
    return any(session.execute(_pending_statement(dialect), {
        "ws": workspace_id, "ids": keys_param(dialect, ids)}).first() is not None
        for workspace_id, ids in _by_workspace(profiles))


def record_failure(session: Session, seq: int, error: str, retry_at: datetime) -> int | None:
    """Count one more failed attempt to apply a pending event, with its error, and hold it back
    until ``retry_at``; returns the count, or None when the event is no longer pending or
    another replica holds it (it was applied, or is being applied, there: nothing failed)."""
    c = inbox.c
    held = session.execute(
        select(c.seq).where(c.seq == seq, not_(c.processed))
        .with_for_update(skip_locked=True)).scalar()
    if held is None:
        return None
    attempts = session.execute(
        update(inbox).where(c.seq == seq, not_(c.processed))
        .values(attempts=c.attempts + 1, last_error=error, not_before=retry_at)
        .returning(c.attempts)).scalar()
    return None if attempts is None else int(attempts)


def next_retry(session: Session, now: datetime) -> datetime | None:
    """When the earliest pending event backing off after a failed attempt may be tried again
    (None: none is backing off)."""
    c = inbox.c
    found: datetime | None = session.execute(
        select(func.min(c.not_before)).where(not_(c.processed), c.not_before > now)).scalar()
    return found


def give_up(session: Session, seqs: Sequence[int]) -> None:
    """Events no attempt could apply: out of the inbox's pending tail (their rows, attempts and
    last error stay, for the dead letters' replay and for dedupe). Call it holding the rows'
    locks (:func:`record_failure`); only rows still pending are given up."""
    if seqs:
        session.execute(update(inbox).where(inbox.c.seq.in_(seqs), not_(inbox.c.processed))
                        .values(processed=True))


def replay(session: Session, workspace_id: str, event_ids: Sequence[str]) -> int:
    """Put given-up events back in the pending tail, their attempts counted afresh; returns how
    many were found."""
    if not event_ids:
        return 0
    c = inbox.c
    result = session.execute(
        update(inbox).where(c.workspace_id == workspace_id,
                            one_of(session, c.event_id, sorted(set(event_ids))))
        .values(processed=False, attempts=0, last_error="", not_before=None))
    return int(getattr(result, "rowcount", 0) or 0)


def mark_processed(session: Session, seqs: Sequence[int]) -> None:
    if seqs:
        dialect = session.get_bind().dialect.name
        session.execute(_processed_statement(dialect), {"seqs": keys_param(dialect, seqs)})


def keep_pending(session: Session, events: Sequence[InboxEvent]) -> None:
    """Events stored processed that were not applied after all (deferred behind their
    profile's step): back into the pending tail, for the event round, with their properties
    and traits (stored without them, not read yet then)."""
    if events:
        session.execute(_pending_again_statement(), [
            {"b_seq": e.seq, "b_properties": dict(e.properties), "b_traits": dict(e.traits)}
            for e in events])


@cache
def _pending_again_statement() -> Any:
    c = inbox.c
    return (update(inbox).where(c.seq == bindparam("b_seq"))
            .values(processed=False, properties=bindparam("b_properties", type_=c.properties.type),
                    traits=bindparam("b_traits", type_=c.traits.type)))


@cache
def _processed_statement(dialect: str) -> Any:
    """Mark inbox events processed (their seqs as one parameter), built once: a statement built
    per event cost more CPU (its construction and cache key) than running it. An event applied
    after failed attempts loses their error: only a given-up event (:func:`give_up`) keeps one,
    and inbox retention looks for a dead letter only behind a row with an error."""
    return (update(inbox).where(one_of_keys(dialect, inbox.c.seq, "seqs"))
            .values(processed=True, last_error=""))


# --- enrollments -----------------------------------------------------------------------------


def active_keys(session: Session, candidates: Iterable[ActiveKey]) -> set[ActiveKey]:
    """Which (workspace, journey, profile) triples already have an active enrollment."""
    wanted = sorted(set(candidates))
    if not wanted:
        return set()
    c = enrollments.c
    rows = session.execute(
        select(c.workspace_id, c.journey_id, c.profile_id)
        .where(c.state == _ACTIVE,
               _keys_in(session, (c.workspace_id, c.journey_id, c.profile_id), wanted))
    ).all()
    return {(r.workspace_id, r.journey_id, r.profile_id) for r in rows}


def insert_new(session: Session, batch: Sequence[Enrollment],
               leased: Mapping[str, tuple[str, datetime]] | None = None) -> set[str]:
    """Insert enrollments; one that would make a second active enrollment of the same profile in
    the same journey (a racing replica) is skipped. ``leased`` gives enrollment ids the lease
    (token, end) they are inserted with (as a claim would lease them). Returns the enrollment
    ids inserted."""
    leases = leased or {}
    rows = [{
        "workspace_id": e.workspace_id, "enrollment_id": e.enrollment_id,
        "journey_id": e.journey_id, "journey_version": e.journey_version,
        "profile_id": e.profile_id, "state": e.state.value,
        "current_node_id": e.current_node_id, "visits": dict(e.visits), "attempts": e.attempts,
        "last_error": e.last_error, "step_count": e.step_count, "due_time": e.due_time,
        "lease_until": leases[e.enrollment_id][1] if e.enrollment_id in leases else None,
        "lease_token": leases[e.enrollment_id][0] if e.enrollment_id in leases else None,
        "traits": dict(e.traits),
        "properties": dict(e.properties), "event_id": e.event_id,
        # What enrolled it, kept as it was: event_id is overwritten when a wait-for-event wakes.
        "entry_id": e.event_id,
        "traceparent": e.traceparent, "create_time": e.create_time,
        "update_time": e.update_time, "waiting": e.waiting, "exit_reason": e.exit_reason,
        "goal_deadline": e.goal_deadline, "goal_time": e.goal_time,
        "entry_properties": dict(e.entry_properties),
    } for e in batch]
    return set(insert_ignore(session, enrollments, rows, returning=enrollments.c.enrollment_id))


def _enrollment(row: Row[Any], traits: Any = None) -> Enrollment:
    """The enrollment a row holds; ``traits`` instead of the row's, when given (a claim does
    not read them)."""
    return _enrollments([row], traits)[0]


# The enrollment's own fields: a query's other columns (the lease, the entry key, a flag it
# computed) are not the enrollment's.
_FIELDS = frozenset(f.name for f in fields(Enrollment))


def _enrollments(rows: Sequence[Row[Any]], traits: Any = None) -> list[Enrollment]:
    """The enrollments rows of one query hold (:func:`_enrollment`'s). Each row's values are
    taken by position under the query's column names, read once: a Row's attribute access by
    name cost ~0.4 us a column, 24 columns an enrollment, a claim 500 enrollments."""
    if not rows:
        return []
    names = rows[0]._fields
    stored_only = [name for name in names if name not in _FIELDS]
    given = [name for name in names if name in _FIELDS]
    check_fields([*given, "traits"] if traits is not None else given)
    found = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        for name in stored_only:
            del values[name]
        values["state"] = EnrollmentState(values["state"])
        if traits is not None:
            values["traits"] = traits
        found.append(restore(values))
    return found


def watched_and_history(session: Session, profiles: Iterable[tuple[str, str]],
                        keys: Iterable[ActiveKey], now: datetime,
                        ) -> tuple[list[tuple[Enrollment, bool]], dict[ActiveKey, History]]:
    """:func:`watched` (``profiles``) and :func:`history` (``keys``) at once. For one
    workspace whose keys' profiles are among ``profiles`` (the events' own: every HandleEvents
    call) one statement reads both, the history's rows locked with the watched ones; otherwise
    the two reads."""
    wanted = sorted(set(profiles))
    latest = sorted(set(keys))
    workspaces = {w for w, _ in wanted}
    if len(workspaces) != 1 or not {(w, p) for w, _, p in latest} <= set(wanted):
        return watched(session, wanted, now), history(session, latest)
    dialect = session.get_bind().dialect.name
    rows = session.execute(_watched_or_history_statement(dialect), {
        "ws": wanted[0][0], "ids": keys_param(dialect, [p for _, p in wanted]),
        "journeys": keys_param(dialect, sorted({j for _, j, _ in latest})), "now": now}).all()
    asked = set(latest)
    watching = [r for r in rows if r.watches]
    return ([(e, r.lease_until is not None and r.lease_until > now)
             for e, r in zip(_enrollments(watching), watching, strict=True)],
            _latest(r for r in rows if (r.workspace_id, r.journey_id, r.profile_id) in asked))


# On PostgreSQL a workspace's enrollments and retirements are read by profile through
# cjo_platform.db.probes: one probe per profile, also in a workspace the planner's statistics
# do not know yet (a new tenant: its every row was read through another index and filtered by
# the profiles); the locked reads lock in the profiles' order (sorted by the database), a
# profile's enrollments in id order: every statement that locks several enrollments locks them
# in (workspace, profile, enrollment) order (a step round's record too: save_progress,
# still_leased), so an event round and a step round never wait for each other in a cycle.
# The enrollments events can change (see watched), over the probed rows ("t").
_PG_WATCHES = (f"t.state = {_ACTIVE} OR (t.goal_time IS NULL AND t.goal_deadline >= :now)")


def _now() -> Any:
    return bindparam("now", type_=enrollments.c.goal_deadline.type)


@cache
def _watched_or_history_statement(dialect: str) -> Any:
    """:func:`watched_and_history` in one statement, built once: the profiles' enrollments
    that are watched (flagged ``watches``) or in one of the ``journeys``, locked."""
    c = enrollments.c
    if dialect == "postgresql":
        return pg_by_keys(
            list(enrollments.c), c.profile_id,
            where=f"{_PG_WATCHES} OR t.journey_id = ANY(CAST(:journeys AS text[]))",
            computed={"watches": (_PG_WATCHES, Boolean())}, binds=[_now()],
            arrays=["journeys"], order_by=[c.create_time, c.enrollment_id], lock=True,
            workspace="ws", keys="ids", locked_within=["enrollment_id"])
    watches = or_(c.state == _ACTIVE,
                  and_(c.goal_time.is_(None), c.goal_deadline >= bindparam("now")))
    return (select(enrollments, watches.label("watches"))
            .where(c.workspace_id == bindparam("ws"), one_of_keys(dialect, c.profile_id, "ids"),
                   or_(watches, one_of_keys(dialect, c.journey_id, "journeys")))
            .order_by(c.create_time, c.enrollment_id).with_for_update())


def watched(session: Session, profiles: Iterable[tuple[str, str]],
            now: datetime) -> list[tuple[Enrollment, bool]]:
    """The enrollments events of these (workspace, profile) pairs can change, locked: active
    ones and ended ones whose goal window is still open; with whether a step worker holds each
    one's lease right now."""
    wanted = sorted(set(profiles))
    if not wanted:
        return []
    c = enrollments.c
    workspaces = {w for w, _ in wanted}
    if len(workspaces) == 1:  # the usual case (one HandleEvents call): built once
        dialect = session.get_bind().dialect.name
        rows = session.execute(_watched_statement(dialect), {
            "ws": wanted[0][0], "ids": keys_param(dialect, [p for _, p in wanted]),
            "now": now}).all()
    else:
        # Locked in (workspace, profile, enrollment) order (the rows are sorted before they
        # are locked), answered in creation order.
        rows = sorted(session.execute(
            select(enrollments)
            .where(_keys_in(session, (c.workspace_id, c.profile_id), wanted),
                   or_(c.state == _ACTIVE,
                       and_(c.goal_time.is_(None), c.goal_deadline >= now)))
            .order_by(*in_byte_order(session.get_bind().dialect.name, c.workspace_id,
                                     c.profile_id, c.enrollment_id))
            .with_for_update()
        ).all(), key=attrgetter("create_time", "enrollment_id"))
    return [(e, r.lease_until is not None and r.lease_until > now)
            for e, r in zip(_enrollments(rows), rows, strict=True)]


@cache
def _retired_statement(dialect: str) -> Any:
    """The retirements of a workspace's profiles (one parameter), built once."""
    c = retired_profiles.c
    return by_keys(dialect, [c.workspace_id, c.profile_id, c.successor_profile_id],
                   c.profile_id, workspace="ws", keys="ids")


@cache
def _watched_statement(dialect: str) -> Any:
    """:func:`watched` for one workspace's profiles (one parameter), built once."""
    c = enrollments.c
    if dialect == "postgresql":
        return pg_by_keys(list(enrollments.c), c.profile_id, where=_PG_WATCHES, binds=[_now()],
                          order_by=[c.create_time, c.enrollment_id], lock=True, workspace="ws",
                          keys="ids", locked_within=["enrollment_id"])
    return (select(enrollments)
            .where(c.workspace_id == bindparam("ws"), one_of_keys(dialect, c.profile_id, "ids"),
                   or_(c.state == _ACTIVE,
                       and_(c.goal_time.is_(None), c.goal_deadline >= bindparam("now"))))
            .order_by(c.create_time, c.enrollment_id).with_for_update())


@cache
def _history_statement(dialect: str) -> Any:
    """:func:`history` for one workspace's journey and its profiles (one parameter), built
    once."""
    c = enrollments.c
    picked = [c.workspace_id, c.journey_id, c.profile_id, c.state, c.update_time]
    if dialect == "postgresql":
        return pg_by_keys(picked, c.profile_id, where="t.journey_id = :journey",
                          binds=[bindparam("journey", type_=String)], workspace="ws",
                          keys="ids")
    return (select(*picked)
            .where(c.workspace_id == bindparam("ws"), c.journey_id == bindparam("journey"),
                   one_of_keys(dialect, c.profile_id, "ids")))


def history(session: Session, keys: Iterable[ActiveKey]) -> dict[ActiveKey, History]:
    """The latest enrollment of each (workspace, journey, profile): the active one if any, else
    the one that ended last."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    c = enrollments.c
    if len({(w, j) for w, j, _ in wanted}) == 1:  # one journey's (a lone event's): built once
        dialect = session.get_bind().dialect.name
        rows = session.execute(_history_statement(dialect), {
            "ws": wanted[0][0], "journey": wanted[0][1],
            "ids": keys_param(dialect, [p for _, _, p in wanted])}).all()
    else:
        rows = session.execute(
            select(c.workspace_id, c.journey_id, c.profile_id, c.state, c.update_time)
            .where(_keys_in(session, (c.workspace_id, c.journey_id, c.profile_id), wanted))
        ).all()
    return _latest(rows)


def _latest(rows: Iterable[Row[Any]]) -> dict[ActiveKey, History]:
    """:func:`history`'s answer from the rows of the keys' enrollments."""
    found: dict[ActiveKey, History] = {}
    for r in rows:
        key = (r.workspace_id, r.journey_id, r.profile_id)
        seen = found.get(key)
        state = EnrollmentState(r.state)
        if seen is not None and (seen.state is EnrollmentState.ACTIVE or (
                state is not EnrollmentState.ACTIVE and seen.ended >= r.update_time)):
            continue
        found[key] = History(state, r.update_time)
    return found


# A claim reads every column but the traits: a step reads the profile from identity and walks
# on that view (the stored traits are the view of the event that enrolled it, for
# GetEnrollment), and a step's record never writes them, so decoding them was wasted work.
_CLAIMED = [c for c in enrollments.c if c.key != "traits"]
_NOT_READ: Mapping[str, Any] = MappingProxyType({})

# The step round's statements, built once: building a statement and its cache key anew cost
# ~0.2 ms of CPU each, paid by every round however few enrollments it holds.
_c = enrollments.c
_CLAIM_DUE = (
    select(*_CLAIMED)
    .where(_c.state == _ACTIVE, _c.due_time <= bindparam("now"),
           or_(_c.lease_until.is_(None), _c.lease_until <= bindparam("now")))
    .order_by(_c.due_time).limit(bindparam("limit")).with_for_update(skip_locked=True))
_NEXT_DUE = select(func.min(_c.due_time)).where(_c.state == _ACTIVE,
                                                _c.due_time > bindparam("now"))
def claim_due(session: Session, now: datetime, until: datetime, token: str,
              limit: int) -> list[Enrollment]:
    """Lease up to ``limit`` due active enrollments, earliest first.

    SKIP LOCKED lets replicas claim disjoint batches at once (PostgreSQL; SQLite has a single
    writer anyway). The lease outlives this transaction, so the peer calls that follow happen
    without holding row locks, and a crashed worker's batch is taken over once it expires.
    """
    rows = session.execute(_CLAIM_DUE, {"now": now, "limit": limit}).all()
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # One probe of the primary key per enrollment (bulk_update): "workspace_id = :ws AND
        # enrollment_id = ANY(:ids)" read every enrollment of a workspace newer than the
        # statistics through ix_enrollments_watch's workspace prefix, in every round.
        bulk_update(session, enrollments, _KEY, [
            {"workspace_id": w, "enrollment_id": e, "lease_until": until, "lease_token": token}
            for w, e in sorted((r.workspace_id, r.enrollment_id) for r in rows)])
    else:
        for workspace_id, ids in _by_workspace((r.workspace_id, r.enrollment_id) for r in rows):
            session.execute(_lease_statement(dialect), {
                "ws": workspace_id, "ids": keys_param(dialect, ids), "until": until,
                "token": token})
    return _enrollments(rows, _NOT_READ)


def _by_workspace(keys: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(workspace, ids) keys grouped by workspace (a round's usually hold one), ids sorted."""
    grouped: dict[str, set[str]] = defaultdict(set)
    for workspace_id, key in keys:
        grouped[workspace_id].add(key)
    return [(w, sorted(ids)) for w, ids in sorted(grouped.items())]


@cache
def _lease_statement(dialect: str) -> Any:
    """Lease a workspace's claimed enrollments (the ids as one parameter), built once."""
    c = enrollments.c
    return (update(enrollments)
            .where(c.workspace_id == bindparam("ws"), one_of_keys(dialect, c.enrollment_id, "ids"))
            .values(lease_until=bindparam("until"), lease_token=bindparam("token")))


@cache
def _pending_statement(dialect: str) -> Any:
    """Whether an event of a workspace's profiles (one parameter) waits in the inbox. On
    PostgreSQL one probe of ix_inbox_pending_profile per profile (cjo_platform.db.probes), the
    first found ending the look-up: for a workspace newer than the statistics, "workspace_id =
    :ws AND profile_id = ANY(:ids)" read every pending event of the workspace through the
    index's workspace prefix and filtered them by the profiles (10,000 of them for a new
    tenant's backlog, for each step round that hands its profiles back)."""
    c = inbox.c
    if dialect == "postgresql":
        return pg_text(pg_probes(inbox.name, "t.seq", {"profile_id": "ids"},
                                 where="NOT t.processed", workspace="ws") + " LIMIT 1",
                       ["ids"]).columns(c.seq)
    return (select(c.seq)
            .where(not_(c.processed), c.workspace_id == bindparam("ws"),
                   one_of_keys(dialect, c.profile_id, "ids"))
            .limit(1))


def next_due(session: Session, now: datetime) -> datetime | None:
    """The earliest due time after ``now`` of an active enrollment (the partial index's first
    entry past ``now``): when the next timer falls due, so an idle step worker can sleep until
    then. Enrollments due already but leased elsewhere are their holders' work."""
    found: datetime | None = session.execute(_NEXT_DUE, {"now": now}).scalar()
    return found


def still_leased(session: Session, token: str, claimed: Sequence[tuple[str, str, str]]
                 ) -> set[tuple[str, str]]:
    """Which of the ``claimed`` enrollments, (workspace, profile, enrollment) each, this worker
    still holds (a lease that expired mid-batch may have been taken over; its new holder
    records the outcome instead), as (workspace, enrollment) keys; locked, in (profile,
    enrollment) order on PostgreSQL."""
    if not claimed:
        return set()
    c = enrollments.c
    dialect = session.get_bind().dialect.name
    keys = [(w, e) for w, _, e in claimed]
    if dialect == "postgresql":
        held: set[tuple[str, str]] = set()
        for workspace_id in sorted({w for w, _, _ in claimed}):
            ordered = sorted((p, e) for w, p, e in claimed if w == workspace_id)
            held.update((workspace_id, enrollment_id) for enrollment_id in session.execute(
                _still_leased_statement(), {
                    "ws": workspace_id, "ids": keys_param(dialect, [e for _, e in ordered]),
                    "profiles": keys_param(dialect, [p for p, _ in ordered]),
                    "token": token}).scalars())
        return held
    rows = session.execute(
        select(c.workspace_id, c.enrollment_id)
        .where(_keys_in(session, (c.workspace_id, c.enrollment_id), keys),
               c.lease_token == token)
        .with_for_update()
    ).all()
    return {(r.workspace_id, r.enrollment_id) for r in rows}


@cache
def _still_leased_statement() -> Any:
    """:func:`still_leased` on PostgreSQL for one workspace's enrollments (and their
    profiles, in step), built once: one probe of the primary key per enrollment, locked as
    probed (in (profile, id) order), also for a workspace the statistics do not know (the
    key's ANY read its every enrollment through ix_enrollments_watch's workspace prefix)."""
    c = enrollments.c
    return pg_by_keys([c.enrollment_id], c.enrollment_id, where="t.lease_token = :token",
                      binds=[bindparam("token", type_=String)], lock=True, workspace="ws",
                      keys="ids", locked_before={"profile_id": "profiles"})


def save_progress(session: Session, batch: Sequence[tuple[Enrollment, Sequence[Step]]], *,
                  context: bool = True) -> None:
    """Write each enrollment's new state and release its lease, and append its steps.

    ``context=False`` leaves what only events change (traits, properties, the triggering event,
    the goal time) as stored: the step worker's transitions never change it, and not writing it
    saves encoding two JSON documents per enrollment on the hottest path.

    One :func:`~cjo_platform.db.bulk_update` (the values bound a column at a time): on
    PostgreSQL one ``UPDATE ... FROM unnest(...)`` joined on the primary key, not a statement
    per enrollment that the server parses, plans and runs one by one (the step round's
    ``record`` sent 500). Its rows are locked and changed in (workspace, profile, enrollment)
    order (sorted here: the order of every statement that locks several enrollments, so two
    rounds writing overlapping enrollments, or a step round and an event round's locked
    read, wait for each other in no cycle), not the batch's: no row
    may take a key (a profile's active enrollment in a journey) that another row of the batch
    gives up. A step only ends enrollments; an event round writes the ones it ended
    in a call before the others (:func:`~cjo_orchestration.service_layer.events._record`), and
    a merge moves enrollments to the surviving profile, whose key none of them held.
    """
    if not batch:
        return
    rows: list[dict[str, Any]] = []
    for e, taken in sorted(batch, key=lambda item: (item[0].workspace_id, item[0].profile_id,
                                                      item[0].enrollment_id)):
        row = {"workspace_id": e.workspace_id, "enrollment_id": e.enrollment_id,
               "state": e.state.value, "current_node_id": e.current_node_id,
               "visits": dict(e.visits), "attempts": e.attempts, "last_error": e.last_error,
               "step_count": e.step_count + len(taken), "due_time": e.due_time,
               "update_time": e.update_time, "waiting": e.waiting,
               "exit_reason": e.exit_reason, "wait_deadline": e.wait_deadline,
               "lease_until": None, "lease_token": None}
        if context:
            row.update(profile_id=e.profile_id, goal_time=e.goal_time, traits=dict(e.traits),
                       properties=dict(e.properties), event_id=e.event_id,
                       traceparent=e.traceparent)
        rows.append(row)
    bulk_update(session, enrollments, _KEY, rows)
    insert_steps(session, batch)


_KEY = ("workspace_id", "enrollment_id")


def insert_steps(session: Session, batch: Sequence[tuple[Enrollment, Sequence[Step]]]) -> None:
    """Append steps, numbered on from each enrollment's ``step_count`` as read."""
    step_rows = [
        {"workspace_id": e.workspace_id, "enrollment_id": e.enrollment_id,
         "step_number": e.step_count + offset, "node_id": s.node_id, "visit": s.visit,
         "outcome": s.outcome.value, "detail": s.detail, "time": s.time}
        for e, taken in batch for offset, s in enumerate(taken)
    ]
    if step_rows:
        bulk_insert(session, steps, step_rows)


def release(session: Session, token: str, claimed: Sequence[tuple[str, str, str]]) -> None:
    """Give claimed enrollments, (workspace, profile, enrollment) each, back untouched (e.g.
    when the worker is stopping), locked in that order."""
    if not claimed:
        return
    # One probe of the primary key per enrollment, whatever the statistics (bulk_update).
    bulk_update(session, enrollments, _KEY, [
        {"workspace_id": w, "enrollment_id": e, "lease_until": None, "lease_token": None}
        for w, _, e in sorted(set(claimed))], where={"lease_token": token})


def get(session: Session, workspace_id: str, journey_id: str, enrollment_id: str) -> Enrollment:
    c = enrollments.c
    row = session.execute(select(enrollments).where(
        c.workspace_id == workspace_id, c.journey_id == journey_id,
        c.enrollment_id == enrollment_id)).first()
    if row is None:
        raise NotFound(f"enrollment {enrollment_id} of journey {journey_id} not found",
                       reason="ENROLLMENT_NOT_FOUND")
    return _enrollment(row)


def page(session: Session, workspace_id: str, journey_id: str | None, profile_id: str,
         size: int, before: tuple[datetime, str] | None) -> list[Enrollment]:
    """Newest first; ``before`` is the (create_time, enrollment_id) of the previous page's last.
    ``journey_id`` ``None``: every journey (with a ``profile_id``: ``ix_enrollments_watch``)."""
    c = enrollments.c
    query = select(enrollments).where(c.workspace_id == workspace_id)
    if journey_id is not None:
        query = query.where(c.journey_id == journey_id)
    if profile_id:
        query = query.where(c.profile_id == profile_id)
    if before is not None:
        when, enrollment_id = before
        query = query.where(or_(c.create_time < when,
                                and_(c.create_time == when, c.enrollment_id < enrollment_id)))
    rows = session.execute(
        query.order_by(c.create_time.desc(), c.enrollment_id.desc()).limit(size)).all()
    return _enrollments(rows)


def steps_of(session: Session, workspace_id: str,
             enrollment_ids: Sequence[str]) -> dict[str, list[Step]]:
    """Steps of several enrollments in one query, oldest first."""
    if not enrollment_ids:
        return {}
    c = steps.c
    rows = session.execute(
        select(steps).where(c.workspace_id == workspace_id,
                            c.enrollment_id.in_(enrollment_ids))
        .order_by(c.enrollment_id, c.step_number)).all()
    found: dict[str, list[Step]] = defaultdict(list)
    for r in rows:
        found[r.enrollment_id].append(
            Step(r.node_id, r.visit, StepOutcome(r.outcome), r.detail, r.time))
    return found


# --- profile lifecycle -----------------------------------------------------------------------
# Merges: the merged profile's enrollments are re-keyed to the survivor (active ones by the
# engine, the rest here), and ``retired_profiles`` maps its id to the survivor for events still
# addressed to it; its inbox rows are not rewritten, the mapping is applied as they are read.
# Erasure: the profile's enrollments, failed steps' details and inbox events lose the traits,
# properties and error texts they held. Ids, states, node ids, step outcomes and times stay:
# they hold nothing about the person and keep journey counts and analytics' facts consistent.


def retired_successors(session: Session,
                       profiles: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The successor of each retired (workspace, profile) among ``profiles`` and, transitively,
    of their successors ("" for an erased profile); profiles never retired are absent."""
    found: dict[tuple[str, str], str] = {}
    wanted = set(profiles)
    c = retired_profiles.c
    dialect = session.get_bind().dialect.name
    while wanted:
        workspaces = {w for w, _ in wanted}
        if len(workspaces) == 1:  # the usual case (one HandleEvents call): built once
            rows = session.execute(_retired_statement(dialect), {
                "ws": next(iter(workspaces)),
                "ids": keys_param(dialect, sorted(p for _, p in wanted))}).all()
        else:
            rows = session.execute(
                select(c.workspace_id, c.profile_id, c.successor_profile_id)
                .where(_keys_in(session, (c.workspace_id, c.profile_id), sorted(wanted)))).all()
        for r in rows:
            found[(r.workspace_id, r.profile_id)] = r.successor_profile_id
        wanted = {(r.workspace_id, r.successor_profile_id) for r in rows
                  if r.successor_profile_id} - found.keys()
    return found


def retire(session: Session, retirements: Sequence[Retirement],
           now: datetime) -> list[tuple[str, str]]:
    """Record merges and erasures in order: re-key the merged profile's remaining (ended)
    enrollments, point profiles merged earlier into a retired one at its successor (chains stay
    one hop), and erase what the store holds of erased profiles. Returns the (workspace,
    profile) ids erased: each erased profile and those merged into it before."""
    c = retired_profiles.c
    e = enrollments.c
    erased: list[tuple[str, str]] = []
    for retirement in retirements:
        ws, profile_id = retirement.workspace_id, retirement.profile_id
        insert_ignore(session, retired_profiles, [{
            "workspace_id": ws, "profile_id": profile_id,
            "successor_profile_id": retirement.successor_profile_id, "retire_time": now}])
        # The same person under the ids merged into this one earlier.
        person = [profile_id, *session.scalars(select(c.profile_id).where(
            c.workspace_id == ws, c.successor_profile_id == profile_id))]
        session.execute(
            update(retired_profiles)
            .where(c.workspace_id == ws, c.successor_profile_id == profile_id)
            .values(successor_profile_id=retirement.successor_profile_id))
        if not retirement.erased:
            session.execute(
                update(enrollments)
                .where(e.workspace_id == ws, e.profile_id == profile_id)
                .values(profile_id=retirement.successor_profile_id))
            continue
        erased += [(ws, p) for p in person]
        mine = and_(e.workspace_id == ws, one_of(session, e.profile_id, person))
        session.execute(update(enrollments).where(mine)
                        .values(traits={}, properties={}, entry_properties={},
                                last_error=""))
        s = steps.c
        session.execute(
            update(steps)
            .where(s.workspace_id == ws, s.outcome == StepOutcome.FAILED.value,
                   s.enrollment_id.in_(select(e.enrollment_id).where(mine)))
            .values(detail=""))
        # Pending events of the person are dropped with their contents, and so are the dead
        # letters of its events the event round gave up.
        letters = dead_letters.c
        session.execute(delete(dead_letters).where(
            letters.workspace_id == ws, letters.source == INBOX_SOURCE,
            letters.item_key.in_(select(inbox.c.event_id).where(
                inbox.c.workspace_id == ws, one_of(session, inbox.c.profile_id, person)))))
        session.execute(
            update(inbox)
            .where(inbox.c.workspace_id == ws, one_of(session, inbox.c.profile_id, person))
            .values(properties={}, traits={}, processed=True))
    return erased


def drop_events(session: Session, seqs: Sequence[int]) -> None:
    """Events that arrived for an erased profile: processed, and their contents blanked."""
    if seqs:
        session.execute(update(inbox).where(inbox.c.seq.in_(seqs))
                        .values(properties={}, traits={}, processed=True))
