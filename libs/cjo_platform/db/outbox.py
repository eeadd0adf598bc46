"""Transactional outbox: a service writes an event and its outbox row in one local transaction;
a forwarder sends rows in batches and deletes them only after the receiver acknowledged.

Receivers deduplicate by their own ids, so at-least-once forwarding is effectively once. Several
replicas share one outbox: each claims the rows it sends (a lease), so every row is sent by one
of them. A workspace's rows go out in id order, which is the order their transactions inserted
them, not the order they committed: the guarantee a receiver gets is the producer's. Identity
locks a profile's rows before it writes the profile's events, so its events arrive in order
**per profile** (not across the profiles of a workspace); SQLite serializes every write, so
there id order is commit order. A row the receiver refuses for good goes to the dead letters
instead of holding up the rows behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from cjo_platform.backoff import RetryPolicy
from cjo_platform.clock import Clock
from cjo_platform.db.bulk import COPY_THRESHOLD, bulk_insert
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.engine import (
    Database,
    insert_returning_ids,
    keys_param,
    one_of,
    one_of_keys,
)
from cjo_platform.db.types import UtcDateTime
from cjo_platform.ids import claimant_id
from cjo_platform.limits import MAX_CALL_PAYLOAD_BYTES, MAX_WORKSPACE_ID_LENGTH
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import batch_span
from cjo_platform.worker import PollingWorker

log = get_logger(__name__)


def define_outbox(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        # SQLite needs INTEGER PRIMARY KEY for autoincrement; PostgreSQL gets a bigint identity.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("topic", String(64), nullable=False),
        Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("traceparent", String(64), nullable=False, default=""),
        Column("create_time", UtcDateTime, nullable=False),
        # The forwarder replica sending the row, and until when its claim holds; a claim that
        # expired (its replica died) is taken over.
        Column("lease_owner", String(64), nullable=True),
        Column("lease_until", UtcDateTime, nullable=True),
        # Times the receiver refused the row alone (not counting outages), and since when.
        Column("attempts", Integer, nullable=False, default=0, server_default="0"),
        Column("first_failed_time", UtcDateTime, nullable=True),
        Index("ix_outbox_topic", "topic", "id"),
        # Finds the rows in flight (leased) without reading the whole backlog at every claim.
        Index("ix_outbox_lease", "topic", "lease_until"),
    )


Publication = tuple[str, str, Sequence[tuple[bytes, str]]]
"""Rows a unit of work publishes: (topic, workspace_id, [(payload, traceparent), ...])."""


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    workspace_id: str
    payload: bytes
    traceparent: str
    create_time: datetime
    # Times the receiver refused this row alone, and since when (see Forwarder).
    attempts: int = 0
    first_failed_time: datetime | None = None


class Outbox:
    """Writes rows inside a caller's transaction; :class:`Forwarder` drains them.

    :meth:`stage` (what a unit of work calls as it commits, for all its topics at once) hands
    the rows straight to this process's running forwarder of their topic when that keeps their
    order: they are inserted already leased to it, and once the transaction committed the
    forwarder sends them from memory, with no claim transaction (see :class:`Forwarder`,
    "Hand-off")."""

    def __init__(self, table: Table, clock: Clock, dead_letters: DeadLetters | None = None,
                 ) -> None:
        self.table = table
        self.clock = clock
        # Where rows the receiver refused for good go (``None`` only in tests of the outbox).
        self.dead_letters = dead_letters
        self._listeners: dict[str | None, list[Callable[[], None]]] = {}
        # One wake-up per topic (a unit of work registers each once, however many rows).
        self._notifiers: dict[str, Callable[[], None]] = {}
        # The forwarder each topic's rows may be handed to (``None``: several, so none).
        self._takers: dict[str, Forwarder | None] = {}
        # :meth:`stage`'s statements, built once: a statement built per call pays SQLAlchemy's
        # construction and cache key every time, and a multi-row ``insert().values([...])``
        # has no cache key at all, so it was compiled anew at every hand-off (~0.5 ms of
        # the ~0.6 ms a one-row hand-off's insert cost on SQLite).
        c = table.c
        self._foreign_rows: dict[int, Executable] = {}
        # SQLite: executemany with RETURNING goes as one multi-row INSERT ("insertmanyvalues")
        # unless asked for RETURNING in parameter order, which it would send one per row.
        self._insert_ids = insert(table).returning(c.id)
        self._insert_ids_in_order = insert(table).returning(c.id, sort_by_parameter_order=True)

    def add(self, session: Session, topic: str, workspace_id: str,
            payloads: Sequence[tuple[bytes, str]]) -> None:
        """Queue (payload, traceparent) pairs; they are sent after the transaction commits."""
        self._add_rows(session, [(topic, workspace_id, payload, traceparent)
                                 for payload, traceparent in payloads])

    def _add_rows(self, session: Session, rows: Sequence[tuple[str, str, bytes, str]],
                  now: datetime | None = None) -> None:
        """Insert (topic, workspace_id, payload, traceparent) rows, unleased, in one go."""
        if not rows:
            return
        now = now or self.clock.now()
        # Ids follow the order of ``rows``, which is the order the forwarder sends them in.
        bulk_insert(session, self.table, [
            {"topic": topic, "workspace_id": workspace_id, "payload": payload,
             "traceparent": traceparent, "create_time": now}
            for topic, workspace_id, payload, traceparent in rows
        ])

    def stage(self, session: Session, batches: Sequence[Publication]
              ) -> list[tuple[str, Staged | None]]:
        """:meth:`add` the rows of every ``(topic, workspace_id, payloads)``, handing a topic's
        rows to this process's forwarder of it when that forwarder runs and every row of the
        topic in the outbox is one it holds (so none of them is older than these and waiting
        for a claim). Returns, per topic in ``batches``, its :class:`Staged` rows, whose
        :meth:`Staged.committed` the caller must call once the transaction committed (or
        :meth:`Staged.rolled_back` if it did not), or ``None``: its rows wait for a claim as
        :meth:`add` leaves them (call :meth:`notifier` (topic) after commit).

        One unit of work's topics cost two statements in all, however many there are: one
        check for foreign rows and one ``INSERT`` of the handed-off rows (each topic's rows
        in their order: ids increase in ``VALUES`` order)."""
        by_topic: dict[str, list[tuple[str, bytes, str]]] = {}
        for topic, workspace_id, payloads in batches:
            by_topic.setdefault(topic, []).extend(
                (workspace_id, payload, traceparent) for payload, traceparent in payloads)
        now = _utc(self.clock.now())
        # A topic's rows go to its forwarder all or none: rows handed off ahead of the topic's
        # rows left for a claim would overtake them.
        handing: list[tuple[str, Forwarder, int]] = []
        sizes: dict[str, int] = {}
        for topic, rows in by_topic.items():
            taker = self._takers.get(topic)
            if taker is None or not rows or len(rows) > self._handoff_rows(session, taker):
                continue
            sizes[topic] = size = sum(len(payload) for _, payload, _ in rows)
            ticket = taker._ticket(len(rows), size)
            if ticket is not None:
                handing.append((topic, taker, ticket))
        if handing:
            # After the producer's own locks (identity's profile lock): a row of the topic that
            # is not in its forwarder's hands (unleased, another replica's, held for a retry,
            # or a lease that ran out) may be older than ours, so ours must wait behind it.
            params: dict[str, Any] = {"now": now}
            for n, (topic, taker, _) in enumerate(handing):
                params[f"topic_{n}"], params[f"owner_{n}"] = topic, taker.owner
            foreign = session.execute(self._foreign(len(handing)), params).one()
            handing = [h for h, found in zip(handing, foreign, strict=True) if found is None]
        handed = {topic for topic, _, _ in handing}
        self._add_rows(session, [(topic, *row) for topic, rows in by_topic.items()
                                 if topic not in handed for row in rows])
        outcome: dict[str, Staged | None] = dict.fromkeys(by_topic)
        if not handing:
            return list(outcome.items())
        values = []
        for topic, taker, _ in handing:
            until = now + taker.lease
            values += [{"topic": topic, "workspace_id": workspace_id, "payload": payload,
                        "traceparent": traceparent, "create_time": now,
                        "lease_owner": taker.owner, "lease_until": until}
                       for workspace_id, payload, traceparent in by_topic[topic]]
        # Ids in the order of ``values``: each topic's rows keep their order.
        sqlite = session.get_bind().dialect.name == "sqlite"
        inserted = (insert_returning_ids(session, self.table, values)
                    if len(values) >= (BOUND_INSERT_ROWS_SQLITE if sqlite else COPY_THRESHOLD)
                    else None)
        if inserted is not None:
            ids = iter(inserted)
        elif sqlite:
            # Its rows get increasing ids in VALUES order (the writer holds SQLite's write
            # lock: each new row takes the largest id + 1), whatever order RETURNING lists
            # them in.
            ids = iter(sorted(session.execute(self._insert_ids, values).scalars()))
        else:
            ids = iter(session.execute(self._insert_ids_in_order, values).scalars())
        for topic, taker, ticket in handing:
            handed_rows = [OutboxRow(next(ids), topic, workspace_id, payload, traceparent, now)
                           for workspace_id, payload, traceparent in by_topic[topic]]
            taker._reserve(handed_rows, sizes[topic])
            outcome[topic] = Staged(taker, ticket, handed_rows, now + taker.lease, sizes[topic])
        return list(outcome.items())

    def _foreign(self, topics: int) -> Executable:
        """Per topic (``topic_<n>`` and its forwarder ``owner_<n>``), a row of it not in that
        forwarder's hands, or NULL: one statement for all, built once per number of topics."""
        found = self._foreign_rows.get(topics)
        if found is None:
            c = self.table.c
            found = self._foreign_rows[topics] = select(*(
                select(c.id).where(
                    c.topic == bindparam(f"topic_{n}"),
                    or_(c.lease_owner.is_(None), c.lease_owner != bindparam(f"owner_{n}"),
                        c.lease_until.is_(None), c.lease_until <= bindparam("now")))
                .limit(1).scalar_subquery()
                for n in range(topics)))
        return found

    @staticmethod
    def _handoff_rows(session: Session, taker: Forwarder) -> int:
        # Up to what the forwarder's queue takes (``hand_off_batches``; it sends them in
        # calls of at most a batch). A unit of work of more than a batch (a step round's or a
        # 1,000-event HandleEvents' facts) used to wait for claims: an unleased INSERT, then a
        # claim's transaction that reads every payload back (SELECT, UPDATE ... RETURNING) and
        # a DELETE, where a hand-off costs its leased INSERT and a lazy DELETE. (On PostgreSQL
        # the unnest INSERT costs ~5 us per row, as COPY does.)
        return taker.hand_off_rows

    def on_write(self, listener: Callable[[], None], topic: str | None = None) -> None:
        """Call ``listener`` when rows are written (of ``topic`` only, when given)."""
        self._listeners.setdefault(topic, []).append(listener)

    def notify(self) -> None:
        """Call after committing rows so forwarders wake at once instead of at the next poll."""
        for listeners in list(self._listeners.values()):
            for listener in listeners:
                listener()

    def notifier(self, topic: str) -> Callable[[], None]:
        """:meth:`notify` for the forwarders of ``topic`` only (one callable per topic)."""
        found = self._notifiers.get(topic)
        if found is None:
            def found() -> None:
                for listener in (*self._listeners.get(topic, ()), *self._listeners.get(None, ())):
                    listener()
            self._notifiers[topic] = found
        return found

    def _take_rows_of(self, forwarder: Forwarder) -> None:
        topic = forwarder.topic
        self._takers[topic] = None if topic in self._takers else forwarder


@dataclass(frozen=True)
class Staged:
    """Rows :meth:`Outbox.stage` inserted leased to a forwarder, to hand over once committed."""

    forwarder: Forwarder
    ticket: int
    rows: Sequence[OutboxRow]
    until: datetime
    size: int  # the rows' payload bytes

    def committed(self) -> None:
        self.forwarder._handed(self)

    def rolled_back(self) -> None:
        self.forwarder._unreserve(self.rows, self.size)


@dataclass(frozen=True)
class Refusal:
    """The receiver's answer for one row it did not take. ``transient`` errors (the receiver is
    busy) are retried later; the others mean the row itself is at fault, for certain when
    ``certain`` (the receiver said what is wrong with it), otherwise (INTERNAL, UNKNOWN) only when
    the receiver took other rows of the same call."""

    row: OutboxRow
    error: str
    transient: bool = False
    certain: bool = True


SendBatch = Callable[[str, Sequence[OutboxRow]], Awaitable[Sequence[Refusal] | None]]

TRACED_CALL = "cjo_traced_call"


def traced_call(send: SendBatch) -> SendBatch:
    """Mark ``send`` as one RPC in a client span of its own (what
    :func:`cjo_platform.forwarding.peer_sender` makes): a forwarder's rows of one trace are then
    sent in that trace's context, the call's client span the hop's only span (an
    ``outbox.forward <topic>`` span around it would last as long and tell nothing more); rows of
    several traces still go in an ``outbox.forward`` span of its own trace linking theirs."""
    setattr(send, TRACED_CALL, True)
    return send
"""A forwarder's ``send(workspace_id, rows)``: returns the rows the receiver refused (``None`` or
empty when it took them all); raises :class:`Undeliverable` when the receiver refused the call
as a whole for a reason that repeating the same call cannot change, :class:`Later` when it asked
for the call again later (only this workspace's rows wait), and anything else when the receiver
could not be reached at all (the round stops; every row is kept and retried with backoff)."""


class Undeliverable(Exception):
    """The receiver refused a whole call for good: one of its rows is probably at fault, so the
    forwarder splits the call to find it. ``certain``: the receiver said the request is bad
    (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, or it cannot even be built); otherwise
    (INTERNAL, UNKNOWN) it failed without saying why, and a row is blamed only when it failed
    alone while its neighbours were taken in the same round."""

    def __init__(self, message: str = "", *, certain: bool = True) -> None:
        super().__init__(message)
        self.certain = certain


class Later(Exception):
    """The receiver asked for the call again later (busy, out of time, a problem of the
    deployment): this workspace's rows wait with backoff while the other workspaces go on.
    ``split``: a smaller call may pass (the call was too large or too slow), so a call of several
    rows is split in halves first."""

    def __init__(self, message: str = "", *, split: bool = False) -> None:
        super().__init__(message)
        self.split = split


class _TakenOver(Exception):
    """Rows of the round were taken over by another forwarder: the round ends without sending
    them (see "Taken over" in :class:`Forwarder`)."""


@dataclass(frozen=True)
class _Stop:
    """Why delivering a workspace's rows stopped at a row: refused alone (``later``: asked for
    again later, not the row's fault), and whether that refusal can be blamed on the row."""

    error: str
    later: bool = False
    certain: bool = True


ROW_RETRY = RetryPolicy(max_delay=timedelta(seconds=60))
"""How long a workspace's rows wait after the receiver refused the first of them alone."""

MAX_CLAIM_BYTES = 4 * MAX_CALL_PAYLOAD_BYTES
"""Payload bytes one round claims at most (at least one row): a backlog of large rows is sent a
few megabytes at a time, never loaded or sent whole."""


SETTLE_DELAY_SECONDS = 0.25
"""How long delivered rows may wait to be deleted (by the next claim's transaction, for all the
rows delivered meanwhile): a crash in between re-sends them, and receivers deduplicate."""

BOUND_INSERT_ROWS_SQLITE = 3
"""From this many rows a hand-off's INSERT goes bound a column at a time
(:func:`~cjo_platform.db.engine.insert_returning_ids`; on PostgreSQL from ``COPY_THRESHOLD``):
SQLAlchemy's executemany builds and processes a parameter dict per row (SQLite ~10-12 us per
row against ~5; PostgreSQL ~30 against ~5), but its compiled statement costs less for one or two
rows (SQLite ~48 us against ~70 for one row; PostgreSQL ~130 against ~280)."""

HANDOFF_QUEUE_ROWS = 4
"""Rows handed to a forwarder wait in memory up to this many batches unless it is given another
bound (``hand_off_batches``: the facts' forwarders, whose rows are small); past that, new rows
wait in the outbox for a claim (a slow receiver keeps its backlog in the database)."""

HANDOFF_QUEUE_BYTES = 8 * 1024 * 1024
"""Payload bytes the hand-off queue holds at most, beside its bound in rows (``hand_off_bytes``):
past it, a unit of work's rows wait for a claim too. The rows a round is sending were taken from
the queue, so a forwarder holds at most twice as many in memory (in flight plus queued; a claimed
batch at most ``max_claim_bytes``)."""


class Forwarder(PollingWorker):
    """Sends one topic's outbox rows to a receiver, oldest first, in batches.

    **Claims.** A round claims up to ``batch_size`` rows and ``max_claim_bytes`` of payload (at
    least one row) in a short transaction: it leases them (``lease_owner``, ``lease_until``) for
    ``lease``, then sends and deletes them. Another replica's claim skips leased rows and every
    workspace that has rows in flight, so each row is sent by one replica and a workspace's rows
    stay in order. On PostgreSQL the claims of one topic are serialized by a transaction-scoped
    advisory lock (each sees the leases the others committed) and rows are locked with
    ``FOR UPDATE SKIP LOCKED``; a lease that ran out (its replica died) is taken over, and only
    the holder of a row's lease deletes or dead-letters it. Leases compare each replica's own
    clock with the times other replicas wrote: replicas' clocks must agree well within the lease
    (NTP; see docs/operations.md). A claim keeps a workspace only when it holds the workspace's
    oldest rows, without gaps.

    **Order** is the order of the rows' ids, which is the order their transactions inserted
    them: a producer that serializes its writes for a key (identity locks the profile row before
    it writes an event) gets that key's rows in commit order; two transactions that insert rows
    of one workspace concurrently may commit in the other order than their ids.

    **One bad row never blocks the others.** Rows of one workspace go in calls of at most
    ``max_call_bytes`` of payload (the receiver acts on behalf of that workspace). Rows the
    receiver refused one by one go to the dead letters. A call refused as a whole for good
    (:class:`Undeliverable`) is split in halves, in order, down to the single row at fault: the
    rows before it are delivered; it and the rows behind it wait ``retry`` (growing with each
    refusal) while other workspaces go on; after ``max_attempts`` refusals it goes to the dead
    letters, provided the receiver took a neighbour of it in the same round (the rows before it,
    or the next row sent alone as a probe) or, for a refusal that names the request's fault
    (INVALID_ARGUMENT and the like), any call since it first failed. A call the receiver wants
    later (:class:`Later`: busy, out of time, too large) holds only its workspace's rows, with
    backoff, counting no refusal; a call too large or too slow is split first. Only a receiver
    that cannot be reached at all (any other error) stops the round: every row not delivered
    yet is kept, and the round is retried with backoff (rows an earlier call of the round
    delivered wait for their delete, they are not sent again).

    **Hand-off.** A unit of work's rows (:meth:`Outbox.stage`) skip the claim when this
    forwarder runs in the writer's process and every row of the topic in the outbox is in its
    hands (in flight, queued, or delivered and not yet deleted), checked in the writer's
    transaction after the producer's locks: they are inserted leased to it, and once committed
    they are sent from memory, in id order, after what this forwarder is sending, in calls of
    at most ``batch_size`` rows (a unit of work may hand off up to ``hand_off_batches``
    batches, ``HANDOFF_QUEUE_ROWS`` unless given, and ``hand_off_bytes`` of payload; the queue
    holds as many, and the round in flight as many again). Otherwise
    (another replica's rows, rows waiting for a claim or held for a retry, a unit of work larger
    than that, a queue already that full) they wait unleased for a claim, as before. Rows the
    forwarder holds or releases (a refusal, an unreachable receiver) end every hand-off then
    under way: those rows are released for a claim, so no row overtakes one held. A process
    that dies leaves its handed-off rows leased: another replica (or the process restarted)
    takes them over once the lease ran out, as a claimed batch.

    **Settling** handed-off rows is lazy: once delivered they are deleted by the next claim's
    transaction, which comes after the round that delivered them (a round sends the whole
    queue) and, when that round delivered less than a batch, at the latest ``settle_delay``
    seconds after the first of them, so a stream of single rows costs no transaction per row
    (a claimed batch is deleted at once, which frees its workspaces for the other replicas).
    A crash in between re-sends them (receivers deduplicate). That claim also takes the rows a
    claim skipped while their workspace was in flight here (another replica's, or rows written
    behind a held one).

    **Linger** (Kafka's ``linger.ms``), for topics nobody waits on (facts): with ``linger``
    seconds, a round waits up to that long after the first row became ready (handed off, or
    announced for a claim by a write) so the rows of several units of work go in one call per
    workspace; it goes at once when a batch is full, and a round that follows a full or cut
    claim does not wait. Order, leases and replicas are as without it: lingering rows are queued
    hand-offs (released at stop, left leased by a crash) or rows not claimed yet.

    **Taken over.** A forwarder paused past its lease (a GC pause, CPU starvation) may find its
    rows taken over by another replica, which sends them. The renewal of its leases (when a
    call finds less than half the lease left) reads back which rows are still its own: those
    that are not are dropped from memory (in flight, queued or delivered), and when any of them
    was still to be sent the round ends there, releasing the rest for a claim as a refusal
    would (rows of a workspace taken over must not be overtaken by its later rows): only the
    call under way when it paused, and what it had delivered but not deleted yet, are sent by
    both.

    Nothing is deleted before the receiver acknowledged, so a crash at any point re-sends (after
    its lease ran out) at most the batch in flight and the handed-off rows delivered but not yet
    deleted: those of the round under way, deleted together after it (up to the whole queue,
    ``hand_off_batches`` batches), and under a batch delivered less than ``settle_delay``
    seconds before it.
    """

    def __init__(self, db: Database, outbox: Outbox, topic: str, send: SendBatch, *,
                 batch_size: int = 500, poll_interval: float = 1.0,
                 max_backoff: float = 30.0, lease: timedelta = timedelta(seconds=60),
                 max_attempts: int = 5,
                 retry: RetryPolicy = ROW_RETRY,
                 item_key: Callable[[OutboxRow], str] | None = None,
                 owner: str | None = None,
                 max_call_bytes: int = MAX_CALL_PAYLOAD_BYTES,
                 max_claim_bytes: int = MAX_CLAIM_BYTES,
                 settle_delay: float = SETTLE_DELAY_SECONDS,
                 hand_off: bool = True,
                 hand_off_batches: int = HANDOFF_QUEUE_ROWS,
                 hand_off_bytes: int = HANDOFF_QUEUE_BYTES,
                 linger: float = 0.0) -> None:
        super().__init__(poll_interval, max_backoff)
        if outbox.dead_letters is None:
            raise ValueError("a forwarder needs the outbox's dead letters")
        self.name = f"outbox:{topic}"
        self.db = db
        self.outbox = outbox
        # Statements of every round, built once (see Outbox.stage): whether any row of the
        # topic waits (an idle poll), and the delete of the delivered rows this one still holds.
        table = outbox.table
        dialect = "sqlite" if db.is_sqlite else "postgresql"
        self._dialect = dialect
        self._any_row = select(table.c.id).where(table.c.topic == topic).limit(1)
        self._delete_held = (delete(table)
                             .where(one_of_keys(dialect, table.c.id),
                                    table.c.lease_owner == bindparam("owner"))
                             .returning(table.c.id))
        self.dead_letters: DeadLetters = outbox.dead_letters
        self.topic = topic
        self.send = send
        # A send that is one traced call (its client span the hop: see traced_call) needs no
        # span of the forwarder's around it unless the rows come from several traces.
        self._send_is_call = bool(getattr(send, TRACED_CALL, False))
        self.batch_size = batch_size
        # The most rows the hand-off queue holds (queued, and inserted by writers not committed
        # yet): a unit of work that would take it past this goes by claims, and so do the units
        # after it until the claims caught up.
        self.hand_off_rows = hand_off_batches * batch_size
        self.hand_off_bytes = hand_off_bytes
        self.lease = lease
        self.max_attempts = max_attempts
        self.retry = retry
        self.item_key = item_key or (lambda row: "")
        self.max_call_bytes = max_call_bytes
        self.max_claim_bytes = max_claim_bytes
        # Workspaces whose rows the receiver asked for later, and how many times in a row.
        self._later: dict[str, int] = {}
        self._cut = False
        # Unique per forwarder object: two forwarders of one process are two claimants.
        self.owner = owner or claimant_id()
        self._last_success: datetime | None = None
        self._lease_until: datetime | None = None
        # Rows of the current round still being sent (their leases are renewed if it runs long).
        self._sending: set[int] = set()
        self.settle_delay = settle_delay
        # Delivered rows not deleted yet, and since when (loop time).
        self._unsettled: list[int] = []
        self._unsettled_since: float | None = None
        # A write left rows for a claim (a hand-off needs none).
        self._claim_due = True
        # Whether this round's rows were handed off (deleted lazily). A claimed batch is deleted
        # at once: its rows' workspaces are then free for the other replicas' claims.
        self._lazy = False
        # The hand-off (Outbox.stage), shared with the writers' threads under _lock. _epoch is
        # odd while rows are being held or released: a hand-off whose ticket (the epoch read
        # before its writer checked the outbox) is not the current epoch is released instead.
        self._lock = threading.Lock()
        self._epoch = 0
        self._running = False
        self._queue: list[tuple[OutboxRow, datetime]] = []
        self._reserved: set[int] = set()
        # Payload bytes queued and reserved (the byte bound's counts of the two above).
        self._queued_bytes = 0
        self._reserved_bytes = 0
        self._orphans: list[int] = []
        # See "Linger": since when (monotonic) rows wait to be sent (``None``: none waits), and
        # whether the next round goes at once (more is waiting after a full or cut claim).
        self.linger = linger
        self._linger_since: float | None = None
        self._linger_ended = False
        self._urgent = False
        outbox.on_write(self._written, topic)
        if hand_off:
            outbox._take_rows_of(self)

    @property
    def clock(self) -> Clock:
        return self.outbox.clock

    # --- the database side (runs in the database's thread pool) ------------------------------

    def _claim(self, settled: Sequence[int] = ()) -> list[OutboxRow]:
        table = self.outbox.table
        now = self.clock.now()
        with self.db.transaction() as session:
            self._delete_settled(session, settled)
            mine = table.c.topic == self.topic
            # An idle poll reads one index entry and takes no lock: the claim's lock (SQLite's
            # write lock, or the advisory lock) would hold back the writers for nothing.
            if session.execute(self._any_row).first() is None:
                self._cut = False
                return []
            postgres = session.get_bind().dialect.name == "postgresql"
            if postgres:
                session.execute(text(
                    "SELECT pg_advisory_xact_lock(hashtext(current_schema() || :key))"),
                    {"key": f":outbox:{self.topic}"})
            else:
                # SQLite: take the write lock first (an update of no row), so a claim of another
                # process waits for this one instead of failing on a stale read.
                session.execute(update(table).where(false()).values(lease_owner=None))
            leased = and_(table.c.lease_until.is_not(None), table.c.lease_until > now)
            in_flight = select(table.c.workspace_id).where(mine, leased).distinct()
            query = (select(table.c.id, table.c.workspace_id,
                            func.length(table.c.payload).label("size"))
                     .where(mine, not_(leased), table.c.workspace_id.not_in(in_flight))
                     .order_by(table.c.id).limit(self.batch_size))
            if postgres:
                query = query.with_for_update(skip_locked=True)
            found = session.execute(query).all()
            rows = _within(found, self.max_claim_bytes)
            # Cut short by bytes: there is more to send at once.
            self._cut = len(rows) < len(found)
            if not rows:
                return []
            kept = [row[0] for row in rows]  # the ids (by position: cheaper than by name)
            if postgres:
                # Keep a workspace only when the claim holds all its rows up to the last one
                # claimed: a row skipped because another transaction had it locked would
                # otherwise be overtaken by the rows behind it. (SQLite skips no row: the claim
                # holds the write lock, and a workspace with a leased row is left out whole.)
                claimed: dict[str, int] = {}
                for row in rows:
                    claimed[row.workspace_id] = claimed.get(row.workspace_id, 0) + 1
                last = rows[-1].id
                counts: dict[str, int] = {
                    workspace: int(count) for workspace, count in session.execute(
                        select(table.c.workspace_id, func.count())
                        .where(mine, table.c.workspace_id.in_(sorted(claimed)),
                               table.c.id <= last)
                        .group_by(table.c.workspace_id))}
                kept = [row.id for row in rows
                        if counts.get(row.workspace_id) == claimed[row.workspace_id]]
            if not kept:
                return []
            until = now + self.lease
            # Leased and read in one statement (what a row is made of; the topic is ours).
            full = sorted(session.execute(
                update(table).where(one_of(session, table.c.id, kept))
                .values(lease_owner=self.owner, lease_until=until)
                .returning(table.c.id, table.c.workspace_id, table.c.payload,
                           table.c.traceparent, table.c.create_time, table.c.attempts,
                           table.c.first_failed_time)).all(), key=itemgetter(0))
            with self._lock:
                # Rows queued before this claim were leased at their hand-off (or last
                # renewal): renewed by theirs when earlier, or they lapse while this round runs
                # and another replica takes them (review rrenew).
                self._lease_until = min([until, *(held for _, held in self._queue)])
            self._sending = set(kept)
        topic = self.topic
        return [OutboxRow(row_id, topic, workspace_id, payload, traceparent, create_time,
                          attempts, failed)
                for row_id, workspace_id, payload, traceparent, create_time, attempts, failed
                in full]

    def _renew(self) -> set[int]:
        """Extend the leases of the rows this round is still sending, of those delivered but
        not deleted yet and of those handed off meanwhile (a long round must not lose them; rows
        held for a later retry keep their time). Returns those of them that are no longer this
        forwarder's (see "Taken over")."""
        table = self.outbox.table
        until = self.clock.now() + self.lease
        with self._lock:
            # Rows handed off since the round began wait for the next one: theirs too.
            queued = [row.id for row, _ in self._queue]
        ids = sorted({*self._sending, *self._unsettled, *queued})
        with self.db.transaction() as session:
            renewed = set(session.execute(
                update(table).where(one_of(session, table.c.id, ids),
                                    table.c.lease_owner == self.owner)
                .values(lease_until=until).returning(table.c.id)).scalars())
        self._lease_until = until
        with self._lock:  # the queued rows' own leases, for the next claim's renewal time
            self._set_queue([(row, until if row.id in renewed else held)
                             for row, held in self._queue])
        return set(ids) - renewed if len(renewed) < len(ids) else set()

    def _forget(self, lost: set[int]) -> bool:
        """Drop from memory rows this forwarder no longer holds (another replica took them
        over, and may have delivered and deleted them); returns whether any was still to be
        sent (in flight or queued). A row this forwarder settled or held is in none of these,
        so only a takeover makes them disagree with the table."""
        unsent = not lost.isdisjoint(self._sending)
        self._sending.difference_update(lost)
        self._unsettled = [row_id for row_id in self._unsettled if row_id not in lost]
        if not self._unsettled:
            self._unsettled_since = None
        with self._lock:
            kept = [item for item in self._queue if item[0].id not in lost]
            if len(kept) < len(self._queue):
                unsent = True
                self._set_queue(kept)
        log.warning("outbox rows were taken over by another forwarder (their lease ran out "
                    "here: this process paused, or a call outlasted it); not sending them "
                    "again", worker=self.name,
                    rows=len(lost), unsent=unsent)
        return unsent

    def _delete_settled(self, session: Session, settled: Sequence[int]) -> set[int]:
        """Delete delivered rows this forwarder still holds; returns those it deleted."""
        if not settled:
            return set()
        held = set(session.execute(self._delete_held, {
            "keys": keys_param(self._dialect, settled), "owner": self.owner}).scalars())
        if len(held) < len(settled):
            log.warning("outbox rows were taken over by another forwarder before this one "
                        "settled them", worker=self.name,
                        outbox_ids=sorted(set(settled) - held))
        return held

    def _flush(self, settled: Sequence[int]) -> None:
        with self.db.transaction() as session:
            self._delete_settled(session, settled)

    def _settle(self, delivered: Sequence[int], dead: Sequence[tuple[OutboxRow, str, int]],
                ) -> None:
        """Delete delivered rows; move ``(row, error, attempts)`` to the dead letters. Only rows
        this forwarder still holds: a row another replica took over (this one's lease ran out)
        is that replica's to settle, so it is never dead-lettered twice."""
        with self.db.transaction() as session:
            gone = [*delivered, *(row.id for row, _, _ in dead)]
            self._sending.difference_update(gone)
            held = self._delete_settled(session, gone)
            for row, error, attempts in dead:
                if row.id not in held:
                    continue
                self.dead_letters.add(
                    session, workspace_id=row.workspace_id, source=self.name,
                    item_key=_key(self.item_key, row), payload=row.payload, error=error,
                    traceparent=row.traceparent, attempts=attempts,
                    first_failed_time=row.first_failed_time)

    def _hold(self, rows: Sequence[OutboxRow], until: datetime | None,
              refused: OutboxRow | None = None) -> None:
        """Keep ``rows`` (claimed by this forwarder) for later: leased until ``until`` (``None``:
        released for the next claim), counting one more refusal of ``refused``. Rows handed
        off meanwhile are released too (they may be behind ``rows``), and so is every hand-off
        under way."""
        table = self.outbox.table
        now = self.clock.now()
        self._sending.difference_update(r.id for r in rows)
        with self._lock:
            self._epoch += 1
            released = [*self._orphans, *(row.id for row, _ in self._queue)]
            self._orphans = []
            self._set_queue([])
        try:
            with self.db.transaction() as session:
                if refused is not None:
                    session.execute(update(table).where(table.c.id == refused.id,
                                                        table.c.lease_owner == self.owner)
                                    .values(attempts=refused.attempts + 1,
                                            first_failed_time=refused.first_failed_time or now))
                if rows:
                    # No owner: a held row is in no forwarder's hands, so no writer hands
                    # rows off past it; the lease alone keeps claims away until ``until``.
                    session.execute(
                        update(table).where(one_of(session, table.c.id, [r.id for r in rows]),
                                            table.c.lease_owner == self.owner)
                        .values(lease_until=until, lease_owner=None))
                self._release(session, released)
        except BaseException:
            with self._lock:
                self._orphans.extend(released)
            raise
        finally:
            with self._lock:
                self._epoch += 1
        if released:
            self._claim_due = True

    def _release(self, session: Session, ids: Sequence[int]) -> None:
        if ids:
            table = self.outbox.table
            session.execute(update(table).where(one_of(session, table.c.id, sorted(ids)),
                                                table.c.lease_owner == self.owner)
                            .values(lease_until=None, lease_owner=None))

    def _release_orphans(self) -> None:
        """Release rows handed off too late (after a hold): a claim sends them."""
        with self._lock:
            orphans, self._orphans = self._orphans, []
        try:
            with self.db.transaction() as session:
                self._release(session, orphans)
        except BaseException:
            with self._lock:
                self._orphans.extend(orphans)
            raise
        self._claim_due = True

    # --- the hand-off (writers' threads) ------------------------------------------------------

    def _ticket(self, rows: int, size: int) -> int | None:
        """The epoch a writer's hand-off of ``rows`` rows of ``size`` payload bytes must still
        find, or ``None``: no hand-off now. The queue's bounds count the rows (and bytes)
        queued, those of writers not committed yet and these."""
        with self._lock:
            if (not self._running or self._epoch % 2
                    or len(self._queue) + len(self._reserved) + rows > self.hand_off_rows
                    or self._queued_bytes + self._reserved_bytes + size > self.hand_off_bytes):
                return None
            return self._epoch

    def _reserve(self, rows: Sequence[OutboxRow], size: int) -> None:
        # Rows inserted but not committed yet: rows handed off behind them (a later id) wait,
        # since a concurrent writer's rows may commit before them (PostgreSQL).
        with self._lock:
            self._reserved.update(row.id for row in rows)
            self._reserved_bytes += size

    def _unreserve(self, rows: Sequence[OutboxRow], size: int) -> None:
        with self._lock:
            self._reserved.difference_update(row.id for row in rows)
            self._reserved_bytes -= size
        self.wake()

    def _handed(self, staged: Staged) -> None:
        with self._lock:
            self._reserved.difference_update(row.id for row in staged.rows)
            self._reserved_bytes -= staged.size
            if staged.ticket == self._epoch and self._running:
                self._queue.extend((row, staged.until) for row in staged.rows)
                self._queued_bytes += staged.size
                if self._linger_since is None:
                    self._linger_since = time.monotonic()
            else:
                self._orphans.extend(row.id for row in staged.rows)
        self.wake()

    def _take_handed(self) -> tuple[list[OutboxRow], datetime | None]:
        """The rows handed off that may go now, in id order, and when their leases end."""
        with self._lock:
            if not self._queue:
                return [], None
            low = min(self._reserved, default=None)
            ready = [item for item in self._queue if low is None or item[0].id < low]
            if len(ready) < len(self._queue):
                self._set_queue([item for item in self._queue if low is not None
                                 and item[0].id >= low])
            else:
                self._set_queue([])
        if not ready:
            return [], None
        ready.sort(key=lambda item: item[0].id)
        return [row for row, _ in ready], min(until for _, until in ready)

    def _set_queue(self, items: list[tuple[OutboxRow, datetime]]) -> None:
        """Replace the queue (under ``_lock``), and its count of bytes."""
        self._queue = items
        self._queued_bytes = sum(len(row.payload) for row, _ in items)

    def _written(self) -> None:
        self._claim_due = True
        with self._lock:
            if self._linger_since is None:
                self._linger_since = time.monotonic()
        self.wake()

    def _lingering(self) -> float:
        """Seconds the rows ready now may still wait for others (0: send them now)."""
        if self.linger <= 0 or self._urgent:
            return 0.0
        with self._lock:
            if self._linger_since is None:
                return 0.0
            left = self._linger_since + self.linger - time.monotonic()
            if left <= 0:
                return 0.0
            low = min(self._reserved, default=None)
            ready = sum(1 for row, _ in self._queue if low is None or row.id < low)
            return 0.0 if ready >= self.batch_size else left

    # --- sending ------------------------------------------------------------------------------

    async def _call(self, workspace_id: str, rows: Sequence[OutboxRow]) -> Sequence[Refusal]:
        if self._lease_until is not None and \
                self._lease_until - self.clock.now() < self.lease / 2:
            lost = await self.db.run(self._renew)
            if lost and self._forget(lost):
                raise _TakenOver
        with batch_span(f"outbox.forward {self.topic}", [r.traceparent for r in rows],
                        only_to_link=self._send_is_call):
            refused = await self.send(workspace_id, rows)
        self._last_success = self.clock.now()
        return refused or ()

    async def _deliver(self, workspace_id: str, rows: Sequence[OutboxRow],
                       ) -> tuple[int, _Stop | None]:
        """Deliver the longest leading run of ``rows`` the receiver takes, in calls of at most
        ``max_call_bytes``; returns how many rows are done (delivered or dead-lettered) and,
        when it stopped early, why it stopped at the next row. Raises when the receiver is
        unreachable."""
        done = 0
        for part in _parts(rows, self.max_call_bytes, self.batch_size):
            taken, stop = await self._deliver_call(workspace_id, part)
            done += taken
            if stop is not None:
                return done, stop
        return done, None

    async def _halves(self, workspace_id: str, rows: Sequence[OutboxRow],
                      ) -> tuple[int, _Stop | None]:
        half = len(rows) // 2
        done, stop = await self._deliver_call(workspace_id, rows[:half])
        if stop is not None:
            return done, stop
        more, stop = await self._deliver_call(workspace_id, rows[half:])
        return half + more, stop

    async def _deliver_call(self, workspace_id: str, rows: Sequence[OutboxRow],
                            ) -> tuple[int, _Stop | None]:
        try:
            refused = await self._call(workspace_id, rows)
        except Undeliverable as exc:
            if len(rows) == 1:
                return 0, _Stop(str(exc) or repr(exc), certain=exc.certain)
            return await self._halves(workspace_id, rows)
        except Later as exc:
            if exc.split and len(rows) > 1:
                return await self._halves(workspace_id, rows)
            return 0, _Stop(str(exc) or repr(exc), later=True)
        by_id = {r.row.id: r for r in refused}
        # A refusal that is not certainly the row's fault (INTERNAL, UNKNOWN) is blamed on it
        # only when the receiver took other rows of the same call.
        others_taken = len(by_id) < len(rows)

        def holds(row: OutboxRow) -> bool:
            refusal = by_id.get(row.id)
            return refusal is not None and (
                refusal.transient or (not refusal.certain and not others_taken))

        # A row the receiver wants again later holds itself and the rows behind it.
        stop = next((i for i, row in enumerate(rows) if holds(row)), len(rows))
        taken = rows[:stop]
        dead = [(row, by_id[row.id].error, row.attempts + 1) for row in taken if row.id in by_id]
        delivered = [row.id for row in taken if row.id not in by_id]
        if dead or (delivered and not self._lazy):
            await self.db.run(self._settle, delivered, dead)
        elif delivered:
            # Deleted later, with others (see "Settling").
            self._sending.difference_update(delivered)
            self._unsettled.extend(delivered)
            if self._unsettled_since is None:
                self._unsettled_since = time.monotonic()
        for row, error, _ in dead:
            log.error("receiver refused an outbox row; moved to the dead letters",
                      worker=self.name, outbox_id=row.id, workspace=workspace_id, error=error)
        if stop < len(rows):
            return stop, _Stop(by_id[rows[stop].id].error, later=True)
        return len(rows), None

    def _proven(self, row: OutboxRow) -> bool:
        """Did the receiver take a call since ``row`` was first refused (so it works and the
        row is at fault)?"""
        return (self._last_success is not None and row.first_failed_time is not None
                and self._last_success >= row.first_failed_time)

    async def _forward(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        """Send one workspace's rows; returns the rows left for later (empty when done)."""
        pending = list(rows)
        # Whether a row of this workspace was taken in this round (a neighbour of a row that
        # fails without saying why, which proves the receiver works).
        neighbour_taken = False
        while pending:
            done, stop = await self._deliver(workspace_id, pending)
            neighbour_taken = neighbour_taken or done > 0
            pending = pending[done:]
            if stop is None:
                self._later.pop(workspace_id, None)
                return []
            now = self.clock.now()
            if stop.later:
                # Not the row's fault: hold this workspace only, with backoff, counting nothing.
                self._later[workspace_id] = waits = self._later.get(workspace_id, 0) + 1
                log.warning("receiver asked for an outbox row later; its workspace waits",
                            worker=self.name, outbox_id=pending[0].id, workspace=workspace_id,
                            error=stop.error)
                await self.db.run(self._hold, pending, now + self.retry.delay(waits))
                return pending
            self._later.pop(workspace_id, None)
            error = stop.error
            culprit, behind = pending[0], pending[1:]
            if culprit.first_failed_time is None:
                culprit = replace(culprit, first_failed_time=now)
            attempts = culprit.attempts + 1
            if attempts >= self.max_attempts:
                # Certain refusals: the receiver took any call since; otherwise only a
                # neighbour taken in this round proves the receiver works.
                if neighbour_taken or (stop.certain and self._proven(culprit)):
                    await self.db.run(self._settle, [], [(culprit, error, attempts)])
                    self._gave_up(culprit, error)
                    pending = behind
                    continue
                if behind:
                    # Is the receiver refusing everything, or only this row? Ask with the next.
                    probed, _ = await self._deliver(workspace_id, behind[:1])
                    if probed:
                        await self.db.run(self._settle, [], [(culprit, error, attempts)])
                        self._gave_up(culprit, error)
                        neighbour_taken = True
                        pending = behind[1:]
                        continue
            log.warning("receiver refused an outbox row; retrying it later", worker=self.name,
                        outbox_id=culprit.id, workspace=workspace_id, attempts=attempts,
                        error=error)
            until = now + self.retry.delay(attempts)
            await self.db.run(self._hold, pending, until, replace(culprit, attempts=attempts - 1))
            return pending
        return []

    def _gave_up(self, row: OutboxRow, error: str) -> None:
        log.error("receiver kept refusing an outbox row; moved to the dead letters",
                  worker=self.name, outbox_id=row.id, workspace=row.workspace_id, error=error)

    async def drain_once(self) -> int:
        """Claim and send what is queued now, and delete what was delivered; returns how many
        rows were claimed."""
        claimed = await self._claim_and_send()
        await self._settle_now()
        return claimed

    async def _claim_and_send(self) -> int:
        settled = self._take_unsettled()
        try:
            rows = await self.db.run(self._claim, settled)
        except BaseException:
            self._unsettled[:0] = settled
            self._unsettled_since = self._unsettled_since or time.monotonic()
            raise
        if not rows:
            return 0
        await self._send(rows)
        return len(rows)

    def _take_unsettled(self) -> list[int]:
        settled, self._unsettled, self._unsettled_since = self._unsettled, [], None
        return settled

    async def _settle_now(self) -> None:
        settled = self._take_unsettled()
        if not settled:
            return
        try:
            await self.db.run(self._flush, settled)
        except BaseException:
            self._unsettled[:0] = settled
            self._unsettled_since = self._unsettled_since or time.monotonic()
            raise

    async def _send(self, rows: Sequence[OutboxRow]) -> None:
        """Send rows this forwarder holds (claimed or handed off), workspace by workspace."""
        groups: dict[str, list[OutboxRow]] = {}
        for row in rows:
            groups.setdefault(row.workspace_id, []).append(row)
        left = list(groups.values())
        try:
            while left:
                group = left[0]
                await self._forward(group[0].workspace_id, group)
                left.pop(0)
        except _TakenOver:
            # The round ends here; what is still ours is released below, for a claim now.
            self._claim_due = True
            self.wake()
        finally:
            if left:
                # The receiver is unreachable (or rows were taken over): release what this
                # round did not send, so the next round (here or on another replica) sends it
                # without waiting for leases.
                # Not what an earlier call of the group delivered (a hand-off goes a batch per
                # call): those rows left ``_sending`` and wait for their lazy delete.
                unsent = [row for group in left for row in group if row.id in self._sending]
                with contextlib.suppress(Exception):
                    await self.db.run(self._hold, unsent, None)
            self._lease_until = None
            self._sending = set()

    async def run_once(self) -> bool:
        if self._lingering() > 0:
            self._linger_ended = True
            return False
        # The round that ends a linger was woken by its timer, not by a poll: no claim for it.
        polled = self.polled and not self._linger_ended
        self._linger_ended = self._urgent = False
        with self._lock:
            self._linger_since = None
        self._cut = False
        if self._orphans:
            await self.db.run(self._release_orphans)
        handed, until = self._take_handed()
        if handed:
            self._lease_until = until
            self._sending = {row.id for row in handed}
            self._lazy = True
            try:
                await self._send(handed)
            finally:
                self._lazy = False
        claimed = 0
        if self._claim_due or polled or (not handed and not self._queue):
            self._claim_due = False
            claimed = await self._claim_and_send()
        elif self._unsettled and (len(self._unsettled) >= self.batch_size or (
                self._unsettled_since is not None
                and time.monotonic() - self._unsettled_since >= self.settle_delay)):
            # The delete goes with a claim: rows a claim skipped while their workspace was in
            # flight here (another replica's, or written behind a held row) go now.
            claimed = await self._claim_and_send()
        # On PostgreSQL another replica may have written rows of a workspace this round had in
        # flight: its forwarder's claim skipped them and it went back to sleep, and the wake-up
        # of the write was its own, not ours. A round that sent rows is therefore followed by
        # one more claim (an idle one reads one index entry), so those rows go now instead of
        # at the next poll. SQLite has one process per database: every write wakes this one.
        again = (claimed >= self.batch_size or self._cut
                 or (claimed > 0 and not self.db.is_sqlite))
        if again:
            self._claim_due = self._urgent = True
        return again or self._ready()

    def _ready(self) -> bool:
        """Handed-off rows wait that may go now (none behind an uncommitted writer)."""
        with self._lock:
            low = min(self._reserved, default=None)
            return any(low is None or row.id < low for row, _ in self._queue)

    def idle_seconds(self) -> float:
        # Wake to delete delivered rows (the claim that follows a poll deletes them), and to
        # send lingering rows.
        wait = self.poll_seconds
        if self._unsettled_since is not None:
            wait = min(wait, self._unsettled_since + self.settle_delay - time.monotonic())
        if self.linger > 0:
            # Until the linger's end, not ``_lingering()``: a round that found a few
            # microseconds left must not, once they have passed, wait for the next poll.
            with self._lock:
                since = self._linger_since
            if since is not None:
                wait = min(wait, since + self.linger - time.monotonic())
        return max(0.0, wait)

    async def run(self) -> None:
        with self._lock:
            self._running = True
        try:
            await super().run()
        finally:
            with self._lock:
                self._running = False
                self._epoch += 2
                released = [*self._orphans, *(row.id for row, _ in self._queue)]
                self._orphans = []
                self._set_queue([])
            settled = self._take_unsettled()
            # Stopping: delete what was delivered and release what was handed off, so a
            # replica (or this service restarted) sends it without waiting for the lease.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.db.run(self._stop, settled, released))

    def _stop(self, settled: Sequence[int], released: Sequence[int]) -> None:
        with self.db.transaction() as session:
            self._delete_settled(session, settled)
            self._release(session, released)


@dataclass(frozen=True)
class DeliveryWatermark:
    """How far a topic's outbox has been delivered: every row written before
    ``delivered_before`` has been (its receiver acknowledged it and it was deleted, or it was
    dead-lettered), but in the ``behind`` workspaces, where only the rows written before their
    own time (their oldest row's) have been."""

    delivered_before: datetime
    behind: Sequence[tuple[str, datetime]]


def delivery_watermark(session: Session, table: Table, topic: str, now: datetime,
                       most: int, slack: timedelta = timedelta(0),
                       scan: int = 10_000) -> DeliveryWatermark:
    """The topic's :class:`DeliveryWatermark` as of ``now`` (read before this transaction's
    first statement), listing at most ``most`` workspaces behind: past those, the watermark is
    the oldest row of the next one. Read from the table every replica's forwarder shares, so it
    is true whichever replica reads it and whatever each forwarder is doing: rows pending,
    claimed, held for a retry or handed off are all still in the table. A row whose
    transaction read the clock before ``now`` but commits after this read is not seen (nor is
    one of a long transaction that took its id after younger rows): that lateness (a
    transaction's length) is the receiver's grace's to cover.

    Bounded, whatever the backlog: only the topic's ``scan`` oldest rows by id are read (the
    forwarders' own index, no other on the insert path), grouped by workspace; when there are
    more, every workspace not listed is taken to be behind from the first row not read on
    (ids are taken in write order). A workspace is listed only when its oldest row is more
    than ``slack`` old: the rows of a healthy flow, in flight for a moment, are covered by the
    watermark of all, which is then the oldest of them (at most ``slack`` behind)."""
    c = table.c
    oldest_rows = (select(c.id, c.workspace_id, c.create_time).where(c.topic == topic)
                   .order_by(c.id).limit(scan).subquery("oldest_rows"))
    o = oldest_rows.c
    oldest = func.min(o.create_time)
    rows = session.execute(
        select(o.workspace_id, oldest).group_by(o.workspace_id)
        .order_by(oldest, o.workspace_id).limit(most + 1)).all()
    before = _utc(now)
    unread = session.execute(select(c.create_time).where(c.topic == topic).order_by(c.id)
                             .offset(scan).limit(1)).scalar()
    if unread is not None:  # more rows wait than were read
        before = min(before, _utc(unread))
    listed = [(workspace_id, _utc(time)) for workspace_id, time in rows[:most]
              if _utc(time) < _utc(now) - slack]
    if len(rows) > len(listed):  # the oldest of the workspaces not listed
        before = min(before, _utc(rows[len(listed)][1]))
    return DeliveryWatermark(before, [(w, time) for w, time in listed if time < before])


def _within(rows: Sequence[Row[Any, Any, Any]], budget: int) -> list[Row[Any, Any, Any]]:
    """The leading ``rows`` whose ``size`` adds up to at most ``budget`` (at least one)."""
    total = 0
    for count, (_, _, size) in enumerate(rows):  # (id, workspace_id, size), by position
        total += int(size or 0)
        if total > budget and count:
            return list(rows[:count])
    return list(rows)


def _parts(rows: Sequence[OutboxRow], budget: int, most: int) -> list[Sequence[OutboxRow]]:
    """``rows`` in order, in calls of at most ``budget`` payload bytes (a larger row alone) and
    ``most`` rows: handed-off rows (several units of work, or one larger than a batch) go in
    calls no larger than a claimed batch's, within the receiver's items per call."""
    parts: list[Sequence[OutboxRow]] = []
    start, total = 0, 0
    for index, row in enumerate(rows):
        if index > start and (total + len(row.payload) > budget or index - start >= most):
            parts.append(rows[start:index])
            start, total = index, 0
        total += len(row.payload)
    if start < len(rows):
        parts.append(rows[start:])
    return parts


def _key(item_key: Callable[[OutboxRow], str], row: OutboxRow) -> str:
    try:
        return item_key(row)
    except Exception:  # a payload that does not even parse is exactly what dead letters hold
        return ""


def _utc(moment: datetime) -> datetime:
    """``moment`` as the outbox's columns give it back (UTC), so a handed-off row carries the
    very create time a claim of it would read (the bus relay's message id includes it)."""
    return moment.astimezone(UTC)
