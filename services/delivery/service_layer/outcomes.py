"""The last transactions of a send round: record what became of each claimed message, suppress
bounced addresses and queue the facts for analytics, all in one transaction per group."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from cjo_delivery.adapters import repository
from cjo_delivery.adapters.breaker_store import BreakerKey
from cjo_delivery.adapters.facts import exposes_decision, fact_payloads
from cjo_delivery.domain.messages import Claim, MessageStatus
from cjo_delivery.domain.sending import Transition, minimal
from cjo_delivery.service_layer.breakers import clear_failures
from cjo_platform.db.item_writes import brief, item_at_fault
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.decisioning import DECISIONING_FACTS_TOPIC
from cjo_platform.facts import FACTS_TOPIC
from cjo_platform.logging import get_logger

log = get_logger(__name__)

Change = tuple[Claim, Transition]
# Called in a record's transaction when it may have released held messages.
Wake = Callable[[UnitOfWork], None]
T = TypeVar("T")


class PartlyRecorded(Exception):
    """Recording one by one stopped at a failure of the database (its ``__cause__``), not of
    a message, after the outcomes of ``recorded`` ((workspace, message id) pairs) committed:
    a retry records only the others (it would find these no longer SENDING at its claim and
    log them as claimed again by another sender)."""

    def __init__(self, recorded: frozenset[tuple[str, str]], error: Exception) -> None:
        super().__init__(f"{brief(error)} (after {len(recorded)} outcomes were recorded one "
                         f"by one)")
        self.recorded = recorded

    def holds(self, claim: Claim) -> bool:
        """Whether ``claim``'s outcome is among those recorded."""
        return (claim.workspace_id, claim.message_id) in self.recorded


def unrecorded(changes: Sequence[Change], error: BaseException | None) -> list[Change]:
    """``changes`` without those a failed :func:`record_outcomes` (``error``) recorded."""
    if not isinstance(error, PartlyRecorded):
        return list(changes)
    return [change for change in changes if not error.holds(change[0])]


def _drop(keys: Sequence[BreakerKey]) -> None:
    """The default of :func:`record_outcomes`' ``give_back``: the resets are dropped."""


class _Resets:
    """The breaker resets a record carries: written by the one of its transactions that commits
    with them, given back (``give_back``) when the record ends with none having committed.

    A transaction goes on in its thread when its caller is cancelled (it commits or not all the
    same), so a cancellation landing while one runs waits for its end (and is raised after it):
    given back while that commit was still to come, the resets were written twice, the second
    time over failures other replicas counted meanwhile."""

    def __init__(self, keys: Sequence[BreakerKey],
                 give_back: Callable[[Sequence[BreakerKey]], None]) -> None:
        self.keys = keys
        self._give_back = give_back
        self._last: asyncio.Future[Any] | None = None  # the last transaction carrying them

    async def run(self, transactions: Transactions, work: Callable[[UnitOfWork], T]) -> T:
        """``work`` and the resets in one transaction."""
        def with_resets(uow: UnitOfWork) -> T:
            result = work(uow)
            clear_failures(uow, self.keys)
            return result

        running = self._last = asyncio.ensure_future(transactions.run(with_resets))
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            await asyncio.wait({running})
            raise

    def settle(self) -> None:
        """The record ended: the resets go back unless a transaction wrote them (once it ended,
        when a second cancellation stopped the wait for it)."""
        running = self._last
        if running is not None and not running.done():
            running.add_done_callback(lambda _: self.settle())
            return
        if self.keys and (running is None or running.cancelled()
                          or running.exception() is not None):
            self._give_back(self.keys)


async def record_outcomes(transactions: Transactions, changes: Sequence[Change],
                          now: datetime, breaker_resets: Sequence[BreakerKey] = (), *,
                          give_back: Callable[[Sequence[BreakerKey]], None] = _drop,
                          forward_to_decisioning: bool = True,
                          wake: Wake | None = None) -> list[Claim]:
    """Write the transitions and their consequences (and zero the failure counts of the
    breakers in ``breaker_resets``: see :func:`~cjo_delivery.service_layer.breakers.
    clear_failures`); returns the claims whose record the database refused even in its minimal
    form (:func:`_record_one_by_one`): they stay SENDING until their lease runs out.

    They go in a few bulk statements; only when a message of the group was claimed again
    meanwhile (this sender outlived its lease) is that transaction rolled back and the group
    written message by message, keeping the newer sender's results. When the database refuses
    the group for a reason one message can cause, the messages are recorded one by one. With
    ``forward_to_decisioning``, the exposures of decisions also go to decisioning. A final
    outcome releases the messages held behind its message (adapters/held.py), and ``wake``
    is then called in the transaction (to wake the senders once it committed). Any other
    failure raises, with nothing of the group written (:class:`PartlyRecorded` when it came
    after some were recorded one by one). Whenever it ends without having written the breaker
    resets (failed or cancelled), they are handed to ``give_back`` (:class:`_Resets`)."""
    resets = _Resets(breaker_resets, give_back)

    def write(record: Callable[..., None], uow: UnitOfWork) -> None:
        record(uow, changes, now, forward_to_decisioning, wake)

    try:
        try:
            try:
                await resets.run(transactions, partial(write, record_all))
            except repository.LeaseLost:
                await resets.run(transactions, partial(write, record_each))
        except Exception as exc:
            if not item_at_fault(exc):
                raise
            log.warning("the database refused a group of send outcomes; recording them one "
                        "by one", messages=len(changes), error=brief(exc))
            return await _record_one_by_one(transactions, changes, now, resets,
                                            forward_to_decisioning, wake)
        return []
    finally:
        resets.settle()


async def _record_one_by_one(transactions: Transactions, changes: Sequence[Change],
                             now: datetime, resets: _Resets,
                             forward_to_decisioning: bool, wake: Wake | None) -> list[Claim]:
    """Record each change in a transaction of its own, so a row the database refuses costs
    only its own message: that one is recorded again with its :func:`~cjo_delivery.domain.
    sending.minimal` transition (its facts as with the full one), and when even that is refused
    it is logged and left SENDING, to be claimed (and sent) again once its lease runs out.
    The breaker resets go last, alone. A failure not of a message raises
    :class:`PartlyRecorded` when some were recorded before it."""
    left: list[Claim] = []
    recorded: set[tuple[str, str]] = set()
    for claim, transition in changes:
        refusal = ""
        for attempt in (transition, minimal(transition)):
            try:
                await transactions.run(partial(
                    record_each, changes=[(claim, attempt)], now=now,
                    forward_to_decisioning=forward_to_decisioning, wake=wake))
            except Exception as exc:
                if not item_at_fault(exc):
                    if recorded:
                        raise PartlyRecorded(frozenset(recorded), exc) from exc
                    raise
                refusal = brief(exc)
                continue
            recorded.add((claim.workspace_id, claim.message_id))
            if attempt is not transition:
                log.warning("the database refused a message's outcome; recorded its status "
                            "only", message_id=claim.message_id, workspace=claim.workspace_id,
                            status=transition.status.value, error=refusal,
                            provider_message_id=transition.provider_message_id,
                            provider=transition.provider_id, provider_error=transition.error)
            break
        else:
            log.error("the database refused even a message's status: it stays SENDING and is "
                      "sent again once its lease runs out", message_id=claim.message_id,
                      workspace=claim.workspace_id, status=transition.status.value,
                      error=refusal)
            left.append(claim)
    if resets.keys:
        try:
            await resets.run(transactions, lambda uow: None)
        except Exception as exc:
            if recorded:
                raise PartlyRecorded(frozenset(recorded), exc) from exc
            raise
    return left


def record_all(uow: UnitOfWork, changes: Sequence[Change], now: datetime,
               forward_to_decisioning: bool = True, wake: Wake | None = None) -> None:
    repository.record_all(uow.session, changes, now)
    if wake is not None and any(c.holds and t.is_final for c, t in changes):
        wake(uow)
    _consequences(uow, changes, now, forward_to_decisioning)


def record_each(uow: UnitOfWork, changes: Sequence[Change], now: datetime,
                forward_to_decisioning: bool = True, wake: Wake | None = None) -> None:
    """:func:`record_all` message by message (after a lease lost or ``holds`` set since a
    claim: this path is rare, so any final outcome wakes the senders)."""
    kept = []
    repository.lock_scopes(uow.session, [claim for claim, _ in changes])
    for claim, transition in changes:
        if repository.record(uow.session, claim, transition, now):
            kept.append((claim, transition))
        else:
            uow.after_commit(partial(  # logged once, for the attempt that committed
                log.warning, "message was claimed again after this sender's lease ran out; "
                             "keeping the newer result", message_id=claim.message_id))
    if wake is not None and any(t.is_final for _, t in kept):
        wake(uow)
    _consequences(uow, kept, now, forward_to_decisioning)


def _consequences(uow: UnitOfWork, changes: Sequence[Change], now: datetime,
                  forward_to_decisioning: bool) -> None:
    """Suppress bounced addresses and queue the facts of recorded transitions (and the
    exposures of decisions for decisioning)."""
    facts: dict[str, list[tuple[bytes, str]]] = defaultdict(list)
    exposures: dict[str, list[tuple[bytes, str]]] = defaultdict(list)
    bounces: list[tuple[str, str, str, str]] = []
    for claim, transition in changes:
        if _logged(transition):  # a SENT message logs nothing: no callback for it
            uow.after_commit(partial(_log_transition, claim, transition))  # once, if committed
        if transition.status is MessageStatus.BOUNCED:
            bounces.append((claim.workspace_id, claim.channel.value, claim.address,
                            f"bounced: {transition.error}"))
        built = fact_payloads(claim, transition.status, now)
        facts[claim.workspace_id].extend((payload, claim.traceparent) for payload in built)
        if forward_to_decisioning and built and exposes_decision(claim, transition.status):
            exposures[claim.workspace_id].append((built[0], claim.traceparent))
    repository.suppress(uow.session, bounces, now)
    for workspace_id, payloads in facts.items():
        uow.publish(FACTS_TOPIC, workspace_id, payloads)
    for workspace_id, payloads in exposures.items():
        uow.publish(DECISIONING_FACTS_TOPIC, workspace_id, payloads)


def _logged(transition: Transition) -> bool:
    """Whether :func:`_log_transition` logs anything for ``transition``."""
    return transition.status in _LOGGED or (
        transition.status is MessageStatus.QUEUED and transition.error is not None)


_LOGGED = frozenset({MessageStatus.FAILED, MessageStatus.BOUNCED, MessageStatus.SUPPRESSED,
                     MessageStatus.DEFERRED})


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
