"""Outcomes measured truthfully through a forwarding outage, across real gRPC servers: identity
and decisioning, each on its own clock (moved together, as the services' clocks move), identity
reaching decisioning through a link the test cuts.

While identity's events cannot reach decisioning for longer than the reward grace, a purchase
inside a decision's window waits in identity's outbox; the window lapses by the clock, but
decisioning's watermark of identity's events, which identity's reporter keeps reporting (only
the events are refused), stays at the waiting purchase's write time however far the clock
moves, so the decision is not learned as NOT_REWARDED.
Once the link is back the queued purchase rewards it and it is learned as REWARDED. Before the
outage, identity's idle reporter (nothing queued) moves the watermark with its clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import grpc
from grpc_balancer import Balancer, balancing
from sqlalchemy import insert, select

from cjo.decisioning.v1 import action_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as pb_grpc
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_decisioning.adapters.tables import (
    EXPOSED,
    NOT_REWARDED,
    REWARDED,
    decisions,
    forwarding_watermarks,
)
from cjo_decisioning.bootstrap import build as build_decisioning
from cjo_identity.bootstrap import build as build_identity
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.protobuf import dict_to_struct, from_timestamp
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

HOUR = timedelta(hours=1)
GRACE = timedelta(minutes=5)  # CJO_DECISIONING_REWARD_GRACE_SECONDS' default


class Link(Balancer):
    """One upstream, as the network gives it: refuses the events (UNAVAILABLE) while cut; the
    watermark's reports still pass, so what they say is what is tested."""

    cut = False

    async def forward(self, method: str, request: bytes,
                      context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if self.cut and method.endswith("/RecordEvents"):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the link is cut")
        return await super().forward(method, request, context)


def track(message_id: str, name: str, **properties: Any) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK, name=name,
        identifiers=[event_pb2.Identifier(type="email", value="ada@example.com")],
        properties=dict_to_struct(properties), source="web")


async def test_a_conversion_queued_through_an_outage_rewards_its_lapsed_window(
        backend: Backend) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    decisioning_clock, identity_clock = ManualClock(), ManualClock()
    start = decisioning_clock.now()
    decisioning = build_decisioning(
        settings_for("decisioning", backend, CJO_CONTENT_TARGET=nowhere,
                     CJO_IDENTITY_TARGET=nowhere),
        Env({"CJO_DECISIONING_LEARN_POLL_SECONDS": "0.05"}), decisioning_clock)

    def advance(delta: timedelta) -> None:
        for clock in (decisioning_clock, identity_clock):
            clock.advance(delta)

    async with serving(decisioning) as decisioning_address, \
            balancing([decisioning_address], kind=Link) as to_decisioning, \
            grpc.aio.insecure_channel(decisioning_address) as d_channel:
        identity = build_identity(
            settings_for("identity", backend, CJO_ORCHESTRATION_TARGET=nowhere,
                         CJO_ANALYTICS_TARGET=nowhere,
                         CJO_DECISIONING_TARGET=to_decisioning.address),
            Env({"CJO_IDENTITY_WATERMARK_SECONDS": "0.05"}), identity_clock)
        async with serving(identity) as identity_address, \
                grpc.aio.insecure_channel(identity_address) as i_channel:
            key = (await ws_grpc.WorkspaceServiceStub(i_channel).CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(workspace_id="acme"),
                metadata=bearer(SERVICE_TOKEN))).api_key.secret
            people = identity_grpc.IdentityServiceStub(i_channel)
            decide = pb_grpc.DecisioningServiceStub(d_channel)
            service = as_service("acme")
            profile_id = (await people.IngestEvents(identity_pb.IngestEventsRequest(
                events=[track("e1", "signed_up")]), metadata=bearer(key))).results[0].profile_id
            await decide.CreateAction(pb.CreateActionRequest(
                action=action_pb2.Action(key="spring-offer")), metadata=service)
            reward = decision_point_pb2.Reward(event_name="order_completed")
            reward.window.FromTimedelta(HOUR)
            await decide.CreateDecisionPoint(pb.CreateDecisionPointRequest(
                decision_point=decision_point_pb2.DecisionPoint(
                    key="welcome", actions=["spring-offer"], reward=reward,
                    exposure=decision_point_pb2.EXPOSURE_MODE_ON_DECIDE)), metadata=service)

            async def watermark() -> datetime | None:
                reply = await decide.GetDecisionReport(pb.GetDecisionReportRequest(
                    decision_point="decisionPoints/welcome"), metadata=service)
                return (from_timestamp(reply.rewards_delivered_before)
                        if reply.HasField("rewards_delivered_before") else None)

            async def decision(decision_id: str) -> Any:
                def read() -> Any:
                    with decisioning.db.transaction() as session:
                        return session.execute(select(decisions).where(
                            decisions.c.decision_id == decision_id)).one()
                return await decisioning.db.run(read)

            # Idle, identity's reporter moves the watermark with its clock (a heartbeat).
            await eventually(lambda: _is_at_least(watermark(), start))
            advance(GRACE)
            await eventually(lambda: _is_at_least(watermark(), start + GRACE))

            decided = (await decide.Decide(pb.DecideRequest(
                decision_point="decisionPoints/welcome", profile_id=profile_id,
                profile=dict_to_struct({})), metadata=service)).decision
            assert (await decision(decided.decision_id)).outcome == EXPOSED

            # The outage: identity's events cannot reach decisioning. Ada buys inside the
            # window; the purchase waits in identity's outbox while the window lapses, grace
            # and all, and identity's reports go on.
            to_decisioning.cut = True
            advance(HOUR / 2)
            written = identity_clock.now()
            await people.IngestEvents(identity_pb.IngestEventsRequest(
                events=[track("e2", "order_completed")]), metadata=bearer(key))
            for step in range(5):
                advance(HOUR / 2)
                # A report read at this clock arrived; it holds the watermark at the waiting
                # purchase's write time.
                await eventually(lambda: _reported_since(decisioning, decisioning_clock.now()))
                held = await watermark()
                assert held is not None and held <= written
                # A decision whose window lapsed long before the watermark: once it is
                # learned, a round ran with the clock past Ada's window (and the grace).
                await decisioning.db.run(copy_as_old(decisioning, decided.decision_id, start,
                                                     f"old-{step}"))
                await eventually(lambda: _learned(decision(f"old-{step}")))  # noqa: B023
                ada = await decision(decided.decision_id)
                assert (ada.outcome, ada.learned) == (EXPOSED, False)

            # The link is back: the queued purchase rewards the decision, which is learned.
            to_decisioning.cut = False
            await eventually(lambda: _learned(decision(decided.decision_id)), timeout=60)
            ada = await decision(decided.decision_id)
            assert ada.outcome == REWARDED
            assert (await decision("old-0")).outcome == NOT_REWARDED


def copy_as_old(app: Any, decision_id: str, start: datetime, old_id: str) -> Any:
    """Copy ``decision_id``'s row as ``old_id``, exposed and lapsed long before ``start``."""
    def write() -> None:
        with app.db.transaction() as session:
            row = dict(session.execute(select(decisions).where(
                decisions.c.decision_id == decision_id)).one()._mapping)
            row.update(decision_id=old_id, profile_id=f"someone-else-{old_id}", outcome=EXPOSED,
                       decide_time=start - 4 * HOUR, expose_time=start - 4 * HOUR,
                       reward_deadline=start - 3 * HOUR, learned=False, lease_owner="",
                       lease_until=None)
            session.execute(insert(decisions), [row])
    return write


async def _is_at_least(value: Any, moment: datetime) -> bool:
    found = await value
    return found is not None and found >= moment


async def _learned(row: Any) -> bool:
    return bool((await row).learned)


async def _reported_since(app: Any, moment: datetime) -> bool:
    """Whether decisioning took a watermark report at ``moment`` or later (its clock)."""
    def read() -> bool:
        with app.db.transaction() as session:
            reported = session.execute(select(forwarding_watermarks.c.update_time).where(
                forwarding_watermarks.c.workspace_id == "")).scalar()
        return reported is not None and reported >= moment
    return bool(await app.db.run(read))
