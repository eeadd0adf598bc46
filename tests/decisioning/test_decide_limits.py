"""Budgets, contact limits and the caller's ids and times: what a decision may spend, and what a
Decide or an exposure refuses, item by item."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import grpc
import pytest
from decisioning_support import A, action, create_action, create_point, days, point
from decisioning_support import decisioning_service as decisioning
from outcomes_support import START, WS, merged, running, sent
from test_decide import NOW, ON_DECIDE, R, decide, profile, reasons

from cjo.decisioning.v1 import action_pb2, decision_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo_platform.clock import ManualClock
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.status import field_violations
from support import Backend

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_concurrent_decides_never_overshoot_a_budget(backend: Backend) -> None:
    """Twelve Decide calls at once for a budget of 3 (PostgreSQL runs them concurrently)."""
    async with decisioning(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("voucher", mandatory=True, budget=3))
        await create_action(stub, action("filler"))
        await create_point(stub, point("home", ["voucher", "filler"], exposure=ON_DECIDE))
        replies = await asyncio.gather(*(stub.Decide(pb.DecideRequest(
            decision_point="decisionPoints/home", profile_id=f"p{i}", profile=profile()),
            metadata=A) for i in range(12)))
        winners = Counter(r.decision.actions[0].action for r in replies)
        assert winners == {"voucher": 3, "filler": 9}


async def test_a_reported_point_reserves_the_budget_when_it_decides(backend: Backend) -> None:
    """Decisions waiting for delivery's report count at once: a batch of 6 on a budget of 2
    gives the voucher to 2, and their exposures spend nothing more."""
    async with decisioning(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("voucher", mandatory=True, budget=2))
        await create_action(stub, action("filler"))
        await create_point(stub, point("home", ["voucher", "filler"]))  # REPORTED
        reply = await stub.BatchDecide(pb.BatchDecideRequest(
            decision_point="decisionPoints/home",
            items=[pb.DecideItem(profile_id=f"p{i}", profile=profile()) for i in range(6)]),
            metadata=A)
        winners = [r.decision.actions[0].action for r in reply.results]
        assert winners == ["voucher"] * 2 + ["filler"] * 4
        assert all(r.decision.outcome == R.DECISION_OUTCOME_PENDING for r in reply.results)
        assert reasons(reply.results[5].decision) == {
            "voucher": R.INELIGIBILITY_REASON_BUDGET_EXHAUSTED}
        await stub.RecordExposures(pb.RecordExposuresRequest(exposures=[
            pb.Exposure(decision_id=r.decision.decision_id) for r in reply.results]), metadata=A)
        # The two reserved units were the exposures: nothing left, nothing counted twice.
        after = await decide(stub, "home", "q1")
        assert reasons(after) == {"voucher": R.INELIGIBILITY_REASON_BUDGET_EXHAUSTED}


async def test_an_overlong_id_fails_only_its_item(backend: Backend) -> None:
    async with decisioning(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("a"))
        await create_point(stub, point("home", ["a"]))
        items = [pb.DecideItem(profile_id=f"p{i}", profile=profile()) for i in range(4)]
        items.append(pb.DecideItem(profile_id="p9", profile=profile(), request_id="r" * 129))
        items.append(pb.DecideItem(profile_id="x" * 129, profile=profile()))
        items.append(pb.DecideItem(profile_id="p8", profile=profile(),
                                   context=decision_pb2.DecisionContext(node_id="n" * 129)))
        reply = await stub.BatchDecide(pb.BatchDecideRequest(
            decision_point="decisionPoints/home", items=items), metadata=A)
        assert [r.status.code for r in reply.results] == [0] * 4 + [INVALID] * 3
        assert all(r.decision.actions[0].action == "a" for r in reply.results[:4])
        assert [list(field_violations(r.status)) for r in reply.results[4:]] == [
            ["items[4].request_id"], ["items[5].profile_id"], ["items[6].context.node_id"]]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Decide(pb.DecideRequest(
                decision_point="decisionPoints/home", profile_id="p1", profile=profile(),
                request_id="r" * 129), metadata=A)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_caller_times_must_be_near_now(backend: Backend) -> None:
    """A decision time a year ago would be exposed and lapsed at once; an exposure in 2099
    would never close its window."""
    async with decisioning(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("a"))
        await create_point(stub, point("home", ["a"]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Decide(pb.DecideRequest(
                decision_point="decisionPoints/home", profile_id="p1", profile=profile(),
                context=decision_pb2.DecisionContext(
                    time=to_timestamp(NOW - timedelta(days=365)))), metadata=A)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "context.time" in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as shared:
            await stub.BatchDecide(pb.BatchDecideRequest(
                decision_point="decisionPoints/home",
                context=decision_pb2.DecisionContext(time=to_timestamp(NOW + timedelta(days=2))),
                items=[pb.DecideItem(profile_id="p1", profile=profile())]), metadata=A)
        assert shared.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        near = await stub.Decide(pb.DecideRequest(
            decision_point="decisionPoints/home", profile_id="p1", profile=profile(),
            context=decision_pb2.DecisionContext(time=to_timestamp(NOW - timedelta(hours=2)))),
            metadata=A)
        made = near.decision.decision_id
        reply = await stub.RecordExposures(pb.RecordExposuresRequest(exposures=[
            pb.Exposure(decision_id=made, expose_time=to_timestamp(NOW + timedelta(days=1))),
            pb.Exposure(decision_id=made, expose_time=to_timestamp(NOW - timedelta(hours=3))),
            pb.Exposure(decision_id="d" * 129)]), metadata=A)
        assert [r.status.code for r in reply.results] == [INVALID] * 3
        assert [list(field_violations(r.status)) for r in reply.results] == [
            ["exposures[0].expose_time"], ["exposures[1].expose_time"],
            ["exposures[2].decision_id"]]
        ok = await stub.RecordExposures(pb.RecordExposuresRequest(exposures=[
            pb.Exposure(decision_id=made, expose_time=to_timestamp(NOW))]), metadata=A)
        assert ok.results[0].status.code == 0 and not ok.results[0].duplicate


async def test_contact_limits_count_pending_decisions_and_the_same_person_in_a_batch(
        backend: Backend) -> None:
    async with decisioning(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("capped", mandatory=True, contact_limits=[
            action_pb2.ContactLimit(max_exposures=1, period=days(1))]))
        await create_action(stub, action("filler"))
        await create_point(stub, point("reported", ["capped", "filler"]))
        await create_point(stub, point("exposed", ["capped", "filler"], exposure=ON_DECIDE))
        # (a) A decision waiting for delivery's report is a contact already.
        first = await decide(stub, "reported", "p1")
        assert first.actions[0].action == "capped"
        second = await decide(stub, "reported", "p1")
        assert [a.action for a in second.actions] == ["filler"]
        assert reasons(second) == {"capped": R.INELIGIBILITY_REASON_CONTACT_LIMIT}
        # (b) The same person twice in one batch gets it once.
        reply = await stub.BatchDecide(pb.BatchDecideRequest(
            decision_point="decisionPoints/exposed",
            items=[pb.DecideItem(profile_id="p2", profile=profile(), request_id=f"r{i}")
                   for i in range(2)]), metadata=A)
        assert [r.decision.actions[0].action for r in reply.results] == ["capped", "filler"]


async def test_contact_limits_count_the_ids_merged_into_a_person(backend: Backend) -> None:
    async with running(backend) as d:
        await d.stub.CreateAction(pb.CreateActionRequest(action=action(
            "capped", mandatory=True, contact_limits=[
                action_pb2.ContactLimit(max_exposures=1, period=days(1))])), metadata=WS)
        await d.stub.CreateAction(pb.CreateActionRequest(action=action("filler")), metadata=WS)
        await d.stub.CreateDecisionPoint(pb.CreateDecisionPointRequest(decision_point=point(
            "home", ["capped", "filler"], exposure=ON_DECIDE)), metadata=WS)
        anonymous = await decide(d.stub, "home", "anon-1", WS)
        assert anonymous.actions[0].action == "capped"
        await d.events(merged("anon-1", "p1", START + timedelta(minutes=1)))
        d.clock.advance(timedelta(minutes=2))
        survivor = await decide(d.stub, "home", "p1", WS)
        assert reasons(survivor) == {"capped": R.INELIGIBILITY_REASON_CONTACT_LIMIT}


async def test_a_forwarded_send_before_the_decision_time_still_exposes_it(
        backend: Backend) -> None:
    """Delivery's clock is not decisioning's: its send fact is held to the decision's time,
    not refused (the decision would never open its window)."""
    async with running(backend) as d:
        await d.stub.CreateAction(pb.CreateActionRequest(action=action("a")), metadata=WS)
        await d.stub.CreateDecisionPoint(pb.CreateDecisionPointRequest(
            decision_point=point("home", ["a"])), metadata=WS)
        later = START + timedelta(hours=1)
        made = await decide(d.stub, "home", "p1", WS, context=decision_pb2.DecisionContext(
            time=to_timestamp(later)))
        await d.facts(sent("m1", made.decision_id, START))
        got = (await d.stub.GetDecision(pb.GetDecisionRequest(
            name=f"decisions/{made.decision_id}"), metadata=WS)).decision
        assert got.outcome == R.DECISION_OUTCOME_EXPOSED
        assert got.expose_time == to_timestamp(later)
