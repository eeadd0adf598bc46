"""Journeys end to end with the real peers in-process and orchestration on a ManualClock: the
cart-abandonment journey (email only; `email_opened` arrives as identity would forward it; the
five-process version with push and open tracking is tests/e2e/test_cart_abandonment.py), the
Enroll RPC, and pause/resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from orchestration_support import (
    create_content,
    enrollments,
    forwarded,
    messages,
    published,
    running,
)

from cjo.common.v1 import common_pb2
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_platform.clock import ManualClock
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.status import error_reason
from support import Backend, as_service, eventually

EMAIL = common_pb2.CHANNEL_EMAIL
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def hours(n: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(hours=n))
    return value


def cart_abandonment() -> journey_pb2.Journey:
    """cart_updated -> wait up to 1 h for order_completed -> on timeout, branch on
    cart_value > 50 -> email -> wait 1 day for email_opened -> else the nudge, push preferred
    (these profiles have no push_token, so it goes out as an email); exit on order_completed
    anywhere; goal order_completed within 3 days. The real journey file, with push at an
    FCM-shaped server and a real open pixel across five processes, runs in
    tests/e2e/test_cart_abandonment.py."""
    n = journey_pb2.Node
    return journey_pb2.Journey(
        display_name="Cart abandonment",
        event_trigger=journey_pb2.EventTrigger(event_name="cart_updated"),
        entry_node_id="wait_order",
        re_entry=journey_pb2.RE_ENTRY_POLICY_AFTER_COOLDOWN, re_entry_cooldown=hours(24),
        goal=journey_pb2.Goal(event_name="order_completed", window=hours(72)),
        exit_criteria=[journey_pb2.ExitCriterion(event_name="order_completed")],
        nodes=[
            n(id="wait_order", wait=journey_pb2.WaitNode(event=journey_pb2.EventWait(
                event_name="order_completed", timeout=hours(1), event_next_node_id="done",
                timeout_next_node_id="big_cart"))),
            n(id="big_cart", branch=journey_pb2.BranchNode(conditions=[
                journey_pb2.BranchCondition(condition="event.cart_value > 50",
                                            next_node_id="email")], else_next_node_id="done")),
            n(id="email", send=journey_pb2.SendNode(content_key="cart", channel=EMAIL,
                                                    next_node_id="wait_open")),
            n(id="wait_open", wait=journey_pb2.WaitNode(event=journey_pb2.EventWait(
                event_name="email_opened", timeout=hours(24), event_next_node_id="done",
                timeout_next_node_id="nudge"))),
            n(id="nudge", send=journey_pb2.SendNode(
                content_key="cart_nudge", channel_preference=[common_pb2.CHANNEL_PUSH, EMAIL],
                next_node_id="done")),
            n(id="done", exit=journey_pb2.ExitNode()),
        ])


def path(enrollment: Any) -> list[tuple[str, str]]:
    names = {enrollment_pb2.STEP_OUTCOME_SUCCEEDED: "ok", enrollment_pb2.STEP_OUTCOME_WAITING:
             "waiting", enrollment_pb2.STEP_OUTCOME_FAILED: "failed"}
    return [(s.node_id, names[s.outcome]) for s in enrollment.steps]


async def test_cart_abandonment_journey(backend: Backend) -> None:
    clock = ManualClock(T0)
    async with running(backend, clock=clock) as cluster:
        ws = as_service("ws-a")
        stub = cluster.orchestration
        await create_content(cluster, "ws-a", "cart", "Your cart, {{ profile.name }}", "<p>x</p>")
        await create_content(cluster, "ws-a", "cart_nudge", "Still thinking?", "<p>y</p>")
        journey = await published(cluster, "ws-a", cart_abandonment())

        async def handle(*events: pb.ForwardedEvent) -> None:
            reply = await stub.HandleEvents(pb.HandleEventsRequest(events=events), metadata=ws)
            assert all(r.status.code == 0 for r in reply.results)

        async def by_profile() -> dict[str, Any]:
            return {e.profile_id: e for e in await enrollments(cluster, "ws-a", journey)}

        async def settled(check: Any) -> dict[str, Any]:
            async def ok() -> dict[str, Any] | None:
                found = await by_profile()
                return found if check(found) else None
            return await eventually(ok)  # type: ignore[return-value]

        await handle(*(forwarded(f"cart-{p}", p, "cart_updated", properties={"cart_value": v})
                       for p, v in (("ada", 80), ("bob", 75), ("cy", 20), ("dan", 90))))
        await settled(lambda f: len(f) == 4 and all(
            e.steps and e.steps[-1].node_id == "wait_order" for e in f.values()))

        clock.advance(timedelta(minutes=10))  # dan buys within the hour
        await handle(forwarded("order-dan", "dan", "order_completed"))
        await settled(lambda f: f["dan"].state == enrollment_pb2.ENROLLMENT_STATE_EXITED)

        clock.advance(timedelta(minutes=50))  # the hour is up for the others
        found = await settled(
            lambda f: f["cy"].state == enrollment_pb2.ENROLLMENT_STATE_COMPLETED
            and all(f[p].steps[-1].node_id == "wait_open" for p in ("ada", "bob")))
        # Identity forwards the open as delivery emits it: about bob's message, sent by his
        # enrollment (an open that names no enrollment would wake no journey's wait).
        await handle(forwarded("open-bob", "bob", "email_opened", properties={
            "channel": "email", "journey_id": journey.journey_id,
            "enrollment_id": found["bob"].enrollment_id}))
        found = await settled(
            lambda f: f["bob"].state == enrollment_pb2.ENROLLMENT_STATE_COMPLETED)

        clock.advance(timedelta(hours=24))  # ada never opened: the nudge goes out
        found = await settled(
            lambda f: f["ada"].state == enrollment_pb2.ENROLLMENT_STATE_COMPLETED)
        clock.advance(timedelta(hours=20))  # ada buys on day 2: the goal counts after the end
        await handle(forwarded("order-ada", "ada", "order_completed"))
        found = await settled(lambda f: f["ada"].HasField("goal_time"))

        assert path(found["ada"]) == [
            ("wait_order", "waiting"), ("wait_order", "ok"), ("big_cart", "ok"), ("email", "ok"),
            ("wait_open", "waiting"), ("wait_open", "ok"), ("nudge", "ok"), ("done", "ok")]
        assert found["ada"].steps[5].detail == "timeout"
        assert path(found["bob"])[-2:] == [("wait_open", "ok"), ("done", "ok")]
        assert found["bob"].steps[-2].detail == "event email_opened"
        assert path(found["cy"]) == [("wait_order", "waiting"), ("wait_order", "ok"),
                                     ("big_cart", "ok"), ("done", "ok")]
        assert (found["dan"].exit_reason, found["dan"].goal_time.ToDatetime(UTC)) == (
            "exit_criteria", T0 + timedelta(minutes=10))
        assert found["ada"].goal_time.ToDatetime(UTC) == T0 + timedelta(hours=45)
        assert not found["bob"].HasField("goal_time") and not found["cy"].HasField("goal_time")

        sent = await messages(cluster, "ws-a", journey.journey_id)
        by_recipient = sorted((m.recipient.profile_id, m.content.email.subject) for m in sent)
        assert by_recipient == [("ada", "Still thinking?"), ("ada", "Your cart, Ada"),
                                ("bob", "Your cart, Bob")]

        # Re-entry after the 24 h cooldown only: ada's journey ended 20 h ago, so a new cart
        # is ignored; 5 hours later the next one enrolls her again.
        await handle(forwarded("cart-ada-2", "ada", "cart_updated", properties={"cart_value": 5}))
        clock.advance(timedelta(hours=5))
        await handle(forwarded("cart-ada-3", "ada", "cart_updated", properties={"cart_value": 7}))

        async def ada_twice() -> list[Any] | None:
            found = await enrollments(cluster, "ws-a", journey, "ada")
            return found if len(found) == 2 else None
        newest, _ = await eventually(ada_twice)  # type: ignore[misc]
        assert newest.create_time.ToDatetime(UTC) == T0 + timedelta(hours=50)


async def test_enroll_is_idempotent_and_pausing_stops_new_enrollments(
        sqlite_backend: Backend) -> None:
    async with running(sqlite_backend) as cluster:
        ws = as_service("ws-a")
        stub = cluster.orchestration
        await create_content(cluster, "ws-a", "welcome", "Welcome {{ profile.name }}", "<p>x</p>")
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="Welcome", api_trigger=journey_pb2.ApiTrigger(), entry_node_id="hi",
            nodes=[journey_pb2.Node(id="hi", send=journey_pb2.SendNode(
                content_key="welcome", channel=EMAIL))]))

        def enroll(request_id: str, profile: str = "ada") -> pb.EnrollRequest:
            return pb.EnrollRequest(
                journey=journey.name, profile_id=profile, request_id=request_id,
                profile_traits=dict_to_struct({"email": f"{profile}@example.com",
                                               "name": profile.title()}))

        cluster.known_profiles.update({"ada", "bob"})  # identified before: identity knows them
        first = await stub.Enroll(enroll("r1"), metadata=ws)
        again = await stub.Enroll(enroll("r1"), metadata=ws)
        assert first.enrollment.enrollment_id and (
            again.enrollment.enrollment_id == first.enrollment.enrollment_id)
        assert (await stub.Enroll(enroll("r2"), metadata=ws)).skip_reason in (
            "already_active", "re_entry_never")

        paused = (await stub.PauseJourney(pb.PauseJourneyRequest(name=journey.name),
                                          metadata=ws)).journey
        assert paused.state == journey_pb2.JOURNEY_STATE_PAUSED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Enroll(enroll("r3", "bob"), metadata=ws)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await stub.ResumeJourney(pb.ResumeJourneyRequest(name=journey.name), metadata=ws)
        bob = await stub.Enroll(enroll("r4", "bob"), metadata=ws)
        assert bob.enrollment.profile_id == "bob"

        async def both_sent() -> bool:
            return len(await messages(cluster, "ws-a", journey.journey_id)) == 2
        await eventually(both_sent)
        with pytest.raises(grpc.aio.AioRpcError) as missing_id:
            await stub.Enroll(enroll(""), metadata=ws)
        assert missing_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_enroll_refuses_a_profile_identity_does_not_know(sqlite_backend: Backend) -> None:
    """Every step reads identity's record, so Enroll asks identity first: an id it does not
    know (a backend's own id) is NOT_FOUND and nothing is written; when identity cannot answer,
    UNAVAILABLE (retry), also with nothing written."""
    async with running(sqlite_backend) as cluster:
        ws = as_service("ws-a")
        stub = cluster.orchestration
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="By API", api_trigger=journey_pb2.ApiTrigger(), entry_node_id="done",
            nodes=[journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())]))

        def enroll(profile: str) -> pb.EnrollRequest:
            return pb.EnrollRequest(journey=journey.name, profile_id=profile,
                                    request_id=f"r-{profile}")

        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Enroll(enroll("crm-4711"), metadata=ws)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "ingest an identify event" in (unknown.value.details() or "")
        status = rpc_status.from_call(unknown.value)
        assert error_reason(status) == "PROFILE_NOT_FOUND"
        assert await enrollments(cluster, "ws-a", journey) == []

        cluster.identity_down = True
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await stub.Enroll(enroll("ada"), metadata=ws)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await enrollments(cluster, "ws-a", journey) == []

        cluster.identity_down = False
        cluster.known_profiles.add("ada")  # identified since
        first = await stub.Enroll(enroll("ada"), metadata=ws)
        assert first.enrollment.profile_id == "ada"
        # A repeat gets the first answer, even while identity cannot answer.
        cluster.identity_down = True
        assert await stub.Enroll(enroll("ada"), metadata=ws) == first
