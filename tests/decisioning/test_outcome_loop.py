"""The loop closed across real services on real gRPC servers: identity knows the person,
decisioning decides for them, delivery sends the chosen action with the decision id (its SENT
fact, forwarded through delivery's outbox, is the exposure), the person's purchase comes back
through identity's outbox as the reward, and the learning worker updates the action's model.
Nothing is called by hand between the services."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from sqlalchemy import select

from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import action_pb2, decision_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_decisioning.adapters.tables import models
from cjo_decisioning.bootstrap import build as build_decisioning
from cjo_delivery.bootstrap import build as build_delivery
from cjo_identity.bootstrap import build as build_identity
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.protobuf import dict_to_struct
from support import (
    SERVICE_TOKEN,
    Backend,
    as_service,
    bearer,
    eventually,
    free_port,
    serving,
    settings_for,
)

EXPOSED = decision_pb2.DECISION_OUTCOME_EXPOSED
REWARDED = decision_pb2.DECISION_OUTCOME_REWARDED


def track(message_id: str, name: str, **traits: Any) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK, name=name,
        identifiers=[event_pb2.Identifier(type="email", value="ada@example.com")],
        traits=dict_to_struct(traits), source="web")


async def test_a_sent_decision_is_exposed_rewarded_and_learned(backend: Backend) -> None:
    decisioning_port = free_port()
    decisioning_target = f"127.0.0.1:{decisioning_port}"
    nowhere = f"127.0.0.1:{free_port()}"
    decisioning = build_decisioning(
        settings_for("decisioning", backend, CJO_DECISIONING_PORT=str(decisioning_port),
                     CJO_CONTENT_TARGET=nowhere, CJO_IDENTITY_TARGET=nowhere),
        Env({"CJO_DECISIONING_LEARN_POLL_SECONDS": "0.05"}), decisioning_clock := ManualClock())
    identity = build_identity(
        settings_for("identity", backend, CJO_ORCHESTRATION_TARGET=nowhere,
                     CJO_ANALYTICS_TARGET=nowhere, CJO_DECISIONING_TARGET=decisioning_target),
        Env({"CJO_IDENTITY_WATERMARK_SECONDS": "0.05"}), identity_clock := ManualClock())
    delivery = build_delivery(
        settings_for("delivery", backend, CJO_ANALYTICS_TARGET=nowhere,
                     CJO_IDENTITY_TARGET=nowhere, CJO_DECISIONING_TARGET=decisioning_target),
        Env({"CJO_SMTP_PORT": str(free_port()), "CJO_DELIVERY_POLL_SECONDS": "0.05",
             "CJO_DELIVERY_CHECK_CONSENT": "false"}), ManualClock())
    async with serving(decisioning) as decisioning_address, \
            serving(identity) as identity_address, serving(delivery) as delivery_address, \
            grpc.aio.insecure_channel(decisioning_address) as d_channel, \
            grpc.aio.insecure_channel(identity_address) as i_channel, \
            grpc.aio.insecure_channel(delivery_address) as m_channel:
        workspaces = ws_grpc.WorkspaceServiceStub(i_channel)
        key = (await workspaces.CreateWorkspace(ws_pb.CreateWorkspaceRequest(
            workspace_id="acme"), metadata=bearer(SERVICE_TOKEN))).api_key.secret
        acme = bearer(key)  # the brand's key for identity
        # Decisioning and delivery are called as a journey calls them: as a cjo service.
        service = as_service("acme")
        people = identity_grpc.IdentityServiceStub(i_channel)
        decide = pb_grpc.DecisioningServiceStub(d_channel)
        send = delivery_grpc.DeliveryServiceStub(m_channel)

        signed_up = await people.IngestEvents(identity_pb.IngestEventsRequest(
            events=[track("e1", "signed_up", plan="pro")]), metadata=acme)
        profile_id = signed_up.results[0].profile_id
        await decide.CreateAction(pb.CreateActionRequest(
            action=action_pb2.Action(key="spring-offer")), metadata=service)
        await decide.CreateDecisionPoint(pb.CreateDecisionPointRequest(
            decision_point=decision_point_pb2.DecisionPoint(
                key="welcome", actions=["spring-offer"],
                reward=decision_point_pb2.Reward(
                    event_name="order_completed",
                    filter="event.properties.total > 10.0"))), metadata=service)
        decided = (await decide.Decide(pb.DecideRequest(
            decision_point="decisionPoints/welcome", profile_id=profile_id,
            profile=dict_to_struct({"plan": "pro"})), metadata=service)).decision
        assert decided.actions[0].action == "spring-offer"

        # The in-app inbox: a provider inside delivery, so the message is really SENT.
        await send.SendMessage(delivery_pb.SendMessageRequest(
            idempotency_key="welcome-1", decision_id=decided.decision_id,
            recipient=message_pb2.Recipient(profile_id=profile_id),
            content=common_pb2.RenderedMessage(
                channel=common_pb2.CHANNEL_IN_APP,
                in_app=common_pb2.RenderedInApp(title="Spring offer"))), metadata=service)

        async def outcome() -> int:
            reply = await decide.GetDecision(pb.GetDecisionRequest(
                name=f"decisions/{decided.decision_id}"), metadata=service)
            return int(reply.decision.outcome)

        await eventually(lambda: _is(outcome(), EXPOSED))
        order = track("e2", "order_completed")
        order.properties.update({"total": 42.0})
        await people.IngestEvents(identity_pb.IngestEventsRequest(events=[order]),
                                  metadata=acme)
        await eventually(lambda: _is(outcome(), REWARDED))
        # A reward is learned once its window (7 days) closes, with the window's failures,
        # and identity's watermark of its events has passed it too (its clock moves as well).
        for clock in (decisioning_clock, identity_clock):
            clock.advance(timedelta(days=7, minutes=6))  # + the 5-minute grace

        def learned() -> tuple[int, int, int] | None:
            with decisioning.db.transaction() as session:
                row = session.execute(select(
                    models.c.version, models.c.observations, models.c.rewards)).first()
            return None if row is None else (row.version, row.observations, row.rewards)

        assert await eventually(lambda: decisioning.db.run(learned)) == (1, 1, 1)


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)
