"""Proto <-> domain mapping for journeys and enrollments."""

from __future__ import annotations

from collections.abc import Sequence

from cjo.common.v1 import common_pb2
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo_orchestration.domain.engine import Enrollment, EnrollmentState, Step, StepOutcome
from cjo_orchestration.domain.journeys import (
    Action,
    Channel,
    EventTrigger,
    ExitAction,
    Journey,
    JourneyGraph,
    JourneyState,
    Node,
    SendAction,
)
from cjo_orchestration.domain.names import enrollment_name, journey_name
from cjo_platform.protobuf import to_timestamp

_CHANNELS = {
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
}
_ENROLLMENT_STATES = {
    EnrollmentState.ACTIVE: enrollment_pb2.ENROLLMENT_STATE_ACTIVE,
    EnrollmentState.COMPLETED: enrollment_pb2.ENROLLMENT_STATE_COMPLETED,
    EnrollmentState.FAILED: enrollment_pb2.ENROLLMENT_STATE_FAILED,
}
_OUTCOMES = {
    StepOutcome.SUCCEEDED: enrollment_pb2.STEP_OUTCOME_SUCCEEDED,
    StepOutcome.FAILED: enrollment_pb2.STEP_OUTCOME_FAILED,
}


def trigger_from_proto(journey: journey_pb2.Journey) -> EventTrigger | None:
    if journey.HasField("event_trigger"):
        return EventTrigger(journey.event_trigger.event_name)
    return None


def node_from_proto(node: journey_pb2.Node) -> Node:
    kind = node.WhichOneof("kind")
    action: Action | None = None
    if kind == "send":
        action = SendAction(node.send.content_key, _CHANNELS.get(node.send.channel),
                            node.send.next_node_id)
    elif kind == "exit":
        action = ExitAction()
    return Node(node.id, action)


def graph_from_proto(journey: journey_pb2.Journey) -> JourneyGraph:
    return JourneyGraph(trigger=trigger_from_proto(journey),
                        nodes=tuple(node_from_proto(n) for n in journey.nodes),
                        entry_node_id=journey.entry_node_id)


def node_to_proto(node: Node) -> journey_pb2.Node:
    action = node.action
    if isinstance(action, SendAction):
        return journey_pb2.Node(id=node.id, send=journey_pb2.SendNode(
            content_key=action.content_key,
            channel=(_CHANNEL_PROTOS[action.channel] if action.channel
                     else common_pb2.CHANNEL_UNSPECIFIED),
            next_node_id=action.next_node_id))
    if isinstance(action, ExitAction):
        return journey_pb2.Node(id=node.id, exit=journey_pb2.ExitNode())
    return journey_pb2.Node(id=node.id)


def journey_to_proto(journey: Journey) -> journey_pb2.Journey:
    graph = journey.graph
    message = journey_pb2.Journey(
        name=journey_name(journey.journey_id), journey_id=journey.journey_id,
        display_name=journey.display_name, state=_JOURNEY_STATES[journey.state],
        nodes=[node_to_proto(n) for n in graph.nodes], entry_node_id=graph.entry_node_id,
        published_version=journey.published_version, etag=journey.etag,
        create_time=to_timestamp(journey.create_time),
        update_time=to_timestamp(journey.update_time))
    if graph.trigger is not None:
        message.event_trigger.event_name = graph.trigger.event_name
    return message


def step_to_proto(step: Step) -> enrollment_pb2.Step:
    return enrollment_pb2.Step(node_id=step.node_id, visit=step.visit,
                               outcome=_OUTCOMES[step.outcome], detail=step.detail,
                               time=to_timestamp(step.time))


def enrollment_to_proto(enrollment: Enrollment,
                        steps: Sequence[Step]) -> enrollment_pb2.Enrollment:
    return enrollment_pb2.Enrollment(
        name=enrollment_name(enrollment.journey_id, enrollment.enrollment_id),
        enrollment_id=enrollment.enrollment_id, journey_id=enrollment.journey_id,
        journey_version=enrollment.journey_version, profile_id=enrollment.profile_id,
        state=_ENROLLMENT_STATES[enrollment.state], current_node_id=enrollment.current_node_id,
        steps=[step_to_proto(s) for s in steps],
        create_time=to_timestamp(enrollment.create_time),
        update_time=to_timestamp(enrollment.update_time))
