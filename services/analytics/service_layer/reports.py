"""The reports, one use-case each: every report is a read over the workspace's facts."""

from __future__ import annotations

from collections.abc import Mapping

from cjo_analytics.adapters import repository
from cjo_analytics.domain.attribution import Attribution, Model, attribute_all
from cjo_analytics.domain.experiments import ExperimentResults, ExperimentSummary
from cjo_analytics.domain.experiments import experiment_results as compare_arms
from cjo_analytics.domain.facts import FactCount
from cjo_analytics.domain.reports import (
    AttributionQuery,
    ChannelPerformance,
    FunnelQuery,
    VersionFunnel,
    Window,
    roll_up_outcomes,
)
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import FieldViolation, InvalidArgument


def journey_report(uow: UnitOfWork, workspace_id: str, journey_id: str) -> list[FactCount]:
    """Facts and distinct profiles per fact type of one journey, in fact-type order."""
    return repository.journey_counts(uow.session, workspace_id, journey_id)


def journey_funnel(uow: UnitOfWork, workspace_id: str, query: FunnelQuery
                   ) -> list[VersionFunnel]:
    """Per journey version: entries, conversions, revenue, exits, the node funnel and, with a
    granularity, the time series of the window."""
    if not repository.journey_exists(uow.session, workspace_id, query.journey_id):
        raise InvalidArgument(
            [FieldViolation("journey", "no facts were recorded for this journey")],
            reason="UNKNOWN_JOURNEY")
    return repository.journey_funnel(uow.session, workspace_id, query.journey_id,
                                     query.version, query.granularity, query.window)


def channel_performance(uow: UnitOfWork, workspace_id: str, journey_id: str,
                        window: Window | None) -> ChannelPerformance:
    """Unique messages per outcome by channel, content item and variant (of one journey, or
    all when ``journey_id`` is empty), counted where the outcome first happened in the window."""
    return roll_up_outcomes(
        repository.channel_outcomes(uow.session, workspace_id, journey_id, window))


def experiment_results(uow: UnitOfWork, workspace_id: str, experiment_id: str,
                       control_arm: str, expected_weights: Mapping[str, float]
                       ) -> ExperimentResults:
    """Every arm against the control: lift with intervals, p-value, probability to beat the
    control, the sample-ratio check and incrementality."""
    data = repository.experiment(uow.session, workspace_id, experiment_id)
    if not data.arms:
        raise InvalidArgument(
            [FieldViolation("experiment_id", "no exposure was recorded for this experiment")],
            reason="UNKNOWN_EXPERIMENT")
    if control_arm and control_arm not in {a.arm for a in data.arms}:
        raise InvalidArgument.one("control_arm", "is not an exposed arm of the experiment")
    return compare_arms(data.arms, control_arm, expected_weights, data.weights, data.currencies)


def list_experiments(uow: UnitOfWork, workspace_id: str, after: str, limit: int
                     ) -> list[ExperimentSummary]:
    """Up to ``limit`` experiments with at least one exposure and an id after ``after``."""
    return repository.experiments(uow.session, workspace_id, after, limit)


async def attribution(transactions: Transactions, workspace_id: str, query: AttributionQuery
                      ) -> Attribution:
    """Credit the window's conversions to the touchpoints before them, by every model asked
    for; conversions without a touchpoint are counted (and listed) as unattributed."""
    # The data-driven model also needs the paths of the profiles that did not convert, and the
    # conversions just before the window that end earlier paths.
    data_driven = Model.DATA_DRIVEN in query.models
    data = await transactions.run(lambda uow: repository.attribution_data(
        uow.session, workspace_id, query.window, query.lookback, all_profiles=data_driven))
    # Crediting a long window takes a while: it runs after the read transaction closed, still
    # off the event loop.
    return await transactions.db.run(
        attribute_all, data.conversions, data.touches, query.models, query.lookback,
        query.half_life_hours, query.keep_conversions, start=query.window.start,
        end=query.window.end)
