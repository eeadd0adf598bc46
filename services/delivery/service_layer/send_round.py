"""Run a send round: claim due messages, apply the workspace's policies, reserve rate-limited
sends, hand each message to its providers (domain/failover.py decides the way), and record the
outcomes.

One round: claim a batch of due messages in one transaction (QUEUED ones whose time has come,
SENDING ones whose lease ran out), marking them SENDING with ``attempts + 1`` and a lease, and
read their workspaces' providers, policies and suppressions in it; commit; call the providers
for each (a few at a time); record the outcomes — SENT, QUEUED again with a backoff, or FAILED
— as they arrive, in one transaction (a few bulk updates) together with the outbox rows of the
facts for analytics for the outcomes of every round of the process that arrive within
``record_linger`` of each other (:class:`_RecordWindow`).

Crash safety: a message is in the database before any provider call, and its outcome is written
only after the call returned. When the process dies in between, the message stays SENDING until
its lease runs out and is then claimed again by whichever sender comes next. So a provider call
cut off mid-way (or finished but not yet recorded) may be repeated once; nothing accepted is
ever lost. The email carries a stable Message-ID ``<{message_id}@cjo>``, so receivers can
discard the repeat. A message whose record the database refuses (a value it cannot store, a
constraint) costs only itself: the group is then recorded message by message, the refused one
with its status alone (outcomes.record_outcomes), and it is left SENDING, as if its sender had
died, only when even that is refused. A message whose lease ran out ``max_lease_expiries``
times (its outcome never recorded: its sender died or the database refused it, each time
after a provider may have taken it) is FAILED, with a note saying so, instead of sent again:
at-least-once, at most that many times. A sender that outlives its lease cannot overwrite the
result of the sender that took over: outcomes are recorded only while the row still carries the
claim's attempt number. On an orderly shutdown (:meth:`SendRound.stop`), calls under way are
finished and recorded and messages not yet handed over go back to the queue, so a restart
repeats nothing. A message still waiting for a send slot when its hand-over window (half its
lease at most, less when the longest send would not fit before the cut-off) has passed goes
back to the queue too, instead of being handed over so late that the lease could run out during
the call, and provider calls still under way at nine tenths of the lease are cut off (a
transient failure, retried with backoff): however long a workspace's provider timeouts, and
however many providers a failover tries, no other sender claims a message while a provider is
being called for it.

Claims take each profile's messages in the order they were queued, and none while one queued
before it is with another process (adapters/repository.claim_due). Rounds of one process
overlap (workers/sender.py), so a profile's messages may be in two of them at once; in one
process they still go to the providers in the order they were claimed:
each waits, before taking a send slot, until the attempt of the profile's message claimed
before it (in its round or an earlier one) has ended (:class:`ProfileTurns`), and goes back
unsent when that one was given back.

Before any provider call, each claimed message passes the workspace's policies: consent (asked
of identity in one batch call per workspace and round, every workspace at once and once: the
round goes on in waves as the answers come in, so a workspace whose answer is slow or fails
holds back only its own messages; a round waiting only for such answers lets the next start,
and claims leave a workspace that ``rounds`` rounds wait for: workers/sender.py), the suppression
list, quiet hours and frequency caps. It may end SUPPRESSED, or wait DEFERRED, instead.
Frequency caps hold across every sender replica: a capped message reserves its slot in the
database (service_layer/caps.py). Email falls back to the deployment's SMTP server when the
workspace configured no email provider. A round woken by messages this process just queued asks
identity about them while it claims (``expected``), not after: the answer is still asked after
they were queued and before they are sent, and the claim's transaction no longer stands between
intake and send; claimed messages it did not expect are asked about once the claim is in.

Rate limits (``rate_per_second``, ``burst``) hold across every sender replica sharing the
database (service_layer/rate_grants.py). A call the provider received, failed or not, keeps its
send: the provider counted it. Rounds without rate-limited providers pay nothing. When no
provider was called because every one was at its limit, the message goes back to the queue, its
attempt not counted, due at its turn: when sends free up, after the turns already handed out on
any replica, so a backlog comes back at the rate rather than being claimed and put back every
round. Excess waits in the database, never in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from opentelemetry.trace import Status, StatusCode

from cjo_delivery.adapters import webhook_store
from cjo_delivery.adapters.contents import decode_outgoing
from cjo_delivery.adapters.held import ORPHAN_SWEEP, HeldKey
from cjo_delivery.adapters.routes import Route, Routes
from cjo_delivery.domain import failover
from cjo_delivery.domain.messages import Claim, Message
from cjo_delivery.domain.policies import (
    ConsentDecision,
    ConsentDirectory,
    ConsentQuery,
    ConsentUnavailable,
)
from cjo_delivery.domain.ratelimit import RateLimit
from cjo_delivery.domain.sending import (
    OutgoingMessage,
    ProviderError,
    Transition,
    after_failure,
    after_success,
    leases_ran_out,
    rate_limited,
    released,
)
from cjo_delivery.service_layer import caps
from cjo_delivery.service_layer.breakers import SharedBreakers
from cjo_delivery.service_layer.claims import RoundContext, claim_due, release_orphans, set_back
from cjo_delivery.service_layer.messages import QUEUED_SIGNAL
from cjo_delivery.service_layer.outcomes import record_outcomes, unrecorded
from cjo_delivery.service_layer.rate_grants import RoundGrants
from cjo_delivery.service_layer.send_slots import SendSlots
from cjo_platform.backoff import RetryPolicy
from cjo_platform.clock import Clock
from cjo_platform.db.signals import Signals
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.secret_box import SecretBox
from cjo_platform.telemetry import continue_trace

log = get_logger(__name__)

# Recording outcomes is retried in place for a short while: giving up means the messages are
# sent again once their lease runs out.
_RECORD_RETRY_DELAYS = (0.2, 1.0, 3.0)

# Exponential from 30 s to an hour with equal jitter (half fixed, half random): a provider that
# comes back is not hit by every queued message in the same instant, yet none comes back at once.
MESSAGE_RETRY = RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=30),
                            max_delay=timedelta(hours=1), jitter=0.5)


# A message's provider calls end by this share of its lease (a call under way then is cut off,
# a transient failure), leaving the rest to record the outcome before another sender may claim
# the message: a provider hanging longer than its timeout, a workspace's long timeouts or a
# failover through several slow providers never outlive the lease (two senders calling
# providers for one message at once). A message is handed over only while its lease leaves
# ``longest_send`` before that, and at most half of it has passed.
CALLS_END = 0.9


def hand_over_share(settings: SenderSettings) -> timedelta:
    """How long after its claim a message may still be handed to the providers: never less
    than a quarter of the lease (what the start check guarantees; settings made another way
    must not release every message, round after round)."""
    return max(settings.lease / 4, min(settings.lease / 2,
                                       settings.lease * CALLS_END - settings.longest_send))


@dataclass(frozen=True)
class SenderSettings:
    poll_seconds: float = 0.5
    batch_size: int = 100
    concurrency: int = 8  # provider calls at once, shared by every round under way
    # Of those, what one workspace may hold (more only while as many stay free for the
    # others: service_layer/send_slots.py; CJO_DELIVERY_WORKSPACE_SHARE); 0: a quarter.
    workspace_share: int = 0
    rounds: int = 4  # rounds under way at once (workers/sender.py)
    # Longer than the slowest send should take: calls still under way at CALLS_END of it are
    # cut off (a transient failure), or another sender could claim the message meanwhile.
    lease: timedelta = timedelta(minutes=5)
    # The longest a send through the deployment's SMTP server takes with every reply at its
    # timeout's end (bootstrap: 8 x CJO_SMTP_TIMEOUT_SECONDS + CJO_SMTP_DATA_TIMEOUT_SECONDS): a
    # message is handed to the providers only while that much is left before CALLS_END.
    longest_send: timedelta = timedelta(seconds=140)
    # A message whose lease ran out this many times (its sender stopped, or could not record
    # its outcome: each time after a provider may have taken it) is failed instead of sent
    # again (CJO_DELIVERY_MAX_LEASE_EXPIRIES).
    max_lease_expiries: int = 3
    retry: RetryPolicy = field(default_factory=lambda: MESSAGE_RETRY)
    breaker_failures: int = 5
    breaker_cool_down: timedelta = timedelta(seconds=30)
    # How long outcomes wait for the others under way, of every round of the process, to be
    # recorded with them (one transaction instead of one per outcome as they trickle in;
    # CJO_DELIVERY_RECORD_LINGER_MS).
    record_linger: timedelta = timedelta(milliseconds=40)
    # Exposures of decisions for decisioning (CJO_DELIVERY_FORWARD_TO_DECISIONING).
    forward_to_decisioning: bool = True
    # How long a round waits for a workspace's consent answer before it lets the sender start
    # the next round without it (CJO_DELIVERY_CONSENT_PATIENCE_MS): see workers/sender.py.
    consent_patience: timedelta = timedelta(seconds=1)


def _out_of_lease(lease: timedelta, *, cut: bool) -> ProviderError:
    what = ("the provider call was cut off (it may have been delivered)" if cut
            else "no time was left for the next provider")
    return ProviderError(f"{what}: {CALLS_END:.0%} of the message's lease "
                         f"({lease.total_seconds():g} s, CJO_DELIVERY_LEASE_SECONDS) had passed",
                         transient=True)


@dataclass(frozen=True)
class _Outcome:
    claim: Claim
    provider_message_id: str = ""
    provider_id: str = ""
    error: ProviderError | None = None
    released: bool = False
    decided: Transition | None = None  # set when a policy or a rate limit, not a call, decided
    # Providers called that may have taken the message though their call failed (a timeout,
    # an error after the content went): they may report on it (adapters/webhook_store.py).
    handed: tuple[str, ...] = ()


LinkMaker = Callable[[Claim], tuple[str, Callable[[str], str] | None]]
# Consent decisions of one workspace asked early, by question.
_Answers = dict[ConsentQuery, ConsentDecision]


def question(message: Claim | Message) -> ConsentQuery:
    """The consent question of a message."""
    return ConsentQuery(message.profile_id, message.channel, message.topic)


@dataclass(eq=False)
class _Arrivals:
    """A round's outcomes as its waves add them, until they are recorded."""

    pending: int  # outcomes still to come or to be recorded
    outcomes: list[_Outcome] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    attempted: int = 0  # claims whose attempt ended (or whose wave failed)
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set as ``attempted`` grows
    # Called as outcomes arrive or are given up (the process's record window watches them).
    notify: Callable[[], None] = field(default=lambda: None)
    # Called when the round's last outcomes are taken to be recorded.
    on_attempted: Callable[[], None] | None = None
    # Called when every claim of the round not yet attempted is with a provider or waits for
    # its workspace's share of the send slots: the next round need not wait for them. True
    # when it let the next round start.
    on_aside: Callable[[], bool] | None = None
    claimed: int = 0
    aside: set[str] = field(default_factory=set)  # such claims' message ids

    def set_aside(self, message_ids: Iterable[str]) -> None:
        self.aside.update(message_ids)
        if (self.on_aside is not None and self.attempted + len(self.aside) >= self.claimed
                and self.on_aside()):
            self.on_aside = None

    def add(self, outcome: _Outcome) -> None:
        self.aside.discard(outcome.claim.message_id)
        self.outcomes.append(outcome)
        self.attempted += 1
        self.arrived.set()
        self.progress.set()
        self.notify()

    def give_up(self, count: int) -> None:
        """``count`` outcomes will not come (their wave failed)."""
        self.pending -= count
        self.attempted += count
        self.arrived.set()
        self.progress.set()
        self.notify()

    def all_in(self) -> bool:
        """Whether no more of the round's outcomes are to come (all are in, to be recorded)."""
        return len(self.outcomes) >= self.pending

    def take(self) -> list[_Outcome]:
        """The outcomes in, to be recorded now (``pending`` counts them until they are)."""
        group, self.outcomes = self.outcomes, []
        if group and len(group) == self.pending and self.on_attempted is not None:
            self.on_attempted()  # the last outcomes: only their record is left
        return group


# What a round's outcomes taken into a record window came to: the group, and the error when
# the window's transaction failed (the round then records the group on its own).
_Written = tuple[list[_Outcome], Exception | None]


class _RecordWindow:
    """Records the outcomes of every round under way in this process together: the first
    round with outcomes to record opens a window of ``linger`` (shorter when nothing more is to
    come from any round), every round with outcomes in by its end joins it, and one
    transaction records them all. Rounds overlap and share the provider slots, so each round's
    outcomes trickle in at a fraction of the process's rate: a linger per round recorded about
    ``rounds`` times as many groups, each with its own commit, statements and outbox insert."""

    def __init__(self, linger: float,
                 write: Callable[[list[_Outcome]], Coroutine[Any, Any, None]]) -> None:
        self._linger = linger
        self._write = write
        self.live: set[_Arrivals] = set()  # the rounds under way
        self.arrived = asyncio.Event()  # set as any round's outcomes arrive
        self._joined: dict[_Arrivals, asyncio.Future[_Written]] = {}
        self._closing: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    async def join(self, arrivals: _Arrivals) -> _Written:
        """Wait for the window to close and its record to end; returns what of this round it
        took (possibly more than was in when it joined)."""
        written = self._joined.get(arrivals)
        if written is None:
            written = self._joined[arrivals] = asyncio.get_running_loop().create_future()
        if self._closing is None:
            self._closing = asyncio.create_task(self._close())
        try:
            return await written
        except asyncio.CancelledError:
            if self._joined.get(arrivals) is written:
                del self._joined[arrivals]  # not taken: its outcomes are left unrecorded
            raise

    def _nothing_more(self) -> bool:
        return all(arrivals.all_in() for arrivals in self.live)

    async def _close(self) -> None:
        joined: dict[_Arrivals, asyncio.Future[_Written]] = {}
        try:
            loop = asyncio.get_running_loop()
            until = loop.time() + self._linger
            while not self._nothing_more() and (left := until - loop.time()) > 0:
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), left)
            # Rounds joining from here on open the next window.
            joined, self._joined, self._closing = self._joined, {}, None
            groups = {arrivals: arrivals.take() for arrivals in joined}
            error: Exception | None = None
            try:
                await self._write([o for group in groups.values() for o in group])
            except Exception as exc:
                error = exc
            for arrivals, written in joined.items():
                if not written.done():
                    written.set_result((groups[arrivals], error))
        except BaseException:  # cancelled (the loop is closing): so are the rounds' waits
            if self._closing is asyncio.current_task():
                joined, self._joined, self._closing = self._joined, {}, None
            for written in joined.values():
                written.cancel()
            raise


def _forget(task: asyncio.Task[_Answers]) -> None:
    """An early consent question no longer wanted: cancelled, or its outcome taken (a failure
    was logged where it mattered), so nothing is reported as never retrieved."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


@dataclass
class _Turn:
    """A claimed message's place among its profile's messages in this process. ``done``'s
    result: the message's id if it went back unsent (given back, or left to its lease), else
    None: the profile's next messages must then not go before it, and go back
    too."""

    after: asyncio.Future[str | None] | None  # the attempt of the message claimed before it
    done: asyncio.Future[str | None]


class ProfileTurns:
    """The order of each profile's claimed messages in this process, across overlapping rounds:
    a message is handed to a provider only once the one claimed before it is through, and not
    at all while one before it went back unsent and that is not yet recorded (until then the
    claims do not see it given back: it is still SENDING under this process's own lease)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], asyncio.Future[str | None]] = {}
        # By profile: messages that went back unsent, until their record committed.
        self._unsent: dict[tuple[str, str], set[str]] = {}

    def take(self, claims: Sequence[Claim]) -> dict[str, _Turn]:
        """Turns for ``claims`` (in claim order), after those taken before; call it right
        after the claim commits, with no await in between, so turns follow claim order."""
        loop = asyncio.get_running_loop()
        turns: dict[str, _Turn] = {}
        for claim in claims:
            if not claim.profile_id:
                continue
            key = (claim.workspace_id, claim.profile_id)
            done = loop.create_future()
            turns[claim.message_id] = _Turn(self._last.get(key), done)
            self._last[key] = done
        return turns

    def behind_unsent(self, claim: Claim, turn: _Turn) -> bool:
        """Whether an earlier message of the profile (not this one: a claim taking it over
        from an earlier round) went back unsent."""
        after = turn.after
        if after is not None and after.done() and after.result() not in (None,
                                                                         claim.message_id):
            return True
        unsent = self._unsent.get((claim.workspace_id, claim.profile_id), ())
        return any(message_id != claim.message_id for message_id in unsent)

    def end(self, claim: Claim, turn: _Turn | None, *, unsent: bool = False) -> None:
        """The message's attempt ended (sent, failed or decided): the next may go; or it went
        back ``unsent``: the next goes back too, until :meth:`settled`."""
        if turn is None:
            return
        key = (claim.workspace_id, claim.profile_id)
        if not turn.done.done():
            turn.done.set_result(claim.message_id if unsent else None)
            if unsent:
                self._unsent.setdefault(key, set()).add(claim.message_id)
        if self._last.get(key) is turn.done:
            del self._last[key]

    def settled(self, claims: Iterable[Claim]) -> None:
        """The record of these claims' outcomes committed (or their round failed, leaving them
        SENDING under a lease no longer this process's): the claims see them from now on."""
        for claim in claims:
            key = (claim.workspace_id, claim.profile_id)
            unsent = self._unsent.get(key)
            if unsent is not None:
                unsent.discard(claim.message_id)
                if not unsent:
                    del self._unsent[key]


class SendRound:
    """Sends due messages, one batch per :meth:`run`. Holds what outlives a round in this
    process: the providers' routes (live connections, this replica's copies of the shared
    circuit breakers) and the send slots."""

    def __init__(self, transactions: Transactions, routes: Routes, clock: Clock,
                 settings: SenderSettings, rng: random.Random | None = None, *,
                 consent: ConsentDirectory | None = None, links: LinkMaker | None = None,
                 secret_box: SecretBox | None = None, signals: Signals | None = None) -> None:
        self.transactions = transactions
        self.routes = routes
        self.clock = clock
        self.settings = settings
        self._hand_over_within = hand_over_share(settings)
        self.rng = rng or random.Random()
        self.consent = consent
        self.links = links
        self.secret_box = secret_box or SecretBox([])
        self.signals = signals
        self._slots = SendSlots(settings.concurrency, settings.workspace_share
                                or max(1, settings.concurrency // 4))
        self.turns = ProfileTurns()
        self.breakers = SharedBreakers(transactions, trial_lease=settings.lease,
                                       signals=signals)
        self._window = _RecordWindow(settings.record_linger.total_seconds(), self._record)
        self.stopping = False
        # When the next pass of the safety net begins: before their claims, rounds release held
        # messages whose blockers are gone without releasing them, a batch per round in its own
        # transaction, continuing after ``_sweep_after`` until the pass is over (None).
        self._next_sweep = clock.now()
        self._sweep_after: HeldKey | None = None
        # Workspaces whose consent answer rounds that let the next ones start are waiting for
        # (a count of such rounds each, whatever other workspaces they wait for): claims leave
        # a workspace's messages while ``rounds`` of them wait.
        self._leaving: Counter[str] = Counter()
        # This process's leases (messages.lease_holder): its own messages under way do not
        # hold up the next ones of their profile in its claims (self.turns orders them). A
        # round that leaves messages SENDING (it failed before their outcome was recorded)
        # takes a new one, so they hold up their profiles' next messages until their lease runs
        # out, as another process's would, and are claimed again first.
        self.holder = uuid.uuid4().hex

    def stop(self) -> None:
        """Hand no more messages over: those not yet with a provider go back to the queue."""
        self.stopping = True

    async def run(self, on_claimed: Callable[[Sequence[Claim]], None] | None = None,
                  expected: Mapping[str, Collection[ConsentQuery]] | None = None,
                  on_attempted: Callable[[], None] | None = None,
                  on_waiting: Callable[[], bool] | None = None) -> int:
        """Claim one batch of due messages and send it; returns how many were claimed.
        ``on_claimed`` is told which as soon as the claim committed (the sender then claims
        the next batch while this one is sent). ``expected``: the consent questions, by
        workspace, of messages just queued, asked while the claim runs. ``on_attempted`` is
        called once every claimed message's attempt ended, before the last outcomes are
        recorded (the sender may then claim again). ``on_waiting`` is called when, after
        ``consent_patience``, all the round still has to send waits for the consent answer of
        some workspaces: it answers whether the sender started the next round (then the round
        counts as waiting for each of those workspaces, and the claims leave a workspace that
        ``rounds`` rounds wait for)."""
        if self.stopping:
            return 0
        now = self.clock.now()
        settings = self.settings
        # A workspace only once as many of its rounds wait for its answers as may be under
        # way: a busy identity's slower answers keep every round they had (and more).
        leave = frozenset(w for w, rounds in self._leaving.items() if rounds >= settings.rounds)
        # And one whose messages wait for its share of the send slots: it has enough here.
        leave |= self._slots.crowded()
        early = ({workspace: asyncio.create_task(self._ask(workspace, list(queries)))
                  for workspace, queries in expected.items()
                  if queries and workspace not in leave}
                 if self.consent is not None and expected else {})
        try:
            if self._sweep_after is not None or now >= self._next_sweep:
                if self._sweep_after is None:  # a pass begins
                    self._next_sweep = now + ORPHAN_SWEEP
                after = self._sweep_after
                self._sweep_after = await self.transactions.run(
                    lambda uow: release_orphans(uow, now, after))
            claims, context = await self.transactions.run(
                lambda uow: claim_due(uow, now, settings.lease, settings.batch_size,
                                      self.secret_box, self.holder, leave=leave))
            turns = self.turns.take(claims)
            if on_claimed is not None:
                on_claimed(claims)
            if not claims:
                return 0
            return await self._send(claims, context, turns, now, early, on_attempted,
                                    on_waiting)
        finally:
            for task in early.values():
                _forget(task)

    async def _send(self, claims: Sequence[Claim], context: RoundContext,
                    turns: dict[str, _Turn], now: datetime,
                    early: Mapping[str, asyncio.Task[_Answers]],
                    on_attempted: Callable[[], None] | None,
                    on_waiting: Callable[[], bool] | None = None) -> int:
        """Send the round's claims in waves, one per set of workspaces whose consent came in
        together (every workspace is asked at once, and a workspace whose answer is slow or
        fails holds only its own messages), recording the outcomes of every wave as they come
        (one record transaction for what arrives together, whichever wave it is from)."""
        arrivals = _Arrivals(len(claims), notify=self._window.arrived.set,
                             on_attempted=on_attempted, claimed=len(claims),
                             # Only while slots are free: with every slot taken, a next
                             # round's claims would only wait for one.
                             on_aside=None if on_waiting is None else (
                                 lambda: self._slots.any_free() and on_waiting()))
        self._window.live.add(arrivals)
        recording = asyncio.create_task(self._record_as_they_come(arrivals))
        sending = asyncio.create_task(self._waves(claims, context, turns, now, early, arrivals,
                                                  on_waiting))
        try:
            under_way = {recording, sending}
            while under_way:
                done, under_way = await asyncio.wait(under_way,
                                                     return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # a wave or the record failed: the round fails
        finally:
            self._window.live.discard(arrivals)
            self._window.arrived.set()  # a window waiting for this round's outcomes: no more
            for task in (sending, recording):
                task.cancel()
            await asyncio.wait({sending, recording})
            if arrivals.pending > 0 or any(not turn.done.done() for turn in turns.values()):
                # Messages left SENDING (a wave or the record failed): they keep their place.
                self.holder = uuid.uuid4().hex
            for claim in claims:  # a round that failed early must not hold the next ones
                self.turns.end(claim, turns.get(claim.message_id), unsent=True)
            self.turns.settled(claims)
        return len(claims)

    async def _waves(self, claims: Sequence[Claim], context: RoundContext,
                     turns: dict[str, _Turn], now: datetime,
                     early: Mapping[str, asyncio.Task[_Answers]],
                     arrivals: _Arrivals, on_waiting: Callable[[], bool] | None) -> None:
        by_workspace: dict[str, list[Claim]] = defaultdict(list)
        for claim in claims:
            by_workspace[claim.workspace_id].append(claim)
        asking = {workspace: asyncio.create_task(
                      self._consent_of(workspace, group, early.get(workspace)))
                  for workspace, group in by_workspace.items()}
        waves: list[asyncio.Task[None]] = []

        def watch_slow_consent() -> None:
            # Only a round with an answer still awaited after the patience pays for a task.
            late = {w: task for w, task in asking.items() if not task.done()}
            if late:
                waves.append(asyncio.create_task(self._wait_for_slow_consent(
                    late, by_workspace, len(claims), arrivals, on_waiting)))

        patience = (asyncio.get_running_loop().call_later(
                        self.settings.consent_patience.total_seconds(), watch_slow_consent)
                    if self.consent is not None else None)
        try:
            while asking:
                await asyncio.wait(asking.values(), return_when=asyncio.FIRST_COMPLETED)
                consent: dict[str, ConsentDecision | ConsentUnavailable] = {}
                wave: list[Claim] = []
                for workspace in [w for w, task in asking.items() if task.done()]:
                    try:
                        consent.update(asking.pop(workspace).result())
                    except Exception as exc:  # not ConsentUnavailable: a bug, for this wave
                        log.warning("asking for consent failed", workspace=workspace,
                                    error=repr(exc), exc_info=exc)
                        await self._set_back(by_workspace[workspace], arrivals)
                        continue
                    wave += by_workspace[workspace]
                if wave:
                    waves.append(asyncio.create_task(self._wave(
                        wave, consent, context, turns, now, arrivals)))
            await asyncio.gather(*waves)
        finally:
            if patience is not None:
                patience.cancel()
            for under_way in (*asking.values(), *waves):
                under_way.cancel()

    async def _wait_for_slow_consent(self, asking: Mapping[str, asyncio.Task[object]],
                                     by_workspace: Mapping[str, Sequence[Claim]], claimed: int,
                                     arrivals: _Arrivals,
                                     on_waiting: Callable[[], bool] | None) -> None:
        """Started once ``consent_patience`` has passed with answers still awaited (a round
        whose answers all came sooner starts none: it only armed and cancelled a timer). When
        every claim of the round has been attempted but those of workspaces whose consent
        answer is still awaited: ``on_waiting`` lets the next round start, and once ``rounds``
        rounds wait aside for one workspace's answers, the claims of this process leave its
        messages until one came. Counted by workspace, not
        overall: a slow workspace is in at most about that many rounds waiting aside, and any
        number of slow workspaces each hold back only their own messages (a limit on all
        waiting rounds together let two slow workspaces, each below it, fill it and keep every
        round's place for identity's 10 s timeout). Their claimed messages stay with this
        round (SENDING under its lease: the profiles' later messages wait for them on every
        replica)."""
        while waiting := [w for w, task in asking.items() if not task.done()]:
            if arrivals.attempted + sum(len(by_workspace[w]) for w in waiting) >= claimed:
                if on_waiting is not None and on_waiting():
                    for workspace in waiting:
                        self._leaving[workspace] += 1
                        asking[workspace].add_done_callback(partial(self._left, workspace))
                return
            arrivals.progress.clear()
            progress = asyncio.create_task(arrivals.progress.wait())
            try:
                await asyncio.wait([progress, *(asking[w] for w in waiting)],
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                progress.cancel()

    def _left(self, workspace: str, _: object) -> None:
        self._leaving[workspace] -= 1
        if self._leaving[workspace] <= 0:
            del self._leaving[workspace]

    async def _wave(self, claims: Sequence[Claim], consent: caps.Consent,
                    context: RoundContext, turns: dict[str, _Turn], now: datetime,
                    arrivals: _Arrivals) -> None:
        """Decide and send the claims of one wave. A wave that fails before its messages are
        handed over sets them back (:meth:`_set_back`), and the round's other waves go on."""
        try:
            decided = self._leases_ran_out(claims)
            decided |= await self._apply_policies(
                [claim for claim in claims if claim.message_id not in decided]
                if decided else claims, context, consent, now)
            await self.breakers.refresh(
                [route for claim in claims if claim.message_id not in decided
                 for route in self.routes.of(claim, context.providers_of(claim))],
                self.clock.now())
            grants = RoundGrants(self.transactions, self.clock)
            await self._reserve(claims, decided, context, grants)
        except Exception as exc:
            log.warning("a send round's wave failed before sending; its messages are sent "
                        "again once their lease runs out", error=repr(exc), exc_info=exc)
            await self._set_back(claims, arrivals)
            return
        try:
            await self._hand_over(claims, decided, context, grants, turns, now, arrivals)
        finally:
            await grants.give_back()

    async def _set_back(self, claims: Sequence[Claim], arrivals: _Arrivals) -> None:
        """No provider had ``claims`` (their wave failed before the hand-over): they stay
        SENDING, holding their profiles' next messages back, but their lease is cut to the
        retry policy's delay (a failure that passes costs that, not a whole lease) and its end
        will not count against them (``lease_expiries``: the claim that takes them over adds
        the one taken off now). If even that write fails, their whole lease runs out, and
        counts."""
        arrivals.give_up(len(claims))
        now = self.clock.now()
        until = now + self.settings.retry.delay(1, self.rng)
        try:
            await self.transactions.run(lambda uow: set_back(uow, claims, until))
        except Exception as exc:
            log.warning("setting back a failed wave's messages failed; they are sent again "
                        "once their lease runs out", error=repr(exc), exc_info=exc)

    def _leases_ran_out(self, claims: Sequence[Claim]) -> dict[str, Transition]:
        """The claims whose lease ran out ``max_lease_expiries`` times: FAILED, not sent again
        (nor counted by a frequency cap or a rate limit). A message whose outcome the database
        refused even in its minimal form was otherwise sent once per lease, forever; one that
        takes its sender down with it, every replica in turn."""
        most = self.settings.max_lease_expiries
        return {claim.message_id: leases_ran_out(claim.attempts, claim.lease_expiries)
                for claim in claims if claim.lease_expiries >= most}

    async def _ask(self, workspace: str, queries: list[ConsentQuery]) -> _Answers:
        assert self.consent is not None
        return dict(zip(queries, await self.consent.check(workspace, queries), strict=True))

    async def _consent_of(self, workspace: str, claims: Sequence[Claim],
                          early: asyncio.Task[_Answers] | None,
                          ) -> dict[str, ConsentDecision | ConsentUnavailable]:
        """Consent per message id of a workspace's claims that need one (a profile, not
        transactional): from the answers asked early, and of identity for the others. Asked
        once: when identity could not answer early, the workspace's messages wait."""
        needing = [c for c in claims if c.profile_id and not c.transactional]
        if self.consent is None or not needing:
            return {}
        known: _Answers = {}
        if early is not None:
            try:
                known = await early
            except ConsentUnavailable as exc:
                return dict.fromkeys((c.message_id for c in needing), exc)
        answers: dict[str, ConsentDecision | ConsentUnavailable] = {}
        asking: list[Claim] = []
        for claim in needing:
            found = known.get(question(claim))
            if found is not None:
                answers[claim.message_id] = found
            else:
                asking.append(claim)
        if asking:
            try:
                decisions: Sequence[ConsentDecision | ConsentUnavailable] = \
                    await self.consent.check(workspace, [question(c) for c in asking])
            except ConsentUnavailable as exc:
                decisions = [exc] * len(asking)
            answers.update(zip((c.message_id for c in asking), decisions, strict=True))
        return answers

    async def _apply_policies(self, claims: Sequence[Claim], context: RoundContext,
                              consent: caps.Consent, now: datetime) -> dict[str, Transition]:
        """The transitions of claims a policy stops; the others are sent. Frequency caps are
        counted and reserved in one transaction shared with every replica (caps.py)."""
        if not caps.capped(claims, context):
            return caps.decide_policies(None, claims, context, consent, now)
        return await self.transactions.run(
            lambda uow: caps.decide_policies(uow, claims, context, consent, now))

    async def _reserve(self, claims: Sequence[Claim], decided: dict[str, Transition],
                       context: RoundContext, grants: RoundGrants) -> None:
        """Reserve in one transaction the sends this round wants of rate-limited providers.

        A message counts for the first provider whose breaker lets it through, the one it
        will try first: counting its fallbacks too would hold budget other replicas could use.
        A half-open breaker lets one trial through, so only one message counts for it. A
        message that fails over to a rate-limited provider tops its grant up (``take``).
        """
        now = self.clock.now()
        wants: dict[tuple[str, str], tuple[RateLimit, int]] = {}
        trials: set[int] = set()  # half-open breakers already counted for their one trial
        for claim in claims:
            if claim.message_id in decided:
                continue
            first = None
            for route in self.routes.of(claim, context.providers_of(claim)):
                key = (claim.workspace_id, route.provider_id)
                if route.limit is not None:
                    grants.candidates[key] = grants.candidates.get(key, 0) + 1
                state = route.breaker.state(now)
                if first is not None or state == "open" or (
                        state == "half_open" and id(route.breaker) in trials):
                    continue
                if state == "half_open":
                    trials.add(id(route.breaker))
                first = route
            if first is not None and first.limit is not None:
                key = (claim.workspace_id, first.provider_id)
                wants[key] = (first.limit, wants.get(key, (first.limit, 0))[1] + 1)
        await grants.reserve(wants)

    async def _hand_over(self, claims: Sequence[Claim], decided: dict[str, Transition],
                         context: RoundContext, grants: RoundGrants, turns: dict[str, _Turn],
                         claimed_at: datetime, arrivals: _Arrivals) -> None:
        """Send every claim (leased from ``claimed_at``), adding its outcome to ``arrivals``. A
        message not handed over within :func:`hand_over_share` of its lease goes back.

        At most ``concurrency`` workers take the claims in claim order (a task per message
        and a queue of outcomes cost ~10% of the CPU per message sent); a message whose
        profile's message claimed before it is still under way waits in a task of its own,
        so it holds up no worker, and so does one whose workspace holds its share of the send
        slots (:class:`SendSlots`) while the wave has other workspaces' messages (a wave of
        one workspace waits in its workers: each next message would wait too). Once every
        claim of the round not yet attempted is with a provider or waits for its workspace's
        share, while some slot is free, the round lets the next one start (``on_waiting``): a
        slow provider holds neither the slots nor the rounds of the other workspaces."""
        waiting: list[asyncio.Task[None]] = []
        alone = len({claim.workspace_id for claim in claims}) == 1
        taken, rest_aside = 0, False

        async def attempt(claim: Claim, turn: _Turn | None) -> None:
            outcome = _Outcome(claim, released=True)
            try:
                transition = decided.get(claim.message_id)
                if turn is not None and self.turns.behind_unsent(claim, turn):
                    pass  # the profile's message before it went back: so does it, after it
                elif transition is not None:
                    outcome = _Outcome(claim, decided=transition)
                else:
                    outcome = await self._attempt(claim, context, grants, claimed_at, arrivals)
            finally:
                self.turns.end(claim, turn, unsent=outcome.released)
            arrivals.add(outcome)

        async def after_turn(claim: Claim, turn: _Turn,
                             after: asyncio.Future[str | None]) -> None:
            # Waited for, not awaited: cancelling this task must not cancel that turn.
            await asyncio.wait({after})
            await attempt(claim, turn)

        next_claims = iter(claims)

        async def worker() -> None:
            nonlocal taken, rest_aside
            for claim in next_claims:
                taken += 1
                turn = turns.get(claim.message_id)
                if turn is not None and turn.after is not None and not turn.after.done():
                    waiting.append(asyncio.create_task(after_turn(claim, turn, turn.after)))
                elif (claim.message_id not in decided
                      and self._slots.waits_for_share(claim.workspace_id)):
                    if alone:  # the rest of the wave waits for the same share
                        if not rest_aside:
                            rest_aside = True
                            arrivals.set_aside(c.message_id for c in claims[taken - 1:])
                        await attempt(claim, turn)
                    else:
                        arrivals.set_aside((claim.message_id,))
                        waiting.append(asyncio.create_task(attempt(claim, turn)))
                else:
                    await attempt(claim, turn)

        workers = [asyncio.create_task(worker())
                   for _ in range(min(len(claims), self.settings.concurrency))]
        try:
            await asyncio.gather(*workers)
            while waiting:
                await waiting.pop()
        finally:
            for task in (*workers, *waiting):
                task.cancel()

    async def _record_as_they_come(self, arrivals: _Arrivals) -> None:
        """Record a round's outcomes as they come in, with those of every other round in
        this process: the outcomes that arrive within ``record_linger`` of the first waiting
        to be recorded join it (one commit for all: :class:`_RecordWindow`), while a slow
        message never holds back the record of the fast ones for longer."""
        while arrivals.pending > 0:
            if not arrivals.outcomes:
                arrivals.arrived.clear()
                await arrivals.arrived.wait()
                continue
            group, error = await self._window.join(arrivals)
            if error is not None:  # the window's record failed: this round's on its own
                log.warning("recording send outcomes failed; retrying", error=str(error))
                await self._record_with_retry(group, error)
            else:
                self.turns.settled(outcome.claim for outcome in group)
            arrivals.pending -= len(group)
            # A window opened while this group was written may now have nothing more to
            # wait for: it checks again (else it would wait out its whole linger).
            self._window.arrived.set()

    async def _attempt(self, claim: Claim, context: RoundContext, grants: RoundGrants,
                       claimed_at: datetime, arrivals: _Arrivals | None = None) -> _Outcome:
        async with self._slots.slot(claim.workspace_id):
            if arrivals is not None:
                arrivals.set_aside((claim.message_id,))
            # Stopping, or so late that the lease could run out during the call (and another
            # sender take the message over): back to the queue, unsent.
            now = self.clock.now()
            if self.stopping or now >= claimed_at + self._hand_over_within:
                return _Outcome(claim, released=True)
            # Every provider call ends before CALLS_END of the lease: see _through_providers.
            left = claimed_at + self.settings.lease * CALLS_END - now
            calls_end = asyncio.get_running_loop().time() + left.total_seconds()
            attributes = {"cjo.message.id": claim.message_id,
                          "cjo.workspace.id": claim.workspace_id,
                          "cjo.message.attempt": str(claim.attempts)}
            with continue_trace("delivery.send", claim.traceparent,
                                attributes=attributes) as span:
                try:
                    outgoing = self._outgoing(claim)
                    routes = self.routes.of(claim, context.providers_of(claim))
                    outcome = await self._through_providers(claim, outgoing, routes, grants,
                                                            calls_end)
                except ProviderError as exc:
                    outcome = _Outcome(claim, error=exc)
                except Exception as exc:  # a provider bug must not stop the other messages
                    log.error("provider raised an unexpected error", message_id=claim.message_id,
                              exc_info=exc)
                    outcome = _Outcome(claim, error=ProviderError(f"unexpected error: {exc}",
                                                                  transient=True))
                if outcome.error is not None:
                    span.set_status(Status(StatusCode.ERROR, outcome.error.message))
                return outcome

    async def _through_providers(self, claim: Claim, outgoing: OutgoingMessage,
                                 routes: Sequence[Route], grants: RoundGrants,
                                 calls_end: float) -> _Outcome:
        """Carry out the failover's steps until it reaches a verdict. Provider calls end by
        ``calls_end`` (the loop's clock), whatever the providers' own timeouts (a workspace's
        may be long, and a trip may call several one after another): a call still under way
        then is cut off and fails as a transient error (counted against its provider's
        breaker, as a timeout is), and no further step starts after it, so no other sender
        calls a provider for the message while this one does. The outcome is recorded in the
        tenth of the lease left; should that take longer, the attempt number keeps it from
        overwriting the sender that took the message over."""
        if not routes:
            return _Outcome(claim, error=ProviderError(
                f"no {claim.channel.value} provider is configured in this workspace",
                transient=False))
        trip = failover.Trip()
        last: failover.Outcome | None = None
        handed: list[str] = []  # providers whose call failed
        reserve = 0.0  # what the next provider needs left before ``calls_end``
        while True:
            now = self.clock.now()
            step = failover.decide(trip, [route.state(now) for route in routes], last, now)
            trip = step.trip
            if step.give_back is not None:
                grants.grants[(claim.workspace_id, routes[step.give_back].provider_id)].put_back()
            if step.breaker is not None:
                index, change = step.breaker
                await self.breakers.record(routes[index], change, now, step.hold_until)
            action = step.action
            if (isinstance(action, failover.TakeSend | failover.Call)
                    and asyncio.get_running_loop().time() >= calls_end - reserve):
                # Out of time before the next provider: nothing of it is claimed (a half-open
                # breaker's one trial, a rate-limited send); what the trip met so far stays.
                if trip.holding_send:
                    grants.grants[(claim.workspace_id,
                                   routes[action.index].provider_id)].put_back()
                late = _out_of_lease(self.settings.lease, cut=False).message
                return _Outcome(claim, error=ProviderError(
                    "; ".join((*trip.errors, late)), transient=True,
                    retry_after=trip.retry_after))
            if isinstance(action, failover.TakeSend):
                route = routes[action.index]
                assert route.limit is not None
                grant, taken = await grants.take((claim.workspace_id, route.provider_id),
                                                 route.limit)
                last = (failover.SendReserved() if taken
                        else failover.NoSendLeft(grants.turn(grant, now)))
            elif isinstance(action, failover.Call):
                route = routes[action.index]
                # Claims a half-open breaker's one trial, among every replica's messages.
                if not await self.breakers.allow(route, now):
                    # It shut meanwhile (another replica opened it or took the trial): the
                    # failover sees it shut and moves on.
                    last = None
                    continue
                # A provider after this one is called only while the longest send fits before
                # the cut-off (the first, by the hand-over's bound): one cut off after its
                # relay took the content would send it twice (review rtrace).
                reserve = self.settings.longest_send.total_seconds()
                try:
                    async with asyncio.timeout_at(calls_end) as bound:
                        sent = await route.provider.send(outgoing)
                    last = failover.Delivered(sent)
                except TimeoutError:
                    if not bound.expired():
                        raise
                    handed.append(route.provider_id)
                    last = failover.CallFailed(_out_of_lease(self.settings.lease, cut=True))
                except ProviderError as exc:
                    handed.append(route.provider_id)
                    last = failover.CallFailed(exc)
                    if exc.transient or exc.unsupported:
                        log.info("provider did not take the message; trying the next",
                                 provider=route.provider_id, message_id=claim.message_id,
                                 error=exc.message)
            elif isinstance(action, failover.Sent):
                return _Outcome(claim, provider_message_id=action.provider_message_id,
                                provider_id=routes[action.index].provider_id,
                                handed=tuple(handed))
            elif isinstance(action, failover.WaitForTurn):
                key = (claim.workspace_id, routes[action.index].provider_id)
                grants.grants[key].promise(action.turn)
                return _Outcome(claim, decided=rate_limited(claim.attempts, action.turn),
                                handed=tuple(handed))
            else:
                return _Outcome(claim, error=action.error, handed=tuple(handed))

    def _outgoing(self, claim: Claim) -> OutgoingMessage:
        unsubscribe_url, rewrite = ("", None) if self.links is None else self.links(claim)
        try:
            return decode_outgoing(claim, unsubscribe_url, rewrite)
        except ValueError as exc:
            raise ProviderError(str(exc), transient=False) from exc

    async def _record(self, group: Sequence[_Outcome]) -> None:
        """Record ``group`` in one transaction (a record window's outcomes). Breaker resets
        not written (it failed, or was cancelled first) are given back, for the rounds' own
        records that follow."""
        if not group:
            return
        await self._remember_handed(group)
        now = self.clock.now()
        left = await record_outcomes(
            self.transactions,
            [(outcome.claim, self._transition(outcome, now)) for outcome in group], now,
            self.breakers.take_resets(), give_back=self.breakers.give_back_resets,
            forward_to_decisioning=self.settings.forward_to_decisioning, wake=self._wake)
        self._left_sending(left)

    async def _record_with_retry(self, group: Sequence[_Outcome],
                                 failed: Exception | None = None) -> None:
        """Record a round's ``group`` on its own, retried for a while; ``failed``: the error of
        the record window that took it (what that recorded one by one is not again). Each try
        takes the breaker resets still to write and gives back what it did not write (another
        round's record may still zero the breakers' counts with them)."""
        try:
            await self._remember_handed(group)
        except Exception as exc:  # their reports are ignored: the outcome is recorded still
            log.warning("writing down providers whose call failed failed", error=repr(exc))
        now = self.clock.now()
        changes = unrecorded(
            [(outcome.claim, self._transition(outcome, now)) for outcome in group], failed)
        for delay in (*_RECORD_RETRY_DELAYS, None):
            try:
                left = await record_outcomes(
                    self.transactions, changes, now, self.breakers.take_resets(),
                    give_back=self.breakers.give_back_resets,
                    forward_to_decisioning=self.settings.forward_to_decisioning,
                    wake=self._wake)
            except Exception as exc:
                changes = unrecorded(changes, exc)
                if delay is None:
                    raise
                log.warning("recording send outcomes failed; retrying", error=str(exc))
                await asyncio.sleep(delay)
                continue
            self._left_sending(left)
            self.turns.settled(outcome.claim for outcome in group)
            return

    async def _remember_handed(self, group: Sequence[_Outcome]) -> None:
        """Write down the providers whose call failed but that may have taken the message
        (their late answer, an error after the content went), before the outcome: their
        reports about it are then found (the provider that took it is on the message). Only
        rounds with such calls pay for it."""
        rows = [(o.claim.workspace_id, o.claim.message_id, provider_id)
                for o in group for provider_id in o.handed]
        if rows:
            await self.transactions.run(
                lambda uow: webhook_store.remember_providers(uow.session, rows))

    def _wake(self, uow: UnitOfWork) -> None:
        """Held messages were released by this record: wake the senders of every replica once
        it committed (as queueing does), not at their next poll."""
        if self.signals is not None:
            self.signals.send(uow, QUEUED_SIGNAL)

    def _left_sending(self, claims: Sequence[Claim]) -> None:
        """``claims`` stay SENDING (the database refused even their minimal record): this
        process takes a new lease holder, so they hold up their profiles' next messages in its
        claims too until their lease runs out, as a failed round's do."""
        if claims:
            self.holder = uuid.uuid4().hex

    def _transition(self, outcome: _Outcome, now: datetime) -> Transition:
        attempts = outcome.claim.attempts
        if outcome.decided is not None:
            return outcome.decided
        if outcome.released:
            return released(attempts, now)
        if outcome.error is not None:
            return after_failure(attempts, outcome.error, self.settings.retry, now, self.rng)
        return after_success(attempts, outcome.provider_message_id, outcome.provider_id)
