"""Best-time waits: on arrival a step round asks decisioning for the send times of all its
enrollments at such waits in one GetSendTimes per (channel, max_delay), sets each timer to the
answer (never past arrival + max_delay), waits out a decisioning outage by asking again after a
backoff, but never past arrival + max_delay, and then moves on. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from orchestration_support import (
    FakeDecisioning,
    Ids,
    RecordingPeers,
    clocked_transactions,
    migrated_database,
    transactions_on,
)

from cjo.orchestration.v1 import journey_pb2
from cjo_orchestration import journeyfile
from cjo_orchestration.api.convert import graph_from_proto, node_to_proto
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState
from cjo_orchestration.domain.graph import validate_for_publish
from cjo_orchestration.domain.journeys import (
    Action,
    BestTime,
    Channel,
    DecideAction,
    EventTrigger,
    ExitAction,
    JourneyGraph,
    Node,
    SendAction,
    UpdateProfileAction,
    WaitAction,
)
from cjo_orchestration.domain.orders import ProfileOrder, SendResult, SendTimeFound, Sent
from cjo_orchestration.service_layer import enrollment, journeys
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "ws"
PEOPLE = ("ada", "bob", "cy")
SETTINGS = load_engine_settings(Env({}))
START = datetime(2026, 6, 1, 9, tzinfo=UTC)
MAX_DELAY = timedelta(hours=12)


def best_time_journey() -> JourneyGraph:
    return JourneyGraph(
        trigger=EventTrigger("visit"), entry_node_id="best",
        nodes=(Node("best", WaitAction(best_time=BestTime(Channel.EMAIL, MAX_DELAY),
                                       next_node_id="mail")),
               Node("mail", SendAction("news", Channel.EMAIL, "done")),
               Node("done", ExitAction())))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    db = migrated_database(backend)
    try:
        transactions = transactions_on(db, clock)
        transactions.run_sync(lambda uow: journeys.create(uow, WS, "j1", "News",
                                                          best_time_journey()))
        transactions.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
        ids = Ids()
        for person in PEOPLE:
            transactions.run_sync(lambda uow, p=person: enrollment.enroll_profile(
                uow, WS, "j1", Entrant(p, {"email": f"{p}@example.com"}, {}), f"r-{p}", "",
                ids))
        yield transactions
    finally:
        db.dispose()


def listed(tx: Transactions) -> list[Enrollment]:
    found, _ = tx.run_sync(lambda uow: enrollment.list_enrollments(uow, WS, "j1", "", 100, None))
    return [e for e, _ in found]


def peers_with(fake: FakeDecisioning) -> RecordingPeers:
    peers = RecordingPeers(*PEOPLE)
    peers.decisioning = fake
    return peers


async def test_the_timer_is_set_to_the_answer_with_one_call_for_the_round(
        tx: Transactions, clock: ManualClock) -> None:
    fake = FakeDecisioning()
    fake.send_time = lambda earliest, _: earliest + timedelta(hours=3)
    peers = peers_with(fake)
    steps = StepRound(tx, peers, SETTINGS)
    await steps.run()
    [(channel, earliest, max_delay, asked)] = fake.send_time_calls
    assert (channel, earliest, max_delay, sorted(asked)) == (
        Channel.EMAIL, START, MAX_DELAY, sorted(PEOPLE))
    assert {(e.state, e.current_node_id, e.due_time) for e in listed(tx)} == {
        (EnrollmentState.ACTIVE, "best", START + timedelta(hours=3))}
    clock.advance(timedelta(hours=2, minutes=59))
    await steps.run()
    assert peers.sent == []
    clock.advance(timedelta(minutes=1))
    await steps.run()  # the timer fires: on to the send
    await steps.run()
    assert len(peers.sent) == 3 and len(fake.send_time_calls) == 1


async def test_an_answer_past_max_delay_is_capped(tx: Transactions) -> None:
    fake = FakeDecisioning()
    # A stand-in that ignores max_delay: orchestration caps the timer itself.
    fake.send_times = lambda channel, earliest, max_delay, ids: [  # type: ignore[method-assign]
        SendTimeFound(earliest + timedelta(days=3), "profile") for _ in ids]
    await StepRound(tx, peers_with(fake), SETTINGS).run()
    assert {e.due_time for e in listed(tx)} == {START + MAX_DELAY}


async def test_decisioning_down_retries_but_never_waits_past_max_delay(
        tx: Transactions, clock: ManualClock) -> None:
    fake = FakeDecisioning()
    fake.down = True
    peers = peers_with(fake)
    # Backoff up to an hour, so a dozen retries span the 12 hours.
    steps = StepRound(tx, peers, load_engine_settings(Env({
        "CJO_ORCHESTRATION_RETRY_MAX_SECONDS": "3600"})))
    await steps.run()
    parked = listed(tx)
    assert {(e.state, e.current_node_id, e.waiting) for e in parked} == {
        (EnrollmentState.ACTIVE, "best", True)}
    assert all(START < e.due_time <= START + MAX_DELAY for e in parked if e.due_time)
    # Retries come after a backoff, each due no later than the deadline.
    asked = len(fake.send_time_calls)
    for _ in range(40):
        due = min(e.due_time for e in listed(tx) if e.due_time)
        assert due <= START + MAX_DELAY
        clock.set(max(due, clock.now()))
        await steps.run()
        if any(e.current_node_id != "best" for e in listed(tx)):
            break
    assert len(fake.send_time_calls) > asked
    assert clock.now() == START + MAX_DELAY
    await steps.run()  # the send after the wait
    assert len(peers.sent) == 3
    assert {e.state for e in listed(tx)} == {EnrollmentState.COMPLETED}


async def test_decisioning_back_before_the_deadline_sets_the_timer(
        tx: Transactions, clock: ManualClock) -> None:
    fake = FakeDecisioning()
    fake.down = True
    steps = StepRound(tx, peers_with(fake), SETTINGS)
    await steps.run()
    fake.down = False
    fake.send_time = lambda earliest, _: START + timedelta(hours=6)
    clock.advance(timedelta(minutes=30))
    await steps.run()
    assert {(e.current_node_id, e.due_time, e.wait_deadline) for e in listed(tx)} == {
        ("best", START + timedelta(hours=6), None)}


@pytest.mark.parametrize("max_delay", [timedelta(days=8), timedelta(0)])
def test_max_delay_outside_0_to_7_days_is_refused_naming_the_field(
        max_delay: timedelta) -> None:
    node = journey_pb2.Node(id="best", wait=journey_pb2.WaitNode(next_node_id="done"))
    node.wait.best_time.max_delay.FromTimedelta(max_delay)
    journey = journey_pb2.Journey(
        display_name="j", event_trigger=journey_pb2.EventTrigger(event_name="visit"),
        entry_node_id="best", nodes=[node, journey_pb2.Node(id="done",
                                                            exit=journey_pb2.ExitNode())])
    assert "nodes[0].wait.best_time.max_delay" in {p.field for p in journeyfile.problems(journey)}


def test_a_best_time_wait_round_trips_through_a_journey_file() -> None:
    journey = journeyfile.parse("""
display_name: News
event_trigger: {event_name: visit}
entry_node_id: best
nodes:
  - id: best
    wait: {best_time: {channel: CHANNEL_EMAIL, max_delay: 43200s}, next_node_id: done}
  - {id: done, exit: {}}
""")
    assert journeyfile.problems(journey) == []
    graph = graph_from_proto(journey)
    assert graph.nodes[0].action == WaitAction(best_time=BestTime(Channel.EMAIL, MAX_DELAY),
                                               next_node_id="done")
    assert node_to_proto(graph.nodes[0]) == journey.nodes[0]
    assert JourneyGraph.from_dict(graph.to_dict()) == graph
    # Unset max_delay means one day.
    unset = journeyfile.parse("""
display_name: News
event_trigger: {event_name: visit}
entry_node_id: best
nodes:
  - {id: best, wait: {best_time: {}, next_node_id: done}}
  - {id: done, exit: {}}
""")
    wait = graph_from_proto(unset).nodes[0].action
    assert isinstance(wait, WaitAction) and wait.best_time == BestTime(None, timedelta(days=1))



# --- a best-time wait after I/O, and best-time waits in loops ----------------------------------


@pytest.fixture
def db_tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    with clocked_transactions(backend, clock) as transactions:
        yield transactions


def enroll_ada(tx: Transactions, graph: JourneyGraph) -> None:
    tx.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Loop", graph))
    tx.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
    tx.run_sync(lambda uow: enrollment.enroll_profile(
        uow, WS, "j1", Entrant("ada", {"email": "ada@example.com"}, {}), "r-ada", "", Ids()))


class ProfilePeers(RecordingPeers):
    async def update_profiles(self, workspace_id: str,
                              orders: Sequence[ProfileOrder]) -> list[SendResult]:
        return [Sent(f"p-{order.idempotency_key}") for order in orders]


BEFORE_THE_WAIT: dict[str, Action] = {
    "send": SendAction("welcome", Channel.EMAIL, "best"),
    "update_profile": UpdateProfileAction({"onboarded": True}, "best"),
    "decide": DecideAction("offers", Channel.EMAIL, "best", "best"),
}


@pytest.mark.parametrize("kind", sorted(BEFORE_THE_WAIT))
async def test_a_best_time_wait_right_after_io_asks_decisioning(
        db_tx: Transactions, clock: ManualClock, kind: str) -> None:
    # The walk after the first node's answer arrives at the wait: the question must still be
    # asked (it was dropped, and the enrollment waited out max_delay).
    enroll_ada(db_tx, JourneyGraph(
        trigger=EventTrigger("visit"), entry_node_id="first",
        nodes=(Node("first", BEFORE_THE_WAIT[kind]),
               Node("best", WaitAction(best_time=BestTime(Channel.EMAIL, MAX_DELAY),
                                       next_node_id="tips")),
               Node("tips", SendAction("tips", Channel.EMAIL, "done")),
               Node("done", ExitAction()))))
    fake = FakeDecisioning()
    fake.points["offers"] = lambda _: None  # no action: on to the wait
    fake.send_time = lambda earliest, _: earliest + timedelta(hours=3)
    peers = ProfilePeers("ada")
    peers.decisioning = fake
    steps = StepRound(db_tx, peers, SETTINGS)
    await steps.run()  # the first node, then the walk into the wait
    await steps.run()  # the question
    found, _ = db_tx.run_sync(lambda uow: enrollment.list_enrollments(uow, WS, "j1", "", 10,
                                                                     None))
    [(ada, _)] = found
    assert (ada.current_node_id, ada.due_time, len(fake.send_time_calls)) == (
        "best", START + timedelta(hours=3), 1)
    clock.advance(timedelta(hours=3))
    await steps.run()
    assert [s.idempotency_key.split(":")[1] for s in peers.sent][-1:] == ["tips"]


def weekly_loop(entry: str = "mail") -> JourneyGraph:
    return JourneyGraph(
        trigger=EventTrigger("visit"), entry_node_id=entry,
        nodes=(Node("mail", SendAction("news", Channel.EMAIL, "best")),
               Node("best", WaitAction(best_time=BestTime(Channel.EMAIL, timedelta(days=7)),
                                       next_node_id="mail"))))


def test_a_loop_whose_only_wait_is_a_best_time_wait_is_refused_naming_it() -> None:
    # Decisioning answers "now" with no engagement yet or in the person's best hour: the loop
    # would mail in every step round without the clock moving.
    found = {v.field: v.description for v in validate_for_publish("News", weekly_loop()).items}
    assert found == {"nodes[1].wait.best_time": (
        "is in the loop best -> mail -> best, which no duration, local_time or event wait "
        "paces; a best time can be now (no engagement yet, or the person's best hour), so the "
        "loop could go round at once: add one")}
    # Another wait in the loop paces it.
    paced = JourneyGraph(
        trigger=EventTrigger("visit"), entry_node_id="mail",
        nodes=(Node("mail", SendAction("news", Channel.EMAIL, "week")),
               Node("week", WaitAction(duration=timedelta(days=7), next_node_id="best")),
               Node("best", WaitAction(best_time=BestTime(Channel.EMAIL, MAX_DELAY),
                                       next_node_id="mail"))))
    assert not validate_for_publish("News", paced)


@pytest.mark.parametrize("entry", ["mail", "best"])
async def test_a_loop_published_before_the_check_waits_max_delay_without_spinning(
        db_tx: Transactions, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
        entry: str) -> None:
    # Such a best-time wait is a plain max_delay wait: decisioning is not asked, whose "now"
    # would send the loop round again in the next step round.
    monkeypatch.setattr(journeys, "_check_publishable", lambda *_: None)  # an older version
    enroll_ada(db_tx, weekly_loop(entry))
    fake = FakeDecisioning()  # answers "now", as decisioning does without engagement
    peers = peers_with(fake)
    steps = StepRound(db_tx, peers, SETTINGS)
    for _ in range(6):
        await steps.run()
    assert (len(peers.sent), fake.send_time_calls) == (int(entry == "mail"), [])
    clock.advance(timedelta(days=7))
    for _ in range(6):
        await steps.run()
    assert (len(peers.sent), fake.send_time_calls) == (1 + int(entry == "mail"), [])
