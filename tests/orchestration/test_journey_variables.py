"""One set of CEL variables in every journey condition (`event`, `profile`, `journey` with the
enrollment's id, node, entry time and entry properties), refused when a condition reads anything
else; and engagement waits tied to the enrollment's own message unless `any_message` widens
them. Use-cases driven directly on SQLite and PostgreSQL, with the step round's peers a
recording stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from orchestration_support import Ids, RecordingPeers, clocked_transactions

from cjo_orchestration import journeyfile
from cjo_orchestration.adapters import enrollments as store
from cjo_orchestration.adapters.peers import SendItem
from cjo_orchestration.api.convert import graph_from_proto
from cjo_orchestration.domain.conditions import journey_variables
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState
from cjo_orchestration.domain.entry import InboxEvent
from cjo_orchestration.domain.journeys import (
    BranchAction,
    BranchCondition,
    Channel,
    EventTrigger,
    EventWait,
    ExitAction,
    Goal,
    JourneyGraph,
    Node,
    SendAction,
    WaitAction,
)
from cjo_orchestration.domain.reactions import own_message
from cjo_orchestration.service_layer import enrollment, events, journeys
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import InvalidArgument
from support import Backend

WS = "ws"
START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    with clocked_transactions(backend, clock) as transactions:
        yield transactions


class Delivery(RecordingPeers):
    """Identity, content and delivery as the step round sees them (ada has her address), with
    the message each journey sent."""

    def __init__(self) -> None:
        super().__init__("ada")

    def message_of(self, journey_id: str) -> SendItem:
        [item] = [s for s in self.sent if s.journey_id == journey_id]
        return item


def publish(tx: Transactions, journey_id: str, graph: JourneyGraph) -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, journey_id, journey_id, graph))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, journey_id, set()))


def handle(tx: Transactions, *forwarded: events.ForwardedEvent) -> None:
    tx.run_sync(lambda uow: events.receive(uow, WS, list(forwarded)))
    while tx.run_sync(lambda uow: events.apply_inbox(uow, 100, Ids())).handled:
        pass


async def walk(tx: Transactions, delivery: Delivery | None = None) -> None:
    """Step rounds until nothing is due."""
    steps = StepRound(tx, delivery or Delivery(), load_engine_settings(Env({})))
    for _ in range(3):
        await steps.run()


def event(event_id: str, name: str, **properties: Any) -> events.ForwardedEvent:
    return events.ForwardedEvent(event_id, "ada", name, properties,
                                 {"email": "ada@example.com"}, "")


def the_enrollment(tx: Transactions, journey_id: str) -> Enrollment:
    [(found, _)], _ = tx.run_sync(lambda uow: enrollment.list_enrollments(
        uow, WS, journey_id, "", 10, None))
    return found


def email_then_open_wait(any_message: bool = False, filter: str = "") -> JourneyGraph:
    """cart_updated -> email -> wait a day for email_opened -> "opened" (or "ignored")."""
    return JourneyGraph(EventTrigger("cart_updated"), (
        Node("email", SendAction("cart", Channel.EMAIL, "wait_open")),
        Node("wait_open", WaitAction(event=EventWait(
            "email_opened", filter, DAY, "opened", "ignored", any_message=any_message))),
        Node("opened", ExitAction()),
        Node("ignored", ExitAction()),
    ), "email")


async def two_journeys_waiting_for_an_open(tx: Transactions, b_any_message: bool) -> Delivery:
    publish(tx, "a", email_then_open_wait())
    publish(tx, "b", email_then_open_wait(any_message=b_any_message))
    handle(tx, event("c1", "cart_updated"))
    delivery = Delivery()
    await walk(tx, delivery)
    assert {s.journey_id for s in delivery.sent} == {"a", "b"}
    for journey_id in ("a", "b"):
        parked = the_enrollment(tx, journey_id)
        assert (parked.current_node_id, parked.waiting) == ("wait_open", True)
    return delivery


def opened(event_id: str, message: SendItem) -> events.ForwardedEvent:
    """The open of ``message`` as delivery emits it through identity."""
    return event(event_id, "email_opened", channel="email",
                 message_id=f"m-{message.idempotency_key}", journey_id=message.journey_id,
                 enrollment_id=message.enrollment_id)


async def test_an_open_moves_only_the_wait_of_the_journey_that_sent_the_email(
        tx: Transactions) -> None:
    delivery = await two_journeys_waiting_for_an_open(tx, b_any_message=False)
    handle(tx, opened("open-a", delivery.message_of("a")))
    assert the_enrollment(tx, "a").current_node_id == "opened"
    b = the_enrollment(tx, "b")
    assert (b.current_node_id, b.waiting) == ("wait_open", True)  # A's open is not B's
    # An open with no enrollment (a message SendMessage sent) moves no journey's wait either.
    handle(tx, event("open-x", "email_opened", channel="email", message_id="m-api"))
    assert the_enrollment(tx, "b").waiting
    handle(tx, opened("open-b", delivery.message_of("b")))
    assert the_enrollment(tx, "b").current_node_id == "opened"


async def test_any_message_lets_another_journeys_open_move_the_wait(tx: Transactions) -> None:
    delivery = await two_journeys_waiting_for_an_open(tx, b_any_message=True)
    handle(tx, opened("open-a", delivery.message_of("a")))
    assert the_enrollment(tx, "a").current_node_id == "opened"
    assert the_enrollment(tx, "b").current_node_id == "opened"


async def test_the_filter_still_applies_to_a_widened_engagement_wait(tx: Transactions) -> None:
    publish(tx, "a", email_then_open_wait())
    publish(tx, "b", email_then_open_wait(any_message=True,
                                          filter='event.journey_id != journey.id'))
    handle(tx, event("c1", "cart_updated"))
    delivery = Delivery()
    await walk(tx, delivery)
    handle(tx, opened("open-b", delivery.message_of("b")))  # its own: the filter refuses it
    assert the_enrollment(tx, "b").waiting
    handle(tx, opened("open-a", delivery.message_of("a")))
    assert the_enrollment(tx, "b").current_node_id == "opened"


async def test_an_event_wait_filter_compares_with_the_entry_event(tx: Transactions) -> None:
    """journey.entry stays the event that enrolled the person after a wait woke them."""
    publish(tx, "upsell", JourneyGraph(EventTrigger("order_placed"), (
        Node("wait_visit", WaitAction(event=EventWait("visited", "", DAY, "wait_bigger"))),
        Node("wait_bigger", WaitAction(event=EventWait(
            "order_placed", "event.amount > journey.entry.amount", DAY, "bigger"))),
        Node("bigger", ExitAction()),
    ), "wait_visit"))
    handle(tx, event("o1", "order_placed", amount=50))
    await walk(tx)
    handle(tx, event("v1", "visited", amount=1000))  # wakes the first wait
    await walk(tx)
    parked = the_enrollment(tx, "upsell")
    assert (parked.current_node_id, parked.properties) == ("wait_bigger", {"amount": 1000})
    assert parked.entry_properties == {"amount": 50}
    handle(tx, event("o2", "order_placed", amount=40))
    assert the_enrollment(tx, "upsell").current_node_id == "wait_bigger"
    handle(tx, event("o3", "order_placed", amount=60))
    assert the_enrollment(tx, "upsell").current_node_id == "bigger"


def test_a_goal_filter_reads_the_journey(tx: Transactions, clock: ManualClock) -> None:
    """Two journeys count an order as their conversion only when it names them."""
    for journey_id in ("spring", "summer"):
        publish(tx, journey_id, JourneyGraph(
            EventTrigger("visited"),
            (Node("wait", WaitAction(duration=DAY, next_node_id="done")),
             Node("done", ExitAction())), "wait",
            goal=Goal("order_completed", "event.campaign == journey.id", 7 * DAY)))
    handle(tx, event("v1", "visited"))
    clock.advance(timedelta(hours=1))
    handle(tx, event("o1", "order_completed", campaign="summer"))
    assert the_enrollment(tx, "spring").goal_time is None
    assert the_enrollment(tx, "summer").goal_time == START + timedelta(hours=1)


def test_a_trigger_filter_reads_the_journey_being_entered(tx: Transactions) -> None:
    for journey_id in ("spring", "summer"):
        publish(tx, journey_id, JourneyGraph(
            EventTrigger("visited", 'event.campaign == journey.id && journey.version == 1'),
            (Node("done", ExitAction()),), "done"))
    handle(tx, event("v1", "visited", campaign="summer"))
    assert the_enrollment(tx, "summer").state is EnrollmentState.ACTIVE
    assert tx.run_sync(lambda uow: enrollment.list_enrollments(
        uow, WS, "spring", "", 10, None))[0] == []


async def test_a_branch_sees_the_node_entry_time_and_entry(tx: Transactions) -> None:
    """After a wait woke on another event, ``event`` is that event and ``journey.entry`` still
    the one that enrolled the person."""
    condition = ('journey.node_id == "check" && journey.entry.page == "/cart" && '
                 'event.page == "/home" && '
                 'journey.entry_time == timestamp("2026-05-04T09:00:00Z")')
    publish(tx, "j", JourneyGraph(EventTrigger("visited"), (
        Node("wait", WaitAction(event=EventWait("clicked", "", DAY, "check"))),
        Node("check", BranchAction((BranchCondition(condition, "yes"),), "no")),
        Node("yes", WaitAction(duration=DAY, next_node_id="no")),
        Node("no", ExitAction()),
    ), "wait"))
    handle(tx, event("v1", "visited", page="/cart"))
    await walk(tx)
    handle(tx, event("k1", "clicked", page="/home"))
    await walk(tx)
    found = the_enrollment(tx, "j")
    assert found.current_node_id == "yes"
    assert journey_variables(found) == {
        "id": "j", "version": 1, "enrollment_id": found.enrollment_id, "node_id": "yes",
        "entry_time": START, "entry": {"page": "/cart"}}


@pytest.mark.parametrize(("graph", "field", "says"), [
    (JourneyGraph(EventTrigger("visited"), (Node("done", ExitAction()),), "done",
                  goal=Goal("order", "journey.nme == 'x'", DAY)),
     "journey.goal.filter", "unknown field journey.nme"),
    (JourneyGraph(EventTrigger("visited"), (Node("done", ExitAction()),), "done",
                  goal=Goal("order", "journy.id == 'x'", DAY)),
     "journey.goal.filter", "unknown variable journy"),
    (JourneyGraph(EventTrigger("visited", 'journey["enrollment_id"] != ""'),
                  (Node("done", ExitAction()),), "done"),
     "journey.event_trigger.filter", "unknown field journey.enrollment_id"),
    (JourneyGraph(EventTrigger("visited"), (
        Node("w", WaitAction(event=EventWait("paid", "traits.vip", DAY, "done"))),
        Node("done", ExitAction())), "w"),
     "journey.nodes[0].wait.event.filter", "unknown variable traits"),
])
def test_a_condition_reading_an_unknown_variable_is_refused_naming_the_field(
        tx: Transactions, graph: JourneyGraph, field: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        tx.run_sync(lambda uow: journeys.create(uow, WS, "j", "j", graph))
    [violation] = [v for v in refused.value.violations if v.field == field]
    assert says in violation.description
    assert not tx.run_sync(lambda uow: store.page(uow.session, WS, "j", "", 10, None))


def test_any_message_round_trips_through_journey_files_and_storage() -> None:
    text = """
display_name: Opened any email
event_trigger: {event_name: cart_updated}
entry_node_id: wait_open
nodes:
  - id: wait_open
    wait:
      event: {event_name: email_opened, any_message: true, timeout: 3600s,
              event_next_node_id: done}
  - {id: done, exit: {}}
"""
    journey = journeyfile.parse(text)
    assert not journeyfile.problems(journey)
    graph = graph_from_proto(journey)
    wait = graph.nodes[0].action
    assert isinstance(wait, WaitAction) and wait.event is not None and wait.event.any_message
    assert JourneyGraph.from_dict(graph.to_dict()) == graph  # as stored
    assert "any_message: true" in journeyfile.dump(journey)


@pytest.mark.parametrize(("name", "tied"), [
    ("email_opened", True), ("push_opened", True), ("link_clicked", True),
    ("sms_delivered", True), ("email_bounced", True), ("email_complained", True),
    ("unsubscribed", False), ("app_opened", False), ("order_completed", False),
])
def test_which_events_are_tied_to_the_enrollments_message(name: str, tied: bool) -> None:
    mine = Enrollment(WS, "en1", "j", 1, "ada", EnrollmentState.ACTIVE, "w", START, START, START)

    def about(enrollment_id: str) -> InboxEvent:
        return InboxEvent(WS, 1, "e1", "ada", name, {"enrollment_id": enrollment_id}
                          if enrollment_id else {}, {}, "")
    assert own_message(mine, about("en1"))
    assert own_message(mine, about("en2")) is not tied
    assert own_message(mine, about("")) is not tied
