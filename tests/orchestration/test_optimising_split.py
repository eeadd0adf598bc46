"""Optimising splits: publishing creates (or updates) the split's decision point and one action
per arm in decisioning, rewarded by the journey's goal, before the version is written (a real
gRPC stand-in of decisioning records the requests); an unreachable decisioning publishes
nothing; the step round asks for the arms in one BatchDecide, the control arm exits as
"control", and the exposure facts name the decision. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from orchestration_support import (
    FakeDecisioning,
    Ids,
    RecordingPeers,
    fake_server,
    migrated_database,
    running,
    transactions_on,
)
from sqlalchemy import select

from cjo.analytics.v1 import fact_pb2
from cjo.decisioning.v1 import decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as dpb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dgrpc
from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_orchestration.adapters.peers import ChosenAction, DecisioningCatalog
from cjo_orchestration.adapters.tables import metadata
from cjo_orchestration.domain.decisions import arm_action_key, split_point_key
from cjo_orchestration.domain.enrollment import EnrollmentState
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    Goal,
    JourneyGraph,
    Node,
    SendAction,
    SplitAction,
    SplitArm,
)
from cjo_orchestration.service_layer import enrollment, journeys
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import InvalidArgument, Unavailable
from cjo_platform.facts import FACTS_TOPIC
from support import Backend, as_service, free_port, settings_for

WS = "ws"
SETTINGS = load_engine_settings(Env({}))
GOAL = Goal("order_completed", "event.total > 10.0", timedelta(days=3))


def split_journey(min_control_percent: int = 0, goal: Goal | None = GOAL,
                  control: bool = True) -> JourneyGraph:
    arms = (SplitArm("a", 0, "mail_a"), SplitArm("b", 0, "mail_b"),
            *((SplitArm("holdout", 0, control=True),) if control else ()))
    return JourneyGraph(
        trigger=EventTrigger("visit"), entry_node_id="pick", goal=goal,
        nodes=(Node("pick", SplitAction(arms, optimize=True,
                                        min_control_percent=min_control_percent)),
               Node("mail_a", SendAction("a", Channel.EMAIL, "done")),
               Node("mail_b", SendAction("b", Channel.EMAIL, "done")),
               Node("done", ExitAction())))


class RecordingDecisioning(dgrpc.DecisioningServiceServicer):
    """Decisioning's catalogue over gRPC, keeping every upsert it was sent."""

    def __init__(self) -> None:
        self.actions: list[dpb.UpdateActionRequest] = []
        self.points: list[dpb.UpdateDecisionPointRequest] = []

    async def UpdateAction(self, request: Any, context: Any) -> Any:
        self.actions.append(request)
        return dpb.UpdateActionResponse(action=request.action)

    async def UpdateDecisionPoint(self, request: Any, context: Any) -> Any:
        self.points.append(request)
        return dpb.UpdateDecisionPointResponse(decision_point=request.decision_point)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC))


@pytest.fixture
def tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    db = migrated_database(backend)
    try:
        yield transactions_on(db, clock)
    finally:
        db.dispose()


@pytest.fixture
async def decisioning(backend: Backend) -> AsyncIterator[tuple[RecordingDecisioning,
                                                               DecisioningCatalog]]:
    servicer = RecordingDecisioning()
    async with fake_server(servicer, dgrpc.add_DecisioningServiceServicer_to_server,
                           free_port()) as target:
        settings = settings_for("orchestration", backend, CJO_DECISIONING_TARGET=target)
        yield servicer, DecisioningCatalog(settings, timeout=5.0)


async def publish(tx: Transactions, catalog: DecisioningCatalog | None,
                  graph: JourneyGraph | None) -> None:
    """Create the journey (``graph``; None: publish the existing draft again) and publish it
    the way PublishJourney does."""
    if graph is not None:
        tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Welcome test", graph))
    revision = await journeys.prepare_decisioning(tx, catalog, WS, "j1", set())
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set(), revision))


async def test_publish_upserts_the_point_with_the_goal_as_reward(
        tx: Transactions, decisioning: tuple[RecordingDecisioning, DecisioningCatalog]) -> None:
    servicer, catalog = decisioning
    await publish(tx, catalog, split_journey(min_control_percent=25))
    keys = [arm_action_key("j1", "pick", arm) for arm in ("a", "b", "holdout")]
    assert [a.action.key for a in servicer.actions] == keys
    assert all(a.allow_missing and not a.action.contents for a in servicer.actions)
    assert "arm holdout" in servicer.actions[2].action.display_name
    [upsert] = servicer.points
    point = upsert.decision_point
    assert upsert.allow_missing
    assert point.key == split_point_key("j1", "pick", pick_split())
    assert point.key.startswith("journey.j1.pick.")
    assert list(point.actions) == keys
    assert (point.reward.event_name, point.reward.filter,
            point.reward.window.ToTimedelta()) == (GOAL.event_name, GOAL.filter, GOAL.window)
    assert point.exposure == decision_point_pb2.EXPOSURE_MODE_ON_DECIDE
    assert (point.control_action, point.min_control_share) == (keys[2], 0.25)
    journey = tx.run_sync(lambda uow: journeys.get(uow, WS, "j1"))
    assert journey.published_version == 1


async def test_a_control_arm_keeps_ten_percent_by_default_and_a_republish_updates(
        tx: Transactions, decisioning: tuple[RecordingDecisioning, DecisioningCatalog]) -> None:
    servicer, catalog = decisioning
    await publish(tx, catalog, split_journey())
    await publish(tx, catalog, None)
    first, second = servicer.points
    assert first.decision_point.min_control_share == pytest.approx(0.1)
    assert first.decision_point == second.decision_point  # the same point, updated in place


async def test_without_a_control_arm_no_share_is_kept(
        tx: Transactions, decisioning: tuple[RecordingDecisioning, DecisioningCatalog]) -> None:
    servicer, catalog = decisioning
    await publish(tx, catalog, split_journey(control=False))
    [upsert] = servicer.points
    assert (upsert.decision_point.control_action, upsert.decision_point.min_control_share) == (
        "", 0.0)


async def test_decisioning_unreachable_publishes_nothing(tx: Transactions,
                                                         backend: Backend) -> None:
    settings = settings_for("orchestration", backend,
                            CJO_DECISIONING_TARGET=f"127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable):
        await publish(tx, DecisioningCatalog(settings, timeout=2.0), split_journey())
    journey = tx.run_sync(lambda uow: journeys.get(uow, WS, "j1"))
    assert journey.published_version == 0


@pytest.mark.parametrize(("graph", "field"), [
    (split_journey(goal=None), "nodes[0].split.optimize"),
    (split_journey(goal=Goal("order_completed", "journey.id == 'x'", timedelta(days=1))),
     "goal.filter"),
    (split_journey(goal=Goal("order_completed", "", timedelta(seconds=30))), "goal.window"),
    (split_journey(min_control_percent=60), "nodes[0].split.min_control_percent"),
])
async def test_invalid_optimising_splits_are_refused_before_decisioning_is_asked(
        tx: Transactions, decisioning: tuple[RecordingDecisioning, DecisioningCatalog],
        graph: JourneyGraph, field: str) -> None:
    servicer, catalog = decisioning
    with pytest.raises(InvalidArgument) as refused:
        tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "x", graph))
        await journeys.prepare_decisioning(tx, catalog, WS, "j1", set())
    assert field in {v.field for v in refused.value.violations} | {
        v.field.removeprefix("journey.") for v in refused.value.violations}
    assert servicer.points == [] and servicer.actions == []


async def test_publish_journey_upserts_through_the_service(backend: Backend) -> None:
    """PublishJourney over gRPC, with the service wired as bootstrap wires it: the point is
    upserted before the version exists; with decisioning unreachable, UNAVAILABLE and still a
    draft."""
    recorder = RecordingDecisioning()
    draft = journey_pb2.Journey(
        display_name="Welcome", event_trigger=journey_pb2.EventTrigger(event_name="visit"),
        entry_node_id="pick",
        goal=journey_pb2.Goal(event_name="order_completed", window=duration(timedelta(days=1))),
        nodes=[journey_pb2.Node(id="pick", split=journey_pb2.SplitNode(optimize=True, arms=[
                   journey_pb2.SplitArm(name="a", next_node_id="done"),
                   journey_pb2.SplitArm(name="b", next_node_id="done"),
                   journey_pb2.SplitArm(name="control", control=True)])),
               journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])
    async with running(backend, decisioning=recorder) as cluster:
        stub = cluster.orchestration
        created = (await stub.CreateJourney(pb.CreateJourneyRequest(journey=draft),
                                            metadata=as_service(WS))).journey
        published = (await stub.PublishJourney(pb.PublishJourneyRequest(name=created.name),
                                               metadata=as_service(WS))).journey
        assert published.published_version == 1
        [upsert] = recorder.points
        assert upsert.decision_point.key.startswith(f"journey.{created.journey_id}.pick.")
        assert upsert.decision_point.min_control_share == pytest.approx(0.1)
        assert published.nodes[0].split.optimize  # the journey reads back as written
    async with running(backend) as cluster:  # decisioning down
        stub = cluster.orchestration
        created = (await stub.CreateJourney(pb.CreateJourneyRequest(journey=draft),
                                            metadata=as_service(WS))).journey
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PublishJourney(pb.PublishJourneyRequest(name=created.name),
                                      metadata=as_service(WS))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        again = (await stub.GetJourney(pb.GetJourneyRequest(name=created.name),
                                       metadata=as_service(WS))).journey
        assert again.published_version == 0


def duration(value: timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def queued_facts(tx: Transactions) -> list[fact_pb2.Fact]:
    table = metadata.tables["outbox"]
    rows = tx.run_sync(lambda uow: uow.session.execute(
        select(table.c.payload).where(table.c.topic == FACTS_TOPIC).order_by(table.c.id)).all())
    return [fact_pb2.Fact.FromString(r.payload) for r in rows]


async def test_the_bandit_picks_the_arm_and_control_exits(tx: Transactions) -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "x", split_journey()))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    people = ("ada", "bob", "cy")
    ids = Ids()
    for person in people:
        tx.run_sync(lambda uow, p=person: enrollment.enroll_profile(
            uow, WS, "j1", Entrant(p, {"email": f"{p}@example.com"}, {}), f"r-{p}", "", ids))
    fake = FakeDecisioning()
    arms = {"ada": "a", "bob": "b", "cy": "holdout"}
    fake.points[split_point_key("j1", "pick", pick_split())] = lambda item: ChosenAction(
        arm_action_key("j1", "pick", arms[item.profile_id]))
    peers = RecordingPeers(*people)
    peers.decisioning = fake
    steps = StepRound(tx, peers, SETTINGS)
    await steps.run()  # the arms
    await steps.run()  # the sends after them, due at once
    [call] = fake.decide_calls
    assert call.channel is None and len(call.items) == 3
    found, _ = tx.run_sync(lambda uow: enrollment.list_enrollments(uow, WS, "j1", "", 10, None))
    outcome = {e.profile_id: (e.state, e.exit_reason) for e, _ in found}
    assert outcome["cy"] == (EnrollmentState.EXITED, "control")
    assert {s.profile_id: s.content.content_key for s in peers.sent} == {"ada": "a", "bob": "b"}
    exposed = {f.profile_id: f for f in queued_facts(tx)
               if f.type == fact_pb2.FACT_TYPE_EXPERIMENT_EXPOSED}
    assert {p: (f.arm, f.control, f.arm_weight) for p, f in exposed.items()} == {
        "ada": ("a", False, 0.0), "bob": ("b", False, 0.0), "cy": ("holdout", True, 0.0)}
    assert all(f.decision_id.startswith("d-") for f in exposed.values())


async def test_an_unreachable_decisioning_holds_the_split_without_failing_anyone(
        tx: Transactions, clock: ManualClock) -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "x", split_journey()))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, "j1", Entrant("ada", {"email": "ada@example.com"}, {}), "r", "", Ids()))
    fake = FakeDecisioning()
    fake.down = True
    fake.points[split_point_key("j1", "pick", pick_split())] = lambda item: ChosenAction(
        arm_action_key("j1", "pick", "a"))
    peers = RecordingPeers("ada")
    peers.decisioning = fake
    steps = StepRound(tx, peers, SETTINGS)
    await steps.run()
    [(waiting, _)], _ = tx.run_sync(lambda uow: enrollment.list_enrollments(
        uow, WS, "j1", "", 10, None))
    assert (waiting.state, waiting.current_node_id, waiting.attempts) == (
        EnrollmentState.ACTIVE, "pick", 0)
    fake.down = False
    clock.advance(timedelta(minutes=2))
    await steps.run()  # the arm
    await steps.run()  # its send, due at once
    assert [s.content.content_key for s in peers.sent] == ["a"]


def pick_split(graph: JourneyGraph | None = None) -> SplitAction:
    [split] = [n.action for n in (graph or split_journey()).nodes if n.id == "pick"]
    assert isinstance(split, SplitAction)
    return split


def test_long_ids_give_keys_decisioning_accepts() -> None:
    journey_id, node_id = "j" * 64, "N" * 64
    point = split_point_key(journey_id, node_id, pick_split())
    assert len(point) <= 128 and point.startswith("journey.")
    keys = {arm_action_key(journey_id, node_id, arm) for arm in ("A", "a", "x" * 64)}
    assert len(keys) == 3 and all(len(k) <= 64 and k == k.lower() for k in keys)


def test_split_points_never_collide_and_follow_the_arms() -> None:
    """Node ids are case-sensitive while decisioning keys are lower-case: two splits at `Offer`
    and `offer` must not share a point (the second upsert would replace the first's arms and
    every decision there would name no arm). A re-publish that keeps the arms keeps the point
    (and what it learned); one that changes the arms gets its own point, so enrollments still
    on the older version keep deciding among their own arms."""
    split = pick_split()
    assert split_point_key("j1", "Offer", split) != split_point_key("j1", "offer", split)
    assert split_point_key("J1", "pick", split) != split_point_key("j1", "pick", split)
    assert split_point_key("j1", "pick", pick_split()) == split_point_key("j1", "pick", split)
    renamed = SplitAction((SplitArm("a", 0, "mail_a"), SplitArm("c", 0, "mail_b"),
                           SplitArm("holdout", 0, control=True)), optimize=True)
    no_control = pick_split(split_journey(control=False))
    keys = {split_point_key("j1", "pick", s) for s in (split, renamed, no_control)}
    assert len(keys) == 3
    assert all(len(k) <= 128 and re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", k) for k in keys)
    for journey_id, node_id in (("J1", "Offer"), ("j" * 100, "n" * 64)):
        key = split_point_key(journey_id, node_id, split)
        assert len(key) <= 128 and re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", key)
