"""Decide, BatchDecide, GetDecision and RecordExposures over a real gRPC server (content real
beside it, identity real where profiles are read from it), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from decisioning_support import (
    EMAIL,
    SMS,
    A,
    B,
    action,
    add_content,
    create_action,
    create_point,
    days,
    decisioning_service,
    point,
    refused,
)
from google.protobuf import struct_pb2

from cjo.decisioning.v1 import action_pb2, decision_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo_decisioning.service_layer.decide import profile_keys
from cjo_identity.bootstrap import build as build_identity
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.protobuf import to_timestamp
from support import Backend, free_port, serving, settings_for

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
R = decision_pb2
ON_DECIDE = decision_point_pb2.EXPOSURE_MODE_ON_DECIDE


def profile(**traits: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(traits)
    return s


def reasons(decision: decision_pb2.Decision) -> dict[str, int]:
    return {i.action: i.reason for i in decision.ineligible}


async def decide(stub: Any, point_key: str, profile_id: str, metadata: Any = A,
                 **fields: Any) -> decision_pb2.Decision:
    fields.setdefault("profile", profile())
    reply = await stub.Decide(pb.DecideRequest(decision_point=f"decisionPoints/{point_key}",
                                               profile_id=profile_id, **fields),
                              metadata=metadata)
    return reply.decision


async def test_each_candidate_is_ranked_or_left_out_with_its_reason(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await add_content(services, "promo")
        await create_action(stub, action("ok", value=2, contents=[
            action_pb2.ActionContent(channel=EMAIL, content_key="promo")]))
        await create_action(stub, action("vip", eligibility='profile.tier == "gold"'))
        await create_action(stub, action("broken", eligibility="int(profile.code) > 1"))
        await create_action(stub, action("old", end_time=to_timestamp(NOW - timedelta(days=1))))
        await create_action(stub, action("sms-only", contents=[
            action_pb2.ActionContent(channel=SMS, content_key="promo")]))
        await create_action(stub, action("weird"))
        await create_action(stub, action("gone"))
        await create_point(stub, point(
            "home", ["ok", "vip", "broken", "old", "sms-only", "weird", "gone"], max_actions=3,
            arbitration=decision_point_pb2.Arbitration(
                context_weight='action.key == "weird" ? -1.0 : 1.0')))
        await stub.DeleteAction(pb.DeleteActionRequest(name="actions/gone"), metadata=A)

        email = R.DecisionContext(channel=EMAIL)
        plain = await decide(stub, "home", "p1", profile=profile(tier="silver", code="x"),
                             context=email)
        assert [a.action for a in plain.actions] == ["ok"]
        assert plain.actions[0].value == 2 and plain.actions[0].lever == 1
        assert [c.channel for c in plain.actions[0].contents] == [EMAIL]
        assert reasons(plain) == {
            "vip": R.INELIGIBILITY_REASON_ELIGIBILITY_RULE,
            "broken": R.INELIGIBILITY_REASON_ELIGIBILITY_ERROR,
            "old": R.INELIGIBILITY_REASON_NOT_ACTIVE,
            "sms-only": R.INELIGIBILITY_REASON_NO_CONTENT_FOR_CHANNEL,
            "weird": R.INELIGIBILITY_REASON_ARBITRATION_ERROR,
            "gone": R.INELIGIBILITY_REASON_ACTION_DELETED}
        assert plain.outcome == R.DECISION_OUTCOME_PENDING and plain.decision_id

        gold = await decide(stub, "home", "p2", profile=profile(tier="gold", code="7"))
        # Without a channel every action is a candidate whatever its content; three of the
        # four eligible ones are returned (max_actions).
        assert len(gold.actions) == 3
        assert {a.action for a in gold.actions} <= {"ok", "vip", "broken", "sms-only"}
        assert set(reasons(gold)) == {"old", "weird", "gone"}
        assert 0 < gold.actions[0].pick_probability <= 1

        stored = (await stub.GetDecision(pb.GetDecisionRequest(
            name=f"decisions/{plain.decision_id}"), metadata=A)).decision
        assert stored == plain

        # Another workspace sees neither the point nor the decision.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await decide(stub, "home", "p1", metadata=B)
        assert refused(info)[:2] == (grpc.StatusCode.NOT_FOUND, "DECISION_POINT_NOT_FOUND")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetDecision(pb.GetDecisionRequest(name=f"decisions/{plain.decision_id}"),
                                   metadata=B)
        assert refused(info)[:2] == (grpc.StatusCode.NOT_FOUND, "DECISION_NOT_FOUND")


async def test_no_eligible_action_is_an_empty_ranking_not_an_error(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("vip", eligibility='profile.tier == "gold"'))
        await create_point(stub, point("home", ["vip"]))
        decision = await decide(stub, "home", "p1")
        assert list(decision.actions) == []
        assert decision.outcome == R.DECISION_OUTCOME_NO_ACTION
        assert reasons(decision) == {"vip": R.INELIGIBILITY_REASON_ELIGIBILITY_ERROR}


async def test_contact_limits_budgets_and_mandatory_actions(backend: Backend) -> None:
    clock = ManualClock(NOW)
    async with decisioning_service(backend, clock) as services:
        stub = services.decisioning
        await create_action(stub, action("capped", mandatory=True, contact_limits=[
            action_pb2.ContactLimit(max_exposures=1, period=days(1))]))
        await create_action(stub, action("scarce", mandatory=True, budget=2))
        await create_action(stub, action("filler"))
        await create_point(stub, point("capped-point", ["capped", "filler"],
                                       exposure=ON_DECIDE))
        await create_point(stub, point("scarce-point", ["scarce", "filler"],
                                       exposure=ON_DECIDE))

        first = await decide(stub, "capped-point", "p1")
        assert first.actions[0].action == "capped" and first.actions[0].mandatory
        assert first.actions[0].pick_probability == 1
        assert first.outcome == R.DECISION_OUTCOME_EXPOSED and first.HasField("expose_time")
        second = await decide(stub, "capped-point", "p1")
        assert [a.action for a in second.actions] == ["filler"]
        assert reasons(second) == {"capped": R.INELIGIBILITY_REASON_CONTACT_LIMIT}
        other = await decide(stub, "capped-point", "p2")  # another person's limit is their own
        assert other.actions[0].action == "capped"
        clock.advance(timedelta(days=1, minutes=1))
        again = await decide(stub, "capped-point", "p1")
        assert again.actions[0].action == "capped"

        winners = [(await decide(stub, "scarce-point", f"q{i}")).actions[0].action
                   for i in range(3)]
        assert winners == ["scarce", "scarce", "filler"]
        last = await decide(stub, "scarce-point", "q9")
        assert reasons(last) == {"scarce": R.INELIGIBILITY_REASON_BUDGET_EXHAUSTED}


async def test_reported_exposures_open_the_window_once(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("only", budget=1))
        await create_point(stub, point("home", ["only"]))
        made = await decide(stub, "home", "p1")
        assert made.outcome == R.DECISION_OUTCOME_PENDING
        reply = await stub.RecordExposures(pb.RecordExposuresRequest(exposures=[
            pb.Exposure(decision_id=made.decision_id),
            pb.Exposure(decision_id="nope"),
            pb.Exposure(decision_id=made.decision_id)]), metadata=A)
        assert [r.status.code for r in reply.results] == [0, grpc.StatusCode.NOT_FOUND.value[0], 0]
        assert [r.duplicate for r in reply.results] == [False, False, True]
        again = await stub.RecordExposures(pb.RecordExposuresRequest(exposures=[
            pb.Exposure(decision_id=made.decision_id)]), metadata=A)
        assert again.results[0].duplicate
        got = (await stub.GetDecision(pb.GetDecisionRequest(
            name=f"decisions/{made.decision_id}"), metadata=A)).decision
        assert got.outcome == R.DECISION_OUTCOME_EXPOSED
        assert got.expose_time.ToDatetime(tzinfo=UTC) == NOW
        # The exposure was counted once against the budget of 1.
        spent = await decide(stub, "home", "p2")
        assert reasons(spent) == {"only": R.INELIGIBILITY_REASON_BUDGET_EXHAUSTED}
        # Another workspace cannot expose it.
        other = await stub.RecordExposures(pb.RecordExposuresRequest(exposures=[
            pb.Exposure(decision_id=made.decision_id)]), metadata=B)
        assert other.results[0].status.code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_request_id_gets_its_first_decision(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        for key in ["a", "b", "c"]:
            await create_action(stub, action(key))
        await create_point(stub, point("home", ["a", "b", "c"],
                                       exploration=decision_point_pb2.Exploration(
                                           method=decision_point_pb2.EXPLORATION_METHOD_UNIFORM_RANDOM)))
        first = await decide(stub, "home", "p1", request_id="enr-1/n1/1")
        for _ in range(5):
            assert await decide(stub, "home", "p1", request_id="enr-1/n1/1") == first
        batch = await stub.BatchDecide(pb.BatchDecideRequest(
            decision_point="decisionPoints/home", items=[
                pb.DecideItem(profile_id="p2", profile=profile(), request_id="x"),
                pb.DecideItem(profile_id="p2", profile=profile(), request_id="x"),
                pb.DecideItem(profile_id="p1", profile=profile(), request_id="enr-1/n1/1")]),
            metadata=A)
        ids = [r.decision.decision_id for r in batch.results]
        assert ids[0] == ids[1] and ids[2] == first.decision_id


async def test_decision_ids_are_unguessable_and_follow_the_decision_time(
        sqlite_backend: Backend) -> None:
    """A later decision's id sorts after an earlier one's (the log's primary key is appended
    to, not written all over), and each carries 80 random bits after the time."""
    clock = ManualClock(NOW)
    async with decisioning_service(sqlite_backend, clock) as services:
        stub = services.decisioning
        await create_action(stub, action("a"))
        await create_point(stub, point("home", ["a"]))
        ids: list[str] = []
        for _ in range(3):
            reply = await stub.BatchDecide(pb.BatchDecideRequest(
                decision_point="decisionPoints/home", items=[
                    pb.DecideItem(profile_id=f"p{i}", profile=profile()) for i in range(50)]),
                metadata=A)
            ids.append(sorted(r.decision.decision_id for r in reply.results))
            clock.advance(timedelta(milliseconds=5))
    assert all(len(i) == 32 and int(i, 16) >= 0 for batch in ids for i in batch)
    assert ids[0][-1] < ids[1][0] and ids[1][-1] < ids[2][0]
    assert len({i[12:] for batch in ids for i in batch}) == 150  # the random part
    assert len({i[:12] for i in ids[0]}) == 1  # one batch, one time


async def test_the_same_seed_and_inputs_give_the_same_picks(sqlite_backend: Backend) -> None:
    async def picks(run: int) -> list[str]:
        async with decisioning_service(sqlite_backend, ManualClock(NOW),
                                       env={"CJO_DECISIONING_SEED": "42"},
                                       CJO_DATA_DIR=str(sqlite_backend.data_dir / f"run{run}"),
                                       ) as services:
            stub = services.decisioning
            for key in ["a", "b", "c", "d"]:
                await create_action(stub, action(key))
            await create_point(stub, point("home", ["a", "b", "c", "d"]))
            reply = await stub.BatchDecide(pb.BatchDecideRequest(
                decision_point="decisionPoints/home", items=[
                    pb.DecideItem(profile_id=f"p{i}", profile=profile(), request_id=f"r{i}")
                    for i in range(60)]), metadata=A)
            return [r.decision.actions[0].action for r in reply.results]

    first, second = await picks(1), await picks(2)
    assert first == second
    assert len(set(first)) > 1  # not one action for everybody


async def test_a_model_without_rewards_spreads_decisions_over_actions(
        backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        keys = ["a", "b", "c", "d"]
        for key in keys:
            await create_action(stub, action(key))
        await create_point(stub, point("home", keys))
        reply = await stub.BatchDecide(pb.BatchDecideRequest(
            decision_point="decisionPoints/home",
            context=R.DecisionContext(channel=EMAIL),
            items=[pb.DecideItem(profile_id=f"p{i}", profile=profile(plan="pro"))
                   for i in range(400)]), metadata=A)
        assert all(r.status.code == 0 for r in reply.results)
        counts = Counter(r.decision.actions[0].action for r in reply.results)
        assert set(counts) == set(keys)
        assert min(counts.values()) >= 40, counts  # about 100 each under the prior
        probabilities = [r.decision.actions[0].pick_probability for r in reply.results]
        assert all(0.05 < p < 0.6 for p in probabilities)


async def test_a_bad_item_fails_alone_and_profiles_come_from_identity(
        sqlite_backend: Backend) -> None:
    clock = ManualClock(NOW)
    identity_settings = settings_for("identity", sqlite_backend,
                                     CJO_ORCHESTRATION_TARGET=f"127.0.0.1:{free_port()}")
    identity_app = build_identity(identity_settings, Env({}), clock=clock)
    async with serving(identity_app) as identity_address, \
            grpc.aio.insecure_channel(identity_address) as channel:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        ingested = await identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
            event_pb2.Event(message_id="m1", type=event_pb2.EVENT_TYPE_IDENTIFY, source="web",
                            identifiers=[event_pb2.Identifier(type="email", value="a@x.io")],
                            traits=profile(tier="gold"))]), metadata=A)
        known = ingested.results[0].profile_id
        assert known
        async with decisioning_service(sqlite_backend, clock,
                                       CJO_IDENTITY_TARGET=identity_address) as services:
            stub = services.decisioning
            await create_action(stub, action("vip", eligibility='profile.tier == "gold"'))
            await create_point(stub, point("home", ["vip"]))
            reply = await stub.BatchDecide(pb.BatchDecideRequest(
                decision_point="decisionPoints/home", items=[
                    pb.DecideItem(profile_id=known),
                    pb.DecideItem(profile_id="nobody"),
                    pb.DecideItem(profile_id=""),
                    pb.DecideItem(profile_id="inline", profile=profile(tier="gold")),
                    pb.DecideItem(profile_id="p5", profile=profile(), context=R.DecisionContext(
                        attributes=profile(**{f"k{i}": i for i in range(51)})))]), metadata=A)
            codes = [r.status.code for r in reply.results]
            assert codes == [0, grpc.StatusCode.NOT_FOUND.value[0],
                             grpc.StatusCode.INVALID_ARGUMENT.value[0], 0,
                             grpc.StatusCode.INVALID_ARGUMENT.value[0]]
            assert reply.results[0].decision.actions[0].action == "vip"
            assert reply.results[0].decision.profile_id == known
            assert reply.results[3].decision.actions[0].action == "vip"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Decide(pb.DecideRequest(decision_point="decisionPoints/home",
                                                   profile_id="nobody"), metadata=A)
            assert refused(info)[:2] == (grpc.StatusCode.NOT_FOUND, "PROFILE_NOT_FOUND")

            # A repeated request id is answered from the log, without asking identity (which
            # does not know this person).
            first = await decide(stub, "home", "ghost", request_id="r1",
                                 profile=profile(tier="gold"))
            again = await stub.Decide(pb.DecideRequest(decision_point="decisionPoints/home",
                                                       profile_id="ghost", request_id="r1"),
                                      metadata=A)
            assert again.decision == first


async def test_a_formula_scores_affinely_or_leaves_the_candidate_out(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("cheap", value=1, tags=["square"]))
        await create_action(stub, action("dear", value=10, mandatory=True))
        greedy = decision_point_pb2.Exploration(
            method=decision_point_pb2.EXPLORATION_METHOD_GREEDY)  # scores by the mean
        formula = ('"square" in action.tags ? propensity * propensity'
                   ' : propensity * value + 0.5')
        await create_point(stub, point(
            "home", ["cheap", "dear"], max_actions=2, exploration=greedy,
            arbitration=decision_point_pb2.Arbitration(formula=formula)))
        decision = await decide(stub, "home", "p1")
        assert [a.action for a in decision.actions] == ["dear"]
        assert decision.actions[0].score == pytest.approx(
            decision.actions[0].propensity * 10 + 0.5)
        assert reasons(decision) == {"cheap": R.INELIGIBILITY_REASON_ARBITRATION_ERROR}
        shown = (await stub.GetDecisionPoint(pb.GetDecisionPointRequest(
            name="decisionPoints/home"), metadata=A)).decision_point
        assert shown.error_count == 1 and "affine" in shown.last_error


async def test_concurrent_repeats_of_a_request_id_get_one_decision(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        for key in ["a", "b", "c"]:
            await create_action(stub, action(key))
        await create_point(stub, point("home", ["a", "b", "c"]))
        request = pb.DecideRequest(decision_point="decisionPoints/home", profile_id="p1",
                                   profile=profile(), request_id="enr-7/n1/1")
        replies = await asyncio.gather(*(stub.Decide(request, metadata=A) for _ in range(8)))
        assert len({r.decision.decision_id for r in replies}) == 1


async def test_a_batch_exposed_on_decide_spends_a_budget_no_further(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("voucher", mandatory=True, budget=3))
        await create_action(stub, action("filler"))
        await create_point(stub, point("home", ["voucher", "filler"], exposure=ON_DECIDE))
        reply = await stub.BatchDecide(pb.BatchDecideRequest(
            decision_point="decisionPoints/home",
            items=[pb.DecideItem(profile_id=f"p{i}", profile=profile()) for i in range(5)]),
            metadata=A)
        winners = [r.decision.actions[0].action for r in reply.results]
        assert winners == ["voucher"] * 3 + ["filler"] * 2
        assert reasons(reply.results[4].decision) == {
            "voucher": R.INELIGIBILITY_REASON_BUDGET_EXHAUSTED}
        later = await decide(stub, "home", "p9")
        assert reasons(later) == {"voucher": R.INELIGIBILITY_REASON_BUDGET_EXHAUSTED}


def test_rules_convert_only_the_profile_keys_they_read() -> None:
    # What the eligibility rules read decides what of a profile is converted for CEL: a read
    # the text cannot pin to a key (index, macro on the profile, the whole profile) takes all.
    assert profile_keys(['profile.tier == "gold"', "has(profile.age) && profile.age > 3",
                         '"vip" in profile.segments']) == {"tier", "age", "segments"}
    assert profile_keys(["context.hour > 3"]) == frozenset()
    for whole in ('profile["tier"] == "gold"', "size(profile) > 3",
                  'profile.exists(k, k == "tier")', 'profile.?tier == optional.of("gold")',
                  '"profile" == context.channel'):
        assert profile_keys(['profile.tier == "gold"', whole]) is None, whole


async def test_rules_see_every_trait_they_read_however_they_read_it(backend: Backend) -> None:
    async with decisioning_service(backend, ManualClock(NOW)) as services:
        stub = services.decisioning
        await create_action(stub, action("gold", eligibility='profile.tier == "gold"'))
        await create_action(stub, action("aged", eligibility="has(profile.age)"))
        await create_action(stub, action("counted", eligibility="profile.orders > 2.0"))
        await create_point(stub, point("narrow", ["gold", "aged", "counted"]))
        await create_action(stub, action("indexed", eligibility='profile["tier"] == "gold"'))
        await create_point(stub, point("wide", ["gold", "aged", "indexed"]))

        narrow = await decide(stub, "narrow", "p1", profile=profile(tier="gold", orders=1))
        assert [a.action for a in narrow.actions] == ["gold"]
        assert reasons(narrow) == {"aged": R.INELIGIBILITY_REASON_ELIGIBILITY_RULE,
                                   "counted": R.INELIGIBILITY_REASON_ELIGIBILITY_RULE}
        wide = await decide(stub, "wide", "p2", profile=profile(tier="gold", age=40))
        assert len(wide.actions) == 1 and reasons(wide) == {}  # all three eligible
        other = await decide(stub, "wide", "p3", profile=profile(tier="silver"))
        assert list(other.actions) == []
        assert reasons(other) == dict.fromkeys(["gold", "aged", "indexed"],
                                               R.INELIGIBILITY_REASON_ELIGIBILITY_RULE)
