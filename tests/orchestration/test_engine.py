"""The enrollment state machine (pure): who enrolls, what a step does, how failures end."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    FactKind,
    StepOutcome,
)
from cjo_orchestration.domain.entry import InboxEvent, Trigger, validate_forwarded_event
from cjo_orchestration.domain.events import plan_enrollments
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    JourneyGraph,
    Node,
    SendAction,
)
from cjo_orchestration.domain.orders import Deferred, Rejected, SendOrder, Sent
from cjo_orchestration.domain.walk import advance, after_send
from cjo_platform.backoff import RetryPolicy

NOW = datetime(2026, 3, 1, tzinfo=UTC)
GRAPH = JourneyGraph(EventTrigger("cart_updated"), (
    Node("send", SendAction("cart", Channel.EMAIL, "done")),
    Node("done", ExitAction()),
), "send")
POLICY = RetryPolicy(max_attempts=4, base_delay=timedelta(seconds=1),
                     max_delay=timedelta(seconds=10))


def event(seq: int, profile: str, name: str = "cart_updated", ws: str = "ws") -> InboxEvent:
    return InboxEvent(ws, seq, f"e{seq}", profile, name, {"sku": "A1"},
                      {"email": f"{profile}@example.com"}, f"tp-{seq}")


def enrollment(traits: dict[str, object] | None = None, node: str = "send") -> Enrollment:
    return Enrollment("ws", "en1", "j1", 1, "p1", EnrollmentState.ACTIVE, node, NOW, NOW, NOW,
                      traits={"email": "ada@example.com"} if traits is None else traits,
                      traceparent="tp")


def test_events_enroll_each_profile_once_per_journey_in_receive_order() -> None:
    triggers = [Trigger("ws", "j1", 3, GRAPH), Trigger("ws", "j2", 1, GRAPH),
                Trigger("other", "j9", 1, GRAPH)]
    events = [event(2, "p1"), event(1, "p1"), event(3, "p2"), event(4, "p3", name="viewed"),
              event(5, "p4")]
    numbers = itertools.count(1)
    planned = plan_enrollments(events, triggers, {("ws", "j2", "p4")},
                               lambda: f"en{next(numbers)}", NOW)
    entered = [(e.journey_id, e.profile_id, e.event_id, e.journey_version) for e, _ in planned]
    assert entered == [("j1", "p1", "e1", 3), ("j2", "p1", "e1", 1), ("j1", "p2", "e3", 3),
                       ("j2", "p2", "e3", 1), ("j1", "p4", "e5", 3)]
    first, fact = planned[0]
    assert (first.state, first.current_node_id, first.due_time) == (
        EnrollmentState.ACTIVE, "send", NOW)
    assert first.traits == {"email": "p1@example.com"} and first.properties == {"sku": "A1"}
    assert first.traceparent == "tp-1"
    assert (fact.kind, fact.fact_id, fact.traceparent) == (
        FactKind.JOURNEY_ENTERED, f"entered:{first.enrollment_id}", "tp-1")


def test_forwarded_events_need_an_id_and_a_profile() -> None:
    found = {v.field for v in validate_forwarded_event("", "", "x" * 201).items}
    assert found == {"event_id", "profile_id", "event.name"}
    assert not validate_forwarded_event("e1", "p1", "")


def test_a_send_node_asks_for_one_send_with_a_derived_key() -> None:
    step = advance(enrollment(), GRAPH, NOW)
    assert isinstance(step.send, SendOrder)
    assert (step.send.idempotency_key, step.send.address, step.send.content_key) == (
        "en1:send:0", "ada@example.com", "cart")
    assert step.steps == () and step.enrollment.state is EnrollmentState.ACTIVE


def test_a_sent_message_moves_on_and_the_exit_node_completes_the_enrollment() -> None:
    before = enrollment()
    order = advance(before, GRAPH, NOW).send
    assert order is not None
    later = NOW + timedelta(seconds=1)
    done = after_send(before, GRAPH, order, Sent("m-1"), later, POLICY)
    assert done.enrollment.state is EnrollmentState.COMPLETED
    assert done.enrollment.current_node_id == "" and done.enrollment.due_time is None
    assert dict(done.enrollment.visits) == {"send": 1, "done": 1}
    assert [(s.node_id, s.visit, s.outcome, s.detail) for s in done.steps] == [
        ("send", 0, StepOutcome.SUCCEEDED, "m-1"), ("done", 0, StepOutcome.SUCCEEDED, "")]
    # The send node's arrival was counted when the enrollment got there; this step arrives at
    # the exit node (its second arrival) and ends there.
    assert [(f.kind, f.fact_id, f.message_id, f.node_id, f.extra.get("visit_sequence"))
            for f in done.facts] == [
        (FactKind.MESSAGE_REQUESTED, "requested:en1:send:0", "m-1", "send", None),
        (FactKind.NODE_VISITED, "arrived:en1:done:0", "", "done", 2),
        (FactKind.JOURNEY_EXITED, "exited:en1", "", "done", None)]
    assert done.enrollment.exit_reason == "completed"
    assert done.send is None


def test_a_send_to_a_following_send_waits_for_the_next_pass() -> None:
    graph = JourneyGraph(EventTrigger("x"), (
        Node("one", SendAction("a", Channel.EMAIL, "two")),
        Node("two", SendAction("b", Channel.EMAIL, "")),
    ), "one")
    first = advance(enrollment(node="one"), graph, NOW)
    assert first.send is not None
    moved = after_send(first.enrollment, graph, first.send, Sent("m-1"), NOW, POLICY)
    assert moved.send is None
    assert (moved.enrollment.state, moved.enrollment.current_node_id,
            moved.enrollment.due_time) == (EnrollmentState.ACTIVE, "two", NOW)
    second = advance(moved.enrollment, graph, NOW)
    assert second.send is not None and second.send.idempotency_key == "en1:two:0"
    last = after_send(moved.enrollment, graph, second.send, Sent("m-2"), NOW, POLICY)
    assert last.enrollment.state is EnrollmentState.COMPLETED  # no next node ends the journey


def test_a_profile_without_an_email_fails_the_step_without_any_call() -> None:
    step = advance(enrollment(traits={"name": "Ada"}), GRAPH, NOW)
    assert step.send is None
    assert step.enrollment.state is EnrollmentState.FAILED
    assert [(s.node_id, s.outcome) for s in step.steps] == [("send", StepOutcome.FAILED)]
    assert "email" in step.steps[0].detail
    # Failed at the send node, and ended there.
    assert [(f.kind, f.node_id, f.detail) for f in step.facts] == [
        (FactKind.NODE_FAILED, "send", ""), (FactKind.JOURNEY_EXITED, "send", "failed")]


def test_a_permanent_failure_ends_the_enrollment_as_failed() -> None:
    before = enrollment()
    order = advance(before, GRAPH, NOW).send
    assert order is not None
    failed = after_send(before, GRAPH, order, Rejected("content: NOT_FOUND: no item"), NOW,
                        POLICY)
    assert failed.enrollment.state is EnrollmentState.FAILED
    assert failed.enrollment.due_time is None
    assert [(s.outcome, s.detail) for s in failed.steps] == [
        (StepOutcome.FAILED, "content: NOT_FOUND: no item")]
    assert [(f.fact_id, f.node_id) for f in failed.facts] == [
        ("failed:en1:send:0", "send"), ("exited:en1", "send")]


def test_transient_failures_back_off_exponentially_then_give_up() -> None:
    current = enrollment()
    order = advance(current, GRAPH, NOW).send
    assert order is not None
    delays = []
    for _ in range(POLICY.max_attempts - 1):
        retry = after_send(current, GRAPH, order, Deferred("content: UNAVAILABLE"), NOW, POLICY)
        assert retry.steps == () and retry.facts == ()
        assert retry.enrollment.state is EnrollmentState.ACTIVE
        assert retry.enrollment.current_node_id == "send"
        assert retry.enrollment.due_time is not None
        delays.append((retry.enrollment.due_time - NOW).total_seconds())
        current = retry.enrollment
        # The retry sends with the same key, so delivery sends at most once.
        again = advance(current, GRAPH, NOW).send
        assert again is not None and again.idempotency_key == order.idempotency_key
    assert delays == [1, 2, 4]
    gave_up = after_send(current, GRAPH, order, Deferred("content: UNAVAILABLE"), NOW, POLICY)
    assert gave_up.enrollment.state is EnrollmentState.FAILED
    assert gave_up.steps[0].detail == "gave up after 4 attempts: content: UNAVAILABLE"


def test_backoff_is_capped() -> None:
    capped = RetryPolicy(base_delay=timedelta(seconds=1), max_delay=timedelta(seconds=10))
    assert capped.delay(20) == timedelta(seconds=10)


def test_a_node_missing_from_the_version_fails_visibly() -> None:
    step = advance(enrollment(node="gone"), GRAPH, NOW)
    assert step.enrollment.state is EnrollmentState.FAILED
    assert step.steps[0].node_id == "gone" and step.steps[0].outcome is StepOutcome.FAILED
