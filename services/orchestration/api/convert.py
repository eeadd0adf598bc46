"""Proto <-> domain mapping for journeys, enrollments and scheduled occurrences."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

from google.protobuf import duration_pb2, timestamp_pb2

from cjo.common.v1 import common_pb2
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2, schedule_occurrence_pb2
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState, Step, StepOutcome
from cjo_orchestration.domain.journeys import (
    Action,
    BestTime,
    BranchAction,
    BranchCondition,
    Channel,
    DecideAction,
    EventTrigger,
    EventWait,
    ExitAction,
    ExitCriterion,
    FailurePolicy,
    Goal,
    Journey,
    JourneyGraph,
    JourneyState,
    LocalTime,
    Node,
    ReEntry,
    Schedule,
    SendAction,
    SplitAction,
    SplitArm,
    TriggerKind,
    UpdateProfileAction,
    WaitAction,
)
from cjo_orchestration.domain.names import (
    enrollment_name,
    journey_name,
    occurrence_id,
    occurrence_name,
)
from cjo_orchestration.domain.schedule import Occurrence, OccurrenceState
from cjo_platform.errors import InvalidArgument
from cjo_platform.protobuf import dict_to_struct, struct_to_dict, to_timestamp

_CHANNELS: dict[int, Channel] = {
    common_pb2.CHANNEL_EMAIL: Channel.EMAIL,
    common_pb2.CHANNEL_SMS: Channel.SMS,
    common_pb2.CHANNEL_PUSH: Channel.PUSH,
    common_pb2.CHANNEL_IN_APP: Channel.IN_APP,
    common_pb2.CHANNEL_WEBHOOK: Channel.WEBHOOK,
}
_CHANNEL_PROTOS = {v: k for k, v in _CHANNELS.items()}

_JOURNEY_STATES = {
    JourneyState.DRAFT: journey_pb2.JOURNEY_STATE_DRAFT,
    JourneyState.ACTIVE: journey_pb2.JOURNEY_STATE_ACTIVE,
    JourneyState.ARCHIVED: journey_pb2.JOURNEY_STATE_ARCHIVED,
    JourneyState.PAUSED: journey_pb2.JOURNEY_STATE_PAUSED,
}
_ENROLLMENT_STATES = {
    EnrollmentState.ACTIVE: enrollment_pb2.ENROLLMENT_STATE_ACTIVE,
    EnrollmentState.COMPLETED: enrollment_pb2.ENROLLMENT_STATE_COMPLETED,
    EnrollmentState.FAILED: enrollment_pb2.ENROLLMENT_STATE_FAILED,
    EnrollmentState.EXITED: enrollment_pb2.ENROLLMENT_STATE_EXITED,
}
_OUTCOMES = {
    StepOutcome.SUCCEEDED: enrollment_pb2.STEP_OUTCOME_SUCCEEDED,
    StepOutcome.FAILED: enrollment_pb2.STEP_OUTCOME_FAILED,
    StepOutcome.WAITING: enrollment_pb2.STEP_OUTCOME_WAITING,
}

_OccurrenceProto = schedule_occurrence_pb2.ScheduleOccurrence
OCCURRENCE_STATES = {
    OccurrenceState.PENDING: _OccurrenceProto.STATE_PENDING,
    OccurrenceState.RUNNING: _OccurrenceProto.STATE_RUNNING,
    OccurrenceState.DONE: _OccurrenceProto.STATE_DONE,
    OccurrenceState.MISSED: _OccurrenceProto.STATE_MISSED,
    OccurrenceState.SKIPPED: _OccurrenceProto.STATE_SKIPPED,
    OccurrenceState.CANCELLED: _OccurrenceProto.STATE_CANCELLED,
    OccurrenceState.FAILED: _OccurrenceProto.STATE_FAILED,
}
OCCURRENCE_STATES_FROM_PROTO = {v: k for k, v in OCCURRENCE_STATES.items()}

_RE_ENTRY = {
    journey_pb2.RE_ENTRY_POLICY_UNSPECIFIED: ReEntry.NEVER,
    journey_pb2.RE_ENTRY_POLICY_NEVER: ReEntry.NEVER,
    journey_pb2.RE_ENTRY_POLICY_AFTER_COOLDOWN: ReEntry.AFTER_COOLDOWN,
    journey_pb2.RE_ENTRY_POLICY_ALWAYS: ReEntry.ALWAYS,
}
_RE_ENTRY_PROTOS = {ReEntry.NEVER: journey_pb2.RE_ENTRY_POLICY_NEVER,
                    ReEntry.AFTER_COOLDOWN: journey_pb2.RE_ENTRY_POLICY_AFTER_COOLDOWN,
                    ReEntry.ALWAYS: journey_pb2.RE_ENTRY_POLICY_ALWAYS}
_FAILURE = {journey_pb2.FAILURE_POLICY_CONTINUE: FailurePolicy.CONTINUE}


def _seconds(duration: duration_pb2.Duration) -> timedelta:
    delta: timedelta = duration.ToTimedelta()
    return delta


def _duration(value: timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def trigger_from_proto(journey: journey_pb2.Journey) -> EventTrigger | None:
    kind = journey.WhichOneof("trigger")
    if kind == "event_trigger":
        return EventTrigger(journey.event_trigger.event_name, journey.event_trigger.filter)
    if kind == "segment_trigger":
        return EventTrigger(kind=TriggerKind.SEGMENT,
                            segment_id=journey.segment_trigger.segment_id)
    if kind == "api_trigger":
        return EventTrigger(kind=TriggerKind.API)
    if kind == "scheduled_trigger":
        scheduled = journey.scheduled_trigger
        return EventTrigger(kind=TriggerKind.SCHEDULED, segment_id=scheduled.segment_id,
                            schedule=Schedule(
                                at=_instant(scheduled, "at"), cron=scheduled.cron,
                                time_zone=scheduled.time_zone,
                                start_time=_instant(scheduled, "start_time"),
                                end_time=_instant(scheduled, "end_time")))
    return None


def _instant(message: journey_pb2.ScheduledTrigger, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    when: datetime = value.ToDatetime(tzinfo=UTC)
    return when


def _scheduled_to_proto(segment_id: str,
                        schedule: Schedule | None) -> journey_pb2.ScheduledTrigger:
    message = journey_pb2.ScheduledTrigger(segment_id=segment_id)
    if schedule is not None:
        if schedule.at is not None:
            message.at.CopyFrom(to_timestamp(schedule.at))
        elif schedule.cron:
            message.cron = schedule.cron
        message.time_zone = schedule.time_zone
        if schedule.start_time is not None:
            message.start_time.CopyFrom(to_timestamp(schedule.start_time))
        if schedule.end_time is not None:
            message.end_time.CopyFrom(to_timestamp(schedule.end_time))
    return message


def _channel(value: int) -> Channel | None:
    return _CHANNELS.get(value)


def _optional_channel(value: int, field: str) -> Channel | None:
    """CHANNEL_UNSPECIFIED is None (any channel); a value no channel has is refused, rather than
    read as "any"."""
    if value == common_pb2.CHANNEL_UNSPECIFIED:
        return None
    channel = _CHANNELS.get(value)
    if channel is None:
        raise InvalidArgument.one(field, f"is not a channel: {value}")
    return channel


def _listed_channels(values: Iterable[int], field: str) -> tuple[Channel, ...]:
    """A channel preference: every entry a channel. CHANNEL_UNSPECIFIED ("any") or a value no
    channel has is refused rather than dropped: dropped, the stored list differed from the
    request's, so a tool that deploys the same file again saw a change every time."""
    listed = []
    for i, value in enumerate(values):
        channel = _CHANNELS.get(value)
        if channel is None:
            raise InvalidArgument.one(f"{field}[{i}]", f"is not a channel: {value} (list "
                                      "channels; leave the list empty for any channel)")
        listed.append(channel)
    return tuple(listed)


def node_from_proto(node: journey_pb2.Node, at: str = "journey.nodes[0]") -> Node:
    kind = node.WhichOneof("kind")
    action: Action | None = None
    if kind == "send":
        send = node.send
        action = SendAction(send.content_key, _channel(send.channel), send.next_node_id,
                            send.content_version,
                            _listed_channels(send.channel_preference,
                                             f"{at}.send.channel_preference"),
                            _FAILURE.get(send.on_failure, FailurePolicy.EXIT),
                            send.topic, send.transactional)
    elif kind == "exit":
        action = ExitAction()
    elif kind == "wait":
        wait = node.wait
        until = wait.WhichOneof("until")
        local, event = wait.local_time, wait.event
        action = WaitAction(
            duration=_seconds(wait.duration) if until == "duration" else None,
            local_time=LocalTime(local.hour, local.minute, tuple(local.weekdays),
                                 local.default_time_zone) if until == "local_time" else None,
            event=EventWait(event.event_name, event.filter, _seconds(event.timeout),
                            event.event_next_node_id, event.timeout_next_node_id,
                            event.any_message)
            if until == "event" else None,
            next_node_id=wait.next_node_id,
            best_time=BestTime(
                _optional_channel(wait.best_time.channel, f"{at}.wait.best_time.channel"),
                _seconds(wait.best_time.max_delay) if wait.best_time.HasField("max_delay")
                else timedelta(days=1))
            if until == "best_time" else None)
    elif kind == "branch":
        action = BranchAction(tuple(BranchCondition(c.condition, c.next_node_id)
                                    for c in node.branch.conditions),
                              node.branch.else_next_node_id)
    elif kind == "split":
        action = SplitAction(tuple(SplitArm(a.name, a.percent, a.next_node_id, a.control)
                                   for a in node.split.arms),
                             node.split.optimize, node.split.min_control_percent)
    elif kind == "decide":
        decide = node.decide
        action = DecideAction(decide.decision_point,
                              _optional_channel(decide.channel, f"{at}.decide.channel"),
                              decide.next_node_id, decide.no_action_next_node_id,
                              _FAILURE.get(decide.on_failure, FailurePolicy.EXIT))
    elif kind == "update_profile":
        action = UpdateProfileAction(struct_to_dict(node.update_profile.traits),
                                     node.update_profile.next_node_id)
    return Node(node.id, action)


def graph_from_proto(journey: journey_pb2.Journey) -> JourneyGraph:
    goal = journey.goal if journey.HasField("goal") else None
    return JourneyGraph(
        trigger=trigger_from_proto(journey),
        nodes=tuple(node_from_proto(n, f"journey.nodes[{i}]")
                    for i, n in enumerate(journey.nodes)),
        entry_node_id=journey.entry_node_id,
        re_entry=_RE_ENTRY.get(journey.re_entry, ReEntry.NEVER),
        re_entry_cooldown=_seconds(journey.re_entry_cooldown),
        goal=Goal(goal.event_name, goal.filter, _seconds(goal.window), goal.exit_on_goal)
        if goal is not None else None,
        exit_criteria=tuple(ExitCriterion(c.event_name, c.filter)
                            for c in journey.exit_criteria))


def _channel_proto(channel: Channel | None) -> common_pb2.Channel:
    # Enum values are ints at run time; the generated stubs type them as the enum class.
    value = _CHANNEL_PROTOS[channel] if channel else common_pb2.CHANNEL_UNSPECIFIED
    return cast(common_pb2.Channel, value)


def node_to_proto(node: Node) -> journey_pb2.Node:
    action = node.action
    message = journey_pb2.Node(id=node.id)
    if isinstance(action, SendAction):
        message.send.CopyFrom(journey_pb2.SendNode(
            content_key=action.content_key, channel=_channel_proto(action.channel),
            next_node_id=action.next_node_id, content_version=action.content_version,
            channel_preference=[_channel_proto(c) for c in action.channel_preference],
            on_failure=(journey_pb2.FAILURE_POLICY_CONTINUE
                        if action.on_failure is FailurePolicy.CONTINUE
                        else journey_pb2.FAILURE_POLICY_EXIT),
            topic=action.topic, transactional=action.transactional))
    elif isinstance(action, ExitAction):
        message.exit.SetInParent()
    elif isinstance(action, WaitAction):
        message.wait.next_node_id = action.next_node_id
        if action.duration is not None:
            message.wait.duration.CopyFrom(_duration(action.duration))
        elif action.local_time is not None:
            local = action.local_time
            message.wait.local_time.CopyFrom(journey_pb2.LocalTimeWait(
                hour=local.hour, minute=local.minute, weekdays=local.weekdays,
                default_time_zone=local.default_time_zone))
        elif action.best_time is not None:
            message.wait.best_time.CopyFrom(journey_pb2.BestTimeWait(
                channel=_channel_proto(action.best_time.channel),
                max_delay=_duration(action.best_time.max_delay)))
        elif action.event is not None:
            event = action.event
            message.wait.event.CopyFrom(journey_pb2.EventWait(
                event_name=event.event_name, filter=event.filter,
                timeout=_duration(event.timeout), event_next_node_id=event.event_next_node_id,
                timeout_next_node_id=event.timeout_next_node_id,
                any_message=event.any_message))
    elif isinstance(action, BranchAction):
        message.branch.CopyFrom(journey_pb2.BranchNode(
            conditions=[journey_pb2.BranchCondition(condition=c.condition,
                                                    next_node_id=c.next_node_id)
                        for c in action.conditions],
            else_next_node_id=action.else_next_node_id))
    elif isinstance(action, SplitAction):
        message.split.CopyFrom(journey_pb2.SplitNode(arms=[
            journey_pb2.SplitArm(name=a.name, percent=a.percent, next_node_id=a.next_node_id,
                                 control=a.control) for a in action.arms],
            optimize=action.optimize, min_control_percent=action.min_control_percent))
    elif isinstance(action, DecideAction):
        message.decide.CopyFrom(journey_pb2.DecideNode(
            decision_point=action.decision_point, channel=_channel_proto(action.channel),
            next_node_id=action.next_node_id,
            no_action_next_node_id=action.no_action_next_node_id,
            on_failure=(journey_pb2.FAILURE_POLICY_CONTINUE
                        if action.on_failure is FailurePolicy.CONTINUE
                        else journey_pb2.FAILURE_POLICY_EXIT)))
    elif isinstance(action, UpdateProfileAction):
        message.update_profile.CopyFrom(journey_pb2.UpdateProfileNode(
            traits=dict_to_struct(dict(action.traits)), next_node_id=action.next_node_id))
    return message


def journey_to_proto(journey: Journey) -> journey_pb2.Journey:
    graph = journey.graph
    message = journey_pb2.Journey(
        name=journey_name(journey.journey_id), journey_id=journey.journey_id,
        display_name=journey.display_name, state=_JOURNEY_STATES[journey.state],
        nodes=[node_to_proto(n) for n in graph.nodes], entry_node_id=graph.entry_node_id,
        published_version=journey.published_version, etag=journey.etag,
        create_time=to_timestamp(journey.create_time),
        update_time=to_timestamp(journey.update_time),
        re_entry=_RE_ENTRY_PROTOS[graph.re_entry],
        exit_criteria=[journey_pb2.ExitCriterion(event_name=c.event_name, filter=c.filter)
                       for c in graph.exit_criteria],
        error_count=journey.error_count, last_error=journey.last_error,
        unpublished_changes=journey.unpublished_changes)
    if journey.last_error_time is not None:
        message.last_error_time.CopyFrom(to_timestamp(journey.last_error_time))
    if graph.re_entry_cooldown:
        message.re_entry_cooldown.CopyFrom(_duration(graph.re_entry_cooldown))
    if graph.goal is not None:
        message.goal.CopyFrom(journey_pb2.Goal(
            event_name=graph.goal.event_name, filter=graph.goal.filter,
            window=_duration(graph.goal.window), exit_on_goal=graph.goal.exit_on_goal))
    trigger = graph.trigger
    if trigger is not None:
        if trigger.kind is TriggerKind.SEGMENT:
            message.segment_trigger.segment_id = trigger.segment_id
        elif trigger.kind is TriggerKind.API:
            message.api_trigger.SetInParent()
        elif trigger.kind is TriggerKind.SCHEDULED:
            message.scheduled_trigger.SetInParent()  # present even when empty (a draft)
            message.scheduled_trigger.CopyFrom(
                _scheduled_to_proto(trigger.segment_id, trigger.schedule))
        else:
            message.event_trigger.CopyFrom(journey_pb2.EventTrigger(
                event_name=trigger.event_name, filter=trigger.filter))
    return message


def step_to_proto(step: Step) -> enrollment_pb2.Step:
    return enrollment_pb2.Step(node_id=step.node_id, visit=step.visit,
                               outcome=_OUTCOMES[step.outcome], detail=step.detail,
                               time=to_timestamp(step.time))


def enrollment_to_proto(enrollment: Enrollment,
                        steps: Sequence[Step]) -> enrollment_pb2.Enrollment:
    message = enrollment_pb2.Enrollment(
        name=enrollment_name(enrollment.journey_id, enrollment.enrollment_id),
        enrollment_id=enrollment.enrollment_id, journey_id=enrollment.journey_id,
        journey_version=enrollment.journey_version, profile_id=enrollment.profile_id,
        state=_ENROLLMENT_STATES[enrollment.state], current_node_id=enrollment.current_node_id,
        steps=[step_to_proto(s) for s in steps],
        create_time=to_timestamp(enrollment.create_time),
        update_time=to_timestamp(enrollment.update_time), exit_reason=enrollment.exit_reason,
        last_error=enrollment.last_error)
    if enrollment.goal_time is not None:
        message.goal_time.CopyFrom(to_timestamp(enrollment.goal_time))
    if enrollment.due_time is not None:
        message.due_time.CopyFrom(to_timestamp(enrollment.due_time))
    return message


def occurrence_to_proto(occurrence: Occurrence) -> schedule_occurrence_pb2.ScheduleOccurrence:
    return schedule_occurrence_pb2.ScheduleOccurrence(
        name=occurrence_name(occurrence.journey_id, occurrence.journey_version,
                             occurrence.fire_time),
        occurrence_id=occurrence_id(occurrence.journey_version, occurrence.fire_time),
        journey_id=occurrence.journey_id, journey_version=occurrence.journey_version,
        fire_time=to_timestamp(occurrence.fire_time), state=OCCURRENCE_STATES[occurrence.state],
        start_time=to_timestamp(occurrence.start_time),
        finish_time=to_timestamp(occurrence.finish_time),
        enrolled_count=occurrence.enrolled, not_enrolled_count=occurrence.not_enrolled,
        page_count=occurrence.pages, attempts=occurrence.attempts, detail=occurrence.detail,
        create_time=to_timestamp(occurrence.create_time))
