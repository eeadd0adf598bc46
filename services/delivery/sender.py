"""The sender: a background task that claims due messages and hands them to the provider.

One round: claim a batch of due messages in one transaction (QUEUED ones whose time has come,
SENDING ones whose lease ran out), marking them SENDING with ``attempts + 1`` and a lease;
commit; call the provider for each (a few at a time); record the outcomes — SENT, QUEUED again
with a backoff, or FAILED — as they arrive, each group in one transaction (a few bulk updates)
together with the outbox rows of the facts for analytics.

Crash safety: a message is in the database before any provider call, and its outcome is written
only after the call returned. When the process dies in between, the message stays SENDING until
its lease runs out and is then claimed again by whichever sender comes next. So a provider call
cut off mid-way (or finished but not yet recorded) may be repeated once; nothing accepted is
ever lost. The email carries a stable Message-ID ``<{message_id}@cjo>``, so receivers can
discard the repeat. A sender that outlives its lease cannot overwrite the result of the sender
that took over: outcomes are recorded only while the row still carries the claim's attempt
number. On an orderly shutdown, calls under way are finished and recorded and messages not yet
handed over go back to the queue, so a restart repeats nothing.

Before any provider call, each claimed message passes the workspace's policies: consent (asked
of identity in one batch call per workspace and round), the suppression list, quiet hours and
frequency caps. It may end SUPPRESSED, or wait DEFERRED, instead. Then the workspace's
providers for its channel are tried in order of priority: one whose circuit breaker is open is
skipped, and a transient failure moves on to the next, as does a provider that can never take
this message (one without SMTPUTF8 for an address that needs it). Email falls back to the
deployment's SMTP server when the workspace configured no email provider.

Rate limits (``rate_per_second``, ``burst``) hold across every sender replica sharing the
database (domain/ratelimit.py, adapters/rate_store.py). Once the claims are in, a round reserves
in one transaction, per rate-limited provider, as many sends as it has messages that will try
that provider first (a half-open breaker's one trial counts once; the rest count for the next
provider); each message takes one from its provider's grant, and the round gives back what it
did not use (a failover, a send the provider never saw, a shutdown) in at most one more
transaction. A call the provider received, failed or not, keeps its send: the provider counted
it. Rounds without rate-limited providers pay nothing. A provider without a send left for the
message is skipped like one with an open breaker. A grant used up is topped up on the spot (for
the messages of the round that may still want it, so failovers are not held to one a round);
once a reservation comes back short, or after two top-ups, the provider is done for the round.
When no provider was called because of that, the message goes back to the queue, its attempt
not counted, due at its turn: when sends free up, after the turns already handed out on any
replica, so a backlog comes back at the rate rather than being claimed and put back every
round. When reserving fails (the database), only that provider's messages are affected: they
go back to the queue the same way, due shortly. Excess waits in the database, never in
memory.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opentelemetry.trace import Status, StatusCode
from sqlalchemy.orm import Session

from cjo_delivery.adapters import provider_store, rate_store, repository
from cjo_delivery.adapters.contents import decode_outgoing
from cjo_delivery.adapters.facts import fact_payload
from cjo_delivery.adapters.secret_box import SecretBox
from cjo_delivery.domain.breaker import CircuitBreaker
from cjo_delivery.domain.messages import Channel, Claim, MessageStatus
from cjo_delivery.domain.policies import (
    ConsentDecision,
    ConsentDirectory,
    ConsentQuery,
    ConsentUnavailable,
    Defer,
    DeliveryPolicy,
    Suppress,
    decide,
)
from cjo_delivery.domain.providers import DEFAULT_SMTP_ID, ProviderConfig
from cjo_delivery.domain.ratelimit import Grant, RateLimit, limit_of
from cjo_delivery.domain.sending import (
    OutgoingMessage,
    Provider,
    ProviderError,
    RetryPolicy,
    Transition,
    after_failure,
    after_success,
    deferred,
    rate_limited,
    released,
    suppressed,
)
from cjo_platform.clock import Clock
from cjo_platform.db import Database
from cjo_platform.db.outbox import Outbox
from cjo_platform.facts import FACTS_TOPIC
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import continue_trace
from cjo_platform.worker import PollingWorker

log = get_logger(__name__)

# Recording outcomes is retried in place for a short while: giving up means the messages are
# sent again once their lease runs out.
_RECORD_RETRY_DELAYS = (0.2, 1.0, 3.0)
_MAX_ROUND_BACKOFF = 30.0
_CONSENT_WAIT = timedelta(seconds=30)
_RESERVE_RETRY = timedelta(seconds=5)  # after reserving sends of a rate-limited provider failed
_MAX_TOP_UPS = 2  # reservations on the spot per rate-limited provider and round


@dataclass(frozen=True)
class SenderSettings:
    poll_seconds: float = 0.5
    batch_size: int = 100
    concurrency: int = 8
    # Longer than the slowest provider call can take, or a live call's message is claimed twice.
    lease: timedelta = timedelta(minutes=5)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_failures: int = 5
    breaker_cool_down: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class _Outcome:
    claim: Claim
    provider_message_id: str = ""
    provider_id: str = ""
    error: ProviderError | None = None
    released: bool = False
    decided: Transition | None = None  # set when a policy, not a provider, decided


@dataclass
class _Route:
    """A provider of one workspace and channel, with its breaker."""

    provider_id: str
    provider: Provider
    breaker: CircuitBreaker
    limit: RateLimit | None = None


@dataclass(frozen=True)
class _Context:
    """What the policies need for one round, read in one transaction."""

    providers: dict[tuple[str, Channel], list[ProviderConfig]]
    policies: dict[str, DeliveryPolicy]
    suppressions: dict[tuple[str, str, str], str]
    recent: dict[tuple[str, str, str], list[datetime]]
    # This round's reservations of rate-limited providers, by (workspace, provider id).
    grants: dict[tuple[str, str], Grant] = field(default_factory=dict)
    # How many of the round's messages list each rate-limited provider: what a top-up asks.
    candidates: dict[tuple[str, str], int] = field(default_factory=dict)


ProviderBuilder = Callable[[ProviderConfig], Provider]
LinkMaker = Callable[[Claim], tuple[str, Callable[[str], str] | None]]


class Sender(PollingWorker):
    name = "sender"

    def __init__(self, db: Database, outbox: Outbox, provider: Provider, clock: Clock,
                 settings: SenderSettings, rng: random.Random | None = None, *,
                 build_provider: ProviderBuilder | None = None,
                 consent: ConsentDirectory | None = None,
                 links: LinkMaker | None = None, inbox: Provider | None = None,
                 secret_box: SecretBox | None = None) -> None:
        self.db = db
        self.secret_box = secret_box or SecretBox([])
        self.outbox = outbox
        self.fallback = provider
        self.clock = clock
        self.settings = settings
        super().__init__(settings.poll_seconds, _MAX_ROUND_BACKOFF)
        self.rng = rng or random.Random()
        self.build_provider = build_provider
        self.consent = consent
        self.links = links
        self._inbox = None if inbox is None else _Route("inbox", inbox, self._new_breaker())
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._stopping = False
        self._fallback_breaker = self._new_breaker()
        # Live providers by (workspace, provider id), rebuilt when their etag changes.
        self._live: dict[tuple[str, str], tuple[str, _Route]] = {}
        self._retired: list[Provider] = []
        # One reservation at a time for messages that fail over to a rate-limited provider.
        self._reserving = asyncio.Lock()

    def _new_breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_cool_down)

    async def run_once(self) -> bool:
        return await self.send_due() >= self.settings.batch_size

    async def send_due(self) -> int:
        """Claim one batch of due messages and send it; returns how many were claimed.

        Cancelling (shutdown) lets the round finish: the claim commits either way, so it must
        be followed through, but messages not yet handed to the provider go back to the queue.
        """
        current = asyncio.ensure_future(self._round())
        try:
            return await asyncio.shield(current)
        except asyncio.CancelledError:
            self._stopping = True
            await asyncio.wait({current})
            raise

    async def _round(self) -> int:
        if self._stopping:
            return 0
        now = self.clock.now()
        claims = await self.db.run(self._claim, now)
        if claims:
            context = await self.db.run(self._load_context, claims, now)
            decided = await self._apply_policies(claims, context, now)
            await self._reserve(claims, decided, context)
            try:
                await self._deliver(claims, decided, context)
            finally:
                await self._give_back(context.grants)
        return len(claims)

    def _claim(self, now: datetime) -> list[Claim]:
        with self.db.transaction() as session:
            return repository.claim_due(session, now, now + self.settings.lease,
                                        self.settings.batch_size)

    def _load_context(self, claims: Sequence[Claim], now: datetime) -> _Context:
        workspaces = sorted({c.workspace_id for c in claims})
        with self.db.transaction() as session:
            configs = provider_store.providers_of(session, workspaces, self.secret_box)
            policies = provider_store.policies_of(session, workspaces)
            suppressions = repository.suppressed_addresses(
                session, [(c.workspace_id, c.channel.value, c.address) for c in claims])
            recent: dict[tuple[str, str, str], list[datetime]] = {}
            for workspace in workspaces:
                policy = policies.get(workspace)
                if policy is None or not policy.caps:
                    continue
                keys = sorted({(c.profile_id, c.channel.value) for c in claims
                               if c.workspace_id == workspace and c.profile_id
                               and c.channel in policy.caps and not c.transactional})
                found = repository.recent_sends(session, workspace, keys,
                                                now - policy.longest_window)
                recent.update({(workspace, *key): times for key, times in found.items()})
        providers: dict[tuple[str, Channel], list[ProviderConfig]] = defaultdict(list)
        for config in configs:
            providers[(config.workspace_id, config.channel)].append(config)
        return _Context(dict(providers), policies, suppressions, recent)

    async def _consent_of(self, claims: Sequence[Claim]
                          ) -> dict[str, ConsentDecision] | ConsentUnavailable:
        """Consent per message id of the claims that need one (a profile, not transactional)."""
        if self.consent is None:
            return {}
        asking: dict[str, list[Claim]] = defaultdict(list)
        for claim in claims:
            if claim.profile_id and not claim.transactional:
                asking[claim.workspace_id].append(claim)
        answers: dict[str, ConsentDecision] = {}
        for workspace, group in asking.items():
            try:
                decisions = await self.consent.check(workspace, [
                    ConsentQuery(c.profile_id, c.channel, c.topic) for c in group])
            except ConsentUnavailable as exc:
                return exc
            answers.update({c.message_id: d for c, d in zip(group, decisions, strict=True)})
        return answers

    async def _apply_policies(self, claims: Sequence[Claim], context: _Context,
                              now: datetime) -> dict[str, Transition]:
        """The transitions of claims a policy stops; the others are sent."""
        consent = await self._consent_of(claims)
        decided: dict[str, Transition] = {}
        for claim in claims:
            if isinstance(consent, ConsentUnavailable):
                if claim.profile_id and not claim.transactional:
                    # Never send without knowing; try again soon, the attempt not counted.
                    decided[claim.message_id] = Transition(
                        MessageStatus.QUEUED, claim.attempts - 1, now + _CONSENT_WAIT,
                        str(consent), "")
                    continue
                answer = None
            else:
                answer = consent.get(claim.message_id)
            policy = context.policies.get(claim.workspace_id, DeliveryPolicy())
            decision = decide(
                claim, policy, consent=answer,
                suppression=context.suppressions.get(
                    (claim.workspace_id, claim.channel.value, claim.address)),
                recent_sends=context.recent.setdefault(
                    (claim.workspace_id, claim.profile_id, claim.channel.value), []),
                now=now)
            if isinstance(decision, Suppress):
                decided[claim.message_id] = suppressed(claim.attempts, decision.reason)
            elif isinstance(decision, Defer):
                decided[claim.message_id] = deferred(claim.attempts, decision.until,
                                                     decision.reason)
        return decided

    def _routes(self, claim: Claim, context: _Context) -> list[_Route]:
        if claim.channel is Channel.IN_APP:
            return [self._inbox] if self._inbox is not None else []
        configs = context.providers.get((claim.workspace_id, claim.channel), [])
        if not configs:
            if claim.channel is Channel.EMAIL:
                return [_Route(DEFAULT_SMTP_ID, self.fallback, self._fallback_breaker)]
            return []
        routes = []
        for config in configs:
            key = (config.workspace_id, config.provider_id)
            live = self._live.get(key)
            if live is None or live[0] != config.etag:
                if live is not None:  # may still be sending; closed at shutdown
                    self._retired.append(live[1].provider)
                assert self.build_provider is not None
                live = (config.etag, _Route(config.provider_id, self.build_provider(config),
                                            self._new_breaker(), limit_of(config.config)))
                self._live[key] = live
            routes.append(live[1])
        return routes

    async def _reserve(self, claims: Sequence[Claim], decided: dict[str, Transition],
                       context: _Context) -> None:
        """Reserve in one transaction the sends this round wants of rate-limited providers.

        A message counts for the first provider whose breaker lets it through, the one it
        will try first: counting its fallbacks too would hold budget other replicas could use.
        A half-open breaker lets one trial through, so only one message counts for it. A
        message that fails over to a rate-limited provider tops its grant up (``_take``).
        """
        now = self.clock.now()
        wants: dict[tuple[str, str], tuple[RateLimit, int]] = {}
        trials: set[int] = set()  # half-open breakers already counted for their one trial
        for claim in claims:
            if claim.message_id in decided:
                continue
            first = None
            for route in self._routes(claim, context):
                key = (claim.workspace_id, route.provider_id)
                if route.limit is not None:
                    context.candidates[key] = context.candidates.get(key, 0) + 1
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
        if not wants:
            return
        grants: dict[tuple[str, str], Grant] = {}
        try:
            # Now, not when the round began: a back-dated reservation lets too much through.
            grants = await self.db.run(self._reserve_in_db, wants, self.clock.now())
        except Exception as exc:  # only these providers' messages wait; the round goes on
            log.warning("reserving rate-limited sends failed", error=str(exc))
        for key, (limit, _) in wants.items():
            # A provider deleted meanwhile has no row: its messages wait like on a failure.
            context.grants[key] = grants.get(key) or _failed_grant(limit, now)

    def _reserve_in_db(self, wants: dict[tuple[str, str], tuple[RateLimit, int]],
                       now: datetime) -> dict[tuple[str, str], Grant]:
        with self.db.transaction() as session:
            return rate_store.reserve(session, wants, now)

    async def _take(self, claim: Claim, route: _Route, context: _Context
                    ) -> tuple[Grant, bool]:
        """The round's grant of a rate-limited provider, and whether a send was taken from it;
        a grant used up (or missing: a failover) is topped up on the spot, one at a time."""
        assert route.limit is not None
        key = (claim.workspace_id, route.provider_id)
        grant = context.grants.get(key)
        if grant is None or not (grant.unused or grant.exhausted):
            async with self._reserving:
                grant = context.grants.get(key)
                if grant is None or not (grant.unused or grant.exhausted):
                    grant = await self._top_up(key, route.limit, grant, context)
        return grant, grant.take()  # no await since the check: the send is still there

    async def _top_up(self, key: tuple[str, str], limit: RateLimit, grant: Grant | None,
                      context: _Context) -> Grant:
        """Reserve for the messages of the round that may still want this provider."""
        served = 0 if grant is None else grant.used + grant.refused
        want = max(1, context.candidates.get(key, 0) - served)
        now = self.clock.now()
        more = None
        try:
            more = (await self.db.run(self._reserve_in_db, {key: (limit, want)}, now)).get(key)
        except Exception as exc:  # only this provider's messages wait; the round goes on
            log.warning("reserving rate-limited sends failed", provider=key[1], error=str(exc))
        if grant is None:
            grant = context.grants[key] = more or _failed_grant(limit, now)
        elif more is None:
            grant.exhausted = True
        else:
            grant.add(more)
        grant.top_ups += 1
        grant.exhausted = grant.exhausted or grant.top_ups >= _MAX_TOP_UPS
        return grant

    async def _give_back(self, grants: dict[tuple[str, str], Grant]) -> None:
        """Return the sends the round reserved and did not use, so a failover or a message
        the provider never saw does not burn budget, and record the turns handed out."""
        if not any(grant.unused or grant.last_turn is not None for grant in grants.values()):
            return
        try:
            await self.db.run(self._give_back_in_db, grants, self.clock.now())
        except Exception as exc:  # the budget is lost until the rate refills it: still safe
            log.warning("giving back unused rate-limited sends failed", error=str(exc))

    def _give_back_in_db(self, grants: dict[tuple[str, str], Grant], now: datetime) -> None:
        with self.db.transaction() as session:
            rate_store.settle(session, grants, now)

    async def _deliver(self, claims: Sequence[Claim], decided: dict[str, Transition],
                       context: _Context) -> None:
        """Send every claim, recording outcomes in groups as they come in: under load a group
        holds many messages (one commit for all), while a slow message never holds back the
        record of the fast ones."""
        done: asyncio.Queue[_Outcome] = asyncio.Queue()

        async def attempt(claim: Claim) -> None:
            transition = decided.get(claim.message_id)
            if transition is not None:
                done.put_nowait(_Outcome(claim, decided=transition))
            else:
                done.put_nowait(await self._attempt(claim, context))

        tasks = [asyncio.create_task(attempt(claim)) for claim in claims]
        try:
            pending = len(tasks)
            while pending:
                group = [await done.get()]
                while not done.empty():
                    group.append(done.get_nowait())
                await self._record_with_retry(group)
                pending -= len(group)
        finally:
            for task in tasks:
                task.cancel()

    async def _attempt(self, claim: Claim, context: _Context) -> _Outcome:
        async with self._slots:
            if self._stopping:
                return _Outcome(claim, released=True)
            attributes = {"cjo.message.id": claim.message_id,
                          "cjo.workspace.id": claim.workspace_id,
                          "cjo.message.attempt": str(claim.attempts)}
            with continue_trace("delivery.send", claim.traceparent,
                                attributes=attributes) as span:
                try:
                    outgoing = self._outgoing(claim)
                    outcome = await self._through_providers(claim, outgoing,
                                                            self._routes(claim, context),
                                                            context)
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
                                 routes: Sequence[_Route], context: _Context) -> _Outcome:
        """Try the providers in order; the first that takes the message wins."""
        if not routes:
            return _Outcome(claim, error=ProviderError(
                f"no {claim.channel.value} provider is configured in this workspace",
                transient=False))
        errors: list[str] = []  # of providers that may take the message later
        refusals: list[str] = []  # of providers that can never take it
        retry_after: float | None = None
        turns: list[tuple[datetime, Grant]] = []  # of providers at their rate limit
        called = False  # whether a provider was tried and failed for a while
        for route in routes:
            now = self.clock.now()
            grant = None
            # Not while a half-open breaker's one trial is under way: this message cannot go
            # and would top the grant up for nothing.
            if (route.limit is not None and route.breaker.state(now) != "open"
                    and not route.breaker.trial_under_way):
                grant, taken = await self._take(claim, route, context)
                if not taken:
                    turns.append((now + _RESERVE_RETRY if grant.failed else grant.next_turn(now),
                                  grant))
                    continue
            if not route.breaker.allow(now):
                if grant is not None:  # a half-open breaker's one trial is under way
                    grant.put_back()
                errors.append(f"{route.provider_id}: circuit open")
                reopen = route.breaker.open_until
                if reopen is not None:
                    wait = max((reopen - now).total_seconds(), 0.0)
                    retry_after = wait if retry_after is None else min(retry_after, wait)
                continue
            try:
                provider_message_id = await route.provider.send(outgoing)
            except ProviderError as exc:
                if exc.unsupported:
                    route.breaker.succeeded()  # the provider works; it cannot take this one
                    if grant is not None:  # refused before sending: the send is not used
                        grant.put_back()
                    refusals.append(exc.message)
                    log.info("provider cannot take the message; trying the next",
                             provider=route.provider_id, message_id=claim.message_id,
                             error=exc.message)
                    continue
                if not exc.transient:
                    route.breaker.succeeded()  # the provider works; the message is refused
                    return _Outcome(claim, error=exc)
                called = True
                now = self.clock.now()
                if exc.retry_after is not None:
                    route.breaker.hold_back(now + timedelta(seconds=exc.retry_after))
                    retry_after = (exc.retry_after if retry_after is None
                                   else min(retry_after, exc.retry_after))
                else:
                    route.breaker.failed(now)
                errors.append(exc.message)
                log.info("provider failed; trying the next", provider=route.provider_id,
                         message_id=claim.message_id, error=exc.message)
                continue
            route.breaker.succeeded()
            return _Outcome(claim, provider_message_id=provider_message_id,
                            provider_id=route.provider_id)
        if turns and not called:
            turn, grant = min(turns, key=lambda t: t[0])
            grant.promise(turn)
            return _Outcome(claim, decided=rate_limited(claim.attempts, turn))
        if not errors:  # every provider was asked and none can ever take it
            return _Outcome(claim, error=ProviderError("; ".join(refusals), transient=False))
        return _Outcome(claim, error=ProviderError("; ".join(errors + refusals), transient=True,
                                                   retry_after=retry_after))

    def _outgoing(self, claim: Claim) -> OutgoingMessage:
        unsubscribe_url, rewrite = ("", None) if self.links is None else self.links(claim)
        try:
            return decode_outgoing(claim, unsubscribe_url, rewrite)
        except ValueError as exc:
            raise ProviderError(str(exc), transient=False) from exc

    async def close(self) -> None:
        live, self._live = self._live, {}
        retired, self._retired = self._retired, []
        for provider in [*(route.provider for _, route in live.values()), *retired]:
            await provider.close()

    async def _record_with_retry(self, group: Sequence[_Outcome]) -> None:
        for delay in (*_RECORD_RETRY_DELAYS, None):
            try:
                wrote_facts = await self.db.run(self._record, group)
            except Exception as exc:
                if delay is None:
                    raise
                log.warning("recording send outcomes failed; retrying", error=str(exc))
                await asyncio.sleep(delay)
                continue
            if wrote_facts:
                self.outbox.notify()
            return

    def _transition(self, outcome: _Outcome, now: datetime) -> Transition:
        attempts = outcome.claim.attempts
        if outcome.decided is not None:
            return outcome.decided
        if outcome.released:
            return released(attempts, now)
        if outcome.error is not None:
            return after_failure(attempts, outcome.error, self.settings.retry, now, self.rng)
        return after_success(attempts, outcome.provider_message_id, outcome.provider_id)

    def _record(self, group: Sequence[_Outcome]) -> bool:
        """Write the outcomes and their facts in one transaction; True when facts were written.

        The outcomes go in a few bulk statements; only when a message of the group was claimed
        again meanwhile (this sender outlived its lease) is the transaction rolled back and the
        group written message by message, keeping the newer sender's results."""
        now = self.clock.now()
        changes = [(outcome.claim, self._transition(outcome, now)) for outcome in group]
        try:
            with self.db.transaction() as session:
                repository.record_all(session, changes, now)
                return self._consequences(session, changes, now)
        except repository.LeaseLost:
            pass
        with self.db.transaction() as session:
            kept = []
            for claim, transition in changes:
                if repository.record(session, claim, transition, now):
                    kept.append((claim, transition))
                else:
                    log.warning("message was claimed again after this sender's lease ran "
                                "out; keeping the newer result", message_id=claim.message_id)
            return self._consequences(session, kept, now)

    def _consequences(self, session: Session, changes: Sequence[tuple[Claim, Transition]],
                      now: datetime) -> bool:
        """Suppress bounced addresses and queue the facts of recorded transitions."""
        facts: dict[str, list[tuple[bytes, str]]] = defaultdict(list)
        bounces: list[tuple[str, str, str, str]] = []
        for claim, transition in changes:
            _log_transition(claim, transition)
            if transition.status is MessageStatus.BOUNCED:
                bounces.append((claim.workspace_id, claim.channel.value, claim.address,
                                f"bounced: {transition.error}"))
            payload = fact_payload(claim, transition.status, now)
            if payload is not None:
                facts[claim.workspace_id].append((payload, claim.traceparent))
        repository.suppress(session, bounces, now)
        for workspace_id, payloads in facts.items():
            self.outbox.add(session, FACTS_TOPIC, workspace_id, payloads)
        return bool(facts)


def _failed_grant(limit: RateLimit, now: datetime) -> Grant:
    """A grant of nothing, for a provider whose sends could not be reserved this round."""
    return Grant(limit, 0, now, None, exhausted=True, failed=True)


def _log_transition(claim: Claim, transition: Transition) -> None:
    if transition.status in (MessageStatus.FAILED, MessageStatus.BOUNCED):
        log.warning("message failed", message_id=claim.message_id, workspace=claim.workspace_id,
                    attempts=transition.attempts, error=transition.error,
                    status=transition.status.value)
    elif transition.status in (MessageStatus.SUPPRESSED, MessageStatus.DEFERRED):
        log.info(f"message {transition.status.value}", message_id=claim.message_id,
                 workspace=claim.workspace_id, reason=transition.error,
                 until=str(transition.next_attempt_time))
    elif transition.status is MessageStatus.QUEUED and transition.error is not None:
        log.info("message will be retried", message_id=claim.message_id,
                 workspace=claim.workspace_id, attempts=transition.attempts,
                 next_attempt_time=str(transition.next_attempt_time), error=transition.error)
