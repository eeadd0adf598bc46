"""The decide node: a step round asks decisioning for the next best action of all its
enrollments at a decision point in one BatchDecide (with the profile it read, the step's key as
the request id), sends the chosen action's content through the send path with the decision id
on the message and its facts, follows the no-action edge when nothing is eligible, waits out a
decisioning outage without failing or charging anyone, and fails the node (by its policy) for a
decision point decisioning does not know. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from orchestration_support import (
    FakeDecisioning,
    Ids,
    RecordingPeers,
    migrated_database,
    transactions_on,
)
from sqlalchemy import select

from cjo.analytics.v1 import fact_pb2
from cjo.orchestration.v1 import journey_pb2
from cjo_orchestration import journeyfile
from cjo_orchestration.adapters.peers import ChosenAction
from cjo_orchestration.adapters.tables import metadata
from cjo_orchestration.api.convert import graph_from_proto, node_to_proto
from cjo_orchestration.domain.enrollment import EnrollmentState
from cjo_orchestration.domain.journeys import (
    Channel,
    DecideAction,
    EventTrigger,
    ExitAction,
    FailurePolicy,
    JourneyGraph,
    Node,
)
from cjo_orchestration.service_layer import enrollment, journeys
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import InvalidArgument
from cjo_platform.facts import FACTS_TOPIC
from support import Backend

WS = "ws"
PEOPLE = ("ada", "bob", "cy", "dee", "eve")
SETTINGS = load_engine_settings(Env({}))
OFFER = ChosenAction("spring_sale", ((Channel.SMS, "sale-sms"), (Channel.EMAIL, "sale-email")),
                     topic="offers")


def offer_journey(on_failure: FailurePolicy = FailurePolicy.EXIT,
                  no_action: str = "nothing") -> JourneyGraph:
    return JourneyGraph(
        trigger=EventTrigger("visit"), entry_node_id="offer",
        nodes=(Node("offer", DecideAction("homepage_offer", Channel.EMAIL, "done", no_action,
                                          on_failure)),
               Node("done", ExitAction()),
               *((Node("nothing", ExitAction()),) if no_action else ())))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC))


@pytest.fixture
def db_tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    db = migrated_database(backend)
    try:
        yield transactions_on(db, clock)
    finally:
        db.dispose()


def start(tx: Transactions, graph: JourneyGraph, people: tuple[str, ...] = PEOPLE) -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Offers", graph))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    ids = Ids()
    for person in people:
        tx.run_sync(lambda uow, p=person: enrollment.enroll_profile(
            uow, WS, "j1", Entrant(p, {"email": f"{p}@example.com"}, {}), f"r-{p}", "", ids))


def peers_with(decisioning: FakeDecisioning) -> RecordingPeers:
    peers = RecordingPeers(*PEOPLE)
    peers.decisioning = decisioning
    return peers


def listed(tx: Transactions) -> list[tuple[object, list[object]]]:
    found, _ = tx.run_sync(lambda uow: enrollment.list_enrollments(uow, WS, "j1", "", 100, None))
    return list(found)


def queued_facts(tx: Transactions) -> list[fact_pb2.Fact]:
    table = metadata.tables["outbox"]
    rows = tx.run_sync(lambda uow: uow.session.execute(
        select(table.c.payload).where(table.c.topic == FACTS_TOPIC).order_by(table.c.id)).all())
    return [fact_pb2.Fact.FromString(r.payload) for r in rows]


async def test_one_batch_decide_per_round_and_the_decision_travels_with_the_message(
        db_tx: Transactions) -> None:
    start(db_tx, offer_journey())
    decisioning = FakeDecisioning()
    decisioning.points["homepage_offer"] = lambda item: OFFER
    peers = peers_with(decisioning)
    await StepRound(db_tx, peers, SETTINGS).run()

    [call] = decisioning.decide_calls  # five people, one call
    assert call.decision_point == "homepage_offer" and call.channel is Channel.EMAIL
    assert sorted(item.profile_id for item in call.items) == sorted(PEOPLE)
    for item in call.items:
        # The profile the round read goes along (decisioning does not ask identity again), and
        # the request id is the step's key, so a retry gets the same decision.
        assert item.profile["email"] == f"{item.profile_id}@example.com"
        assert item.request_id == f"{item.enrollment_id}:offer:0"
        assert (item.journey_id, item.node_id) == ("j1", "offer")
    assert len(peers.sent) == 5
    for sent in peers.sent:
        # The node's channel picks the action's email content; the action's topic applies.
        assert sent.decision_id == f"d-{sent.idempotency_key}"
        assert sent.content.content_key == "sale-email"
        assert sent.address == f"{sent.profile_id}@example.com"
        assert sent.topic == "offers" and not sent.transactional
    assert {e.state for e, _ in listed(db_tx)} == {EnrollmentState.COMPLETED}
    requested = [f for f in queued_facts(db_tx)
                 if f.type == fact_pb2.FACT_TYPE_MESSAGE_REQUESTED]
    assert sorted(f.decision_id for f in requested) == sorted(s.decision_id
                                                               for s in peers.sent)
    assert {f.content_key for f in requested} == {"sale-email"}


async def test_no_eligible_action_takes_the_no_action_edge_or_ends(
        db_tx: Transactions) -> None:
    start(db_tx, offer_journey(no_action=""), people=("ada",))
    decisioning = FakeDecisioning()
    decisioning.points["homepage_offer"] = lambda item: None
    peers = peers_with(decisioning)
    await StepRound(db_tx, peers, SETTINGS).run()
    assert peers.sent == []
    [(done, steps)] = listed(db_tx)
    assert done.state is EnrollmentState.COMPLETED and done.exit_reason == "completed"
    assert steps[-1].detail == f"no action (decision d-{done.enrollment_id}:offer:0)"


async def test_the_no_action_edge_leads_on(db_tx: Transactions) -> None:
    start(db_tx, offer_journey(), people=("ada",))
    decisioning = FakeDecisioning()
    decisioning.points["homepage_offer"] = lambda item: None
    await StepRound(db_tx, peers_with(decisioning), SETTINGS).run()
    [(done, steps)] = listed(db_tx)
    assert [s.node_id for s in steps] == ["offer", "nothing"]
    assert done.state is EnrollmentState.COMPLETED


async def test_decisioning_down_then_up_loses_nothing_and_sends_nothing_twice(
        db_tx: Transactions, clock: ManualClock) -> None:
    start(db_tx, offer_journey())
    decisioning = FakeDecisioning()
    decisioning.points["homepage_offer"] = lambda item: OFFER
    decisioning.down = True
    peers = peers_with(decisioning)
    steps = StepRound(db_tx, peers, SETTINGS)
    await steps.run()
    assert peers.sent == []
    waiting = listed(db_tx)
    # Nobody failed, nobody was charged an attempt: they wait at the node.
    assert {(e.state, e.current_node_id, e.attempts) for e, _ in waiting} == {
        (EnrollmentState.ACTIVE, "offer", 0)}
    assert all("UNAVAILABLE" in e.last_error for e, _ in waiting)
    await steps.run()  # backing off: not asked again yet
    assert len(decisioning.decide_calls) == 1
    clock.advance(timedelta(minutes=2))
    decisioning.down = False
    await steps.run()
    first, second = decisioning.decide_calls
    # The same request ids: the decisions asked for during the outage are the ones made.
    assert sorted(i.request_id for i in first.items) == sorted(i.request_id for i in second.items)
    assert len(peers.sent) == 5 and len({s.idempotency_key for s in peers.sent}) == 5
    assert {e.state for e, _ in listed(db_tx)} == {EnrollmentState.COMPLETED}
    clock.advance(timedelta(hours=1))
    await steps.run()
    assert len(peers.sent) == 5 and len(decisioning.decide_calls) == 2


async def test_a_retried_send_carries_the_same_decision(db_tx: Transactions,
                                                        clock: ManualClock) -> None:
    start(db_tx, offer_journey(), people=("ada",))
    decisioning = FakeDecisioning()
    offers = iter([OFFER, ChosenAction("other", ((Channel.EMAIL, "other-email"),))])
    decisioning.points["homepage_offer"] = lambda item: next(offers)
    peers = peers_with(decisioning)
    peers.accept = False  # delivery unavailable: the send is retried later
    steps = StepRound(db_tx, peers, SETTINGS)
    await steps.run()
    clock.advance(timedelta(seconds=5))
    peers.accept = True
    await steps.run()
    first, second = peers.sent
    assert (first.idempotency_key, first.decision_id, first.content.content_key) == (
        second.idempotency_key, second.decision_id, second.content.content_key)
    assert second.content.content_key == "sale-email"


async def test_an_unknown_decision_point_fails_the_node_and_counts_on_the_journey(
        db_tx: Transactions) -> None:
    start(db_tx, offer_journey(), people=("ada",))
    await StepRound(db_tx, peers_with(FakeDecisioning()), SETTINGS).run()
    [(failed, _)] = listed(db_tx)
    assert failed.state is EnrollmentState.FAILED and "NOT_FOUND" in failed.last_error
    journey = db_tx.run_sync(lambda uow: journeys.get(uow, WS, "j1"))
    assert journey.error_count == 1 and "NOT_FOUND" in journey.last_error


async def test_on_failure_continue_moves_past_a_failed_decision(db_tx: Transactions) -> None:
    start(db_tx, offer_journey(FailurePolicy.CONTINUE), people=("ada",))
    await StepRound(db_tx, peers_with(FakeDecisioning()), SETTINGS).run()
    [(done, steps)] = listed(db_tx)
    assert done.state is EnrollmentState.COMPLETED
    assert [s.node_id for s in steps] == ["offer", "done"]


async def test_a_person_without_an_address_for_the_chosen_content_fails_alone(
        db_tx: Transactions) -> None:
    start(db_tx, offer_journey(), people=("ada", "bob"))
    decisioning = FakeDecisioning()
    sms_only = ChosenAction("sms_offer", ((Channel.SMS, "sale-sms"),))
    decisioning.points["homepage_offer"] = (
        lambda item: sms_only if item.profile_id == "bob" else OFFER)
    peers = peers_with(decisioning)
    await StepRound(db_tx, peers, SETTINGS).run()
    states = {e.profile_id: e.state for e, _ in listed(db_tx)}
    assert states == {"ada": EnrollmentState.COMPLETED, "bob": EnrollmentState.FAILED}
    assert [s.profile_id for s in peers.sent] == ["ada"]


def _journey(node: journey_pb2.Node) -> journey_pb2.Journey:
    return journey_pb2.Journey(display_name="j", event_trigger=journey_pb2.EventTrigger(
        event_name="visit"), entry_node_id=node.id, nodes=[node, journey_pb2.Node(
            id="done", exit=journey_pb2.ExitNode())])


@pytest.mark.parametrize(("decide", "field"), [
    (journey_pb2.DecideNode(decision_point="", next_node_id="done"),
     "nodes[0].decide.decision_point"),
    (journey_pb2.DecideNode(decision_point="Home Offer", next_node_id="done"),
     "nodes[0].decide.decision_point"),
    (journey_pb2.DecideNode(decision_point="journey.x.y", next_node_id="done"),
     "nodes[0].decide.decision_point"),
    (journey_pb2.DecideNode(decision_point="offer", next_node_id="nowhere"),
     "nodes[0].decide.next_node_id"),
    (journey_pb2.DecideNode(decision_point="offer", next_node_id="done",
                            no_action_next_node_id="nowhere"),
     "nodes[0].decide.no_action_next_node_id"),
])
def test_invalid_decide_nodes_name_the_field(decide: journey_pb2.DecideNode,
                                             field: str) -> None:
    problems = journeyfile.problems(_journey(journey_pb2.Node(id="offer", decide=decide)))
    assert field in {p.field for p in problems}, problems


def test_an_unknown_channel_is_refused_naming_the_field() -> None:
    node = journey_pb2.Node(id="offer", decide=journey_pb2.DecideNode(
        decision_point="offer", next_node_id="done", channel=99))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as refused:
        graph_from_proto(_journey(node))
    assert refused.value.violations[0].field == "journey.nodes[0].decide.channel"
    assert [p.field for p in journeyfile.problems(_journey(node))] == ["nodes[0].decide.channel"]


def test_a_decide_node_round_trips_through_a_journey_file() -> None:
    text = """
display_name: Offers
event_trigger: {event_name: visit}
entry_node_id: offer
nodes:
  - id: offer
    decide:
      decision_point: homepage_offer
      channel: CHANNEL_EMAIL
      next_node_id: done
      no_action_next_node_id: done
      on_failure: FAILURE_POLICY_CONTINUE
  - {id: done, exit: {}}
"""
    journey = journeyfile.parse(text)
    assert journeyfile.problems(journey) == []
    graph = graph_from_proto(journey)
    decide = graph.nodes[0].action
    assert decide == DecideAction("homepage_offer", Channel.EMAIL, "done", "done",
                                  FailurePolicy.CONTINUE)
    assert node_to_proto(graph.nodes[0]) == journey.nodes[0]
    # Stored as JSON in a version and read back unchanged.
    assert JourneyGraph.from_dict(graph.to_dict()) == graph

