"""Orchestration's decisioning client against the real decisioning service in this process: the
points an optimising split publishes are ones decisioning accepts (and accepts again on a
re-publish), and a step round's BatchDecide (profile inline, the step's key as request id) gets
a decision per person among the split's arms, the same one when asked again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from cjo_decisioning.bootstrap import build as build_decisioning
from cjo_orchestration.adapters.peers import (
    DecideItem,
    DecisionAnswer,
    DecisioningCatalog,
    Peers,
)
from cjo_orchestration.domain.decisions import arm_action_key, split_point_key, split_points
from cjo_orchestration.domain.journeys import (
    EventTrigger,
    ExitAction,
    Goal,
    JourneyGraph,
    Node,
    SplitAction,
    SplitArm,
)
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from support import Backend, serving, settings_for

WS = "ws-contract"
NOW = datetime(2026, 6, 1, 9, tzinfo=UTC)
GRAPH = JourneyGraph(
    trigger=EventTrigger("visit"), entry_node_id="pick",
    goal=Goal("order_completed", "event.total > 10.0", timedelta(days=2)),
    nodes=(Node("pick", SplitAction((SplitArm("Short", 0, "done"), SplitArm("long", 0, "done"),
                                     SplitArm("holdout", 0, control=True)), optimize=True)),
           Node("done", ExitAction())))


@pytest.fixture
async def clients(backend: Backend) -> AsyncIterator[tuple[DecisioningCatalog, Peers]]:
    app = build_decisioning(settings_for("decisioning", backend), Env({}),
                            clock=ManualClock(NOW))
    async with serving(app) as target:
        settings = settings_for("orchestration", backend, CJO_DECISIONING_TARGET=target)
        yield DecisioningCatalog(settings, 10.0), Peers(settings, 10.0)


async def test_published_points_are_accepted_and_decide_among_the_arms(
        clients: tuple[DecisioningCatalog, Peers]) -> None:
    catalog, peers = clients
    points = split_points("j-contract", "Contract", GRAPH)
    await catalog.upsert(WS, points)
    await catalog.upsert(WS, points)  # a re-publish updates in place
    arms = {arm_action_key("j-contract", "pick", a) for a in ("Short", "long", "holdout")}
    items = [DecideItem(f"p{i}", {"email": f"p{i}@example.com", "plan": "pro"},
                        f"e{i}:pick:0", "j-contract", f"e{i}", "pick") for i in range(20)]
    [split] = [n.action for n in GRAPH.nodes if n.id == "pick"]
    assert isinstance(split, SplitAction)
    point = split_point_key("j-contract", "pick", split)
    assert [p.key for p in points] == [point]
    first = await peers.decide(WS, point, None, NOW, items)
    assert all(isinstance(a, DecisionAnswer) and a.action is not None
               and a.action.key in arms for a in first), first
    again = await peers.decide(WS, point, None, NOW, items)
    assert again == first  # the same request ids: the same decisions
