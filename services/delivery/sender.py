"""The sender: a background task that claims due messages and hands them to the provider.

One round: claim a batch of due messages in one transaction (QUEUED ones whose time has come,
SENDING ones whose lease ran out), marking them SENDING with ``attempts + 1`` and a lease;
commit; call the provider for each (a few at a time); record the outcomes — SENT, QUEUED again
with a backoff, or FAILED — as they arrive, each group in one transaction together with the
outbox rows of the facts for analytics.

Crash safety: a message is in the database before any provider call, and its outcome is written
only after the call returned. When the process dies in between, the message stays SENDING until
its lease runs out and is then claimed again by whichever sender comes next. So a provider call
cut off mid-way (or finished but not yet recorded) may be repeated once; nothing accepted is
ever lost. The email carries a stable Message-ID ``<{message_id}@cjo>``, so receivers can
discard the repeat. A sender that outlives its lease cannot overwrite the result of the sender
that took over: outcomes are recorded only while the row still carries the claim's attempt
number. On an orderly shutdown, calls under way are finished and recorded and messages not yet
handed over go back to the queue, so a restart repeats nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opentelemetry.trace import Status, StatusCode

from cjo_delivery.adapters import repository
from cjo_delivery.adapters.contents import decode_email
from cjo_delivery.adapters.facts import fact_payload
from cjo_delivery.domain.messages import Channel, Claim, MessageStatus
from cjo_delivery.domain.sending import (
    EmailProvider,
    OutgoingEmail,
    ProviderError,
    RetryPolicy,
    Transition,
    after_failure,
    after_success,
    released,
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


@dataclass(frozen=True)
class SenderSettings:
    poll_seconds: float = 0.5
    batch_size: int = 100
    concurrency: int = 8
    # Longer than the slowest provider call can take, or a live call's message is claimed twice.
    lease: timedelta = timedelta(minutes=5)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class _Outcome:
    claim: Claim
    provider_message_id: str = ""
    error: ProviderError | None = None
    released: bool = False


class Sender(PollingWorker):
    name = "sender"

    def __init__(self, db: Database, outbox: Outbox, provider: EmailProvider, clock: Clock,
                 settings: SenderSettings, rng: random.Random | None = None) -> None:
        self.db = db
        self.outbox = outbox
        self.provider = provider
        self.clock = clock
        self.settings = settings
        super().__init__(settings.poll_seconds, _MAX_ROUND_BACKOFF)
        self.rng = rng or random.Random()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._stopping = False

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
        claims = await self.db.run(self._claim, self.clock.now())
        if claims:
            await self._deliver(claims)
        return len(claims)

    def _claim(self, now: datetime) -> list[Claim]:
        with self.db.transaction() as session:
            return repository.claim_due(session, now, now + self.settings.lease,
                                        self.settings.batch_size)

    async def _deliver(self, claims: Sequence[Claim]) -> None:
        """Send every claim, recording outcomes in groups as they come in: under load a group
        holds many messages (one commit for all), while a slow message never holds back the
        record of the fast ones."""
        done: asyncio.Queue[_Outcome] = asyncio.Queue()

        async def attempt(claim: Claim) -> None:
            done.put_nowait(await self._attempt(claim))

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

    async def _attempt(self, claim: Claim) -> _Outcome:
        async with self._slots:
            if self._stopping:
                return _Outcome(claim, released=True)
            attributes = {"cjo.message.id": claim.message_id,
                          "cjo.workspace.id": claim.workspace_id,
                          "cjo.message.attempt": str(claim.attempts)}
            with continue_trace("delivery.send", claim.traceparent,
                                attributes=attributes) as span:
                try:
                    provider_id = await self.provider.send(self._email(claim))
                except ProviderError as exc:
                    span.set_status(Status(StatusCode.ERROR, exc.message))
                    return _Outcome(claim, error=exc)
                except Exception as exc:  # a provider bug must not stop the other messages
                    log.error("provider raised an unexpected error", message_id=claim.message_id,
                              exc_info=exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    return _Outcome(claim, error=ProviderError(f"unexpected error: {exc}",
                                                               transient=True))
                return _Outcome(claim, provider_message_id=provider_id)

    @staticmethod
    def _email(claim: Claim) -> OutgoingEmail:
        if claim.channel is not Channel.EMAIL:
            raise ProviderError(f"no provider sends {claim.channel.value} messages",
                                transient=False)
        try:
            email = decode_email(claim.content)
        except ValueError as exc:
            raise ProviderError(str(exc), transient=False) from exc
        return OutgoingEmail(message_id=claim.message_id, to=claim.address,
                             subject=email.subject, preheader=email.preheader, html=email.html,
                             text=email.text)

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
        if outcome.released:
            return released(attempts, now)
        if outcome.error is not None:
            return after_failure(attempts, outcome.error, self.settings.retry, now, self.rng)
        return after_success(attempts, outcome.provider_message_id)

    def _record(self, group: Sequence[_Outcome]) -> bool:
        """Write the outcomes and their facts in one transaction; True when facts were written."""
        now = self.clock.now()
        facts: dict[str, list[tuple[bytes, str]]] = defaultdict(list)
        with self.db.transaction() as session:
            for outcome in group:
                claim = outcome.claim
                transition = self._transition(outcome, now)
                if not repository.record(session, claim, transition, now):
                    log.warning("message was claimed again after this sender's lease ran out; "
                                "keeping the newer result", message_id=claim.message_id)
                    continue
                _log_transition(claim, transition)
                payload = fact_payload(claim, transition.status, now)
                if payload is not None:
                    facts[claim.workspace_id].append((payload, claim.traceparent))
            for workspace_id, payloads in facts.items():
                self.outbox.add(session, FACTS_TOPIC, workspace_id, payloads)
        return bool(facts)


def _log_transition(claim: Claim, transition: Transition) -> None:
    if transition.status is MessageStatus.FAILED:
        log.warning("message failed", message_id=claim.message_id, workspace=claim.workspace_id,
                    attempts=transition.attempts, error=transition.error)
    elif transition.status is MessageStatus.QUEUED and transition.error is not None:
        log.info("message will be retried", message_id=claim.message_id,
                 workspace=claim.workspace_id, attempts=transition.attempts,
                 next_attempt_time=str(transition.next_attempt_time), error=transition.error)
