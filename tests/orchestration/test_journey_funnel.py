"""The journey funnel as analytics reports it from the facts orchestration really publishes:
orchestration (manual clock), content, delivery and analytics running, the facts carried by
orchestration's facts forwarder. Every count below is worked out by hand from the people's
paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2
from orchestration_support import (
    Cluster,
    create_content,
    enrollments,
    forwarded,
    parked,
    published,
    running,
)

from cjo.analytics.v1 import reports_pb2
from cjo.common.v1 import common_pb2
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_platform.clock import ManualClock
from support import Backend, as_service, eventually

EMAIL = common_pb2.CHANNEL_EMAIL
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
WS = "ws-funnel"
# (node, entered, in_progress, completed, failed, dropped)
Row = tuple[str, int, int, int, int, int]


def duration(value: timedelta) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(value)
    return out


def checkout_journey() -> journey_pb2.Journey:
    """cart_updated -> wait a day -> "offer" email (on_failure CONTINUE) -> "receipt" email
    (a failure ends the enrollment) -> exit. An order exits anywhere (exit criterion); a
    purchase is the goal, and ends the enrollment (exit_on_goal)."""
    n = journey_pb2.Node
    return journey_pb2.Journey(
        display_name="Checkout",
        event_trigger=journey_pb2.EventTrigger(event_name="cart_updated"),
        entry_node_id="wait",
        goal=journey_pb2.Goal(event_name="purchase", window=duration(timedelta(days=3)),
                              exit_on_goal=True),
        exit_criteria=[journey_pb2.ExitCriterion(event_name="order_completed")],
        nodes=[
            n(id="wait", wait=journey_pb2.WaitNode(duration=duration(timedelta(days=1)),
                                                   next_node_id="offer")),
            n(id="offer", send=journey_pb2.SendNode(
                content_key="offer", channel=EMAIL, next_node_id="receipt",
                on_failure=journey_pb2.FAILURE_POLICY_CONTINUE)),
            n(id="receipt", send=journey_pb2.SendNode(content_key="receipt", channel=EMAIL,
                                                      next_node_id="done")),
            n(id="done", exit=journey_pb2.ExitNode()),
        ])


async def funnel_rows(cluster: Cluster, journey: journey_pb2.Journey) -> tuple[Any, list[Row]]:
    try:
        reply = await cluster.stub("analytics").GetJourneyFunnel(
            reports_pb2.GetJourneyFunnelRequest(journey=journey.name), metadata=as_service(WS))
    except grpc.aio.AioRpcError as exc:
        # No fact of the journey has reached analytics yet (UNKNOWN_JOURNEY): not yet.
        if exc.code() is grpc.StatusCode.INVALID_ARGUMENT and "no facts" in (exc.details() or ""):
            return None, []
        raise
    if not reply.versions:
        return None, []
    [version] = reply.versions
    rows = sorted((n.node_id, n.entered, n.in_progress, n.completed, n.failed, n.dropped)
                  for n in version.nodes)
    return version, rows


async def funnel_reaches(cluster: Cluster, journey: journey_pb2.Journey,
                         rows: list[Row], **totals: int) -> Any:
    """The version's funnel once its nodes read ``rows`` and its ``totals`` (fields of the
    version: ``exited=5``) read as given. Facts reach analytics through the forwarders, which
    gather them for a moment (CJO_FACTS_LINGER_MS), so they arrive after the steps, and the facts
    behind the nodes and those behind the totals may arrive in different calls."""
    last: list[Any] = [[], {}]

    async def check() -> Any:
        version, last[0] = await funnel_rows(cluster, journey)
        last[1] = {name: getattr(version, name, None) for name in totals}
        return version if (last[0], last[1]) == (rows, totals) else None

    try:
        return await eventually(check)
    except AssertionError:
        assert (last[0], last[1]) == (rows, totals)  # shows what the funnel read instead
        raise


async def test_the_funnel_counts_waits_exits_failures_and_goals_where_they_happen(
        backend: Backend) -> None:
    clock = ManualClock(T0)
    async with running(backend, clock=clock) as cluster:
        ws = as_service(WS)
        await create_content(cluster, WS, "offer", "10% off", "<p>offer</p>")
        await create_content(cluster, WS, "receipt", "Your receipt", "<p>receipt</p>")
        journey = await published(cluster, WS, checkout_journey())

        async def handle(*events: pb.ForwardedEvent) -> None:
            reply = await cluster.orchestration.HandleEvents(
                pb.HandleEventsRequest(events=events), metadata=ws)
            assert all(r.status.code == 0 for r in reply.results), reply

        # 18 people: p00..p14 have an email delivery accepts; p15..p17 one it rejects
        # ("not-an-email": INVALID_ARGUMENT, a permanent failure of the send).
        people = [f"p{i:02d}" for i in range(18)]
        bad = set(people[15:])
        await handle(*(forwarded(f"cart-{p}", p, traits={
            "email": "not-an-email" if p in bad else f"{p}@example.com"}) for p in people))
        await parked(cluster, WS, journey, clock, count=18)

        # All 18 wait at the entry node: in progress there (the old facts showed 0).
        await funnel_reaches(cluster, journey, [("wait", 18, 18, 0, 0, 0)],
                             entered_profiles=18, exited=0)

        # During the wait: p00..p02 order (exit criterion: dropped at the wait), p03 and p04
        # purchase (the goal, exit_on_goal: completed at the wait, and conversions).
        clock.advance(timedelta(hours=2))
        await handle(*(forwarded(f"order-{p}", p, "order_completed") for p in people[:3]),
                     *(forwarded(f"buy-{p}", p, "purchase") for p in people[3:5]))
        await funnel_reaches(cluster, journey, [("wait", 18, 13, 2, 0, 3)],
                             converted_profiles=2, exited=5)
        found = {e.profile_id: e for e in await enrollments(cluster, WS, journey)}
        assert {found[p].exit_reason for p in people[:3]} == {"exit_criteria"}
        assert {found[p].exit_reason for p in people[3:5]} == {"goal_reached"}

        # The day is up for the other 13. p05..p14 (10) get both emails and complete. p15..p17
        # (3): the offer fails and they move on (CONTINUE), the receipt fails and ends them.
        clock.advance(timedelta(days=1))

        async def all_ended() -> bool:
            return all(e.state != enrollment_pb2.ENROLLMENT_STATE_ACTIVE
                       for e in await enrollments(cluster, WS, journey))

        await eventually(all_ended)
        await funnel_reaches(cluster, journey, [
            ("done", 10, 0, 10, 0, 0),
            ("offer", 13, 0, 10, 3, 0),
            ("receipt", 13, 0, 10, 3, 0),
            ("wait", 18, 0, 15, 0, 3),
        ], entered_profiles=18, converted_profiles=2, exited=18)
        found = {e.profile_id: e for e in await enrollments(cluster, WS, journey)}
        assert {found[p].exit_reason for p in bad} == {"failed"}
        assert {[s.node_id for s in found[p].steps][-1] for p in bad} == {"receipt"}
