"""A receiving service's consumer of one bus topic.

**Partitions and replicas.** Each partition of the topic has its own durable pull consumer
(filter ``<prefix>.<topic>.*.<partition>``, explicit acks, ``max_ack_pending`` = one batch).
Replicas of the receiving service share the partitions by claiming them in a JetStream
key-value bucket: a claim is a key created only if absent, renewed by a compare-and-set on its
revision, and gone ``claim_seconds`` after its holder stopped renewing it. Only a partition's
holder pulls from it, so a profile's messages (which share a partition) are applied one batch
after another, in stream order, whatever the number of replicas; each replica claims about
``partitions / replicas`` of them (the replicas count themselves by keys of their own in the
bucket). A holder renews its claims every third of their lifetime (``claim = 2 * (ack_wait +
5 s)``, :attr:`BusSettings.claim_seconds`); each partition's worker fetches, and marks messages
in progress, only before its deadline, ``claim - ack_wait - 5 s`` after its last renewal was
asked for (:attr:`BusSettings.fence_seconds`), and stops by itself then, whatever the claim
rounds do: a partition whose holder was killed at any moment, a failed round's retry under way
or not, changes hands only after JetStream made every message it was handed due again, and a
consumer delivers those before anything newer, so the order survives the change. A replica that
stops (or gives a partition up) first waits for the end of a receiver call under way for the
partition's rows (acking them if the receiver took them all), then ends its pull request at the
server (:meth:`PullBatches.stop`: a request left waiting there would take a message given back
and keep it for ``ack_wait``), naks what it still holds in stream order, and only then deletes
its claim (or releases it with its cycles, below), if still its: the next holder gets those
messages before anything newer, and two replicas never work a partition at once. Claim rounds
never wait for a partition to stop (stops go on beside them), so they renew every claim on time.
The timeline after a claim's last renewal was asked for at ``a`` (``R`` = ``claim / 3``;
defaults: ack_wait 30 s, claim 70 s, R 23.3 s):

    a +                       default  what
    R                          23.3 s  the next round renews (answered within min(R/5, 2.5 s))
    1.2 R (+ 2.5 s)            28   s  a failed round's retry renews (answered by 30.5 s)
    claim - ack_wait - 5 s     35   s  the worker's deadline (= 1.5 R): its last fetch, its pull
                                       request's expiry, its last in-progress mark; it stops
    ... + claim / 6            46.7 s  its receiver call under way has ended (or is cancelled);
                                       it ends its pull request, naks what it held, and
                                       deletes its claim (23.3 s before the claim could lapse)
    claim - 5 s                65   s  the last message it was handed is due again at JetStream
    claim                      70   s  the claim lapses at the earliest (a killed holder, or
                                       rounds failing: nothing renewed it)
    claim + R                  93.3 s  another replica's round has taken the partition, at
                                       the latest

A waiting workspace's messages going
round the stream (:class:`_Cycle`, below), whose order only their holder knows, keep it when
their holder gives the partition up (it releases its claim with its cycles in it, see
:meth:`BusConsumer._hand_over_cycles`), not when it was killed or its release failed: the next
holder may then apply them out of order.

**Answers.** The messages a round pulled are handed, per workspace and in order, to the
service's receiver (:mod:`cjo_platform.bus.receiver`: the batch RPC's own method), together with
what the replica's other partitions brought for the workspace meanwhile (:class:`_Receiving`;
a consumer of facts, which nobody waits on, lingers ``CJO_FACTS_LINGER_MS`` for them first),
and read the way an outbox forwarder reads a peer: a message taken is acked (after the receiver
committed); a message the receiver refused for certain is written to the service's dead letters
and then acked, so it never blocks the others; a whole call refused is split to find the message
at fault. A message the receiver wants later (busy, or down) is kept, with the messages of its
workspace behind it, and tried again with backoff (:data:`~cjo_platform.db.outbox.ROW_RETRY`),
while the other workspaces go on; its refusals are counted, and after ``max_attempts`` it goes
to the dead letters when the receiver is seen taking other messages (an outage is waited out,
never blamed on a message). A waiting workspace keeps at most a tenth of a batch in the
partition's ack-pending window; the rest goes round the stream again, in order
(:class:`_Cycle`), so it never holds up the partition's other workspaces. Kept messages are
marked in progress every third of ``ack_wait`` (up to the worker's deadline), so JetStream does
not hand them out again while they wait or while a slow receiver works. Receivers deduplicate by
their own ids, so a message delivered again after a crash is applied once.

**Packed messages** (:mod:`cjo_platform.bus.packing`) are unpacked into their rows, which then
go as any rows do: each is answered on its own (taken, or buried alone), and the message is
acked once every row of it is; a workspace's messages beyond what it may keep go round whole.
A message given back (naked) or delivered again brings all its rows again: receivers dedupe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from cjo_platform.backoff import RetryPolicy
from cjo_platform.bus.connection import CLAIM_MARGIN_SECONDS, Bus, BusSettings
from cjo_platform.bus.packing import PACK_HEADER, row_id, sequence_of, unpack
from cjo_platform.bus.pull import PullBatches
from cjo_platform.bus.relay import MSG_ID_HEADER, TRACEPARENT_HEADER, WORKSPACE_HEADER
from cjo_platform.bus.watermark import (
    WRITTEN_HEADER,
    Marker,
    decode,
    is_marker,
    latest,
    written_at,
)
from cjo_platform.clock import Clock
from cjo_platform.db.dead_letters import DeadLetters
from cjo_platform.db.engine import Database
from cjo_platform.db.outbox import (
    ROW_RETRY,
    Forwarder,
    Later,
    Outbox,
    OutboxRow,
    Refusal,
    SendBatch,
    Undeliverable,
)
from cjo_platform.ids import claimant_id
from cjo_platform.limits import MAX_CALL_PAYLOAD_BYTES
from cjo_platform.logging import get_logger
from cjo_platform.metrics import meter
from cjo_platform.telemetry import batch_span

log = get_logger(__name__)

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_=-]")
# On a copy of a waiting workspace's message: "<epoch> <ordinal>" (see _Cycle).
CYCLE_HEADER = "Cjo-Cycle"
# A claim released with the cycles of its holder in it (JSON; an owner is never one): the next
# holder takes the claim over by its revision and the cycles with it (see _hand_over_cycles).
_RELEASED = b"{"
# How long a partition's pull request waits for a message. It costs nothing while it waits and
# ends as soon as one comes, so it is long: an idle partition asks again twice a minute, not
# every second. A server that restarted forgot it: the consumer asks again on reconnecting.
FETCH_SECONDS = 30.0
# How often the forwarder of retried dead letters looks for rows no write woke it for: the
# replay's own write wakes it at once (it runs in the process that wrote them), so the poll only
# picks up what a crashed process left leased or a refused letter's next try, and an idle
# consumer does not pay a database read a second for it.
REDELIVERY_POLL_SECONDS = 10.0
# How long a stopped partition worker waits for its receiver call under way, as a share of the
# claim's lifetime (claim_seconds): a worker is stopped at its deadline at the latest
# (BusSettings.fence_seconds, half the lifetime after its claim was last asked for), so the wait
# ends by two thirds of the lifetime and the claim still has a third left (23.3 s by default)
# for the worker to end its pull request, give back what it held and delete its claim. Its
# in-progress marks go on during the wait, up to the deadline, not after it (see _keepalive).
# After it the call is cancelled and its messages are given back unacked: nothing of it is
# acked, the next holder gets them again (receivers dedupe by id); a receiver that does not
# honour the cancellation (work in a thread) may still commit them, maybe after the next
# holder applied newer messages of the profile.
SETTLE_SHARE = 1 / 6
# A consumer's watermark callback (see BusConsumer): the partition, and the marker's watermark
# with the workspaces behind it as the consumer sees them.
OnWatermark = Callable[[int, datetime, Mapping[str, datetime]], Awaitable[None]]
# The workspaces a marker lists at most as the consumer passes it on: past those, the
# watermark of all is the next one's time (as a producer's report, capped the same way).
MAX_MARKER_BEHIND = 1000


@dataclass
class _Held:
    """A workspace's messages in one partition waiting for the receiver, in stream order."""

    rows: list[OutboxRow] = field(default_factory=list)
    due: float = 0.0  # loop time of the next try
    fetched: float = 0.0  # loop time its first rows were fetched: a linger is counted from it
    waits: int = 0  # "later" answers in a row
    attempts: dict[int, int] = field(default_factory=dict)  # refusals per row id


@dataclass
class _Cycle:
    """A waiting workspace's messages beyond what it may hold, sent round the stream again.

    Each of the workspace's messages gets an ordinal in the order this holder fetched it; a copy
    carries its ordinal (:data:`CYCLE_HEADER`). Only the message with ordinal ``accept`` may
    join the held ones; any other is published again at the stream's end, then acked, so copies
    come back in ordinal order and the workspace's order is kept.

    A holder that gives the partition up hands its cycles over to the next holder in its claim's
    release (:meth:`BusConsumer._hand_over_cycles`): the epoch, each cycle's counters, and
    ``ahead``, the ordinals (below ``accept``) of the messages it held and gives back, which come
    back without the header. The next holder carries on with them as its own. A record is only
    ever written by the claim's holder as it releases it (a compare-and-set on its revision), so
    it is the holder's state as it left; no time limit second-guesses it (review rcycles: one
    skipped the places of a partition that was merely more than a claim's lifetime behind, and
    applied a newer message before the older copies)."""

    epoch: str
    assigned: int = 0  # ordinals handed out
    accept: int = 0  # the ordinal that may be held next
    ahead: dict[int, int] = field(default_factory=dict)  # stream sequence -> ordinal
    # The oldest write time of the messages sent round (a watermark marker lists the workspace
    # behind with it until every copy is back; see cjo_platform.bus.watermark).
    written: datetime | None = None


@dataclass
class _Deliveries:
    """Whether every message the partition's consumer delivered before now has reached its
    worker, which a watermark marker must know before it passes (review rbusmark: a delivery
    lost in transit, when the connection dropped after the server sent it, is counted delivered
    and comes again only ``ack_wait`` later, so the marker behind it would pass it unanswered
    and unlisted). Every delivery, a redelivery too, takes the consumer's next sequence
    (:func:`_delivery`) and this worker is the partition's only client, so a sequence skipped
    (or going back: a server that lost state) is a delivery lost. Then, after a reconnection,
    and at the start while messages delivered to a previous holder are unacked (one whose
    give-back was lost may come again only ``ack_wait`` after its last in-progress mark, before
    this worker claimed the partition), the worker is **suspect** until every delivery lost is
    due again (``ack_wait`` and :data:`CLAIM_MARGIN_SECONDS`) and a pull request sent after
    that was answered in full (:attr:`PullBatches.requested`; the server hands redeliveries out
    first): markers wait. Time alone is not enough (review rbusmark2: a receiver call longer
    than the hold kept the worker from fetching the redelivery, and the marker passed it)."""

    ack_wait: float
    expected: int | None = None  # the consumer sequence of the next delivery
    suspect_until: float = -math.inf  # loop time

    def lost(self, now: float) -> None:
        self.suspect_until = max(self.suspect_until, now + self.ack_wait + CLAIM_MARGIN_SECONDS)

    def seen(self, msg: Msg, now: float) -> None:
        delivery = _delivery(msg)
        if self.expected is not None and delivery != self.expected:
            self.lost(now)
        self.expected = delivery + 1

    def sure(self, requested: float) -> bool:
        """Whether a request sent at loop time ``requested`` (answered in full) came after
        every delivery lost was due again."""
        return requested >= self.suspect_until


@dataclass
class _Claim:
    """A partition this replica holds: its claim's revision, the loop time that revision was
    asked for (the claim lapses ``claim_seconds`` after it at the earliest), its worker, and
    the worker's deadline (``asked`` + :attr:`BusSettings.fence_seconds`), which each renewal
    moves on, which cancels the worker once passed (see :meth:`BusConsumer._work`), and after
    which the worker neither fetches nor marks anything in progress."""

    revision: int
    asked: float
    deadline: float
    task: asyncio.Task[None] = field(init=False)
    lease: asyncio.Timeout | None = None  # the worker's deadline, once it runs
    stopping: bool = False  # the worker is ending: the deadline no longer moves
    # The cycles the previous holder left in the claim it released (see _hand_over_cycles),
    # and those this worker leaves for the next holder: written by the claim's release.
    adopted: bytes = b""
    handover: bytes = b""

    def renewed(self, revision: int, asked: float, deadline: float) -> None:
        self.revision, self.asked, self.deadline = revision, asked, deadline
        if self.lease is not None and not self.stopping and not self.lease.expired():
            self.lease.reschedule(deadline)

    def stop(self) -> None:
        """The worker ends (it settles and gives back): its deadline cancels it no more."""
        self.stopping = True
        if self.lease is not None and not self.lease.expired():
            self.lease.reschedule(None)


@dataclass(frozen=True)
class _Stop:
    error: str
    later: bool = False
    certain: bool = True


@dataclass
class _Call:
    """One partition's rows for the receiver, and where its answer goes."""

    rows: Sequence[OutboxRow]
    answer: asyncio.Future[list[Refusal]]
    # The task calling the receiver with the rows, once handed over (it may be applying them)
    runner: asyncio.Task[None] | None = None


class _Receiving:
    """The receiver, called for a workspace by the partition workers of one consumer.

    While a call for a workspace is under way, the rows other partitions bring for it wait and
    then go together in one call (up to a batch of rows and :data:`MAX_CALL_PAYLOAD_BYTES`):
    a burst published across the partitions costs the receiver a few transactions, not one per
    partition and fetch. Each partition's rows stay in their order and its worker still waits
    for its own answer (the refusals of its rows), so nothing else changes for it. A combined
    call that raises is made again for each partition's rows alone, which then get their own
    answer (and find the row at fault as before); a receiver dedupes by its own ids, so rows a
    failed call had applied are applied once.

    **Linger** (``linger`` seconds, for topics nobody waits on: facts), as Kafka's
    ``fetch.max.wait.ms``: the first rows of a workspace wait, until ``linger`` after they were
    fetched, for the rows the other partitions (and the other producers' rounds) bring, unless
    a batch of rows is there first, so a relay's round spread over the partitions reaches the
    receiver as one call, as the outbox forwarder hands it over, not one per partition that came
    first. Counted from the fetch, not from the call: a partition hands its fetch's workspaces
    over one after another, and each waiting a linger of its own would make a round of K
    workspaces take K lingers (every workspace behind the others' waits).

    **A partition stopped** (given up, its claim failing, the consumer stopping) while its
    worker waits for an answer: rows not handed to the receiver yet are dropped from the queue;
    a call already under way cannot be called back (its transaction may commit), so it goes on
    and is kept in :attr:`abandoned` for the stopping worker, which waits for its end before
    the partition may change hands."""

    def __init__(self, receive: SendBatch, span: str, max_rows: int,
                 linger: float = 0.0) -> None:
        self.receive = receive
        self.span = span
        self.max_rows = max_rows
        self.linger = linger
        self._queued: dict[str, list[_Call]] = {}
        self._flushing: dict[str, asyncio.Task[None]] = {}
        # Set when a lingering workspace has a batch of rows queued: its call goes at once.
        self._full: dict[str, asyncio.Event] = {}
        # partition -> its call under way when its worker was stopped
        self.abandoned: dict[int, _Call] = {}

    async def __call__(self, workspace_id: str, rows: Sequence[OutboxRow],
                       fetched: float, partition: int) -> list[Refusal]:
        """The receiver's refusals of ``rows`` (of ``partition``, fetched at loop time
        ``fetched``)."""
        call = _Call(rows, asyncio.get_running_loop().create_future())
        queued = self._queued.setdefault(workspace_id, [])
        queued.append(call)
        if workspace_id not in self._flushing:
            self._flushing[workspace_id] = asyncio.create_task(
                self._flush(workspace_id, fetched + self.linger))
        else:
            full = self._full.get(workspace_id)
            if full is not None and self._rows_queued(workspace_id) >= self.max_rows:
                full.set()
        try:
            return await asyncio.shield(call.answer)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if call.answer.cancelled() and task is not None and not task.cancelling():
                # The call was cancelled, not this worker: another partition's stopped worker
                # gave up waiting for the call they shared (see BusConsumer._settle).
                raise Later("receiver call cancelled") from None
            if call.runner is not None:
                self.abandoned[partition] = call
            else:
                call.answer.cancel()  # never sent: _flush skips it
            raise

    def _rows_queued(self, workspace_id: str) -> int:
        return sum(len(call.rows) for call in self._queued.get(workspace_id, ()))

    async def _gather(self, workspace_id: str, until: float) -> None:
        """Wait until loop time ``until`` for more rows of the workspace, or a batch of them."""
        if (self._rows_queued(workspace_id) >= self.max_rows
                or until <= asyncio.get_running_loop().time()):
            return
        full = self._full[workspace_id] = asyncio.Event()
        try:
            async with asyncio.timeout_at(until):
                await full.wait()
        except TimeoutError:
            pass
        finally:
            self._full.pop(workspace_id, None)

    async def stop(self) -> None:
        """Stop the calls under way (the consumer stops; what they held is given back)."""
        tasks = list(self._flushing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _flush(self, workspace_id: str, until: float) -> None:
        calls: list[_Call] = []
        try:
            if self.linger > 0:
                await self._gather(workspace_id, until)
            while True:
                queued = [c for c in self._queued.get(workspace_id, ()) if not c.answer.done()]
                if not queued:
                    break
                calls, size, count = [], 0, 0
                for call in queued:
                    bytes_ = sum(len(row.payload) for row in call.rows)
                    if calls and (count + len(call.rows) > self.max_rows
                                  or size + bytes_ > MAX_CALL_PAYLOAD_BYTES):
                        break
                    calls.append(call)
                    size, count = size + bytes_, count + len(call.rows)
                self._queued[workspace_id] = queued[len(calls):]
                for call in calls:
                    call.runner = asyncio.current_task()
                await self._answer(workspace_id, calls)
        finally:
            self._flushing.pop(workspace_id, None)
            left = [*calls, *self._queued.pop(workspace_id, ())]
            for call in left:
                call.answer.cancel()  # stopped: the waiting workers are being stopped too

    async def _answer(self, workspace_id: str, calls: Sequence[_Call]) -> None:
        if len(calls) > 1:
            rows = [row for call in calls for row in call.rows]
            try:
                refused = await self._call(workspace_id, rows)
            except Exception:
                for call in calls:
                    await self._answer(workspace_id, [call])
                return
            by_id = {refusal.row.id: refusal for refusal in refused}
            for call in calls:
                if not call.answer.done():
                    call.answer.set_result([by_id[r.id] for r in call.rows if r.id in by_id])
            return
        [call] = calls
        try:
            refused = await self._call(workspace_id, call.rows)
        except Exception as exc:
            if not call.answer.done():
                call.answer.set_exception(exc)
            return
        if not call.answer.done():
            call.answer.set_result(refused)

    async def _call(self, workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        with batch_span(self.span, [r.traceparent for r in rows]):
            return list(await self.receive(workspace_id, rows) or ())


class BusConsumer:
    """Pulls ``topic`` from the partitions this replica holds into ``receive``.

    **Watermark markers** (:mod:`cjo_platform.bus.watermark`), which a producer publishes to
    every partition after reading its outbox's watermark, go to ``on_watermark`` (partition,
    watermark, workspaces behind), never to ``receive``: a partition's worker passes a marker
    on only once every earlier message of the partition was answered (taken or buried), with
    the workspaces whose messages it still keeps (wanted later, refused and waiting for a
    retry) or has sent round the stream added as behind, each with its oldest waiting row's
    write time (or the time the marker lists, if earlier). A marker is acked as it comes (one
    lost with a worker that stopped moves nothing: the next one does); of the markers waiting
    to pass only the latest is kept (:func:`~cjo_platform.bus.watermark.latest`), so a
    backlog of markers costs one ``on_watermark`` call a fetch. A worker that may have lost a
    delivery keeps its marker until that delivery came again (:class:`_Deliveries`). A
    consumer without ``on_watermark`` acks and drops markers."""

    def __init__(self, bus: Bus, topic: str, receive: SendBatch, db: Database,
                 dead_letters: DeadLetters, clock: Clock, *,
                 item_key: Callable[[OutboxRow], str] | None = None,
                 retry: RetryPolicy = ROW_RETRY, owner: str | None = None,
                 fetch_seconds: float = FETCH_SECONDS, linger: float = 0.0,
                 on_watermark: OnWatermark | None = None) -> None:
        self.name = f"bus:{topic}"
        self.on_watermark = on_watermark
        self.bus = bus
        self.topic = topic
        self.receive = receive
        # linger: see _Receiving (facts' consumers linger as the facts' forwarders do).
        self._receiving = _Receiving(receive, f"bus.receive {topic}", bus.settings.batch,
                                     linger)
        self.db = db
        self.dead_letters = dead_letters
        self.clock = clock
        self.item_key = item_key or (lambda row: "")
        self.retry = retry
        self.fetch_seconds = fetch_seconds
        self.owner = _KEY_UNSAFE.sub("_", owner) if owner else claimant_id()
        self._topic_key = _KEY_UNSAFE.sub("_", topic)
        self._msgs: dict[int, Msg] = {}  # stream sequence -> the delivery to answer
        # stream sequence -> its rows neither taken nor buried yet (a packed message is acked
        # once each of its rows is; see cjo_platform.bus.packing)
        self._open: dict[int, int] = {}
        # partition -> its claim and worker (a worker that stopped by its deadline stays until
        # a round succeeds: its claim, maybe still ours, is then deleted, and claimed again)
        self._partitions: dict[int, _Claim] = {}
        # Partitions being stopped beside the claim rounds (given up, or their claim lost):
        # each deletes its claim, if still ours, once its worker ended.
        self._stops: set[asyncio.Task[None]] = set()
        # Partitions whose worker ended or is ending beside the rounds: a claim of ours found
        # on one of them is never taken up again before the worker ended (and it was deleted).
        self._ending: set[int] = set()
        self._last_taken: float = -math.inf
        # Why the last claim round failed (None once one succeeded): each partition's worker
        # stops by itself before its claim may lapse (_work).
        self.claim_error: str | None = None
        # The consumer's own entry in the service's grpc.health.v1 (NOT_SERVING while its
        # claims fail; see cjo_platform.rpc.server.HealthReporting).
        self.health_name = f"cjo.bus.{topic}"

    @property
    def redelivery_topic(self) -> str:
        """The outbox topic this consumer's retried dead letters are queued under."""
        return f"redeliver.{self.topic}"

    def redelivery(self, outbox: Outbox, *,
                   poll_interval: float = REDELIVERY_POLL_SECONDS) -> Forwarder:
        """The forwarder that hands this consumer's retried dead letters to its receiver again.

        A message refused for good is written to the service's dead letters and acked, so the
        stream no longer holds it; ``RetryDeadLetters`` (see
        :func:`cjo_platform.rpc.dead_letters.bus_replays`) queues it in the service's own outbox
        under :attr:`redelivery_topic`, in the transaction that removes the letter, and this
        forwarder drains that topic into the same receiver the partitions feed (the servicer's
        own method, in process), with the outbox's guarantees: sent until taken, a workspace's
        letters in order, a letter refused again back in the dead letters (under this
        forwarder's source, retried the same way). A retried message arrives after the newer
        messages of its profile that flowed meanwhile, as a retried dead letter always does."""
        return Forwarder(self.db, outbox, self.redelivery_topic, self.receive,
                         item_key=self.item_key, poll_interval=poll_interval)

    @property
    def settings(self) -> BusSettings:
        return self.bus.settings

    def held_partitions(self) -> list[int]:
        """The partitions this replica works (their workers neither ended nor ending)."""
        return sorted(partition for partition, claim in self._partitions.items()
                      if not claim.stopping and not claim.task.done())

    def healthy(self) -> bool:
        """False while claim rounds fail: this replica's partitions stop (see :meth:`_work`)."""
        return self.claim_error is None

    # --- claims ---------------------------------------------------------------------------

    def _claim_key(self, partition: int) -> str:
        return f"claim.{self._topic_key}.{partition}"

    async def run(self) -> None:
        """Claim partitions and work them until cancelled (then give them back)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                began = loop.time()
                interval = self.settings.renew_seconds
                try:
                    # Bounded, so that a failed round's retry renews before the workers'
                    # deadlines (see BusSettings.claim_round_seconds).
                    async with asyncio.timeout(self.settings.claim_round_seconds):
                        await self._tend_claims()
                    self.claim_error = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Every time, as an error and a metric: a replica that cannot claim stops
                    # its partitions, and its topic piles up in the stream.
                    self.claim_error = repr(exc)
                    _claim_failures().add(1, {"worker": self.name})
                    log.error("event bus claims failed; partitions not renewed stop before "
                              "their claims can lapse", worker=self.name,
                              error=self.claim_error)
                    interval /= 5  # tried again as its bound ends: before the workers' deadlines
                # Counted from the round's start: nothing a round does delays the next renewal.
                await asyncio.sleep(max(0.0, began + interval - loop.time()))
        finally:
            await asyncio.shield(self._release_all())

    async def _members(self) -> int:
        """The replicas working the topic: live member keys only (a replica that stopped
        cleanly deleted its key, whose delete marker would still count as a subject)."""
        kv = await self.bus.claims()
        watcher = await kv.watch(f"member.{self._topic_key}.>", ignore_deletes=True,
                                 meta_only=True)
        count = 0
        try:
            async with asyncio.timeout(10):
                async for entry in watcher:
                    if entry is None:  # every current key seen
                        break
                    count += 1
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return max(1, count)

    async def _tend_claims(self) -> None:
        """Renew the claims held (first: nothing else of the round may delay them), then claim
        or give up partitions towards this replica's fair share. Partitions are stopped beside
        the round, never awaited by it: a stopping worker waits for its receiver call (up to
        SETTLE_SHARE of the lifetime), and the next round must come on time."""
        kv = await self.bus.claims()
        loop = asyncio.get_running_loop()
        fence_after = self.settings.fence_seconds
        ended: list[int] = []
        for partition, claim in list(self._partitions.items()):
            if claim.task.done():
                ended.append(partition)
                continue
            if claim.stopping:
                continue  # stopped by its deadline, still giving back: released once ended
            key = self._claim_key(partition)
            try:
                asked = loop.time()
                revision = await kv.update(key, self.owner.encode(), last=claim.revision)
            except KeyWrongLastSequenceError:
                # A renewal the server applied but answered too late left a stale revision:
                # the claim is still ours at the revision it holds (nobody else may take it).
                own = await self._own_revision(kv, key)
                if own is None:
                    # Our claim lapsed and another replica took the partition: stop at once.
                    log.warning("event bus partition claim lost", worker=self.name,
                                partition=partition)
                    del self._partitions[partition]
                    self._beside(self._ended(partition, _stopped(claim)))
                    continue
                asked = loop.time()
                revision = await kv.update(key, self.owner.encode(), last=own)
            claim.renewed(revision, asked, asked + fence_after)
        for partition in ended:
            # Crashed, or stopped by its deadline: its claim (maybe still ours) is deleted after
            # the renewals, and the partition claimed again below if nobody takes it first.
            task = self._partitions[partition].task
            exc = task.exception() if not task.cancelled() else None
            log.warning("event bus partition stopped; giving it back", worker=self.name,
                        partition=partition, error=repr(exc))
            await self._release(partition)
        await kv.put(f"member.{self._topic_key}.{self.owner}", b"1")
        partitions = self.settings.partitions
        fair = math.ceil(partitions / await self._members())
        for partition in sorted(self._partitions)[fair:]:
            self._beside(self._release(partition))
        for partition in range(partitions):
            if len(self._partitions) >= fair:
                break
            if partition in self._partitions:
                continue
            key = self._claim_key(partition)
            try:
                asked = loop.time()
                revision = await kv.create(key, self.owner.encode())
            except KeyWrongLastSequenceError:
                # Another replica holds it (or is still giving it back), or a claim of ours
                # whose delete failed (a stale revision) is left: taken up, not waited out; or
                # a holder released it with its cycles in it: taken over with them.
                found = None if partition in self._ending else await self._takeable(kv, key)
                if found is None:
                    continue
                last, adopted = found
                asked = loop.time()
                try:
                    revision = await kv.update(key, self.owner.encode(), last=last)
                except KeyWrongLastSequenceError:
                    continue  # another replica took it first
                # A worker failing before it fetched passes the cycles on as they came.
                self._start(partition, _Claim(revision, asked, asked + fence_after,
                                              adopted=adopted, handover=adopted))
                continue
            self._start(partition, _Claim(revision, asked, asked + fence_after))

    async def _own_revision(self, kv: KeyValue, key: str) -> int | None:
        """The revision of claim ``key`` if this replica holds it, else None."""
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.revision if entry.value == self.owner.encode() else None

    async def _takeable(self, kv: KeyValue, key: str) -> tuple[int, bytes] | None:
        """The revision of claim ``key`` if this replica holds it (and no cycles), or if a
        holder released it with its cycles (and the release), else None."""
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.revision is None:
            return None
        if entry.value == self.owner.encode():
            return entry.revision, b""
        if entry.value and entry.value.startswith(_RELEASED):
            return entry.revision, entry.value
        return None

    def _start(self, partition: int, claim: _Claim) -> None:
        claim.task = asyncio.create_task(self._work(partition, claim),
                                         name=f"{self.name}:{partition}")
        self._partitions[partition] = claim
        log.info("event bus partition claimed", worker=self.name, partition=partition)

    def _beside(self, stop: Coroutine[Any, Any, None]) -> None:
        """Run a partition's stop beside the claim rounds (:meth:`_release_all` waits for it)."""
        task = asyncio.create_task(stop)
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    async def _release(self, partition: int) -> None:
        claim = self._partitions.pop(partition)
        await self._ended(partition, self._delete_after(partition, claim))

    async def _delete_after(self, partition: int, claim: _Claim) -> None:
        try:
            await _stopped(claim)
        finally:  # also when cancelled meanwhile: the worker ended, its claim goes
            with contextlib.suppress(Exception):
                await self._give_up_claim(partition, claim)

    async def _give_up_claim(self, partition: int, claim: _Claim) -> None:
        """Delete the claim if still ours, or release it with the cycles its worker left in it,
        by a compare-and-set on its revision: a release sent late (nats-py sends what a dropped
        connection left buffered once it reconnects) never lands after another replica took
        the partition, as a record of its own could (and be adopted by a later holder)."""
        kv = await self.bus.claims()
        key = self._claim_key(partition)
        if claim.handover:
            try:
                await kv.update(key, claim.handover, last=claim.revision)
                return
            except Exception as exc:
                log.warning("event bus cycles not handed over; the next holder may apply a "
                            "waiting workspace's messages out of order", worker=self.name,
                            partition=partition, error=repr(exc))
        await kv.delete(key, last=claim.revision)

    async def _ended(self, partition: int, stop: Coroutine[Any, Any, None]) -> None:
        """Run a partition's ``stop``, the partition counted as ending meanwhile."""
        self._ending.add(partition)
        try:
            await stop
        finally:
            self._ending.discard(partition)

    async def _release_all(self) -> None:
        # Every worker ends (and each deletes its claim after) before the member key goes,
        # also those stopping beside a round the consumer's cancellation interrupted.
        await asyncio.gather(*(self._release(partition) for partition in list(self._partitions)),
                             *self._stops, return_exceptions=True)
        await self._receiving.stop()
        with contextlib.suppress(Exception):
            kv = await self.bus.claims()
            await kv.delete(f"member.{self._topic_key}.{self.owner}")

    # --- one partition --------------------------------------------------------------------

    async def _work(self, partition: int, claim: _Claim) -> None:
        """Work the partition until stopped, or until its claim's deadline passed (the claim
        was not renewed for :attr:`BusSettings.fence_seconds`, however long the failing rounds
        take): the worker then stops by itself, as if given up (its receiver call ends within
        SETTLE_SHARE, what it held is given back), a third of the lifetime before another
        replica may take the partition, so two replicas never work it at once. Nothing it was
        handed comes due later than ``ack_wait`` after the deadline: its fetches' pull
        requests expire by it, and its in-progress marks stop at it (:meth:`_keepalive`), so a
        replica killed at any moment leaves its messages due before its claim may lapse. The
        next round that succeeds deletes the claim, if still ours, and claims the partition
        again."""
        lease = claim.lease = asyncio.timeout_at(claim.deadline)
        try:
            async with lease:
                await self._pull(partition, claim)
        except TimeoutError:
            if not lease.expired():
                raise
            log.error("event bus partition claim not renewed; partition stopped",
                      worker=self.name, partition=partition)

    async def _pull(self, partition: int, claim: _Claim) -> None:
        stream, consumer = await self.bus.ensure_consumer(self.topic, partition)
        epoch, cycles = self._adopt_cycles(
            partition, claim.adopted, f"{self.owner}/{partition}/{uuid.uuid4().hex[:8]}")
        batches = PullBatches(await self.bus.client(), stream, consumer)
        loop = asyncio.get_running_loop()
        deliveries = _Deliveries(self.settings.ack_wait_seconds)
        try:
            last, unacked = await batches.outstanding()
            deliveries.expected = last + 1
            if unacked:
                deliveries.lost(loop.time())
        except Exception:
            deliveries.lost(loop.time())
        await batches.start()

        def reconnected() -> None:
            # A fetch waits up to fetch_seconds for a request a restarted server no longer
            # has; and what the server sent as the connection dropped is lost.
            deliveries.lost(loop.time())
            batches.interrupt()
        forget_reconnects = self.bus.on_reconnect(reconnected)
        held: dict[str, _Held] = {}
        # What one waiting workspace may keep from the partition's max_ack_pending (one batch):
        # the rest goes round the stream, so the other workspaces' messages still come.
        cap = max(1, self.settings.batch // 10)
        half = self.settings.batch // 2
        keepalive = asyncio.create_task(self._keepalive(held, claim))
        # The fetched messages being sorted (held, or sent round) and the index of the one at
        # hand: a worker stopped meanwhile gives back those not sorted yet.
        msgs: list[Msg] = []
        at = 0
        # The latest watermark marker taken, passed on once every message fetched before it
        # was tried and no delivery may be lost (see _Deliveries).
        marker: Marker | None = None
        try:
            while True:
                msgs = []
                now = loop.time()
                for workspace_id in [w for w, h in held.items() if h.due <= now]:
                    await self._try(held, workspace_id, partition)
                if marker is not None and deliveries.sure(batches.requested):
                    found, marker = marker, None
                    await self._pass_on(found, held, cycles, partition)
                # The pull request expires by the worker's deadline: the server hands it nothing
                # later (also to a replica frozen meanwhile), so nothing is due after the claim.
                until = min([claim.deadline, *(h.due for h in held.values()),
                             *([deliveries.suspect_until] if marker is not None else [])])
                timeout = max(0.05, min(self.fetch_seconds, until - loop.time()))
                try:
                    msgs = await batches.fetch(self.settings.batch, timeout=timeout)
                except nats.errors.Error as exc:
                    # The connection dropped (it reconnects by itself): what is held is kept.
                    log.warning("event bus fetch failed; will retry", worker=self.name,
                                partition=partition, error=repr(exc))
                    await asyncio.sleep(min(self.fetch_seconds, 1.0))
                    continue
                if not msgs:
                    continue  # nothing new
                fetched = loop.time()
                for msg in msgs:
                    deliveries.seen(msg, fetched)
                fresh: list[str] = []
                checked: set[int] = set()  # given-back places looked up in the stream
                for at in range(len(msgs)):
                    msg = msgs[at]
                    if is_marker(msg):
                        marker = await self._take_marker(msg, marker, partition)
                        continue
                    sequence, created = _position(msg)
                    if sequence in self._msgs:
                        self._msgs[sequence] = msg  # delivered again: answer the newest delivery
                        continue
                    rows = self._rows(msg, sequence, created)
                    row = rows[0]
                    entry = held.get(row.workspace_id)
                    cycle = cycles.get(row.workspace_id)
                    if cycle is None and entry is not None and len(entry.rows) >= cap \
                            and row.workspace_id not in fresh:
                        cycle = cycles[row.workspace_id] = _Cycle(epoch)
                    if cycle is not None:
                        ordinal = cycle.ahead.pop(sequence, None)
                        if ordinal is None:
                            ordinal = _ordinal(msg, epoch)
                        if ordinal is None:
                            ordinal = cycle.assigned
                            cycle.assigned += 1
                        if ordinal > cycle.accept and cycle.ahead:
                            await self._skip_gone(stream, cycle, checked, row.workspace_id,
                                                  partition)
                        # A workspace seen waiting takes back at most ``cap``; one not seen
                        # waiting since this fetch up to half a batch, so a long backlog comes
                        # back in a few rounds rather than ``cap`` at a time.
                        room = cap if row.workspace_id not in fresh else max(cap, half)
                        if ordinal > cycle.accept or (ordinal == cycle.accept
                                                      and entry is not None
                                                      and len(entry.rows) >= room):
                            try:
                                await self._go_round(msg, cycle, ordinal)
                            except BaseException:
                                # Not sent round: given back without a copy, it keeps its
                                # place for the next holder (else that place never came).
                                cycle.ahead[sequence] = ordinal
                                raise
                            continue
                        # Below accept: a second copy of a message already taken (its holder
                        # stopped between publishing a copy and acking the message): kept, and
                        # the receiver dedupes it.
                        if ordinal == cycle.accept:
                            cycle.accept += 1
                            if cycle.accept == cycle.assigned:
                                del cycles[row.workspace_id]  # every copy is back
                    self._msgs[sequence] = msg
                    self._open[sequence] = len(rows)
                    if entry is None:
                        entry = held[row.workspace_id] = _Held(due=fetched, fetched=fetched)
                        fresh.append(row.workspace_id)
                    entry.rows.extend(rows)
                msgs = []
                for workspace_id in fresh:
                    await self._try(held, workspace_id, partition)
                for workspace_id, entry in list(held.items()):
                    if len(entry.rows) > cap and workspace_id not in cycles:
                        # Waiting with more than it may keep: the rest goes round, in order,
                        # whole messages only (a packed one goes with all its rows or stays).
                        keep = cap
                        while keep < len(entry.rows) and sequence_of(entry.rows[keep].id) \
                                == sequence_of(entry.rows[keep - 1].id):
                            keep += 1
                        if keep == len(entry.rows):
                            continue
                        cycle = cycles[workspace_id] = _Cycle(epoch)
                        sending = list(dict.fromkeys(sequence_of(row.id)
                                                     for row in entry.rows[keep:]))
                        for sent, sequence in enumerate(sending):
                            try:
                                await self._go_round(self._msgs[sequence], cycle,
                                                     cycle.assigned)
                            except BaseException:
                                # Those not sent round are given back (still held) with the
                                # places after the copies sent.
                                for left in sending[sent:]:
                                    cycle.ahead[left] = cycle.assigned
                                    cycle.assigned += 1
                                raise
                            del self._msgs[sequence], self._open[sequence]
                            cycle.assigned += 1
                        del entry.rows[keep:]
        finally:
            claim.stop()
            forget_reconnects()
            # Before the claim goes (the caller deletes it after this): a receiver call under
            # way for this partition's rows ends first (its messages still marked in progress),
            # so two replicas never work the partition at once.
            await self._settle(partition)
            keepalive.cancel()
            # Then the pull request ends at the server, and what this replica still holds is
            # given back in stream order: JetStream delivers it, before anything newer, to the
            # partition's next holder.
            unsorted = [msg for msg in msgs[at:] if _position(msg)[0] not in self._msgs]
            arrived: list[Msg] = []
            with contextlib.suppress(Exception):
                arrived = await batches.stop()
            self._hand_over_cycles(claim, epoch, cycles, held)
            await self._give_back(held, [*unsorted, *arrived])

    async def _settle(self, partition: int) -> None:
        """Wait for the end of the partition's receiver call its stopped worker left under way;
        ack its messages if the receiver took every row (else they are given back). A call
        that does not end within :data:`SETTLE_SHARE` of the claim's lifetime is cancelled
        (with any it shares) and its messages are given back unacked."""
        call = self._receiving.abandoned.pop(partition, None)
        if call is None:
            return
        with contextlib.suppress(BaseException):
            await asyncio.wait([call.answer], timeout=self.settings.claim_seconds * SETTLE_SHARE)
        if not call.answer.done():
            log.error("receiver call of a stopped partition did not end in time; cancelled, "
                      "its messages given back", worker=self.name, partition=partition)
            if call.runner is not None:
                call.runner.cancel()
            return
        if call.answer.cancelled() or call.answer.exception() is not None:
            return  # refused, failed or stopped: given back
        if not call.answer.result():
            with contextlib.suppress(Exception):
                await self._ack(call.rows)

    def _hand_over_cycles(self, claim: _Claim, epoch: str, cycles: dict[str, _Cycle],
                          held: dict[str, _Held]) -> None:
        """Leave the partition's cycles for its next holder (see :class:`_Cycle`) in the claim's
        release (:meth:`_delete_after`, after what the worker held was given back): the
        messages a cycling workspace holds, given back, get the ordinals just below
        ``accept``."""
        claim.handover = b""
        if not cycles:
            return
        record: dict[str, Any] = {}
        for workspace_id, cycle in cycles.items():
            entry = held.get(workspace_id)
            # Held messages the worker failed to send round (or was stopped sending) already
            # have their places in ``ahead``: counted here too, they would push ``first`` below
            # the ordinals they own, and places nobody holds would never come.
            given = [sequence for sequence in dict.fromkeys(
                sequence_of(row.id) for row in (entry.rows if entry else ()))
                if sequence in self._msgs and sequence not in cycle.ahead]
            first = cycle.accept - len(given)
            ahead = {**{sequence: first + i for i, sequence in enumerate(given)}, **cycle.ahead}
            record[workspace_id] = [first, cycle.assigned,
                                    {str(sequence): ordinal for sequence, ordinal in ahead.items()}]
        # The cycles' write times (markers list their workspaces behind): a key of its own, so
        # a release that does not know it reads the rest as before.
        written = {workspace_id: cycle.written.timestamp()
                   for workspace_id, cycle in cycles.items() if cycle.written is not None}
        claim.handover = json.dumps(
            {"released": self.owner, "epoch": epoch, "cycles": record,
             "written": written}).encode()

    def _adopt_cycles(self, partition: int, adopted: bytes, epoch: str,
                      ) -> tuple[str, dict[str, _Cycle]]:
        """The epoch and cycles the partition's previous holder left in the claim it released
        (``adopted``), or ``epoch`` and none."""
        if not adopted:
            return epoch, {}
        try:
            record = json.loads(adopted)
            kept = str(record["epoch"])
            cycles = {str(workspace_id): _Cycle(
                kept, accept=int(accept), assigned=int(assigned),
                ahead={int(sequence): int(ordinal) for sequence, ordinal in ahead.items()})
                for workspace_id, (accept, assigned, ahead) in record["cycles"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            log.warning("event bus cycles handed over unreadable; ignored", worker=self.name,
                        partition=partition, error=repr(exc))
            return epoch, {}
        # The cycles' write times only list their workspaces behind a marker: one that cannot
        # be read leaves its cycle's time unknown (as old as can be), and the cycles' order
        # stands (review rbusmark: it dropped every cycle).
        written = record.get("written") or {}
        for workspace_id, cycle in cycles.items():
            try:
                if workspace_id in written:
                    cycle.written = datetime.fromtimestamp(float(written[workspace_id]), UTC)
            except (ValueError, TypeError, OverflowError) as exc:
                log.warning("event bus cycle's write time handed over unreadable; taken as "
                            "unknown", worker=self.name, partition=partition,
                            workspace=workspace_id, error=repr(exc))
        return kept, cycles

    async def _skip_gone(self, stream: str, cycle: _Cycle, checked: set[int],
                         workspace_id: str, partition: int) -> None:
        """Skip the places of ``cycle`` from ``accept`` on whose message, given back (``ahead``),
        the stream no longer holds: taken, or removed by its limits (max_age: a message held
        while its workspace waited longer). A sequence gone from a work-queue stream never
        comes again, so its place would be waited for for ever. Each sequence is looked up at
        most once a fetch (``checked``)."""
        js = await self.bus.jetstream()
        while True:
            waiting = next((s for s, o in cycle.ahead.items() if o == cycle.accept), None)
            if waiting is None or waiting in checked:
                return
            checked.add(waiting)
            try:
                await js.get_msg(stream, waiting)
                return
            except NotFoundError:
                pass
            except Exception:  # not known: waited for, looked up again next fetch
                return
            log.warning("event bus waiting workspace's message given back is gone from the "
                        "stream (max_age?); its place skipped", worker=self.name,
                        partition=partition, workspace=workspace_id, sequence=waiting)
            del cycle.ahead[waiting]
            cycle.accept += 1

    async def _give_back(self, held: dict[str, _Held], arrived: Sequence[Msg]) -> None:
        """Nak what the partition's stopped worker held and what it fetched but did not sort
        (``arrived``), in stream order (the order JetStream delivers it again)."""
        given: dict[int, Msg] = {}
        for entry in held.values():
            for row in entry.rows:
                sequence = sequence_of(row.id)
                self._open.pop(sequence, None)
                msg = self._msgs.pop(sequence, None)
                if msg is not None:
                    given[sequence] = msg
        for msg in arrived:
            sequence, _ = _position(msg)
            given[sequence] = msg  # its latest delivery
        for sequence in sorted(given):
            with contextlib.suppress(Exception):
                await given[sequence].nak()

    async def _go_round(self, msg: Msg, cycle: _Cycle, ordinal: int) -> None:
        """Publish ``msg`` again at the stream's end (it waits there, not in this consumer's
        ack-pending window), then ack it. A crash in between delivers it twice: receivers
        dedupe. The copy carries its row's write time (:data:`WRITTEN_HEADER`), which its
        ``Nats-Msg-Id`` told (dropped: the stream would drop the copy as a duplicate)."""
        js = await self.bus.jetstream()
        written = written_at(msg, _position(msg)[1])
        headers = {k: v for k, v in (msg.headers or {}).items() if k != MSG_ID_HEADER}
        headers[CYCLE_HEADER] = f"{cycle.epoch} {ordinal}"
        headers[WRITTEN_HEADER] = f"{written.timestamp():.6f}"
        cycle.written = written if cycle.written is None else min(cycle.written, written)
        await js.publish(msg.subject, msg.data, headers=headers)
        await msg.ack()

    async def _take_marker(self, msg: Msg, kept: Marker | None, partition: int,
                           ) -> Marker | None:
        """Ack a watermark marker; returns the one to pass on of it and ``kept`` (None without
        :attr:`on_watermark`). One that cannot be read is dropped with a warning: the
        watermark stays where it was (holding learning back, as it should) until the next."""
        if self.on_watermark is not None:
            try:
                kept = latest(kept, decode(msg.data))
            except ValueError as exc:
                log.warning("event bus watermark marker unreadable; dropped", worker=self.name,
                            partition=partition, error=repr(exc))
        with contextlib.suppress(Exception):
            await msg.ack()
        return kept

    async def _pass_on(self, marker: Marker, held: dict[str, _Held], cycles: dict[str, _Cycle],
                       partition: int) -> None:
        """Hand a watermark marker to :attr:`on_watermark` with the workspaces this worker
        keeps or sends round listed behind (see the class). Called once every message before
        it was tried. A marker the callback fails to record is dropped with a warning: the
        watermark stays where it was until the next marker."""
        if self.on_watermark is None:
            return
        try:
            behind = dict(marker.behind)
            waiting: list[tuple[str, datetime]] = [
                (workspace_id, self._oldest_written(entry))
                for workspace_id, entry in held.items() if entry.rows]
            # A cycle adopted from a release that did not hand its time over: unknown, so
            # as old as can be (held back up to the maximum hold, until its copies are back).
            waiting += [(workspace_id, cycle.written or _EPOCH)
                        for workspace_id, cycle in cycles.items()]
            for workspace_id, time in waiting:
                behind[workspace_id] = min(time, behind.get(workspace_id, time))
            delivered_before = marker.delivered_before
            listed = sorted((time, workspace_id) for workspace_id, time in behind.items()
                            if time < delivered_before)
            if len(listed) > MAX_MARKER_BEHIND:
                delivered_before = listed[MAX_MARKER_BEHIND][0]
                listed = listed[:MAX_MARKER_BEHIND]
            await self.on_watermark(partition, delivered_before,
                                    {workspace_id: time for time, workspace_id in listed})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event bus watermark marker not recorded; dropped (the next one "
                        "moves the watermark on)", worker=self.name, partition=partition,
                        error=repr(exc))

    def _oldest_written(self, entry: _Held) -> datetime:
        """The write time of the oldest row a workspace's kept messages carry."""
        times = [written_at(msg, _position(msg)[1]) for msg in (
            self._msgs.get(sequence) for sequence in dict.fromkeys(
                sequence_of(row.id) for row in entry.rows)) if msg is not None]
        return min(times, default=_EPOCH)

    async def _keepalive(self, held: dict[str, _Held], claim: _Claim) -> None:
        """Mark the held messages in progress every third of ``ack_wait`` (also while a stopped
        worker settles its receiver call), but only before the worker's deadline: a mark after
        it would keep a killed replica's message from coming due before its claim may lapse."""
        period = self.settings.ack_wait_seconds / 3
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            sequences = {sequence_of(row.id) for entry in list(held.values())
                         for row in list(entry.rows)}
            for sequence in sequences:
                if loop.time() >= claim.deadline:
                    break  # past it: marks go on only if a renewal answered late moves it on
                msg = self._msgs.get(sequence)
                if msg is not None:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    def _rows(self, msg: Msg, sequence: int, created: datetime) -> list[OutboxRow]:
        """The message's rows: one, or a packed message's each (ids: :func:`row_id`). A packed
        message that cannot be read is one row holding its bytes: the receiver refuses it and
        it goes to the dead letters, as any unreadable message does."""
        headers = msg.headers or {}
        workspace_id = headers.get(WORKSPACE_HEADER, "")
        if PACK_HEADER in headers:
            unpacked = unpack(msg.data)
            if unpacked.rows:
                return [OutboxRow(id=row_id(sequence, index), topic=self.topic,
                                  workspace_id=workspace_id, payload=payload,
                                  traceparent=traceparent, create_time=created)
                        for index, (payload, traceparent) in enumerate(unpacked.rows)]
            log.error("bus message unreadable", worker=self.name, sequence=sequence,
                      error=unpacked.error)
        return [OutboxRow(id=row_id(sequence, 0), topic=self.topic, workspace_id=workspace_id,
                          payload=msg.data, traceparent=headers.get(TRACEPARENT_HEADER, ""),
                          create_time=created)]

    async def _try(self, held: dict[str, _Held], workspace_id: str, partition: int,
                   ) -> None:
        """Hand the workspace's kept messages to the receiver; what is left waits."""
        entry = held[workspace_id]
        loop = asyncio.get_running_loop()
        taken_before = self._last_taken
        while entry.rows:
            # At most a batch of rows per call (packed messages carry many rows each).
            done, stop = await self._deliver(workspace_id, entry.rows[:self.settings.batch],
                                             entry.fetched, partition)
            del entry.rows[:done]
            if stop is None:
                continue
            if stop.later:
                entry.waits += 1
                entry.due = loop.time() + self.retry.delay(entry.waits).total_seconds()
                log.warning("receiver asked for a bus message later; its workspace waits",
                            worker=self.name, workspace=workspace_id, error=stop.error)
                return
            entry.waits = 0
            culprit = entry.rows[0]
            attempts = entry.attempts.get(culprit.id, 0) + 1
            entry.attempts[culprit.id] = attempts
            # A refusal that names the message's fault counts at once; one that does not
            # (INTERNAL) only once the receiver was seen taking others since.
            proven = stop.certain or self._last_taken > taken_before
            if attempts >= self.settings.max_attempts and proven:
                await self._bury([(culprit, stop.error, attempts)])
                del entry.rows[0]
                entry.attempts.pop(culprit.id, None)
                continue
            entry.due = loop.time() + self.retry.delay(attempts).total_seconds()
            log.warning("receiver refused a bus message; retrying it later", worker=self.name,
                        workspace=workspace_id, sequence=sequence_of(culprit.id),
                        attempts=attempts,
                        error=stop.error)
            return
        del held[workspace_id]

    async def _deliver(self, workspace_id: str, rows: Sequence[OutboxRow], fetched: float,
                       partition: int) -> tuple[int, _Stop | None]:
        """Deliver the longest leading run of ``rows`` (fetched at loop time ``fetched``) the
        receiver takes (refused-for-good rows are dead-lettered on the way); returns how many
        are done, and why it stopped."""
        try:
            refused = await self._receiving(workspace_id, rows, fetched, partition)
        except Undeliverable as exc:
            if len(rows) == 1:
                return 0, _Stop(str(exc) or repr(exc), certain=exc.certain)
            return await self._halves(workspace_id, rows, fetched, partition)
        except Later as exc:
            if exc.split and len(rows) > 1:
                return await self._halves(workspace_id, rows, fetched, partition)
            return 0, _Stop(str(exc) or repr(exc), later=True)
        except Exception as exc:  # the receiver's database is down: wait, blame nothing
            return 0, _Stop(repr(exc), later=True)
        if not refused:  # every row taken (the common case)
            self._last_taken = asyncio.get_running_loop().time()
            await self._ack(rows)
            return len(rows), None
        by_id: dict[int, Refusal] = {r.row.id: r for r in refused}
        others_taken = len(by_id) < len(rows)
        if others_taken:
            self._last_taken = asyncio.get_running_loop().time()

        def holds(row: OutboxRow) -> bool:
            refusal = by_id.get(row.id)
            return refusal is not None and (
                refusal.transient or (not refusal.certain and not others_taken))

        stop = next((i for i, row in enumerate(rows) if holds(row)), len(rows))
        taken = rows[:stop]
        dead = [(row, by_id[row.id].error, 1) for row in taken if row.id in by_id]
        if dead:
            await self._bury(dead)
        await self._ack([row for row in taken if row.id not in by_id])
        if stop < len(rows):
            return stop, _Stop(by_id[rows[stop].id].error, later=True)
        return len(rows), None

    async def _halves(self, workspace_id: str, rows: Sequence[OutboxRow], fetched: float,
                      partition: int) -> tuple[int, _Stop | None]:
        half = len(rows) // 2
        done, stop = await self._deliver(workspace_id, rows[:half], fetched, partition)
        if stop is not None:
            return done, stop
        more, stop = await self._deliver(workspace_id, rows[half:], fetched, partition)
        return half + more, stop

    async def _ack(self, rows: Sequence[OutboxRow]) -> None:
        """Count ``rows`` as answered; ack each message all of whose rows now are."""
        for row in rows:
            sequence = sequence_of(row.id)
            left = self._open.get(sequence, 0) - 1
            if left > 0:
                self._open[sequence] = left
                continue
            self._open.pop(sequence, None)
            msg = self._msgs.pop(sequence, None)
            if msg is not None:
                await msg.ack()

    async def _bury(self, dead: Sequence[tuple[OutboxRow, str, int]]) -> None:
        """Write refused-for-good messages to the dead letters, then ack them. A packed
        message is acked only once all its rows are answered: redelivered meanwhile (a restart,
        a partition handed over) it brings back rows already buried, which are not kept
        twice (the letters' origin: the row's place in the stream)."""

        def write() -> list[bool]:
            with self.db.transaction() as session:
                return [self.dead_letters.add(
                    session, workspace_id=row.workspace_id, source=self.name,
                    item_key=_key(self.item_key, row), payload=row.payload, error=error,
                    traceparent=row.traceparent, attempts=attempts, origin=_origin(row))
                    for row, error, attempts in dead]

        kept = await self.db.run(write)
        for (row, error, _), new in zip(dead, kept, strict=True):
            log.error("receiver refused a bus message; moved to the dead letters"
                      if new else "receiver refused a bus message already in the dead letters",
                      worker=self.name, sequence=sequence_of(row.id),
                      workspace=row.workspace_id,
                      error=error)
        await self._ack([row for row, _, _ in dead])


async def _stopped(claim: _Claim) -> None:
    """Cancel a partition's worker (unless it is ending already: a second cancellation would
    cut its giving back short) and wait for its end (it gives back what it held), also when
    the caller is cancelled meanwhile: that cancellation is raised once the worker ended."""
    task = claim.task
    ended = task.done()  # crashed before: the round that found it logged it
    if not claim.stopping:
        task.cancel()
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if not ended and not task.cancelled() and task.exception() is not None:  # crashed
        log.warning("event bus partition worker failed", worker=task.get_name(),
                    error=repr(task.exception()))
    if cancelled:
        raise asyncio.CancelledError


_failures: Any = None


def _claim_failures() -> Any:
    global _failures
    if _failures is None:
        _failures = meter().create_counter(
            "cjo.bus.claim.errors", unit="1",
            description="Event bus claim rounds that failed (the replica claimed nothing then)")
    return _failures


def _position(msg: Msg) -> tuple[int, datetime]:
    """The message's stream sequence and the time the stream stored it."""
    tokens = _ack_tokens(msg)
    if tokens is not None:
        return int(tokens[5]), datetime.fromtimestamp(int(tokens[7]) / 1e9, UTC)
    meta = msg.metadata
    return meta.sequence.stream, meta.timestamp or datetime.now(UTC)


def _delivery(msg: Msg) -> int:
    """The message's consumer sequence: which delivery of the consumer it is."""
    tokens = _ack_tokens(msg)
    if tokens is not None:
        return int(tokens[6])
    return int(msg.metadata.sequence.consumer)


def _ack_tokens(msg: Msg) -> list[str] | None:
    """The tokens of the message's reply subject ``$JS.ACK.<stream>.<consumer>.<delivered>.
    <stream seq>.<consumer seq>.<time ns>.<pending>``, read without building nats-py's
    metadata objects (~4 us of CPU a message); None for another form of the subject (with a
    domain), which goes through nats-py."""
    tokens = (msg.reply or "").split(".")
    return tokens if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK" else None


def _ordinal(msg: Msg, epoch: str) -> int | None:
    """A copy's ordinal when this holder's epoch sent it round (else it counts as new)."""
    value = (msg.headers or {}).get(CYCLE_HEADER, "")
    sent_by, _, ordinal = value.partition(" ")
    if sent_by != epoch:
        return None
    try:
        return int(ordinal)  # below 0 for messages a holder gave back (see _Cycle)
    except ValueError:
        return None


def _origin(row: OutboxRow) -> str:
    """A row's place in the stream, the same on every delivery of its message: its id (stream
    sequence and index in the message) and the time the stream stored the message (sequences
    start again in a stream deleted and created again)."""
    stored = (row.create_time - _EPOCH) // timedelta(microseconds=1)
    return f"{row.id}@{stored}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _key(item_key: Callable[[OutboxRow], str], row: OutboxRow) -> str:
    try:
        return item_key(row)
    except Exception:
        return ""



def consumer_workers(consumers: Sequence[BusConsumer], outbox: Outbox,
                     ) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    """What a service runs in the background for its bus consumers: each consumer, and the
    forwarder of its retried dead letters (:meth:`BusConsumer.redelivery`)."""
    return [worker for consumer in consumers
            for worker in (consumer.run, consumer.redelivery(outbox).run)]
