"""Message storage: idempotent bulk queueing, reads, and the sender's claim / record queries."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from cjo_delivery.adapters import held
from cjo_delivery.adapters.tables import cap_locks, inbox_messages, messages, suppressions
from cjo_delivery.domain.addresses import canonical_email
from cjo_delivery.domain.messages import (
    Accepted,
    Channel,
    Claim,
    Message,
    MessageStatus,
    NewMessage,
    held_on_queueing,
)
from cjo_delivery.domain.sending import Transition
from cjo_platform.db import bulk_update, insert_ignore
from cjo_platform.db.engine import one_of, pg_array
from cjo_platform.db.planning import PLANNED_EACH_RUN
from cjo_platform.db.probes import pg_by_keys

m = messages.c


def _message(row: Row[Any] | dict[str, Any]) -> Message:
    r = row._mapping if isinstance(row, Row) else row
    return Message(
        message_id=r["message_id"], idempotency_key=r["idempotency_key"],
        profile_id=r["profile_id"], address=r["address"], channel=Channel(r["channel"]),
        content=r["content"], journey_id=r["journey_id"], enrollment_id=r["enrollment_id"],
        status=MessageStatus(r["status"]), attempts=r["attempts"], error=r["error"],
        provider_message_id=r["provider_message_id"], create_time=r["create_time"],
        update_time=r["update_time"], topic=r["topic"], transactional=bool(r["transactional"]),
        next_attempt_time=(r["next_attempt_time"]
                           if r["status"] in (MessageStatus.QUEUED.value,
                                              MessageStatus.DEFERRED.value) else None),
        provider_id=r["provider_id"], decision_id=r["decision_id"],
    )


def queue_messages(session: Session, workspace_id: str, batch: Sequence[NewMessage],
                   now: datetime, traceparent: str,
                   new_id: Callable[[], str]) -> list[Accepted]:
    """Store the messages whose idempotency key is new as QUEUED, in one statement.

    Returns one answer per item, in order: a key seen before (in an earlier request or earlier
    in this batch) answers with the first message and ``duplicate`` set, and queues nothing.
    """
    first_index: dict[str, int] = {}
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(batch):
        if item.idempotency_key in first_index:
            continue
        first_index[item.idempotency_key] = index
        rows[item.idempotency_key] = {
            "workspace_id": workspace_id, "message_id": new_id(),
            "idempotency_key": item.idempotency_key, "profile_id": item.profile_id,
            "address": item.address, "channel": item.channel.value, "content": item.content,
            "journey_id": item.journey_id, "enrollment_id": item.enrollment_id,
            "status": MessageStatus.QUEUED.value, "attempts": 0, "error": "",
            "provider_message_id": "", "next_attempt_time": now, "lease_until": None,
            "traceparent": traceparent, "create_time": now, "update_time": now,
            "topic": item.topic, "transactional": item.transactional,
            "time_zone": item.time_zone, "sent_time": None, "provider_id": "",
            "decision_id": item.decision_id,
        }
    held_keys = _hold(session, workspace_id, list(rows.values()))
    # ON CONFLICT DO NOTHING: a concurrent request with the same key waits for ours (or we for
    # it) on the unique index, and exactly one of them inserts.
    inserted = set(insert_ignore(session, messages, list(rows.values()),
                                 returning=m.idempotency_key))
    if held_keys and len(inserted) < len(rows):
        _unhold(session, workspace_id, [rows[k] for k in rows if k in inserted], held_keys)
    stored = {key: _message(row) for key, row in rows.items() if key in inserted}
    existing = [key for key in rows if key not in inserted]
    if existing:
        if session.get_bind().dialect.name == "postgresql":
            found = session.execute(_PG_BY_IDEMPOTENCY_KEY, {
                "workspace_id": workspace_id, "keys": pg_array(existing)}).all()
        else:
            found = session.execute(select(messages).where(
                m.workspace_id == workspace_id, m.idempotency_key.in_(existing))).all()
        stored.update({row.idempotency_key: _message(row) for row in found})
    missing = [key for key in rows if key not in stored]
    if missing:  # only a message_id collision can get here; refuse rather than mis-answer
        raise RuntimeError(f"messages neither inserted nor found for keys {missing}")
    return [Accepted(stored[item.idempotency_key],
                     duplicate=item.idempotency_key not in inserted
                     or first_index[item.idempotency_key] != index)
            for index, item in enumerate(batch)]


def _hold(session: Session, workspace_id: str, rows: list[dict[str, Any]]) -> set[str]:
    """Queue HELD the new ``rows`` (in queue order) that an unfinished message of their profile
    on their channel holds back, stored (marked ``holds`` and locked: adapters/held.py) or
    earlier in ``rows`` (then marked ``holds`` too); returns the held rows' keys."""
    scopes = {(r["profile_id"], r["channel"]) for r in rows if r["profile_id"]}
    if not scopes:
        return set()
    held.lock_scopes(session, [(workspace_id, profile, channel) for profile, channel in scopes])
    blockers = held.hold_behind(session, workspace_id, scopes)
    flags = held_on_queueing(
        [(r["profile_id"], r["channel"], r["transactional"]) for r in rows], blockers)
    followed: set[tuple[str, str]] = set()
    keys = set()
    for row, flag in zip(reversed(rows), reversed(flags), strict=True):
        scope = (row["profile_id"], row["channel"])
        row["holds"] = scope in followed  # a later one of the batch may be held behind it
        if flag:
            keys.add(row["idempotency_key"])
            row["status"], row["next_attempt_time"] = MessageStatus.HELD.value, None
        if row["profile_id"]:
            followed.add(scope)
    return keys


def _unhold(session: Session, workspace_id: str, inserted: list[dict[str, Any]],
            held_keys: set[str]) -> None:
    """A held row whose only blocker was a row of its batch that was not inserted (its key
    was stored before) is queued after all: the blockers stored are among those
    :func:`_hold` marked, so the batch's inserted rows are decided again without the others."""
    stored = held.hold_behind(
        session, workspace_id, {(r["profile_id"], r["channel"]) for r in inserted
                                if r["idempotency_key"] in held_keys},
        leave={r["message_id"] for r in inserted})
    earlier: list[tuple[str, str, bool]] = []
    freed = []
    for row in inserted:
        if row["idempotency_key"] in held_keys and not any(held_on_queueing(
                [(row["profile_id"], row["channel"], row["transactional"])],
                [*stored, *earlier])):
            freed.append(row)
            row["status"], row["next_attempt_time"] = MessageStatus.QUEUED.value, row[
                "create_time"]
        earlier.append((row["profile_id"], row["channel"], row["transactional"]))
    if freed:
        session.execute(update(messages).where(
            m.workspace_id == workspace_id,
            m.message_id.in_([r["message_id"] for r in freed])).values(
                status=MessageStatus.QUEUED.value, next_attempt_time=freed[0]["create_time"]))


# On PostgreSQL the messages of the keys already stored probe uq_messages_idempotency_key per
# key (cjo_platform.db.probes), also for a workspace the planner's statistics do not know yet (a
# new tenant, a fresh database): with the workspace a constant, such a workspace's every message
# was read through ix_messages_address's workspace prefix and filtered by the keys, per request
# that repeated a key.
_PG_BY_IDEMPOTENCY_KEY = pg_by_keys(list(messages.c), m.idempotency_key)


def get_message(session: Session, workspace_id: str, message_id: str) -> Message | None:
    row = session.execute(select(messages).where(
        m.workspace_id == workspace_id, m.message_id == message_id)).first()
    return _message(row) if row is not None else None


def list_messages(session: Session, workspace_id: str, *, profile_id: str, journey_id: str,
                  limit: int, after: tuple[datetime, str] | None,
                  status: MessageStatus | None = None) -> list[Message]:
    """Newest first; ``after`` is the (create_time, message_id) of the previous page's last."""
    query = select(messages).where(m.workspace_id == workspace_id)
    if status is not None:
        query = query.where(m.status == status.value)
    if profile_id:
        query = query.where(m.profile_id == profile_id)
    if journey_id:
        query = query.where(m.journey_id == journey_id)
    if after is not None:
        time, message_id = after
        query = query.where(or_(m.create_time < time,
                                and_(m.create_time == time, m.message_id < message_id)))
    rows = session.execute(
        query.order_by(m.create_time.desc(), m.message_id.desc()).limit(limit)).all()
    return [_message(row) for row in rows]


# The sender's statements run every round (record ones every group of outcomes): built once
# here, with bound parameters, so SQLAlchemy neither builds them nor derives their cache key
# again per call.
_PENDING = (MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value,
            MessageStatus.SENDING.value)


# Written into the statement, not bound: a partial index's predicate is matched only by the
# same literal values (ix_messages_pending on SQLite; PostgreSQL's generic plans).
_PENDING_LITERALLY: list[ColumnElement[str]] = [literal_column(f"'{status}'")
                                                for status in _PENDING]


def _due(t: Any) -> ColumnElement[bool]:
    """Due messages of ``t`` (the table or an alias): QUEUED or DEFERRED ones whose time has
    come, SENDING ones whose sender's lease ran out."""
    return or_(
        and_(t.c.status.in_([MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value]),
             t.c.next_attempt_time <= bindparam("now")),
        and_(t.c.status == MessageStatus.SENDING.value, t.c.lease_until <= bindparam("now")),
    )


def _leased_elsewhere(t: Any) -> ColumnElement[bool]:
    """Messages of ``t`` (an alias) being sent by another sender process: SENDING under a lease
    another process holds and that has not run out."""
    return and_(t.c.status == MessageStatus.SENDING.value, t.c.lease_until > bindparam("now"),
                t.c.lease_holder != bindparam("holder"))


def _ahead(candidate: Any, earlier: Any, why: ColumnElement[bool]) -> ColumnElement[bool]:
    """Whether a message of the candidate's profile queued before it (``earlier``, an alias) is
    in its way: one that is ``why``. Messages to no profile keep no order. The status list
    repeats the predicate of ``ix_messages_pending`` (literally: a bound list does not match
    it), so the look-up is that index's, not the SENDING messages of ``ix_messages_lease`` (a
    backlog's every claimed message, for each candidate)."""
    return exists().where(
        candidate.c.profile_id != "",
        earlier.c.workspace_id == candidate.c.workspace_id,
        earlier.c.profile_id == candidate.c.profile_id,
        earlier.c.status.in_(_PENDING_LITERALLY),
        earlier.c.queue_order < candidate.c.queue_order,
        why)


_CLAIMED_COLUMNS = (
    m.workspace_id, m.message_id, m.profile_id, m.address, m.channel, m.content, m.journey_id,
    m.enrollment_id, m.attempts, m.traceparent, m.topic, m.transactional, m.time_zone,
    m.decision_id, m.queue_order, m.lease_expiries, m.holds,
)
# A SENDING message claimed is one whose lease ran out (_due): counted, in the same statement
# (SET reads the row as it was).
_SENDING = {"status": MessageStatus.SENDING.value, "attempts": m.attempts + 1,
            "lease_until": bindparam("lease"), "lease_holder": bindparam("holder"),
            "update_time": bindparam("now"), "cap_time": None,
            "lease_expiries": m.lease_expiries + case(
                (m.status == literal_column(f"'{MessageStatus.SENDING.value}'"), 1), else_=0)}
_EARLIER = messages.alias("earlier")
# The due messages no other sender process's live lease holds back, oldest queued first: the
# lease is checked before the limit, so a profile held back (by a replica that crashed mid-way,
# for the whole lease) never fills a claim with messages it then drops, for every workspace.
# ``ix_messages_queue`` walks them in queue order. ``leaving``: without the messages of the
# workspaces bound as ``leave`` (the sender's rounds are waiting for identity's consent answer
# for them).


def _due_first(*columns: Any, unblocked: ColumnElement[bool], leaving: bool) -> Select[Any]:
    query = select(*columns).where(_due(messages), unblocked, m.status.in_(_PENDING_LITERALLY))
    if leaving:
        query = query.where(m.workspace_id.not_in(bindparam("leave", expanding=True)))
    return query.order_by(m.queue_order).limit(bindparam("limit", type_=Integer))


def _claim_picked(leaving: bool) -> Update:
    """PostgreSQL: one statement. Those due messages (no earlier message of the profile under
    another process's lease: ``ix_messages_pending`` looks the profile's up), locked with SKIP
    LOCKED (another sender's claim skips what this one holds), and of those the ones no
    message of their profile queued before them is in the way of: due and not picked here (so
    locked by another sender's claim, whose transaction this one does not see; or held back
    itself, then by the same lease). The statement sees the table as it was when it began, so
    a message another sender claims meanwhile still counts as due and not picked: it holds
    back, never lets through."""
    picked = (_due_first(m.workspace_id, m.message_id, m.profile_id, m.queue_order,
                         unblocked=~_ahead(messages, _EARLIER, _leased_elsewhere(_EARLIER)),
                         leaving=leaving)
              .with_for_update(skip_locked=True).cte("picked"))
    also_picked = picked.alias("also_picked")  # the picked rows again, not the one at hand
    return update(messages).where(
        m.workspace_id == picked.c.workspace_id, m.message_id == picked.c.message_id,
        ~_ahead(picked, _EARLIER, and_(_due(_EARLIER), ~exists().where(
            also_picked.c.workspace_id == _EARLIER.c.workspace_id,
            also_picked.c.message_id == _EARLIER.c.message_id))),
    ).values(**_SENDING).returning(*_CLAIMED_COLUMNS)


_ROWID: ColumnElement[int] = literal_column("messages.rowid", Integer)
_HELD = (select(_EARLIER.c.workspace_id, _EARLIER.c.profile_id,
                func.min(_EARLIER.c.queue_order).label("first"))
         .where(_leased_elsewhere(_EARLIER), _EARLIER.c.profile_id != "")
         .group_by(_EARLIER.c.workspace_id, _EARLIER.c.profile_id).subquery("held"))


def _claim_due(leaving: bool) -> Update:
    """SQLite (one writer, no row locks): one statement too. The profiles another process's
    live lease holds, from their first such message on, read once (``ix_messages_lease``)
    rather than a look-up per due message (SQLite sorts every due message: each a probe of the
    profile's pending ones, 140 ms of CPU per claim of 500 from a 10,000 backlog). Every due
    message of a profile queued before a candidate is among the candidates (or held back
    itself, then by the same lease), so nothing else can be in the way."""
    return update(messages).where(_ROWID.in_(
        select(_due_first(_ROWID.label("id"),
                          unblocked=or_(_HELD.c.first.is_(None), m.queue_order < _HELD.c.first),
                          leaving=leaving)
               .select_from(messages.outerjoin(_HELD,
                                               and_(_HELD.c.workspace_id == m.workspace_id,
                                                    _HELD.c.profile_id == m.profile_id)))
               .subquery("candidate").c.id).scalar_subquery(),
    )).values(**_SENDING).returning(*_CLAIMED_COLUMNS)


# By dialect (SQLite or not) and whether some workspaces are left out.
_CLAIMS = {(sqlite, leaving): (_claim_due if sqlite else _claim_picked)(leaving)
           for sqlite in (False, True) for leaving in (False, True)}


def claim_due(session: Session, now: datetime, lease_until: datetime, limit: int, *,
              holder: str, leave: Collection[str] = ()) -> list[Claim]:
    """Take up to ``limit`` due messages for the sender process ``holder``: QUEUED ones whose
    time has come and SENDING ones whose sender's lease ran out, in the order they were queued.

    A profile's message is taken only when no message of the profile queued before it is in
    its way (being sent by another process, or due and not taken now): replicas never send a
    profile's messages at once nor out of queue order. A message waiting for a retry or a
    deferral holds nothing up (it is due later). The holder's own messages under way are not in
    the way: its rounds keep their order in the process (send_round.ProfileTurns). The
    messages of the workspaces in ``leave`` are not taken. Taking a SENDING message (its lease
    ran out) counts one more of its ``lease_expiries``.
    Row locks with SKIP LOCKED let several senders share the table on PostgreSQL without
    waiting on each other; SQLite (one writer) claims in one statement too."""
    statement = _CLAIMS[(session.get_bind().dialect.name == "sqlite", bool(leave))]
    parameters: dict[str, Any] = {"now": now, "limit": limit, "lease": lease_until,
                                  "holder": holder}
    if leave:
        parameters["leave"] = sorted(leave)
    # Planned at each run (cjo_platform.db.planning): a plan made while the table was empty
    # read a workspace's every message per claimed row for as long as it lasted.
    claimed = session.execute(statement, parameters, execution_options=PLANNED_EACH_RUN).all()
    # RETURNING answers in no set order.
    return [_claim(r, r.attempts) for r in sorted(claimed, key=lambda r: r.queue_order)]


def _claim(r: Row[Any] | Any, attempts: int) -> Claim:
    return Claim(workspace_id=r.workspace_id, message_id=r.message_id, profile_id=r.profile_id,
                 address=r.address, channel=Channel(r.channel), content=r.content,
                 journey_id=r.journey_id, enrollment_id=r.enrollment_id, attempts=attempts,
                 traceparent=r.traceparent, topic=r.topic,
                 transactional=bool(r.transactional), time_zone=r.time_zone,
                 decision_id=r.decision_id, lease_expiries=r.lease_expiries,
                 holds=bool(r.holds))


class LeaseLost(Exception):
    """Raised by :func:`record_all` when a message of the group was claimed again by another
    sender after this one's lease ran out, or had a later message held behind it since its
    claim (``holds``, which its final outcome must release): roll back and record one by one
    with :func:`record`."""


def record_all(session: Session, changes: Sequence[tuple[Claim, Transition]],
               now: datetime) -> None:
    """Apply every transition in one bulk update per kind of change, each only if its claim
    still holds the message (an outcome recorded: ``lease_expiries`` counts again from 0,
    they count run-out leases in a row). Raises :class:`LeaseLost` when one did not, having already
    changed the others: the caller's transaction must then be rolled back. Their scopes are
    locked first (adapters/held.py)."""
    lock_scopes(session, [claim for claim, _ in changes])
    shapes: dict[tuple[bool, bool], list[dict[str, Any]]] = {}
    for claim, transition in changes:
        sent = transition.status is MessageStatus.SENT
        row = {
            "workspace_id": claim.workspace_id, "message_id": claim.message_id,
            "claim_attempts": claim.attempts, "claim_holds": claim.holds,
            "status": transition.status.value,
            "attempts": transition.attempts, "next_attempt_time": transition.next_attempt_time,
            "lease_until": None, "provider_message_id": transition.provider_message_id,
            "provider_id": transition.provider_id, "update_time": now, "lease_expiries": 0,
        }
        if sent:
            row["sent_time"] = now
        if transition.error is not None:
            row["error"] = transition.error
        shapes.setdefault((sent, transition.error is not None), []).append(row)
    updated = 0
    for rows in shapes.values():
        # Bound a column at a time (a statement per row on SQLite, one on PostgreSQL): an
        # executemany through update() built and processed a parameter dict per row.
        updated += bulk_update(session, messages, _MESSAGE_KEY, rows, match=_CLAIMED,
                               where=_SENDING)
    if updated != len(changes):
        raise LeaseLost(f"{len(changes) - updated} of {len(changes)} messages were claimed "
                        f"again or had a message held behind them since their claim")
    held.release(session, [(c.workspace_id, c.profile_id, c.channel.value)
                            for c, t in changes if c.holds and t.is_final], now)


def set_back(session: Session, claims: Sequence[Claim], until: datetime) -> None:
    """Cut the lease of ``claims`` (no provider had them) to ``until``, each only while its
    claim still holds the message, and take one off its ``lease_expiries``: the claim that
    takes it over when that lease ends adds it back, so the end does not count. Their scopes
    are locked first (adapters/held.py)."""
    lock_scopes(session, claims)
    bulk_update(session, messages, _MESSAGE_KEY, [
        {"workspace_id": claim.workspace_id, "message_id": claim.message_id,
         "claim_attempts": claim.attempts, "lease_until": until,
         "lease_expiries": claim.lease_expiries - 1}
        for claim in sorted(claims, key=lambda c: (c.workspace_id, c.message_id))],
        match=_CLAIMED, where=_SENDING)


# A message row, and the claim that must still hold it: SENDING at the attempt it claimed.
_MESSAGE_KEY = ("workspace_id", "message_id")
_CLAIMED = {"claim_attempts": "attempts", "claim_holds": "holds"}
_SENDING = {"status": MessageStatus.SENDING.value}


def lock_scopes(session: Session, claims: Sequence[Claim]) -> None:
    """Lock the scopes of ``claims`` (adapters/held.py) before recording their outcomes: one
    call for all the messages a transaction records."""
    held.lock_scopes(session, [(c.workspace_id, c.profile_id, c.channel.value)
                               for c in claims if c.profile_id])


def record(session: Session, claim: Claim, transition: Transition, now: datetime) -> bool:
    """Apply ``transition`` if ``claim`` still holds the message; False when another sender took
    it over after this one's lease ran out (its result then wins). A final outcome releases the
    messages held behind it (``holds`` as it is now, not as claimed). A transaction recording
    several messages this way has locked their scopes first (:func:`lock_scopes`); a lone one
    is locked here."""
    lock_scopes(session, [claim])
    values: dict[str, Any] = {
        "status": transition.status.value, "attempts": transition.attempts,
        "next_attempt_time": transition.next_attempt_time, "lease_until": None,
        "provider_message_id": transition.provider_message_id, "update_time": now,
        "provider_id": transition.provider_id, "lease_expiries": 0,
    }
    if transition.status is MessageStatus.SENT:
        values["sent_time"] = now
    if transition.error is not None:
        values["error"] = transition.error
    holds = session.execute(
        update(messages)
        .where(m.workspace_id == claim.workspace_id, m.message_id == claim.message_id,
               m.status == MessageStatus.SENDING.value, m.attempts == claim.attempts)
        .values(**values).returning(m.holds)).scalar_one_or_none()
    if holds is None:
        return False
    if holds and transition.is_final:
        held.release(session, [(claim.workspace_id, claim.profile_id, claim.channel.value)], now)
    return True


def suppression_spellings(channel: str, address: str) -> tuple[str, ...]:
    """The spellings the suppression list keeps an address under: for email the canonical one
    first, so every spelling of one mailbox (``someone@BÜCHER.example``,
    ``someone@xn--bcher-kva.example``) finds one entry, then the address as given, which is all
    the release before the canonical form looks up (it serves beside this one during a rolling
    update, and alone after a rollback) and what it wrote. Canonicalised here rather than when a
    message is accepted: messages keep the address as the caller sent it (GetMessage, identity's
    events show it), and this module is the only place suppressions are written (bounces,
    unsubscribes, complaints) and read."""
    if channel != Channel.EMAIL.value:
        return (address,)
    canonical = canonical_email(address)
    return (canonical,) if canonical == address else (canonical, address)


def suppression_reasons(spellings: dict[tuple[str, str, str], tuple[str, ...]],
                        stored: dict[tuple[str, str, str], str]
                        ) -> dict[tuple[str, str, str], str]:
    """Reasons of the (workspace, channel, address) keys (with their :func:`suppression_spellings`)
    that are suppressed, given the ``stored`` rows of any of their spellings (read with the
    round's context: adapters/round_context.py)."""
    found: dict[tuple[str, str, str], str] = {}
    for key, spelled in spellings.items():
        # The canonical row first: it holds the earliest reason the migration found.
        hits = [stored[(key[0], key[1], a)] for a in spelled if (key[0], key[1], a) in stored]
        if hits:
            found[key] = hits[0]
    return found


def suppress(session: Session, rows: Sequence[tuple[str, str, str, str]], now: datetime) -> None:
    """Add (workspace, channel, address, reason) to the suppression list under each of its
    spellings; the first reason stays."""
    if rows:
        # In key order, so concurrent writers of one mailbox cannot deadlock on its rows.
        insert_ignore(session, suppressions, sorted(
            ({"workspace_id": w, "channel": c, "address": spelling, "reason": r[:1024],
              "create_time": now}
             for w, c, a, r in rows for spelling in suppression_spellings(c, a)),
            key=lambda row: (row["workspace_id"], row["channel"], row["address"])))


def lock_caps(session: Session, workspace_id: str, keys: Sequence[tuple[str, str]]) -> None:
    """Lock the (profile, channel) cap rows of a workspace until commit, creating missing
    ones: a round counting and reserving a profile's sends waits for any other round doing
    the same, on any replica. In key order, so two rounds cannot deadlock."""
    if not keys:
        return
    ordered = sorted(set(keys))
    insert_ignore(session, cap_locks, [{"workspace_id": workspace_id, "profile_id": p,
                                        "channel": c} for p, c in ordered])
    c = cap_locks.c
    profiles = sorted({p for p, _ in ordered})
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_CAP_LOCKS, {"workspace_id": workspace_id,
                                        "keys": pg_array(profiles)}).all()
        return
    session.execute(
        select(c.profile_id).where(c.workspace_id == workspace_id,
                                   one_of(session, c.profile_id, profiles))
        .order_by(c.profile_id, c.channel).with_for_update()).all()


# On PostgreSQL a round's reads by profile probe the index on (workspace_id, profile_id) per
# profile (cjo_platform.db.probes), also in a workspace the planner's statistics do not know
# yet: with the workspace a constant, such a workspace's every cap lock (or message) was read
# through another index and filtered by the profiles. The locks are taken as the rows are
# probed, in (profile, channel) order.
_PG_CAP_LOCKS = pg_by_keys([cap_locks.c.profile_id], cap_locks.c.profile_id,
                           order_by=[cap_locks.c.profile_id, cap_locks.c.channel], lock=True)
_PG_CAP_USAGE = pg_by_keys(
    [m.profile_id, m.channel, m.sent_time, m.cap_time], m.profile_id,
    where=f"t.transactional IS FALSE AND (t.sent_time >= :since OR "
          f"(t.status = '{MessageStatus.SENDING.value}' AND t.cap_time >= :since))",
    binds=[bindparam("since", type_=m.sent_time.type)])


def cap_usage(session: Session, workspace_id: str, keys: Sequence[tuple[str, str]],
              since: datetime) -> dict[tuple[str, str], list[datetime]]:
    """Sorted times since ``since`` per (profile, channel), across all journeys, of what a
    frequency cap counts: messages sent, and messages SENDING that reserved a slot (at the
    time they reserved it) on any replica. Transactional messages are exempt from caps both
    ways: never held back, and a receipt never uses up the marketing messages a cap allows."""
    if not keys:
        return {}
    profiles = sorted({k[0] for k in keys})
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_PG_CAP_USAGE, {"workspace_id": workspace_id,
                                               "keys": pg_array(profiles), "since": since}).all()
    else:
        rows = session.execute(select(m.profile_id, m.channel, m.sent_time, m.cap_time).where(
            m.workspace_id == workspace_id, one_of(session, m.profile_id, profiles),
            m.transactional.is_(False),
            or_(m.sent_time >= since,
                and_(m.status == MessageStatus.SENDING.value, m.cap_time >= since)))).all()
    found: dict[tuple[str, str], list[datetime]] = {k: [] for k in keys}
    for r in rows:
        times = found.get((r.profile_id, r.channel))
        if times is not None:
            times.append(r.sent_time if r.sent_time is not None else r.cap_time)
    for times in found.values():
        times.sort()
    return found


def reserve_caps(session: Session, claims: Sequence[Claim], now: datetime) -> None:
    """Mark the claimed messages as holding a cap slot since ``now``. The slot is theirs while
    they are SENDING under this claim; any outcome but SENT gives it back (sent_time counts
    from then on), as does a later claim of the message. Their scopes are locked first
    (adapters/held.py: it writes messages of several)."""
    lock_scopes(session, claims)
    bulk_update(session, messages, _MESSAGE_KEY, [
        {"workspace_id": c.workspace_id, "message_id": c.message_id,
         "claim_attempts": c.attempts, "cap_time": now} for c in claims],
        match=_CLAIMED, where=_SENDING)


ERASED_REASON = "canceled: profile erased"


def erase_profile(session: Session, workspace_id: str, profile_id: str,
                  now: datetime) -> tuple[int, int]:
    """Erase what delivery holds of a profile (GDPR erasure); returns (canceled, in flight).

    Messages not yet handed to a provider (QUEUED, DEFERRED: waiting on a frequency cap, quiet
    hours, a rate limit or a retry; HELD behind an earlier one) end as SUPPRESSED with
    :data:`ERASED_REASON`. Every other message of the profile loses its address, rendered
    content and error text (which may quote the address); ids, channel, status, times and the
    provider's message id stay, so reports still count it and a late provider webhook still
    finds it. The in-app inbox is deleted.

    A SENDING message belongs to a sender that may be talking to the provider right now: it is
    left alone and counted as in flight, so the caller erases again once it finished. Running
    this again changes nothing more, so retries are safe.
    """
    mine = and_(m.workspace_id == workspace_id, m.profile_id == profile_id)
    canceled = session.execute(
        update(messages)
        .where(mine, m.status.in_([MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value,
                                   MessageStatus.HELD.value]))
        .values(status=MessageStatus.SUPPRESSED.value, next_attempt_time=None, address="",
                content=b"", error=ERASED_REASON, update_time=now)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(
        update(messages)
        .where(mine, m.status != MessageStatus.SENDING.value,
               or_(m.address != "", func.length(m.content) > 0))
        .values(address="", content=b"", error="", update_time=now))
    in_flight = session.execute(
        select(func.count()).select_from(messages)
        .where(mine, m.status == MessageStatus.SENDING.value)).scalar_one()
    session.execute(delete(inbox_messages).where(
        inbox_messages.c.workspace_id == workspace_id,
        inbox_messages.c.profile_id == profile_id))
    session.execute(delete(cap_locks).where(cap_locks.c.workspace_id == workspace_id,
                                            cap_locks.c.profile_id == profile_id))
    return int(canceled), int(in_flight)
