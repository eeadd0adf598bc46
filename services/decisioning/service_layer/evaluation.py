"""EvaluatePolicy: what another policy would have earned on a decision point's logged decisions
(IPS, self-normalised IPS and doubly robust), before anyone launches it."""

from __future__ import annotations

import dataclasses

from cjo_decisioning.adapters import catalogue, decision_log
from cjo_decisioning.domain import evaluation
from cjo_decisioning.domain.catalogue import point_not_found
from cjo_decisioning.domain.evaluation import Evaluation, LoggedDecision, Target
from cjo_decisioning.domain.replay import EvaluationQuery, check_query, target_policy
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger

log = get_logger(__name__)


async def evaluate_policy(transactions: Transactions, workspace_id: str,
                          query: EvaluationQuery) -> Evaluation:
    """The estimates of the target policy's reward rate on the point's decisions with a final
    outcome in the period (the pending ones, window still open, counted apart). NOT_FOUND for
    an unknown point; INVALID_ARGUMENT for a policy it cannot evaluate."""
    check_query(query)
    target, logged, pending = await transactions.run(
        lambda uow: _read(uow, workspace_id, query))
    # Estimating is CPU work on data already read: outside the transaction, off the loop.
    result = await transactions.db.run(evaluation.evaluate, logged, target, query.level)
    return dataclasses.replace(result, pending=pending)


def _read(uow: UnitOfWork, workspace_id: str, query: EvaluationQuery,
          ) -> tuple[Target, list[LoggedDecision], int]:
    stored = catalogue.get_point(uow.session, workspace_id, query.decision_point)
    if stored is None:
        raise point_not_found(query.decision_point)
    point = stored.point
    actions = {key: found.action for key, found in
               catalogue.get_actions(uow.session, workspace_id, point.actions).items()}
    assert query.policy is not None  # check_query
    target = target_policy(query.policy, point, actions)
    logged: list[LoggedDecision] = []
    skipped = 0
    now = uow.now()
    end = query.end or now
    for page in decision_log.decided_with_outcome(uow.session, workspace_id, point.key,
                                                  query.start, end, now):
        for decision in page:
            if decision is None:
                skipped += 1
            else:
                logged.append(decision)
    if skipped:
        log.warning("logged decisions without usable candidates left out of an evaluation",
                    decision_point=point.key, skipped=skipped)
    pending = decision_log.count_pending(uow.session, workspace_id, point.key, query.start,
                                         end, now)
    return target, logged, pending


