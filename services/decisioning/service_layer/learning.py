"""Learning: decisions whose outcome is known (rewarded, or exposed with the window lapsed)
update their (point, action) model, each decision exactly once.

A round leases up to ``batch`` such decisions (SKIP LOCKED on PostgreSQL, so replicas share the
work) and learns them per (workspace, point, action) in one transaction each: the model row is
locked (created from the point's prior when absent), ``domain.model.update`` applies the
decisions' stored features and rewards, and the model is saved as its next version with the
decisions marked learned. Only decisions still leased to this replica and not learned are
taken, so a decision whose lease ran out and that another replica learned is not learned twice.
A group that cannot be learned (a deleted point, features the model cannot read: errors that
would recur on every try) marks its decisions learned with the error logged and on the point.
Any other failure (a dropped connection, a database restart) leaves the group's lease to run
out, so the decisions are learned on a later round. Neither stops the round or another group.

An exposed decision is learned as NOT_REWARDED only ``reward_grace`` after its window closed,
and only once identity's forwarding watermark (domain.watermarks) has passed that too: a
conversion inside the window may reach us late through identity's outbox forwarder, later than
any grace while forwarding is down or behind. A round reads the watermark once (its cutoffs).

Each round first takes the reward events kept for decisions that were exposed meanwhile (an
event kept while another transaction recorded the exposure: exposures.settle_early_rewards), and
forgets forwarded ids (the `received` dedupe table) older than ``received_retention``, and
kept reward events whose latest window ended that long ago (their decision was never exposed),
``prune_batch`` rows per transaction: forwarders re-send within minutes, so a day is ample, and
the table holds one row per event identity forwards."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from cjo_decisioning.adapters import catalogue, models, outcomes
from cjo_decisioning.adapters.outcomes import Claimed
from cjo_decisioning.domain.features import Features
from cjo_decisioning.domain.model import update
from cjo_decisioning.domain.watermarks import LearningCutoffs
from cjo_decisioning.service_layer.exposures import settle_early_rewards
from cjo_decisioning.service_layer.watermarks import cutoffs
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class LearningSettings:
    batch: int = 1000  # decisions leased per round
    lease: timedelta = timedelta(seconds=60)  # after a crash, another replica learns them then
    poll_seconds: float = 1.0
    # How long after a window closes a late-forwarded reward is still taken (see the module).
    reward_grace: timedelta = timedelta(minutes=5)
    # How far back, at most, a stale forwarding watermark holds lapsed windows (domain.watermarks).
    max_watermark_hold: timedelta = timedelta(hours=24)
    # With the event bus, its partitions: the watermark holds once each passed on a marker.
    bus_partitions: int = 0
    # How long a forwarded id is remembered for dedupe, and how many are forgotten per round.
    received_retention: timedelta = timedelta(days=1)
    prune_batch: int = 1000


# Errors that learning the same decisions again would meet again: a deleted point
# (LookupError), stored features the model cannot read (ValueError, TypeError).
DETERMINISTIC = (LookupError, ValueError, TypeError)


class LearningRound:
    def __init__(self, transactions: Transactions, settings: LearningSettings,
                 owner: str | None = None) -> None:
        self.transactions = transactions
        self.settings = settings
        self.owner = owner or uuid.uuid4().hex

    async def run_once(self) -> bool:
        """Learn one batch; True when more may be waiting."""
        settled = await self.transactions.run(self._settle)
        cutoffs, claimed = await self.transactions.run(self._claim)
        groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for c in claimed:
            groups[(c.workspace_id, c.decision_point, c.action)].append(c.decision_id)
        for (workspace_id, point, action), ids in sorted(groups.items()):
            try:
                await self.transactions.run(partial(
                    learn_group, workspace_id=workspace_id, decision_point=point,
                    action=action, decision_ids=ids, owner=self.owner, cutoffs=cutoffs))
            except DETERMINISTIC as exc:
                log.warning("learning failed; the decisions are marked learned",
                            workspace=workspace_id, decision_point=point, action=action,
                            decisions=len(ids), error=repr(exc), exc_info=exc)
                await self.transactions.run(partial(
                    give_up, workspace_id=workspace_id, decision_point=point,
                    decision_ids=ids, owner=self.owner, error=f"learning {action}: {exc!r}",
                    cutoffs=cutoffs))
            except Exception as exc:
                # Transient (the database or the connection): the claim stays until its lease
                # runs out, then this or another replica learns the decisions.
                log.warning("learning failed; the decisions are retried once their lease ends",
                            workspace=workspace_id, decision_point=point, action=action,
                            decisions=len(ids), error=repr(exc), exc_info=exc)
        pruned = await self.transactions.run(self._prune)
        return (len(claimed) >= self.settings.batch or pruned >= self.settings.prune_batch
                or settled >= self.settings.batch)

    def _prune(self, uow: UnitOfWork) -> int:
        before = uow.now() - self.settings.received_retention
        return max(outcomes.prune_received(uow.session, before, self.settings.prune_batch),
                   outcomes.prune_early_rewards(uow.session, before, self.settings.prune_batch))

    def _settle(self, uow: UnitOfWork) -> int:
        """Take the reward events kept for decisions exposed meanwhile (kept while another
        transaction recorded the exposure, so it did not see them), before any is learned; a
        decision rewarded, lapsed or learned meanwhile takes none, and only its own go."""
        found = outcomes.exposed_with_early_rewards(uow.session, self.settings.batch)
        by_workspace: dict[str, list[tuple[str, datetime, datetime]]] = defaultdict(list)
        for workspace_id, decision_id, exposed, deadline in found:
            if exposed is None or deadline is None:
                outcomes.drop_early_rewards(uow.session, workspace_id, [decision_id], ())
            else:
                by_workspace[workspace_id].append((decision_id, exposed, deadline))
        for workspace_id, exposures in sorted(by_workspace.items()):
            settle_early_rewards(uow.session, workspace_id, exposures)
        return len(found)

    def _claim(self, uow: UnitOfWork) -> tuple[LearningCutoffs, list[Claimed]]:
        found = cutoffs(uow, self.settings.reward_grace, self.settings.max_watermark_hold,
                        self.settings.bus_partitions)
        return found, outcomes.claim_learnable(uow.session, uow.now(), self.owner,
                                               self.settings.lease, self.settings.batch, found)


def learn_group(uow: UnitOfWork, workspace_id: str, decision_point: str, action: str,
                decision_ids: Sequence[str], owner: str, cutoffs: LearningCutoffs) -> int:
    """Apply the decisions' outcomes to the model of (point, action); how many were learned."""
    session, now = uow.session, uow.now()
    held = outcomes.held(session, workspace_id, decision_ids, owner, cutoffs)
    if not held:
        return 0
    stored_point = catalogue.get_point(session, workspace_id, decision_point)
    if stored_point is None:
        raise LookupError(f"decision point {decision_point!r} was deleted")
    stored = models.lock_model(session, workspace_id, decision_point, action,
                               stored_point.point.model.effective_prior, now)
    features = [Features.from_json(f) for _, f, _ in held]
    rewards = [1 if rewarded else 0 for _, _, rewarded in held]
    learned = update(stored.model, features, rewards)  # counts observations and rewards too
    models.save_model(session, workspace_id, decision_point, action, learned,
                      stored.version + 1, now)
    outcomes.mark_learned(session, workspace_id, [(i, rewarded) for i, _, rewarded in held])
    return len(held)


def give_up(uow: UnitOfWork, workspace_id: str, decision_point: str,
            decision_ids: Sequence[str], owner: str, error: str,
            cutoffs: LearningCutoffs) -> None:
    """Mark the decisions learned without learning them, and record why on their point."""
    held = outcomes.held(uow.session, workspace_id, decision_ids, owner, cutoffs)
    outcomes.mark_learned(uow.session, workspace_id, [(i, rewarded) for i, _, rewarded in held])
    outcomes.record_point_errors(uow.session, workspace_id, {decision_point: (1, error)},
                                 uow.now())
