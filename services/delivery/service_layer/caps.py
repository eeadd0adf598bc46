"""The policies of a send round's claims (domain/policies.decide), with frequency caps exact
across every sender replica sharing the database.

A capped message (one with a profile, not transactional, on a channel its workspace caps)
reserves its slot in the database: one transaction locks the cap rows of the round's capped
(workspace, profile, channel) keys, counts what every replica sent or reserved in the window
(adapters/repository.cap_usage), decides each claim and marks the messages it lets through as
holding a slot (``messages.cap_time``). Another round on another replica wanting the same
profile waits for that commit and then counts these reservations too, so a cap of one lets
exactly one through, whichever replica sends it.

The slot belongs to the message's claim: SENT turns it into a send that counts (sent_time),
every other outcome gives it back (suppressed, deferred, a rate limit, a failure before or at
a provider, a shutdown), because only SENDING messages' reservations count. A sender that dies
mid-send keeps its messages' slots until their lease runs out and another claim takes them
over: the provider may have sent them.

Why not in the claim's own transaction: consent is asked of identity between claiming and
deciding, and a network call never runs while cap rows are locked (it would serialise every
replica behind identity). Rounds whose claims no cap applies to pay nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from cjo_delivery.adapters import repository
from cjo_delivery.domain.messages import Claim, MessageStatus
from cjo_delivery.domain.policies import (
    ConsentDecision,
    ConsentUnavailable,
    Defer,
    DeliveryPolicy,
    Send,
    Suppress,
    decide,
)
from cjo_delivery.domain.sending import Transition, deferred, suppressed
from cjo_delivery.service_layer.claims import RoundContext
from cjo_platform.db.unit_of_work import UnitOfWork

CONSENT_WAIT = timedelta(seconds=30)
# Per message id of the claims that need consent: identity's answer, or why it could not be had
# (that message's workspace only: another workspace's messages are decided on their own).
Consent = Mapping[str, ConsentDecision | ConsentUnavailable]


def capped(claims: Sequence[Claim], context: RoundContext) -> list[Claim]:
    """The claims a frequency cap applies to."""
    found = []
    for claim in claims:
        policy = context.policies.get(claim.workspace_id)
        if (policy is not None and claim.channel in policy.caps and claim.profile_id
                and not claim.transactional):
            found.append(claim)
    return found


def decide_policies(uow: UnitOfWork | None, claims: Sequence[Claim], context: RoundContext,
                    consent: Consent, now: datetime) -> dict[str, Transition]:
    """The transitions of the claims a policy stops (the others are sent), reserving the cap
    slots of those it lets through. ``uow`` may be None only when no claim is capped."""
    capped_claims = capped(claims, context)
    recent: dict[tuple[str, str, str], list[datetime]] = {}
    if capped_claims:
        assert uow is not None, "capped claims reserve their slots in a transaction"
        by_workspace: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for claim in capped_claims:
            by_workspace[claim.workspace_id].add((claim.profile_id, claim.channel.value))
        for workspace, keys in sorted(by_workspace.items()):
            ordered = sorted(keys)
            repository.lock_caps(uow.session, workspace, ordered)
            since = now - context.policies[workspace].longest_window
            found = repository.cap_usage(uow.session, workspace, ordered, since)
            recent.update({(workspace, *key): times for key, times in found.items()})
    capped_ids = {claim.message_id for claim in capped_claims}
    decided: dict[str, Transition] = {}
    reserved: list[Claim] = []
    for claim in claims:
        answer = consent.get(claim.message_id)
        if isinstance(answer, ConsentUnavailable):
            # Never send without knowing; try again soon, the attempt not counted.
            decided[claim.message_id] = Transition(
                MessageStatus.QUEUED, claim.attempts - 1, now + CONSENT_WAIT, str(answer), "")
            continue
        policy = context.policies.get(claim.workspace_id, DeliveryPolicy())
        decision = decide(
            claim, policy, consent=answer,
            suppression=context.suppressions.get(
                (claim.workspace_id, claim.channel.value, claim.address)),
            recent_sends=recent.setdefault(
                (claim.workspace_id, claim.profile_id, claim.channel.value), []),
            now=now)
        if isinstance(decision, Suppress):
            decided[claim.message_id] = suppressed(claim.attempts, decision.reason)
        elif isinstance(decision, Defer):
            decided[claim.message_id] = deferred(claim.attempts, decision.until,
                                                 decision.reason)
        elif isinstance(decision, Send) and claim.message_id in capped_ids:
            reserved.append(claim)
    if reserved:
        assert uow is not None
        repository.reserve_caps(uow.session, reserved, now)
    return decided
