"""Protos <-> domain values for the decisioning API."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import action_pb2, decision_pb2, decision_point_pb2, evaluation_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_decisioning.domain.catalogue import (
    ACTION_KEY,
    POINT_KEY,
    Action,
    ActionContent,
    Arbitration,
    ContactLimit,
    DecisionPoint,
    Exploration,
    ModelSpec,
    Reward,
    StoredAction,
    StoredPoint,
)
from cjo_decisioning.domain.evaluation import Estimate, Evaluation
from cjo_decisioning.domain.replay import (
    Alternative,
    AlwaysAction,
    EvaluationQuery,
    Greedy,
    Policy,
    UniformRandom,
)
from cjo_decisioning.domain.reports import DecisionReport, ReportQuery
from cjo_decisioning.service_layer.decide import Decision, DecisionContext, RankedAction
from cjo_platform import paging
from cjo_platform.protobuf import dict_to_struct, from_timestamp, struct_to_dict, to_timestamp

CHANNEL_NAMES: dict[int, str] = {
    common_pb2.CHANNEL_EMAIL: "email",
    common_pb2.CHANNEL_SMS: "sms",
    common_pb2.CHANNEL_PUSH: "push",
    common_pb2.CHANNEL_IN_APP: "in_app",
    common_pb2.CHANNEL_WEBHOOK: "webhook",
}
CHANNEL_ENUMS: dict[str, Any] = {name: value for value, name in CHANNEL_NAMES.items()}
_METHODS = {
    decision_point_pb2.EXPLORATION_METHOD_UNSPECIFIED: "thompson",
    decision_point_pb2.EXPLORATION_METHOD_THOMPSON: "thompson",
    decision_point_pb2.EXPLORATION_METHOD_EPSILON_GREEDY: "epsilon_greedy",
    decision_point_pb2.EXPLORATION_METHOD_GREEDY: "greedy",
    decision_point_pb2.EXPLORATION_METHOD_UNIFORM_RANDOM: "uniform_random",
}
_METHOD_ENUMS = {name: value for value, name in _METHODS.items()
                 if value != decision_point_pb2.EXPLORATION_METHOD_UNSPECIFIED}
_EXPOSURES = {
    decision_point_pb2.EXPOSURE_MODE_UNSPECIFIED: "reported",
    decision_point_pb2.EXPOSURE_MODE_REPORTED: "reported",
    decision_point_pb2.EXPOSURE_MODE_ON_DECIDE: "on_decide",
}
_EXPOSURE_ENUMS = {"reported": decision_point_pb2.EXPOSURE_MODE_REPORTED,
                   "on_decide": decision_point_pb2.EXPOSURE_MODE_ON_DECIDE}


# The key each resource name holds: a malformed one is INVALID_ARGUMENT, not NOT_FOUND.
_KEYS = {"actions/": ACTION_KEY, "decisionPoints/": POINT_KEY,
         "decisions/": re.compile(r"[A-Za-z0-9_-]{1,128}")}


def key_from_name(name: str, prefix: str, field_path: str = "name") -> str:
    """``actions/{key}`` -> key (prefix ``actions/``)."""
    return paging.key_from_name(name, prefix, _KEYS[prefix], field_path)


def channel_name(channel: int) -> str:
    """A channel's name; "" for CHANNEL_UNSPECIFIED (any) or an unknown number."""
    return CHANNEL_NAMES.get(channel, "")


def _duration(value: duration_pb2.Duration) -> timedelta:
    return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def _to_duration(value: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


# --- actions ---------------------------------------------------------------------------------


def action_from_proto(action: action_pb2.Action, key: str | None = None) -> Action:
    return Action(
        key=action.key if key is None else key,
        display_name=action.display_name,
        contents=tuple(ActionContent(channel_name(c.channel), c.content_key)
                       for c in action.contents),
        value=action.value,
        eligibility=action.eligibility,
        start_time=from_timestamp(action.start_time) if action.HasField("start_time") else None,
        end_time=from_timestamp(action.end_time) if action.HasField("end_time") else None,
        contact_limits=tuple(ContactLimit(c.max_exposures, _duration(c.period))
                             for c in action.contact_limits),
        budget=action.budget,
        lever=action.lever,
        mandatory=action.mandatory,
        transactional=action.transactional,
        topic=action.topic,
        tags=tuple(action.tags))


def content_to_proto(content: ActionContent) -> action_pb2.ActionContent:
    return action_pb2.ActionContent(channel=CHANNEL_ENUMS.get(content.channel,
                                                              common_pb2.CHANNEL_UNSPECIFIED),
                                    content_key=content.content_key)


def action_to_proto(stored: StoredAction) -> action_pb2.Action:
    a = stored.action
    return action_pb2.Action(
        name=f"actions/{a.key}", key=a.key, display_name=a.display_name,
        contents=[content_to_proto(c) for c in a.contents],
        value=a.value, eligibility=a.eligibility,
        start_time=to_timestamp(a.start_time), end_time=to_timestamp(a.end_time),
        contact_limits=[action_pb2.ContactLimit(max_exposures=c.max_exposures,
                                                period=_to_duration(c.period))
                        for c in a.contact_limits],
        budget=a.budget, lever=a.lever, mandatory=a.mandatory, transactional=a.transactional,
        topic=a.topic, tags=list(a.tags), etag=stored.etag,
        create_time=to_timestamp(stored.create_time),
        update_time=to_timestamp(stored.update_time))


# --- decision points -------------------------------------------------------------------------


def point_from_proto(point: decision_point_pb2.DecisionPoint,
                     key: str | None = None) -> DecisionPoint:
    reward = point.reward
    return DecisionPoint(
        key=point.key if key is None else key,
        display_name=point.display_name,
        actions=tuple(point.actions),
        arbitration=Arbitration(point.arbitration.formula, point.arbitration.context_weight),
        max_actions=point.max_actions,
        exploration=Exploration(_METHODS.get(point.exploration.method, "unknown"),
                                point.exploration.epsilon
                                if point.exploration.HasField("epsilon") else None),
        model=ModelSpec(point.model.non_contextual, tuple(point.model.features),
                        point.model.prior_propensity),
        reward=Reward(reward.event_name, reward.filter,
                      _duration(reward.window) if reward.HasField("window") else None),
        exposure=_EXPOSURES.get(point.exposure, "unknown"),
        control_action=point.control_action,
        min_control_share=point.min_control_share)


def point_to_proto(stored: StoredPoint) -> decision_point_pb2.DecisionPoint:
    p = stored.point
    return decision_point_pb2.DecisionPoint(
        name=f"decisionPoints/{p.key}", key=p.key, display_name=p.display_name,
        actions=list(p.actions),
        arbitration=decision_point_pb2.Arbitration(formula=p.arbitration.formula,
                                                   context_weight=p.arbitration.context_weight),
        max_actions=p.max_actions,
        exploration=decision_point_pb2.Exploration(method=_METHOD_ENUMS[p.exploration.method],
                                                   epsilon=p.exploration.epsilon),
        model=decision_point_pb2.Model(non_contextual=p.model.non_contextual,
                                       features=list(p.model.features),
                                       prior_propensity=p.model.prior_propensity),
        reward=decision_point_pb2.Reward(
            event_name=p.reward.event_name, filter=p.reward.filter,
            window=None if p.reward.window is None else _to_duration(p.reward.window)),
        exposure=_EXPOSURE_ENUMS[p.exposure],
        control_action=p.control_action, min_control_share=p.min_control_share,
        error_count=stored.error_count, last_error=stored.last_error,
        last_error_time=to_timestamp(stored.last_error_time),
        etag=stored.etag, create_time=to_timestamp(stored.create_time),
        update_time=to_timestamp(stored.update_time))

# --- evaluation and reports ------------------------------------------------------------------


def _time_or_none(request: Any, field_name: str) -> datetime | None:
    return from_timestamp(getattr(request, field_name)) if request.HasField(field_name) else None


def target_policy(policy: evaluation_pb2.TargetPolicy) -> Policy | None:
    """The TargetPolicy oneof; None when none is set."""
    kind = policy.WhichOneof("policy")
    if kind == "uniform_random":
        return UniformRandom()
    if kind == "always_action":
        return AlwaysAction(policy.always_action)
    if kind == "greedy":
        return Greedy()
    if kind == "alternative":
        alternative = policy.alternative
        arbitration = alternative.arbitration
        exploration = alternative.exploration
        return Alternative(
            formula=arbitration.formula if alternative.HasField("arbitration") else None,
            context_weight=arbitration.context_weight,
            levers=dict(alternative.levers), values=dict(alternative.values),
            method=(_METHODS.get(exploration.method, "thompson")
                    if alternative.HasField("exploration") else ""),
            epsilon=exploration.epsilon)
    return None


def evaluation_query(request: pb.EvaluatePolicyRequest) -> EvaluationQuery:
    return EvaluationQuery(
        decision_point=key_from_name(request.decision_point, "decisionPoints/",
                                     "decision_point"),
        policy=target_policy(request.policy),
        start=_time_or_none(request, "start_time"), end=_time_or_none(request, "end_time"),
        confidence=request.confidence_level)


def _estimate(estimate: Estimate) -> evaluation_pb2.Estimate:
    return evaluation_pb2.Estimate(value=estimate.value, lower=estimate.lower,
                                   upper=estimate.upper, standard_error=estimate.standard_error)


def evaluation_reply(result: Evaluation) -> pb.EvaluatePolicyResponse:
    return pb.EvaluatePolicyResponse(
        decisions=result.decisions, uncovered=result.uncovered,
        logged=_estimate(result.logged), ips=_estimate(result.ips),
        snips=_estimate(result.snips), doubly_robust=_estimate(result.doubly_robust),
        effective_sample_size=result.effective_sample_size, pending=result.pending,
        uncovered_reasons=dict(result.uncovered_reasons),
        expected_effective_sample_size=result.expected_effective_sample_size,
        max_weight=result.max_weight, unsupported_share=result.unsupported_share,
        warnings=list(result.warnings), reliable=not result.warnings)


def report_query(request: pb.GetDecisionReportRequest) -> ReportQuery:
    return ReportQuery(
        decision_point=key_from_name(request.decision_point, "decisionPoints/",
                                     "decision_point"),
        start=_time_or_none(request, "start_time"), end=_time_or_none(request, "end_time"),
        bucket=_duration(request.bucket) if request.HasField("bucket") else None)


def report_reply(report: DecisionReport) -> pb.GetDecisionReportResponse:
    reply = pb.GetDecisionReportResponse(
        decisions=report.decisions, no_action=report.no_action,
        actions=[pb.ActionReport(
            action=a.action, decisions=a.decisions, exposures=a.exposures, rewards=a.rewards,
            failures=a.failures, share=a.share, posterior_mean=a.posterior_mean,
            posterior_lower=a.posterior_lower, posterior_upper=a.posterior_upper,
            mean_propensity=a.mean_propensity, pending=a.pending) for a in report.actions],
        buckets=[pb.TrafficBucket(
            start_time=to_timestamp(b.start), decisions=b.decisions,
            actions=[pb.ActionShare(action=s.action, decisions=s.decisions, share=s.share)
                     for s in b.actions]) for b in report.buckets])
    if report.rewards_delivered_before is not None:
        reply.rewards_delivered_before.CopyFrom(to_timestamp(report.rewards_delivered_before))
    return reply

# --- decisions -------------------------------------------------------------------------------


def context_from_proto(context: decision_pb2.DecisionContext) -> DecisionContext:
    return DecisionContext(
        channel=channel_name(context.channel), attributes=struct_to_dict(context.attributes),
        time=from_timestamp(context.time) if context.HasField("time") else None,
        journey_id=context.journey_id, enrollment_id=context.enrollment_id,
        node_id=context.node_id)


def context_to_proto(context: DecisionContext) -> decision_pb2.DecisionContext:
    return decision_pb2.DecisionContext(
        channel=CHANNEL_ENUMS.get(context.channel, common_pb2.CHANNEL_UNSPECIFIED),
        attributes=dict_to_struct(dict(context.attributes)),
        time=to_timestamp(context.time), journey_id=context.journey_id,
        enrollment_id=context.enrollment_id, node_id=context.node_id)


class ReplyCache:
    """What a reply's decisions share, converted once per reply: a batch's decisions share
    their context, decision time and each action's contents (one object each)."""

    def __init__(self) -> None:
        self.contexts: dict[int, decision_pb2.DecisionContext] = {}
        self.times: dict[datetime, timestamp_pb2.Timestamp] = {}
        self.contents: dict[int, list[action_pb2.ActionContent]] = {}
        self.actions: dict[tuple[Any, ...], decision_pb2.RankedAction] = {}

    def context(self, context: DecisionContext) -> decision_pb2.DecisionContext:
        found = self.contexts.get(id(context))
        if found is None:
            found = self.contexts[id(context)] = context_to_proto(context)
        return found

    def time(self, value: datetime | None) -> timestamp_pb2.Timestamp | None:
        if value is None:
            return None
        found = self.times.get(value)
        if found is None:
            found = self.times[value] = to_timestamp(value)
        return found

    def action(self, r: RankedAction) -> decision_pb2.RankedAction:
        """A ranked action's message with what every decision of the batch shares for it (all
        but the propensity, score, pick probability and context weight, which its decision
        sets): copying it in costs half of building each from keywords (issue 14)."""
        key = (r.action, r.value, r.lever, id(r.contents), r.mandatory, r.transactional,
               r.topic, r.control)
        found = self.actions.get(key)
        if found is None:
            found = self.actions[key] = decision_pb2.RankedAction(
                action=r.action, value=r.value, lever=r.lever,
                contents=self.contents_of(r.contents), mandatory=r.mandatory,
                transactional=r.transactional, topic=r.topic, control=r.control)
        return found

    def contents_of(self, contents: tuple[ActionContent, ...]) -> list[action_pb2.ActionContent]:
        found = self.contents.get(id(contents))
        if found is None:
            found = self.contents[id(contents)] = [content_to_proto(c) for c in contents]
        return found


_REASONS = {name: decision_pb2.IneligibilityReason.Value(f"INELIGIBILITY_REASON_{name}")
            for name in (n.removeprefix("INELIGIBILITY_REASON_")
                         for n in decision_pb2.IneligibilityReason.keys())}  # noqa: SIM118


def decision_to_proto(decision: Decision, cache: ReplyCache | None = None,
                      ) -> decision_pb2.Decision:
    """``cache``: what was converted so far for one reply (see :func:`fill_decision`)."""
    out = decision_pb2.Decision()
    fill_decision(out, decision, cache or ReplyCache())
    return out


def fill_decision(out: decision_pb2.Decision, decision: Decision, cache: ReplyCache) -> None:
    """``decision`` written into the empty message ``out`` (a reply's own: built in place,
    not built and copied in). A batch's decisions share their context, time and contents,
    converted once in ``cache`` (keyed by the id of each, so the reply holds on to the
    decisions while it is built)."""
    out.name = f"decisions/{decision.decision_id}"
    out.decision_id = decision.decision_id
    out.decision_point = decision.decision_point
    out.profile_id = decision.profile_id
    actions = out.actions
    actions.extend([cache.action(r) for r in decision.actions])
    for message, r in zip(actions, decision.actions, strict=True):
        message.propensity = r.propensity
        message.score = r.score
        message.pick_probability = r.pick_probability
        message.context_weight = r.context_weight
    add_ineligible = out.ineligible.add
    for i in decision.ineligible:
        add_ineligible(action=i.action, reason=_REASONS[i.reason],
                       detail=i.detail)
    decided = cache.time(decision.decide_time)
    assert decided is not None
    out.decide_time.CopyFrom(decided)
    out.outcome = decision.outcome  # type: ignore[assignment]
    for name in ("expose_time", "reward_time"):
        time = cache.time(getattr(decision, name))
        if time is not None:
            getattr(out, name).CopyFrom(time)
    out.context.CopyFrom(cache.context(decision.context))
