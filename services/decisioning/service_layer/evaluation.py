"""EvaluatePolicy: what another policy would have earned on a decision point's logged decisions
(IPS, self-normalised IPS and doubly robust), before anyone launches it."""

from __future__ import annotations

import dataclasses

from cjo_decisioning.adapters import catalogue, decision_log
from cjo_decisioning.domain import evaluation
from cjo_decisioning.domain.catalogue import Exploration, point_not_found
from cjo_decisioning.domain.evaluation import Evaluation, LoggedDecisions, Target
from cjo_decisioning.domain.replay import EvaluationQuery, check_query, target_policy
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork


async def evaluate_policy(transactions: Transactions, workspace_id: str,
                          query: EvaluationQuery) -> Evaluation:
    """The estimates of the target policy's reward rate on the point's decisions with a final
    outcome in the period (the pending ones, window still open, counted apart). NOT_FOUND for
    an unknown point; INVALID_ARGUMENT for a policy it cannot evaluate."""
    check_query(query)
    target, logged, pending, exploration = await transactions.run(
        lambda uow: _read(uow, workspace_id, query))
    # Estimating is CPU work on data already read: outside the transaction, off the loop.
    result = await transactions.db.run(evaluation.evaluate, logged, target, query.level)
    warnings = result.warnings
    if not exploration.effective_epsilon and exploration.method in ("thompson", "greedy"):
        # Without a floor an action the model dislikes keeps a pick probability near 0: the
        # weights of a policy that favours it are unbounded (see domain.evaluation).
        warnings = (*warnings, "NO_EXPLORATION_FLOOR")
    return dataclasses.replace(result, pending=pending, warnings=warnings)


def _read(uow: UnitOfWork, workspace_id: str, query: EvaluationQuery,
          ) -> tuple[Target, LoggedDecisions, int, Exploration]:
    stored = catalogue.get_point(uow.session, workspace_id, query.decision_point)
    if stored is None:
        raise point_not_found(query.decision_point)
    point = stored.point
    actions = {key: found.action for key, found in
               catalogue.get_actions(uow.session, workspace_id, point.actions).items()}
    assert query.policy is not None  # check_query
    target = target_policy(query.policy, point, actions)
    now = uow.now()
    end = query.end or now
    logged = decision_log.decided_with_outcome(uow.session, workspace_id, point.key,
                                               query.start, end, now)
    pending = decision_log.count_pending(uow.session, workspace_id, point.key, query.start,
                                         end, now)
    return target, logged, pending, point.exploration
