"""The last transactions of a send round: record what became of each claimed message, suppress
bounced addresses and queue the facts for analytics, all in one transaction per group."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

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


async def record_outcomes(transactions: Transactions, changes: Sequence[Change],
                          now: datetime, breaker_resets: Sequence[BreakerKey] = (), *,
                          forward_to_decisioning: bool = True) -> list[Claim]:
    """Write the transitions and their consequences (and zero the failure counts of the
    breakers in ``breaker_resets``: see :func:`~cjo_delivery.service_layer.breakers.
    clear_failures`); returns the claims whose record the database refused even in its minimal
    form (:func:`_record_one_by_one`): they stay SENDING until their lease runs out.

    They go in a few bulk statements; only when a message of the group was claimed again
    meanwhile (this sender outlived its lease) is that transaction rolled back and the group
    written message by message, keeping the newer sender's results. When the database refuses
    the group for a reason one message can cause, the messages are recorded one by one. With
    ``forward_to_decisioning``, the exposures of decisions also go to decisioning. Any other
    failure raises, with nothing of the group written."""
    def write(record: Callable[[UnitOfWork, Sequence[Change], datetime, bool], None],
              uow: UnitOfWork) -> None:
        record(uow, changes, now, forward_to_decisioning)
        clear_failures(uow, breaker_resets)

    try:
        try:
            await transactions.run(partial(write, record_all))
        except repository.LeaseLost:
            await transactions.run(partial(write, record_each))
    except Exception as exc:
        if not item_at_fault(exc):
            raise
        log.warning("the database refused a group of send outcomes; recording them one by one",
                    messages=len(changes), error=brief(exc))
        return await _record_one_by_one(transactions, changes, now, breaker_resets,
                                        forward_to_decisioning)
    return []


async def _record_one_by_one(transactions: Transactions, changes: Sequence[Change],
                             now: datetime, breaker_resets: Sequence[BreakerKey],
                             forward_to_decisioning: bool) -> list[Claim]:
    """Record each change in a transaction of its own, so a row the database refuses costs
    only its own message: that one is recorded again with its :func:`~cjo_delivery.domain.
    sending.minimal` transition (its facts as with the full one), and when even that is refused
    it is logged and left SENDING, to be claimed (and sent) again once its lease runs out.
    The breaker resets go last, alone: a failure before raises with them not written, for
    the caller to give back."""
    left: list[Claim] = []
    for claim, transition in changes:
        refusal = ""
        for attempt in (transition, minimal(transition)):
            try:
                await transactions.run(partial(
                    record_each, changes=[(claim, attempt)], now=now,
                    forward_to_decisioning=forward_to_decisioning))
            except Exception as exc:
                if not item_at_fault(exc):
                    raise
                refusal = brief(exc)
                continue
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
    if breaker_resets:
        await transactions.run(partial(clear_failures, keys=breaker_resets))
    return left


def record_all(uow: UnitOfWork, changes: Sequence[Change], now: datetime,
               forward_to_decisioning: bool = True) -> None:
    repository.record_all(uow.session, changes, now)
    _consequences(uow, changes, now, forward_to_decisioning)


def record_each(uow: UnitOfWork, changes: Sequence[Change], now: datetime,
                forward_to_decisioning: bool = True) -> None:
    kept = []
    for claim, transition in changes:
        if repository.record(uow.session, claim, transition, now):
            kept.append((claim, transition))
        else:
            uow.after_commit(partial(  # logged once, for the attempt that committed
                log.warning, "message was claimed again after this sender's lease ran out; "
                             "keeping the newer result", message_id=claim.message_id))
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
