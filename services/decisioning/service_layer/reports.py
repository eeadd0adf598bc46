"""GetDecisionReport: per action of a decision point, its decisions, exposures, rewards and
failures, the posterior of its reward rate, and its share of the traffic over time, with how
far the workspace's rewards have been delivered (the forwarding watermark). Counted by
the database (GROUP BY), so a report over a million decisions reads a few hundred rows."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from cjo_decisioning.adapters import catalogue, decision_log
from cjo_decisioning.domain.catalogue import point_not_found
from cjo_decisioning.domain.reports import (
    DecisionReport,
    ReportQuery,
    check_query,
    decision_report,
)
from cjo_decisioning.service_layer.watermarks import rewards_delivered_before
from cjo_platform.db.unit_of_work import UnitOfWork


def decision_point_report(uow: UnitOfWork, workspace_id: str, query: ReportQuery
                       ) -> DecisionReport:
    """The report of the point's decisions made in [start, end). NOT_FOUND for an unknown
    point (a deleted point's decisions stay in the log, but its report is gone with it)."""
    check_query(query)
    stored = catalogue.get_point(uow.session, workspace_id, query.decision_point)
    if stored is None:
        raise point_not_found(query.decision_point)
    end = query.end or uow.now()
    width = query.bucket_width
    counts, no_action = decision_log.action_counts(uow.session, workspace_id,
                                                   query.decision_point, query.start, end,
                                                   uow.now())
    buckets = decision_log.traffic(uow.session, workspace_id, query.decision_point, query.start,
                                   end, width // timedelta(hours=1))
    return replace(decision_report(counts, no_action, stored.point.actions, buckets, width),
                   rewards_delivered_before=rewards_delivered_before(uow, workspace_id))
