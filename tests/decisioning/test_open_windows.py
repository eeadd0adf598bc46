"""EvaluatePolicy and GetDecisionReport count an outcome only once it is final (the reward
window closed): a reward arrives at once and a failure only when the window closes, so the
open windows would count their successes and none of their failures. Open ones are pending."""

from __future__ import annotations

from datetime import timedelta

from outcomes_support import START, WS, running, track
from test_decide import ON_DECIDE, profile

from cjo.decisioning.v1 import action_pb2, decision_point_pb2, evaluation_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from support import Backend, eventually

WINDOW = timedelta(days=7)
GRACE = timedelta(minutes=5)
UNIFORM = evaluation_pb2.TargetPolicy(uniform_random=evaluation_pb2.UniformRandomPolicy())


async def test_open_windows_are_pending_not_successes(backend: Backend) -> None:
    async with running(backend) as d:
        for key in ("a", "b"):
            await d.stub.CreateAction(pb.CreateActionRequest(action=action_pb2.Action(key=key)),
                                      metadata=WS)
        reward = decision_point_pb2.Reward(event_name="order_completed")
        reward.window.FromTimedelta(WINDOW)
        await d.stub.CreateDecisionPoint(pb.CreateDecisionPointRequest(
            decision_point=decision_point_pb2.DecisionPoint(
                key="home", actions=["a", "b"], reward=reward, exposure=ON_DECIDE)),
            metadata=WS)
        await d.stub.BatchDecide(pb.BatchDecideRequest(
            decision_point="decisionPoints/home",
            items=[pb.DecideItem(profile_id=f"p{i}", profile=profile()) for i in range(20)]),
            metadata=WS)
        d.clock.advance(timedelta(hours=1))
        await d.events(track("e1", "p0", "order_completed", START + timedelta(minutes=30)))

        async def evaluate() -> pb.EvaluatePolicyResponse:
            return await d.stub.EvaluatePolicy(pb.EvaluatePolicyRequest(
                decision_point="decisionPoints/home", policy=UNIFORM), metadata=WS)

        async def report() -> pb.GetDecisionReportResponse:
            return await d.stub.GetDecisionReport(pb.GetDecisionReportRequest(
                decision_point="decisionPoints/home"), metadata=WS)

        # One conversion among 20 open windows: nothing is known of the rate yet.
        early = await evaluate()
        assert (early.decisions, early.pending) == (0, 20)
        figures = (await report()).actions
        assert sum(a.pending for a in figures) == 20
        assert sum(a.rewards + a.failures for a in figures) == 0
        assert all(a.posterior_mean == 0.5 for a in figures)  # the prior: nothing final

        # The windows close (and their grace): 1 reward in 20.
        d.clock.advance(WINDOW + GRACE)

        async def closed() -> pb.GetDecisionReportResponse | None:
            got = await report()
            return got if sum(a.failures for a in got.actions) == 19 else None

        final = await eventually(closed)
        assert isinstance(final, pb.GetDecisionReportResponse)
        assert sum(a.pending for a in final.actions) == 0
        assert sum(a.rewards for a in final.actions) == 1
        late = await evaluate()
        assert (late.decisions, late.pending) == (20, 0)
        assert abs(late.logged.value - 1 / 20) < 1e-9
