"""Actions and decision points over a real gRPC server (content real beside it), on SQLite and
PostgreSQL: what is refused and why, idempotency, etags, masks, paging and workspaces."""

from __future__ import annotations

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
from google.protobuf import field_mask_pb2

from cjo.decisioning.v1 import action_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from support import Backend


async def test_an_action_round_trips_and_names_its_content(backend: Backend) -> None:
    async with decisioning_service(backend) as services:
        stub = services.decisioning
        await add_content(services, "spring-offer")
        created = await create_action(stub, action(
            "spring-10", display_name="Spring -10%", value=12.5, lever=1.5,
            eligibility='profile.plan == "pro" && context.hour >= 8',
            contents=[action_pb2.ActionContent(channel=EMAIL, content_key="spring-offer")],
            contact_limits=[action_pb2.ContactLimit(max_exposures=2, period=days(7))],
            budget=1000, topic="offers", tags=["spring"]))
        assert created.name == "actions/spring-10" and created.etag
        got = (await stub.GetAction(pb.GetActionRequest(name="actions/spring-10"),
                                    metadata=A)).action
        assert got == created
        assert got.contact_limits[0].period.seconds == 7 * 86400
        assert list(got.tags) == ["spring"] and got.contents[0].content_key == "spring-offer"

        # Another workspace sees nothing of it.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetAction(pb.GetActionRequest(name="actions/spring-10"), metadata=B)
        assert refused(info)[:2] == (grpc.StatusCode.NOT_FOUND, "ACTION_NOT_FOUND")
        listed = await stub.ListActions(pb.ListActionsRequest(), metadata=B)
        assert list(listed.actions) == []


async def test_an_action_naming_missing_content_is_not_found(backend: Backend) -> None:
    async with decisioning_service(backend) as services:
        await add_content(services, "elsewhere", metadata=B)  # another workspace's item
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_action(services.decisioning, action("a1", contents=[
                action_pb2.ActionContent(channel=EMAIL, content_key="elsewhere")]))
        code, reason, _ = refused(info)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONTENT_NOT_FOUND")


async def test_invalid_actions_name_each_field_with_positions(backend: Backend) -> None:
    async with decisioning_service(backend) as services:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_action(services.decisioning, action(
                "Bad Key", value=-1, lever=-2,
                eligibility="profile.plan ==\n  (",
                contents=[action_pb2.ActionContent(channel=EMAIL, content_key="x"),
                          action_pb2.ActionContent(channel=EMAIL, content_key="y")],
                contact_limits=[action_pb2.ContactLimit(max_exposures=0, period=days(400))]))
        code, _, violations = refused(info)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(violations) == {
            "action.key", "action.value", "action.lever", "action.eligibility",
            "action.contents[1].channel", "action.contact_limits[0].max_exposures",
            "action.contact_limits[0].period"}
        assert violations["action.eligibility"].startswith("line 2, column ")

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_action(services.decisioning, action("a2", eligibility="event.x > 1"))
        assert "unknown variable event" in refused(info)[2]["action.eligibility"]


async def test_update_mask_etag_allow_missing_and_request_id(backend: Backend) -> None:
    async with decisioning_service(backend) as services:
        stub = services.decisioning
        created = await create_action(stub, action("a1", display_name="One", value=2))
        changed = (await stub.UpdateAction(pb.UpdateActionRequest(
            action=action_pb2.Action(name="actions/a1", display_name="Uno", value=99,
                                     etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"])), metadata=A)).action
        assert (changed.display_name, changed.value) == ("Uno", 2)
        assert changed.etag != created.etag

        with pytest.raises(grpc.aio.AioRpcError) as info:  # the etag read before the change
            await stub.UpdateAction(pb.UpdateActionRequest(
                action=action_pb2.Action(name="actions/a1", display_name="Eins",
                                         etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"])), metadata=A)
        assert refused(info)[0] == grpc.StatusCode.ABORTED

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpdateAction(pb.UpdateActionRequest(
                action=action_pb2.Action(name="actions/a1"),
                update_mask=field_mask_pb2.FieldMask(paths=["key"])), metadata=A)
        assert "update_mask.paths[0]" in refused(info)[2]

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpdateAction(pb.UpdateActionRequest(
                action=action_pb2.Action(name="actions/a9", display_name="Nine")), metadata=A)
        assert refused(info)[:2] == (grpc.StatusCode.NOT_FOUND, "ACTION_NOT_FOUND")
        upserted = (await stub.UpdateAction(pb.UpdateActionRequest(
            action=action_pb2.Action(name="actions/a9", display_name="Nine"),
            allow_missing=True), metadata=A)).action
        assert upserted.key == "a9"

        # A repeated request id gets the first answer, even after the action changed.
        request = pb.CreateActionRequest(action=action("a2", display_name="Two"),
                                         request_id="req-1")
        first = await stub.CreateAction(request, metadata=A)
        await stub.DeleteAction(pb.DeleteActionRequest(name="actions/a2"), metadata=A)
        again = await stub.CreateAction(request, metadata=A)
        assert again == first
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetAction(pb.GetActionRequest(name="actions/a2"), metadata=A)
        assert refused(info)[0] == grpc.StatusCode.NOT_FOUND

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_action(stub, action("a1"))
        assert refused(info)[0] == grpc.StatusCode.ALREADY_EXISTS


async def test_actions_and_points_page_by_key(backend: Backend) -> None:
    async with decisioning_service(backend) as services:
        stub = services.decisioning
        for key in ["c", "a", "e", "b", "d"]:
            await create_action(stub, action(key))
        seen: list[str] = []
        token = ""
        while True:
            page = await stub.ListActions(pb.ListActionsRequest(page_size=2, page_token=token),
                                          metadata=A)
            seen += [a.key for a in page.actions]
            token = page.next_page_token
            if not token:
                break
        assert seen == ["a", "b", "c", "d", "e"]
        for key in ["p2", "p1"]:
            await create_point(stub, point(key, ["a"]))
        points = await stub.ListDecisionPoints(pb.ListDecisionPointsRequest(page_size=1),
                                               metadata=A)
        assert [p.key for p in points.decision_points] == ["p1"] and points.next_page_token


async def test_a_point_needs_existing_actions_and_valid_rules(backend: Backend) -> None:
    async with decisioning_service(backend) as services:
        stub = services.decisioning
        await create_action(stub, action("a1"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_point(stub, point("home", ["a1", "ghost"]))
        code, reason, _ = refused(info)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ACTION_NOT_FOUND")

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_point(stub, decision_point_pb2.DecisionPoint(
                key="home", actions=["a1", "a1"], max_actions=11,
                arbitration=decision_point_pb2.Arbitration(
                    formula="propensity * ", context_weight="cart.total > 1 ? 1.0 : 0.5"),
                exploration=decision_point_pb2.Exploration(epsilon=2),
                model=decision_point_pb2.Model(prior_propensity=1.5),
                control_action="a2", min_control_share=0.6,
                reward=decision_point_pb2.Reward(filter="event.properties.total >",
                                                 window=days(400))))
        code, _, violations = refused(info)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(violations) == {
            "decision_point.actions[1]", "decision_point.max_actions",
            "decision_point.arbitration.formula", "decision_point.arbitration.context_weight",
            "decision_point.exploration.epsilon", "decision_point.model.prior_propensity",
            "decision_point.control_action", "decision_point.min_control_share",
            "decision_point.reward.event_name", "decision_point.reward.filter",
            "decision_point.reward.window"}
        assert violations["decision_point.arbitration.formula"].startswith("line 1, column")
        assert violations["decision_point.reward.filter"].startswith("line 1, column")

        created = await create_point(stub, point(
            "home", ["a1"], control_action="a1", min_control_share=0.2,
            exposure=decision_point_pb2.EXPOSURE_MODE_ON_DECIDE))
        assert created.name == "decisionPoints/home"
        assert created.exposure == decision_point_pb2.EXPOSURE_MODE_ON_DECIDE
        assert created.reward.event_name == "order_completed"
        got = await stub.GetDecisionPoint(pb.GetDecisionPointRequest(name="decisionPoints/home"),
                                          metadata=A)
        assert got.decision_point == created
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetDecisionPoint(pb.GetDecisionPointRequest(name="decisionPoints/home"),
                                        metadata=B)
        assert refused(info)[:2] == (grpc.StatusCode.NOT_FOUND, "DECISION_POINT_NOT_FOUND")

        # Changing the actions checks them again; the rest of the point stays.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpdateDecisionPoint(pb.UpdateDecisionPointRequest(
                decision_point=decision_point_pb2.DecisionPoint(
                    name="decisionPoints/home", actions=["a1", "nope"]),
                update_mask=field_mask_pb2.FieldMask(paths=["actions"])), metadata=A)
        assert refused(info)[1] == "ACTION_NOT_FOUND"
        await create_action(stub, action("a2", contents=[]))
        changed = (await stub.UpdateDecisionPoint(pb.UpdateDecisionPointRequest(
            decision_point=decision_point_pb2.DecisionPoint(
                name="decisionPoints/home", actions=["a1", "a2"], max_actions=2),
            update_mask=field_mask_pb2.FieldMask(paths=["actions", "max_actions"])),
            metadata=A)).decision_point
        assert (list(changed.actions), changed.max_actions, changed.control_action) == (
            ["a1", "a2"], 2, "a1")

        await stub.DeleteDecisionPoint(pb.DeleteDecisionPointRequest(
            name="decisionPoints/home", etag=changed.etag), metadata=A)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.DeleteDecisionPoint(pb.DeleteDecisionPointRequest(
                name="decisionPoints/home"), metadata=A)
        assert refused(info)[1] == "DECISION_POINT_NOT_FOUND"


async def test_sms_content_is_checked_per_channel(sqlite_backend: Backend) -> None:
    async with decisioning_service(sqlite_backend) as services:
        await add_content(services, "promo")
        created = await create_action(services.decisioning, action("a1", contents=[
            action_pb2.ActionContent(channel=EMAIL, content_key="promo"),
            action_pb2.ActionContent(channel=SMS, content_key="promo")]))
        assert [c.channel for c in created.contents] == [EMAIL, SMS]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await services.decisioning.UpdateAction(pb.UpdateActionRequest(
                action=action_pb2.Action(name="actions/a1", contents=[
                    action_pb2.ActionContent(channel=SMS, content_key="gone")]),
                update_mask=field_mask_pb2.FieldMask(paths=["contents"])), metadata=A)
        assert refused(info)[1] == "CONTENT_NOT_FOUND"


@pytest.mark.parametrize("call", [
    lambda stub: stub.GetAction(pb.GetActionRequest(name="actions/Spring 10"), metadata=A),
    lambda stub: stub.GetDecisionPoint(pb.GetDecisionPointRequest(
        name="decisionPoints/home/x"), metadata=A),
    lambda stub: stub.GetDecision(pb.GetDecisionRequest(name="decisions/a b"), metadata=A),
])
async def test_a_malformed_name_is_invalid_not_unknown(sqlite_backend: Backend,
                                                       call: object) -> None:
    async with decisioning_service(sqlite_backend) as services:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(services.decisioning)  # type: ignore[operator]
        code, _, fields = refused(info)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "name" in fields
