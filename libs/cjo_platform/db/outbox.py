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

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
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
    delete,
    false,
    func,
    not_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cjo_platform.backoff import RetryPolicy
from cjo_platform.clock import Clock
from cjo_platform.db.bulk import bulk_insert
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.engine import Database, one_of
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
    """Writes rows inside a caller's transaction; :class:`Forwarder` drains them."""

    def __init__(self, table: Table, clock: Clock, dead_letters: DeadLetters | None = None,
                 ) -> None:
        self.table = table
        self.clock = clock
        # Where rows the receiver refused for good go (``None`` only in tests of the outbox).
        self.dead_letters = dead_letters
        self._listeners: list[Callable[[], None]] = []

    def add(self, session: Session, topic: str, workspace_id: str,
            payloads: Sequence[tuple[bytes, str]]) -> None:
        """Queue (payload, traceparent) pairs; they are sent after the transaction commits."""
        if not payloads:
            return
        now = self.clock.now()
        # Ids follow the order of ``payloads``, which is the order the forwarder sends them in.
        bulk_insert(session, self.table, [
            {"topic": topic, "workspace_id": workspace_id, "payload": payload,
             "traceparent": traceparent, "create_time": now}
            for payload, traceparent in payloads
        ])

    def on_write(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def notify(self) -> None:
        """Call after committing rows so forwarders wake at once instead of at the next poll."""
        for listener in self._listeners:
            listener()


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
    that cannot be reached at all (any other error) stops the round: every row is kept, and the
    round is retried with backoff.

    Nothing is deleted before the receiver acknowledged, so a crash at any point re-sends at most
    one batch (after its lease ran out).
    """

    def __init__(self, db: Database, outbox: Outbox, topic: str, send: SendBatch, *,
                 batch_size: int = 500, poll_interval: float = 1.0,
                 max_backoff: float = 30.0, lease: timedelta = timedelta(seconds=60),
                 max_attempts: int = 5,
                 retry: RetryPolicy = ROW_RETRY,
                 item_key: Callable[[OutboxRow], str] | None = None,
                 owner: str | None = None,
                 max_call_bytes: int = MAX_CALL_PAYLOAD_BYTES,
                 max_claim_bytes: int = MAX_CLAIM_BYTES) -> None:
        super().__init__(poll_interval, max_backoff)
        if outbox.dead_letters is None:
            raise ValueError("a forwarder needs the outbox's dead letters")
        self.name = f"outbox:{topic}"
        self.db = db
        self.outbox = outbox
        self.dead_letters: DeadLetters = outbox.dead_letters
        self.topic = topic
        self.send = send
        self.batch_size = batch_size
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
        outbox.on_write(self.wake)

    @property
    def clock(self) -> Clock:
        return self.outbox.clock

    # --- the database side (runs in the database's thread pool) ------------------------------

    def _claim(self) -> list[OutboxRow]:
        table = self.outbox.table
        now = self.clock.now()
        with self.db.transaction() as session:
            mine = table.c.topic == self.topic
            # An idle poll reads one index entry and takes no lock: the claim's lock (SQLite's
            # write lock, or the advisory lock) would hold back the writers for nothing.
            if session.execute(select(table.c.id).where(mine).limit(1)).first() is None:
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
            kept = [row.id for row in rows]
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
            self._lease_until = until
            self._sending = set(kept)
        topic = self.topic
        return [OutboxRow(row_id, topic, workspace_id, payload, traceparent, create_time,
                          attempts, failed)
                for row_id, workspace_id, payload, traceparent, create_time, attempts, failed
                in full]

    def _renew(self) -> None:
        """Extend the leases of the rows this round is still sending (a long round must not
        lose them; rows held for a later retry keep their time)."""
        table = self.outbox.table
        until = self.clock.now() + self.lease
        with self.db.transaction() as session:
            session.execute(update(table).where(one_of(session, table.c.id, sorted(self._sending)),
                                                table.c.lease_owner == self.owner)
                            .values(lease_until=until))
        self._lease_until = until

    def _settle(self, delivered: Sequence[int], dead: Sequence[tuple[OutboxRow, str, int]],
                ) -> None:
        """Delete delivered rows; move ``(row, error, attempts)`` to the dead letters. Only rows
        this forwarder still holds: a row another replica took over (this one's lease ran out)
        is that replica's to settle, so it is never dead-lettered twice."""
        table = self.outbox.table
        with self.db.transaction() as session:
            gone = [*delivered, *(row.id for row, _, _ in dead)]
            self._sending.difference_update(gone)
            held: set[int] = set()
            if gone:
                held = set(session.execute(
                    delete(table).where(one_of(session, table.c.id, gone),
                                        table.c.lease_owner == self.owner)
                    .returning(table.c.id)).scalars())
            if len(held) < len(gone):
                log.warning("outbox rows were taken over by another forwarder before this one "
                            "settled them", worker=self.name,
                            outbox_ids=sorted(set(gone) - held))
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
        released for the next claim), counting one more refusal of ``refused``."""
        table = self.outbox.table
        now = self.clock.now()
        self._sending.difference_update(r.id for r in rows)
        with self.db.transaction() as session:
            if rows:
                session.execute(
                    update(table).where(one_of(session, table.c.id, [r.id for r in rows]),
                                        table.c.lease_owner == self.owner)
                    .values(lease_until=until,
                            lease_owner=self.owner if until is not None else None))
            if refused is not None:
                session.execute(update(table).where(table.c.id == refused.id,
                                                    table.c.lease_owner == self.owner).values(
                    attempts=refused.attempts + 1,
                    first_failed_time=refused.first_failed_time or now))

    # --- sending ------------------------------------------------------------------------------

    async def _call(self, workspace_id: str, rows: Sequence[OutboxRow]) -> Sequence[Refusal]:
        if self._lease_until is not None and \
                self._lease_until - self.clock.now() < self.lease / 2:
            await self.db.run(self._renew)
        with batch_span(f"outbox.forward {self.topic}", [r.traceparent for r in rows]):
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
        for part in _parts(rows, self.max_call_bytes):
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
        await self.db.run(self._settle, delivered, dead)
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
        """Claim and send what is queued now; returns how many rows were claimed."""
        rows = await self.db.run(self._claim)
        if not rows:
            return 0
        groups: dict[str, list[OutboxRow]] = {}
        for row in rows:
            groups.setdefault(row.workspace_id, []).append(row)
        left = list(groups.values())
        try:
            while left:
                group = left[0]
                await self._forward(group[0].workspace_id, group)
                left.pop(0)
        finally:
            if left:
                # The receiver is unreachable: release what this round did not send, so the
                # next round (here or on another replica) sends it without waiting for leases.
                unsent = [row for group in left for row in group]
                with contextlib.suppress(Exception):
                    await self.db.run(self._hold, unsent, None)
            self._lease_until = None
            self._sending = set()
        return len(rows)

    async def run_once(self) -> bool:
        self._cut = False
        claimed = await self.drain_once()
        # On PostgreSQL another replica may have written rows of a workspace this round had in
        # flight: its forwarder's claim skipped them and it went back to sleep, and the wake-up
        # of the write was its own, not ours. A round that sent rows is therefore followed by
        # one more claim (an idle one reads one index entry), so those rows go now instead of
        # at the next poll. SQLite has one process per database: every write wakes this one.
        return (claimed >= self.batch_size or self._cut
                or (claimed > 0 and not self.db.is_sqlite))


def _within(rows: Sequence[Row[Any, Any, Any]], budget: int) -> list[Row[Any, Any, Any]]:
    """The leading ``rows`` whose ``size`` adds up to at most ``budget`` (at least one)."""
    total = 0
    for count, row in enumerate(rows):
        total += int(row.size or 0)
        if total > budget and count:
            return list(rows[:count])
    return list(rows)


def _parts(rows: Sequence[OutboxRow], budget: int) -> list[Sequence[OutboxRow]]:
    """``rows`` in order, in calls of at most ``budget`` payload bytes (a larger row alone)."""
    parts: list[Sequence[OutboxRow]] = []
    start, total = 0, 0
    for index, row in enumerate(rows):
        if index > start and total + len(row.payload) > budget:
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
