"""Messages HELD behind an earlier unfinished message of their profile on their channel: who
holds them back when they are queued, and their release when the last such message is final.

The scope is (workspace, profile, channel); messages to no profile keep no order. A message
holds back the later ones of its scope while it is not final (QUEUED, DEFERRED, SENDING or
HELD itself), a transactional one only behind a transactional one (domain ``holds_back``).
HELD messages are in neither of the claim's indexes (``ix_messages_queue``,
``ix_messages_pending``): a blocked backlog costs the claim nothing.

Who releases them: every unfinished message a later one is held behind carries ``holds`` (set
by :func:`hold_behind`, which locks the row until the queueing transaction commits), the claim
reads it, and the record of its final outcome releases its scope's held messages no earlier
unfinished message holds back any more (:func:`release`), in the same transaction. A record
that finds ``holds`` set since its claim falls back to recording message by message
(``repository.LeaseLost``), which reads it again. On PostgreSQL every transaction that queues
messages, records outcomes, reserves cap slots or sets claims back first takes the lock of each
scope it writes (one of ``SCOPE_BUCKETS`` per workspace: :func:`lock_scopes`, all of them in
one order, once per transaction; the safety net too): two queueings of one profile's messages
at once would each see none of the other's (both queued, the later overtaking), two records
of a held message's blockers at once would each see the
other unfinished (neither releasing it), and a queueing and a writer of several claimed
messages locking their rows in different orders could deadlock. A message whose blockers are
gone without releasing it (a refused record, a blocker changed by hand) is released by
:func:`release_orphans`, the safety net: a pass every ``ORPHAN_SWEEP``, ``ORPHAN_BATCH`` held
messages at a time in key order, each batch in its own transaction before a round's claim, one
replica at a time on PostgreSQL.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, bindparam, column, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import TextClause

from cjo_delivery.adapters.tables import messages
from cjo_delivery.domain.messages import MessageStatus
from cjo_platform.db import UtcDateTime
from cjo_platform.db.engine import pg_array
from cjo_platform.db.planning import PLANNED_EACH_RUN
from cjo_platform.db.probes import pg_probes, pg_text

# How often the sender releases held messages whose blockers are gone without releasing them.
ORPHAN_SWEEP = timedelta(seconds=60)

Scope = tuple[str, str, str]  # (workspace, profile, channel)

_PENDING = "('queued', 'deferred', 'sending')"
_HELD = MessageStatus.HELD.value
_SEP = "\x1f"  # between the profile and the channel of a scope's key on SQLite

# Unfinished messages of the queued ones' scopes get ``holds``; answers their scope and whether
# they are transactional. Held ones too: a record committing meanwhile may have released one
# that was held when this statement began (then the probe's snapshot sees no other). Probed
# apart, each by its partial index (ix_messages_pending, ix_messages_held); on PostgreSQL one
# probe per profile (cjo_platform.db.probes), the channel checked on the rows found, and each
# row found updated by its ``ctid`` (the row version the probe read; see :func:`_pg_release`):
# joined back by key with its status checked again, the planner trusted the statistics of
# ``status`` instead, and with those made while few messages were held it hashed every
# unfinished message, or (none held then) scanned them and ran the probes for each (266 s for
# 10 scopes beside 7,500 unfinished).
_PG_HOLD_BEHIND = pg_text(
    "WITH b AS (" + " UNION ALL ".join(
        pg_probes("messages", "t.ctid AS tid",
                  {"profile_id": "profiles", "channel": "channels"}, where=f"t.status {status}")
        for status in (f"IN {_PENDING}", f"= '{MessageStatus.HELD.value}'"))
    + "), u AS (UPDATE messages AS u SET holds = true FROM b WHERE u.ctid = b.tid "
      "RETURNING u.message_id, u.profile_id, u.channel, u.transactional) "
      "SELECT n.found, u.* FROM (SELECT count(*) AS found FROM b) AS n LEFT JOIN u ON true",
    ["profiles", "channels"]).columns(column("found", Integer), messages.c.message_id,
                                      messages.c.profile_id, messages.c.channel,
                                      messages.c.transactional)
# SQLite (no statistics: it took ix_messages_status, a workspace's every held message) is
# told the partial indexes.
_SQLITE_HOLD_BEHIND = text(
    "UPDATE messages SET holds = 1 WHERE rowid IN (" + " UNION ALL ".join(
        f"SELECT rowid FROM messages INDEXED BY {index} WHERE workspace_id = :workspace_id "
        f"AND status {status} AND profile_id IN (SELECT value FROM json_each(:profiles)) "
        "AND profile_id || char(31) || channel IN (SELECT value FROM json_each(:scopes))"
        for index, status in (("ix_messages_pending", f"IN {_PENDING}"),
                              ("ix_messages_held", f"= '{MessageStatus.HELD.value}'")))
    + ") RETURNING message_id, profile_id, channel, transactional").columns(
        messages.c.message_id, messages.c.profile_id, messages.c.channel,
        messages.c.transactional)


def hold_behind(session: Session, workspace_id: str, scopes: Collection[tuple[str, str]],
                leave: Collection[str] = ()) -> list[tuple[str, str, bool]]:
    """Mark the unfinished messages of the workspace's (profile, channel) ``scopes`` as holding
    a later one back (``holds``), locking them until commit; returns (profile, channel,
    transactional) of each but the messages ``leave``. A sender recording one of them
    meanwhile waits for this transaction, then sees ``holds`` changed since its claim."""
    if not scopes:
        return []
    ordered = sorted(set(scopes))
    if session.get_bind().dialect.name == "postgresql":
        parameters = {"workspace_id": workspace_id,
                      "profiles": pg_array([p for p, _ in ordered]),
                      "channels": pg_array([c for _, c in ordered])}
        while True:
            found = session.execute(_PG_HOLD_BEHIND, parameters,
                                    execution_options=PLANNED_EACH_RUN).all()
            rows = [r for r in found if r.message_id is not None]
            # Every row found is marked unless a writer changed it while this statement ran
            # (the ctid found is no longer its current version: EvalPlanQual skips it). Every
            # writer of these scopes' messages that holds their lock committed before this
            # statement began (lock_scopes), but the claim takes a QUEUED message (or a SENDING
            # one whose lease ran out) without it: run again, its probes then see the claim's
            # commit (the message SENDING: marked; final, as erasure leaves it: not found).
            if len(rows) == found[0].found:
                break
    else:
        rows = list(session.execute(_SQLITE_HOLD_BEHIND, {
            "workspace_id": workspace_id,
            "profiles": json.dumps(sorted({p for p, _ in ordered})),
            "scopes": json.dumps([f"{p}{_SEP}{c}" for p, c in ordered])}).all())
    return [(r.profile_id, r.channel, bool(r.transactional)) for r in rows
            if r.message_id not in leave]


# A held message is released when no earlier message of its scope holds it back any more:
# neither an unfinished one (ix_messages_pending) nor a held one (ix_messages_held), a
# transactional one only by transactional ones. It keeps ``holds`` when later ones are held.
_LATER_HELD = (
    "EXISTS (SELECT 1 FROM messages AS l WHERE l.workspace_id = h.workspace_id "
    f"AND l.profile_id = h.profile_id AND l.channel = h.channel AND l.status = '{_HELD}' "
    "AND l.queue_order > h.queue_order)")
_QUEUED = (f"SET status = '{MessageStatus.QUEUED.value}', next_attempt_time = :now, "
           "update_time = :now, holds = ")
_RELEASED = _QUEUED + _LATER_HELD
_FREE = " AND ".join(
    f"NOT EXISTS (SELECT 1 FROM messages AS e WHERE e.workspace_id = h.workspace_id "
    f"AND e.profile_id = h.profile_id AND e.status {status} "
    "AND e.channel = h.channel AND e.queue_order < h.queue_order "
    "AND (e.transactional OR NOT h.transactional))"
    for status in (f"IN {_PENDING}", f"= '{_HELD}'"))
_BINDS = (bindparam("now", type_=UtcDateTime),)


def _pg_release(keys: str, match: str, arrays: list[str]) -> TextClause:
    """PostgreSQL: release the held messages ``h`` that ``match`` one row of ``keys`` and
    nothing holds back, found by a probe per row (LATERAL, OFFSET 0: not flattened into a join)
    and each updated by its ``ctid``, the row version the probe read.

    Joined back by key with their status checked again, as the UPDATE's own rows, the planner
    trusted the statistics of ``status``: made while few messages were held, they rated "status
    = 'held'" a few rows, and a backlog built since (a provider's outage) was scanned or hashed
    whole per call (every held message of every workspace, for a record of one profile's
    message) until the next ANALYZE. A probe's only way in is its key; a row by its ctid, its
    TID. A row a writer changed while this statement ran is not matched by its old ctid
    (EvalPlanQual skips it), which is safe: every writer of a held message holds its scope's
    lock, as this transaction does (lock_scopes) — except erasure, which makes it final."""
    return pg_text(
        f"UPDATE messages AS u {_QUEUED}x.holds FROM {keys} CROSS JOIN LATERAL ("
        f"SELECT h.ctid AS tid, {_LATER_HELD} AS holds FROM messages AS h WHERE {match} "
        f"AND h.status = '{_HELD}' AND {_FREE} OFFSET 0) AS x WHERE u.ctid = x.tid",
        arrays).bindparams(*_BINDS)


_PG_RELEASE = _pg_release(
    "unnest(CAST(:workspaces AS text[]), CAST(:profiles AS text[]), "
    "CAST(:channels AS text[])) AS k(workspace_id, profile_id, channel)",
    "h.workspace_id = k.workspace_id AND h.profile_id = k.profile_id "
    "AND h.channel = k.channel", ["workspaces", "profiles", "channels"])
_SQLITE_RELEASE = text(
    f"UPDATE messages AS h {_RELEASED} WHERE h.status = '{_HELD}' "
    "AND (h.workspace_id, h.profile_id, h.channel) IN (SELECT json_extract(value, '$[0]'), "
    "json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(:scopes)) "
    f"AND {_FREE}").bindparams(*_BINDS, bindparam("scopes", type_=String))

# The sweep: a batch of held messages at a time in ix_messages_held's key order, from where the
# last batch stopped (``after``); each message checked by key, a probe per message, not a scan
# of the unfinished ones. PostgreSQL is given the batch's keys (a range of the index, open or
# not, is estimated as every held message: it hashed every unfinished one); SQLite is told the
# index, for the range from ``after`` to the batch's last key.
_KEY = "h.workspace_id, h.profile_id, h.channel, h.queue_order"
_AFTER = f"({_KEY}) > (:after_workspace, :after_profile, :after_channel, :after_order)"
_UPTO = f"({_KEY}) <= (:last_workspace, :last_profile, :last_channel, :last_order)"
ORPHAN_BATCH = 500

HeldKey = tuple[str, str, str, int]  # (workspace, profile, channel, queue_order)
_START: HeldKey = ("", "", "", -1)  # before every key


def _orphan_statements(dialect: str) -> tuple[Any, Any]:
    """The batch (its messages in key order), and its release."""
    index = " INDEXED BY ix_messages_held" if dialect == "sqlite" else ""
    batch = text(
        f"SELECT h.message_id, {_KEY} FROM messages AS h{index} WHERE h.status = '{_HELD}' "
        f"AND {_AFTER} ORDER BY {_KEY} LIMIT :batch")
    if dialect == "sqlite":
        # Its UPDATE takes no INDEXED BY with an alias: the rowids of the range by the index
        # (the status checked again on each, ``+``: not by an index of every held message).
        update = text(
            f"UPDATE messages AS h {_RELEASED} WHERE h.rowid IN (SELECT h.rowid FROM messages "
            f"AS h{index} WHERE h.status = '{_HELD}' AND {_AFTER} AND {_UPTO}) "
            f"AND +h.status = '{_HELD}' AND {_FREE}")
        return batch, update.bindparams(*_BINDS)
    return batch, _pg_release(
        "unnest(CAST(:workspaces AS text[]), CAST(:message_ids AS text[])) "
        "AS k(workspace_id, message_id)",
        "h.workspace_id = k.workspace_id AND h.message_id = k.message_id",
        ["workspaces", "message_ids"])


_ORPHANS = {dialect: _orphan_statements(dialect) for dialect in ("postgresql", "sqlite")}


# PostgreSQL: one replica sweeps at a time (the others skip: the sweep is a safety net).
_PG_SWEEPER = text(
    "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || 'delivery.orphan_sweep'))")


# PostgreSQL: a transaction's scopes locked until its commit, in one order (of their keys) in
# every transaction, before any of their rows, so no two transactions wait for each other.
# SQLite has one writer: a transaction's first write waits for every other one's commit.
#
# The locks share the server's lock table (max_locks_per_transaction x max_connections slots,
# for every database): a lock per scope cost a transaction recording a batch of one workspace a
# thousand slots, and a dozen such at once filled the table ("out of shared memory", for every
# database on the server). So a scope's lock is one of SCOPE_BUCKETS locks of its workspace
# (the two-int4 form of the advisory lock: the workspace's key and the scope's bucket, apart
# from every one-bigint advisory lock of the suite): a transaction holds at most SCOPE_BUCKETS
# locks per workspace it writes (a big batch of one workspace: all of them, so it waits for
# and holds off that workspace's other writers until its commit), one per scope of a batch
# spread over workspaces, and the same scope is always the same lock. Two writers of different
# scopes of a workspace wait for each other needlessly when their scopes share a bucket (one
# pair in SCOPE_BUCKETS). The locking function runs on the sorted rows (ORDER BY before the
# select list's volatile functions).
_PG_LOCK_SCOPES = text(
    "SELECT pg_advisory_xact_lock(k.workspace, k.bucket) FROM (SELECT DISTINCT "
    "hashtext(current_schema() || 'delivery.held' || chr(31) || w) AS workspace, b AS bucket "
    "FROM unnest(CAST(:workspaces AS text[]), CAST(:buckets AS integer[])) AS s(w, b)) AS k "
    "ORDER BY k.workspace, k.bucket")

# 32: a journey step's or a round's few scopes of a workspace rarely share a lock, and a
# transaction's share of the lock table stays below what PostgreSQL plans for one
# (max_locks_per_transaction, 64 by default) per workspace it writes.
SCOPE_BUCKETS = 32


def scope_bucket(scope: Scope) -> int:
    """Which of its workspace's locks the scope's is (stable across processes and versions:
    every replica must agree)."""
    _, profile, channel = scope
    return zlib.crc32(f"{profile}{_SEP}{channel}".encode()) % SCOPE_BUCKETS


def lock_scopes(session: Session, scopes: Collection[Scope]) -> None:
    """PostgreSQL: wait until no other transaction holds the lock of one of ``scopes``, and hold
    theirs until this transaction ends (:data:`_PG_LOCK_SCOPES`). A transaction that queues or
    records messages of a scope calls it once, for all its scopes, before it writes any of
    their messages (a later call may only name scopes it locked already, as a record after its
    group's lock does: it takes nothing new). Nothing on SQLite."""
    if not scopes or session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({(scope[0], scope_bucket(scope)) for scope in scopes})
    session.execute(_PG_LOCK_SCOPES, {"workspaces": pg_array([w for w, _ in keys]),
                                      "buckets": pg_array([b for _, b in keys])})


def release(session: Session, scopes: Collection[Scope], now: datetime) -> int:
    """Make the held messages of ``scopes`` that nothing holds back any more QUEUED, due at
    ``now``; returns how many. The transaction has locked ``scopes`` (:func:`lock_scopes`)
    before it recorded the outcomes that release them."""
    if not scopes:
        return 0
    ordered = sorted(set(scopes))
    parameters: dict[str, Any] = {"now": now}
    if session.get_bind().dialect.name == "postgresql":
        statement = _PG_RELEASE
        for index, name in enumerate(("workspaces", "profiles", "channels")):
            parameters[name] = pg_array([scope[index] for scope in ordered])
    else:
        statement = _SQLITE_RELEASE
        parameters["scopes"] = json.dumps(ordered)
    # Planned at each run (cjo_platform.db.planning), as are the sweep's and hold_behind's: a
    # plan made while the table was young joined the scopes with every held message.
    return int(session.execute(  # type: ignore[attr-defined]
        statement, parameters, execution_options=PLANNED_EACH_RUN).rowcount)


def release_orphans(session: Session, now: datetime, after: HeldKey | None = None,
                    batch: int | None = None) -> tuple[int, HeldKey | None]:
    """Release the held messages that nothing holds back any more among the next ``batch``
    held ones (``ORPHAN_BATCH``) in key order after ``after`` (from the first when None): the
    safety net, one batch per transaction. Returns how many, and the key to continue after
    (None: the pass reached the end, or another replica is sweeping on PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql" and not session.execute(_PG_SWEEPER).scalar_one():
        return 0, None
    find_batch, update = _ORPHANS[dialect]
    size = batch or ORPHAN_BATCH
    parameters: dict[str, Any] = {"now": now, "batch": size}
    parameters.update(zip(("after_workspace", "after_profile", "after_channel", "after_order"),
                          after or _START, strict=True))
    rows = session.execute(find_batch, parameters).all()
    if not rows:
        return 0, None
    last: HeldKey = (rows[-1][1], rows[-1][2], rows[-1][3], int(rows[-1][4]))
    if dialect == "postgresql":
        # As every writer of a scope's messages: a queueing marking one of them ``holds``
        # meanwhile commits first, and the release then sees it.
        lock_scopes(session, [(r[1], r[2], r[3]) for r in rows])
        parameters = {"now": now, "workspaces": pg_array([r[1] for r in rows]),
                      "message_ids": pg_array([r[0] for r in rows])}
    else:
        parameters.update(zip(("last_workspace", "last_profile", "last_channel", "last_order"),
                              last, strict=True))
    released = int(session.execute(  # type: ignore[attr-defined]
        update, parameters, execution_options=PLANNED_EACH_RUN).rowcount)
    return released, (last if len(rows) == size else None)
