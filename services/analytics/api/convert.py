"""Protos <-> domain for AnalyticsService: requests checked and turned into domain inputs
(problems named by their request field), domain results turned into replies."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import fact_pb2
from cjo.analytics.v1 import reports_pb2 as rpb
from cjo.common.v1 import common_pb2
from cjo_analytics.domain import attribution
from cjo_analytics.domain.experiments import CONTENT_PREFIX, ExperimentResults, ExperimentSummary
from cjo_analytics.domain.facts import Fact, FactCount, FactType, is_valid, validate_fact
from cjo_analytics.domain.reports import (
    DEFAULT_HALF_LIFE_HOURS,
    DEFAULT_LOOKBACK_DAYS,
    LOOKBACK_DAYS,
    MAX_ATTRIBUTION_WINDOW,
    MAX_HALF_LIFE_HOURS,
    AttributionQuery,
    ChannelPerformance,
    FunnelQuery,
    Granularity,
    Outcomes,
    VersionFunnel,
    Window,
    bucket_keys,
    check_window,
    hour_start,
)
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.limits import MAX_ID_LENGTH
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.protobuf import from_timestamp, to_timestamp

MAX_DETAILED_CONVERSIONS = 1000
"""Conversions an attribution reply lists (with their touchpoints, if any), when asked to."""

_TYPES = {
    fact_pb2.FACT_TYPE_JOURNEY_ENTERED: FactType.JOURNEY_ENTERED,
    fact_pb2.FACT_TYPE_MESSAGE_REQUESTED: FactType.MESSAGE_REQUESTED,
    fact_pb2.FACT_TYPE_MESSAGE_SENT: FactType.MESSAGE_SENT,
    fact_pb2.FACT_TYPE_MESSAGE_FAILED: FactType.MESSAGE_FAILED,
    fact_pb2.FACT_TYPE_JOURNEY_EXITED: FactType.JOURNEY_EXITED,
    fact_pb2.FACT_TYPE_NODE_VISITED: FactType.NODE_VISITED,
    fact_pb2.FACT_TYPE_MESSAGE_DELIVERED: FactType.MESSAGE_DELIVERED,
    fact_pb2.FACT_TYPE_MESSAGE_OPENED: FactType.MESSAGE_OPENED,
    fact_pb2.FACT_TYPE_MESSAGE_CLICKED: FactType.MESSAGE_CLICKED,
    fact_pb2.FACT_TYPE_MESSAGE_BOUNCED: FactType.MESSAGE_BOUNCED,
    fact_pb2.FACT_TYPE_MESSAGE_UNSUBSCRIBED: FactType.MESSAGE_UNSUBSCRIBED,
    fact_pb2.FACT_TYPE_GOAL_REACHED: FactType.GOAL_REACHED,
    fact_pb2.FACT_TYPE_CONVERTED: FactType.CONVERTED,
    fact_pb2.FACT_TYPE_EXPERIMENT_EXPOSED: FactType.EXPERIMENT_EXPOSED,
    fact_pb2.FACT_TYPE_PROFILE_MERGED: FactType.PROFILE_MERGED,
    fact_pb2.FACT_TYPE_NODE_FAILED: FactType.NODE_FAILED,
}
_TYPE_PROTOS = {v: k for k, v in _TYPES.items()}
_GRANULARITIES = {rpb.GRANULARITY_HOUR: Granularity.HOUR, rpb.GRANULARITY_DAY: Granularity.DAY}
_MODELS = {
    rpb.ATTRIBUTION_MODEL_FIRST_TOUCH: attribution.Model.FIRST_TOUCH,
    rpb.ATTRIBUTION_MODEL_LAST_TOUCH: attribution.Model.LAST_TOUCH,
    rpb.ATTRIBUTION_MODEL_LINEAR: attribution.Model.LINEAR,
    rpb.ATTRIBUTION_MODEL_TIME_DECAY: attribution.Model.TIME_DECAY,
    rpb.ATTRIBUTION_MODEL_POSITION_BASED: attribution.Model.POSITION_BASED,
    rpb.ATTRIBUTION_MODEL_DATA_DRIVEN: attribution.Model.DATA_DRIVEN,
}
_MODEL_PROTOS = {v: k for k, v in _MODELS.items()}


# Requests -> domain inputs


def to_fact(item: fact_pb2.Fact) -> Fact:
    if item.type not in _TYPES or not item.HasField("occur_time"):
        validate_fact(fact_id=item.fact_id, profile_id=item.profile_id,
                      journey_id=item.journey_id, has_type=item.type in _TYPES,
                      has_time=item.HasField("occur_time")).raise_if_any()
    # Built without Fact's frozen __init__ (a setattr per field, ~40% of the conversion; every
    # fact a service records comes this way), every field given (tests/analytics/
    # test_fact_validity.py checks the names against Fact's fields), as orchestration builds
    # its FactRecords.
    fact = _new(Fact)
    fact.__dict__.update(
        fact_id=item.fact_id, type=_TYPES[item.type], profile_id=item.profile_id,
        journey_id=item.journey_id, enrollment_id=item.enrollment_id,
        message_id=item.message_id, occur_time=from_timestamp(item.occur_time),
        journey_version=item.journey_version, node_id=item.node_id, channel=item.channel,
        content_key=item.content_key, variant=item.variant, experiment_id=item.experiment_id,
        arm=item.arm, control=item.control, arm_weight=item.arm_weight, revenue=item.revenue,
        currency=item.currency, exit_reason=item.exit_reason,
        survivor_profile_id=item.survivor_profile_id,
        conversion_deadline=(from_timestamp(item.conversion_deadline)
                             if item.HasField("conversion_deadline") else None),
        visit_sequence=item.visit_sequence, source_event_id=item.source_event_id)
    if not is_valid(fact):
        validate_fact(fact).raise_if_any()
    return fact


_new = object.__new__


def journey_id_of(name: str, field: str) -> str:
    prefix = "journeys/"
    if not name.startswith(prefix) or not name[len(prefix):] or "/" in name[len(prefix):]:
        raise InvalidArgument.one(field, "must be journeys/{journey_id}")
    return name[len(prefix):]


def _window(message: rpb.TimeWindow, present: bool) -> Window | None:
    if not present:
        return None
    return Window(from_timestamp(message.start_time), from_timestamp(message.end_time))


def funnel_query(request: rpb.GetJourneyFunnelRequest) -> FunnelQuery:
    journey_id = journey_id_of(request.journey, "journey")
    problems = Violations()
    problems.check(request.journey_version >= 0, "journey_version", "must not be negative")
    granularity = None
    if request.granularity != rpb.GRANULARITY_UNSPECIFIED:
        granularity = _GRANULARITIES.get(request.granularity)
        problems.check(granularity is not None, "granularity", "is not a known granularity")
    window = _window(request.window, request.HasField("window"))
    check_window(problems, window, "window", required=granularity is not None,
                 granularity=granularity)
    problems.raise_if_any()
    return FunnelQuery(journey_id, request.journey_version, granularity, window)


def channel_query(request: rpb.GetChannelPerformanceRequest) -> tuple[str, Window | None]:
    """The journey id ("" for every journey) and the optional window."""
    journey_id = journey_id_of(request.journey, "journey") if request.journey else ""
    problems = Violations()
    window = _window(request.window, request.HasField("window"))
    check_window(problems, window, "window", required=False)
    problems.raise_if_any()
    return journey_id, window


def check_experiment_request(request: rpb.GetExperimentResultsRequest) -> None:
    problems = Violations()
    problems.check(bool(request.experiment_id), "experiment_id", "is required")
    problems.check(len(request.experiment_id) <= MAX_ID_LENGTH, "experiment_id",
                   f"at most {MAX_ID_LENGTH} characters")
    for arm, weight in request.expected_weights.items():
        problems.check(weight > 0 and weight != float("inf"), f"expected_weights[{arm}]",
                       "must be a positive weight")
    problems.raise_if_any()


def experiments_page(request: rpb.ListExperimentsRequest) -> tuple[str, int]:
    """The id to continue after ("" from the start) and the page size (AIP-158: 0 is 100, more
    than 1,000 is 1,000)."""
    size = page_size(request.page_size)
    cursor = decode_token(request.page_token)
    after = cursor.get("after") if cursor is not None else ""
    if not isinstance(after, str):
        raise InvalidArgument.one("page_token", "is not a token returned by this method")
    return after, size


def attribution_query(request: rpb.GetAttributionRequest) -> AttributionQuery:
    problems = Violations()
    window = _window(request.window, request.HasField("window"))
    check_window(problems, window, "window", required=True, max_span=MAX_ATTRIBUTION_WINDOW)
    lookback_days = request.lookback_days or DEFAULT_LOOKBACK_DAYS
    low, high = LOOKBACK_DAYS
    problems.check(low <= lookback_days <= high, "lookback_days",
                   f"must be {low} to {high} days")
    half_life = request.half_life_hours or DEFAULT_HALF_LIFE_HOURS
    problems.check(0 < half_life <= MAX_HALF_LIFE_HOURS, "half_life_hours",
                   f"must be more than 0 and at most {MAX_HALF_LIFE_HOURS:g} hours")
    problems.check(len(request.models) > 0, "models", "at least one model is required")
    models: list[attribution.Model] = []
    for index, model in enumerate(request.models):
        if problems.check(model in _MODELS, f"models[{index}]", "is not a known model"):
            models.append(_MODELS[model])
    problems.raise_if_any()
    assert window is not None  # check_window required it
    return AttributionQuery(window, models, timedelta(days=lookback_days), half_life,
                            MAX_DETAILED_CONVERSIONS if request.include_conversions else 0)


# Domain results -> replies


def _channel(value: int) -> common_pb2.Channel:
    # Enum values are ints at run time; the generated stubs type them as the enum class.
    return cast(common_pb2.Channel, value)


def journey_report(journey: str, counts: list[FactCount]) -> pb.GetJourneyReportResponse:
    return pb.GetJourneyReportResponse(report=pb.JourneyReport(
        journey=journey,
        counts=[pb.FactCount(type=_TYPE_PROTOS[c.type], count=c.count, profiles=c.profiles)
                for c in counts],
    ))


def _version_funnel(f: VersionFunnel, granularity: Granularity | None,
                    window: Window | None) -> rpb.VersionFunnel:
    series: list[rpb.FunnelBucket] = []
    if granularity is not None and window is not None:
        filled = {b.key: b for b in f.series}
        for key in bucket_keys(window, granularity):
            b = filled.get(key)
            series.append(rpb.FunnelBucket(
                start_time=to_timestamp(hour_start(key * int(granularity))),
                entered=b.entered if b else 0, conversions=b.conversions if b else 0,
                revenue=b.revenue if b else 0.0, exited=b.exited if b else 0))
    return rpb.VersionFunnel(
        journey_version=f.version, entered_profiles=f.entered_profiles,
        converted_profiles=f.converted_profiles, conversion_rate=f.conversion_rate,
        revenue=f.revenue, exited=f.exited,
        nodes=[rpb.NodeFunnel(node_id=n.node_id, entered=n.entered, completed=n.completed,
                              in_progress=n.in_progress, dropped=n.dropped, failed=n.failed,
                              held_out=n.held_out)
               for n in f.nodes],
        series=series)


def journey_funnel(journey: str, query: FunnelQuery,
                   funnels: list[VersionFunnel]) -> rpb.GetJourneyFunnelResponse:
    return rpb.GetJourneyFunnelResponse(
        journey=journey,
        versions=[_version_funnel(f, query.granularity, query.window) for f in funnels])


def _outcomes(o: Outcomes) -> rpb.MessageOutcomes:
    return rpb.MessageOutcomes(sent=o.sent, delivered=o.delivered, opened=o.opened,
                               clicked=o.clicked, bounced=o.bounced,
                               unsubscribed=o.unsubscribed, **o.rates())


def channel_performance(report: ChannelPerformance) -> rpb.GetChannelPerformanceResponse:
    return rpb.GetChannelPerformanceResponse(
        channels=[rpb.ChannelOutcomes(channel=_channel(c), outcomes=_outcomes(o))
                  for c, o in report.channels],
        content_items=[rpb.ContentOutcomes(channel=_channel(c), content_key=k,
                                           outcomes=_outcomes(o))
                       for (c, k), o in report.content_items],
        variants=[rpb.VariantOutcomes(channel=_channel(r.channel), content_key=r.content_key,
                                      variant=r.variant, outcomes=_outcomes(r.outcomes))
                  for r in report.variants],
    )


def _sample_ratio_warning(results: ExperimentResults) -> str:
    srm = results.sample_ratio
    if srm is None or not srm.mismatch:
        return ""
    advice = "check assignment and exposure logging before trusting these results"
    unweighted = results.unweighted_exposed_arms
    if unweighted:
        return (f"sample ratio mismatch: exposed arm(s) {', '.join(unweighted)} have no "
                f"weight in expected_weights; {advice}")
    return (f"sample ratio mismatch: exposures differ from the configured split "
            f"(chi-square p = {srm.p_value:.2g} < 0.001); {advice}")


def experiment_results(experiment_id: str,
                       results: ExperimentResults) -> rpb.GetExperimentResultsResponse:
    reply = rpb.GetExperimentResultsResponse(experiment_id=experiment_id,
                                             control_arm=results.control_arm)
    for r in results.arms:
        c = r.counts
        arm = reply.arms.add(arm=c.arm, control=r.control, exposures=c.exposures,
                             conversions=c.conversions, conversion_rate=c.rate,
                             revenue=c.revenue, expected_share=r.expected_share,
                             revenue_per_exposure=c.revenue_per_exposure)
        if r.comparison is not None:
            cmp = r.comparison
            arm.absolute_lift = cmp.absolute_lift
            arm.absolute_lift_ci.lower, arm.absolute_lift_ci.upper = cmp.absolute_ci
            arm.relative_lift = cmp.relative_lift
            arm.relative_lift_ci.lower, arm.relative_lift_ci.upper = cmp.relative_ci
            arm.p_value = cmp.p_value
            arm.probability_to_beat_control = cmp.probability_to_beat
            arm.revenue_per_exposure_lift = cmp.revenue_per_exposure_lift
            arm.revenue_p_value = 1.0
            if cmp.revenue is not None:
                welch = cmp.revenue
                ci = arm.revenue_per_exposure_lift_ci
                ci.lower, ci.upper = welch.interval
                arm.revenue_p_value = welch.p_value
                arm.revenue_degrees_of_freedom = welch.degrees_of_freedom
    if results.sample_ratio is not None:
        srm = results.sample_ratio
        reply.sample_ratio.CopyFrom(rpb.SampleRatioCheck(
            chi_square=srm.chi_square, degrees_of_freedom=srm.degrees_of_freedom,
            p_value=srm.p_value, mismatch=srm.mismatch, warning=_sample_ratio_warning(results)))
    reply.currency = results.currency
    if results.mixed_currencies:
        reply.currency_warning = (
            f"the conversions carry several currencies ({', '.join(results.mixed_currencies)}); "
            f"revenue is summed as recorded, without conversion")
    if results.incrementality is not None:
        inc = results.incrementality
        reply.incrementality.CopyFrom(rpb.Incrementality(
            incremental_conversions=inc.incremental_conversions,
            incremental_revenue=inc.incremental_revenue,
            incrementality=inc.incrementality))
    return reply


def _experiment_kind(row: ExperimentSummary) -> rpb.ExperimentKind:
    if row.experiment_id.startswith(CONTENT_PREFIX):
        return rpb.EXPERIMENT_KIND_CONTENT_VARIANT
    if row.journey_id and row.node_id:
        return rpb.EXPERIMENT_KIND_JOURNEY_SPLIT
    return rpb.EXPERIMENT_KIND_UNSPECIFIED


def _experiment(row: ExperimentSummary) -> rpb.Experiment:
    kind = _experiment_kind(row)
    journey = kind == rpb.EXPERIMENT_KIND_JOURNEY_SPLIT
    return rpb.Experiment(
        experiment_id=row.experiment_id, kind=kind,
        journey_id=row.journey_id if journey else "",
        node_id=row.node_id if journey else "",
        # The exposures name the item: a long key's id is shortened (experiment_ids.py).
        content_key=(row.content_key or row.experiment_id.removeprefix(CONTENT_PREFIX)
                     if kind == rpb.EXPERIMENT_KIND_CONTENT_VARIANT else ""),
        arms=[rpb.ExperimentArm(arm=a.arm, control=a.control, weight=a.weight)
              for a in row.arms],
        first_exposure_time=to_timestamp(row.first_exposure),
        last_exposure_time=to_timestamp(row.last_exposure),
        exposures=row.exposures)


def experiments_reply(rows: list[ExperimentSummary], size: int
                      ) -> rpb.ListExperimentsResponse:
    """``rows`` holds one more than the page when another page follows."""
    page = rows[:size]
    token = encode_token({"after": page[-1].experiment_id}) if len(rows) > size else ""
    return rpb.ListExperimentsResponse(experiments=[_experiment(r) for r in page],
                                       next_page_token=token)


def _credits(model: attribution.ModelResult) -> rpb.ModelAttribution:
    def credit(c: attribution.Credit, *, channel: int = 0, key: str = "") -> rpb.Credit:
        return rpb.Credit(conversions=c.conversions_micros / attribution.MICROS,
                          revenue=c.revenue_micros / attribution.MICROS,
                          channel=_channel(channel), key=key)

    return rpb.ModelAttribution(
        model=_MODEL_PROTOS[model.model],
        channels=[credit(model.channels[k], channel=k) for k in sorted(model.channels)],
        journeys=[credit(model.journeys[k], key=k) for k in sorted(model.journeys)],
        content_items=[credit(model.content_items[k], key=k)
                       for k in sorted(model.content_items)],
        conversions=[
            rpb.AttributedConversion(
                fact_id=c.fact_id, profile_id=c.profile_id,
                occur_time=to_timestamp(c.occur_time), revenue=c.revenue,
                touchpoints=[rpb.Touchpoint(
                    message_id=t.touch.message_id, channel=_channel(t.touch.channel),
                    journey_id=t.touch.journey_id, content_key=t.touch.content_key,
                    occur_time=to_timestamp(t.touch.occur_time),
                    share=t.share_micros / attribution.MICROS,
                    revenue=t.revenue_micros / attribution.MICROS) for t in touches])
            for c, touches in model.conversions],
    )


def attribution_reply(result: attribution.Attribution) -> rpb.GetAttributionResponse:
    return rpb.GetAttributionResponse(
        conversions=result.conversions,
        attributed_conversions=result.attributed_conversions,
        attributed_revenue=result.attributed_revenue_micros / attribution.MICROS,
        unattributed_conversions=result.unattributed_conversions,
        unattributed_revenue=result.unattributed_revenue_micros / attribution.MICROS,
        models=[_credits(m) for m in result.models])
