"""The journey engine's node kinds and journey settings, as pure transitions driven by a
ManualClock: waits (duration, local time across DST, event with timeout), branches, sticky
splits with a control arm, re-entry, exit criteria, goals, failure policies, and a 30-day
journey run in milliseconds."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    FactKind,
    StepOutcome,
)
from cjo_orchestration.domain.entry import (
    History,
    InboxEvent,
    Trigger,
    may_enter,
    new_enrollment,
)
from cjo_orchestration.domain.events import apply_events
from cjo_orchestration.domain.graph import validate_for_publish
from cjo_orchestration.domain.journeys import (
    BranchAction,
    BranchCondition,
    Channel,
    EventTrigger,
    EventWait,
    ExitAction,
    ExitCriterion,
    FailurePolicy,
    Goal,
    JourneyGraph,
    LocalTime,
    Node,
    ReEntry,
    SendAction,
    SplitAction,
    SplitArm,
    TriggerKind,
    UpdateProfileAction,
    WaitAction,
)
from cjo_orchestration.domain.orders import ProfileOrder, Rejected, SendOrder, Sent
from cjo_orchestration.domain.splits import split_bucket
from cjo_orchestration.domain.transitions import Transition
from cjo_orchestration.domain.walk import advance, after_send
from cjo_platform.backoff import RetryPolicy
from cjo_platform.clock import ManualClock

POLICY = RetryPolicy(max_attempts=4, base_delay=timedelta(seconds=1),
                     max_delay=timedelta(seconds=10))
START = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def send(node_id: str, key: str, next_id: str = "", **kw: object) -> Node:
    return Node(node_id, SendAction(key, Channel.EMAIL, next_id, **kw))  # type: ignore[arg-type]


def wait(node_id: str, next_id: str, **kw: object) -> Node:
    return Node(node_id, WaitAction(next_node_id=next_id, **kw))  # type: ignore[arg-type]


def graph(*nodes: Node, entry: str = "", **settings: object) -> JourneyGraph:
    return JourneyGraph(EventTrigger("cart_updated"), nodes, entry or nodes[0].id,
                        **settings)  # type: ignore[arg-type]


def enroll(g: JourneyGraph, now: datetime, profile: str = "p1",
           traits: dict[str, object] | None = None,
           properties: dict[str, object] | None = None) -> Enrollment:
    enrollment, _ = new_enrollment(
        "ws", f"en-{profile}", "j1", 1, g, profile,
        traits if traits is not None else {"email": f"{profile}@example.com"},
        properties or {}, "ev", "", now)
    return enrollment


def event(seq: int, name: str, profile: str = "p1", **properties: object) -> InboxEvent:
    return InboxEvent("ws", seq, f"e{seq}", profile, name, properties,
                      {"email": f"{profile}@example.com"}, "")


class Runner:
    """A stand-in step worker: runs due enrollments, answers every send, counts the sends."""

    def __init__(self, g: JourneyGraph, clock: ManualClock) -> None:
        self.graph = g
        self.clock = clock
        self.sent: list[tuple[str, datetime]] = []
        self.steps: list[tuple[str, StepOutcome, str]] = []

    def run(self, enrollment: Enrollment) -> Enrollment:
        while (enrollment.state is EnrollmentState.ACTIVE and enrollment.due_time is not None
               and enrollment.due_time <= self.clock.now()):
            transition = advance(enrollment, self.graph, self.clock.now())
            self._record(transition)
            if isinstance(transition.send, SendOrder):
                self.sent.append((transition.send.idempotency_key, self.clock.now()))
                transition = after_send(transition.enrollment, self.graph, transition.send,
                                        Sent(f"m{len(self.sent)}"), self.clock.now(), POLICY)
                self._record(transition)
            enrollment = transition.enrollment
        return enrollment

    def _record(self, transition: Transition) -> None:
        self.steps.extend((s.node_id, s.outcome, s.detail) for s in transition.steps)


# --- waits -----------------------------------------------------------------------------------


def test_a_thirty_day_journey_runs_in_milliseconds_with_a_manual_clock() -> None:
    g = graph(send("welcome", "w", "w1"), wait("w1", "tip", duration=timedelta(days=7)),
              send("tip", "t", "w2"), wait("w2", "offer", duration=timedelta(days=23)),
              send("offer", "o", "done"), Node("done", ExitAction()))
    clock = ManualClock(START)
    runner = Runner(g, clock)
    enrollment = runner.run(enroll(g, clock.now()))
    assert enrollment.waiting and enrollment.due_time == START + 7 * DAY
    for _ in range(30):
        clock.advance(DAY)
        enrollment = runner.run(enrollment)
    assert enrollment.state is EnrollmentState.COMPLETED
    assert [(key, when - START) for key, when in runner.sent] == [
        ("en-p1:welcome:0", timedelta(0)), ("en-p1:tip:0", 7 * DAY),
        ("en-p1:offer:0", 30 * DAY)]
    assert [s[:2] for s in runner.steps if s[0] == "w1"] == [
        ("w1", StepOutcome.WAITING), ("w1", StepOutcome.SUCCEEDED)]


def local_wait(zone: str, hour: int = 9, weekdays: tuple[int, ...] = ()) -> JourneyGraph:
    return graph(wait("morning", "hello", local_time=LocalTime(hour, 0, weekdays, zone)),
                 send("hello", "h"))


def test_a_wait_until_nine_local_stays_at_nine_across_the_spring_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # Saturday 28 March 2026, 10:00 CET; clocks go forward on Sunday 29 March at 02:00.
    entered = datetime(2026, 3, 28, 10, tzinfo=berlin).astimezone(UTC)
    parked = advance(enroll(local_wait("Europe/Berlin"), entered), local_wait("Europe/Berlin"),
                     entered).enrollment
    assert parked.due_time == datetime(2026, 3, 29, 7, tzinfo=UTC)  # 09:00 CEST, UTC+2
    assert parked.due_time.astimezone(berlin).hour == 9
    # The day before the change, 09:00 was 08:00 UTC: a fixed offset would be an hour off.
    earlier = datetime(2026, 3, 27, 7, tzinfo=UTC)
    before = advance(enroll(local_wait("Europe/Berlin"), earlier),
                     local_wait("Europe/Berlin"), earlier).enrollment
    assert before.due_time == datetime(2026, 3, 27, 8, tzinfo=UTC)


def test_the_profiles_time_zone_wins_and_weekdays_are_honoured_across_the_fall_change() -> None:
    g = local_wait("Europe/Berlin", weekdays=(1,))  # Mondays only
    # Friday 30 October 2026 in New York; clocks go back on Sunday 1 November.
    entered = datetime(2026, 10, 30, 16, tzinfo=UTC)
    profile = enroll(g, entered, traits={"email": "a@x.io", "timezone": "America/New_York"})
    parked = advance(profile, g, entered).enrollment
    # Monday 2 November 09:00 EST (UTC-5), not the EDT offset of the day it was scheduled.
    assert parked.due_time == datetime(2026, 11, 2, 14, tzinfo=UTC)
    # An invalid time zone trait falls back to the node's default.
    odd = enroll(g, entered, traits={"email": "a@x.io", "timezone": "Mars/Olympus"})
    assert advance(odd, g, entered).enrollment.due_time == datetime(2026, 11, 2, 8, tzinfo=UTC)


def wait_for_order() -> JourneyGraph:
    return graph(
        Node("wait", WaitAction(event=EventWait("order_completed", "event.total > 0",
                                                timedelta(hours=1), "thanks", "remind"))),
        send("thanks", "thanks"), send("remind", "remind"))


def test_an_awaited_event_leaves_by_the_event_edge() -> None:
    g = wait_for_order()
    parked = advance(enroll(g, START), g, START).enrollment
    assert parked.waiting and parked.due_time == START + timedelta(hours=1)
    later = START + timedelta(minutes=10)
    # A filtered-out event does not wake it; the matching one does, in the same batch order.
    outcome = apply_events([event(1, "order_completed", total=0),
                            event(2, "order_completed", total=30)],
                           [], [(parked, g)], {}, set(), lambda: "x", later)
    [(woken, steps)] = outcome.changed.values()
    assert (woken.current_node_id, woken.waiting, woken.due_time) == ("thanks", False, later)
    assert woken.properties == {"total": 30} and woken.event_id == "e2"
    assert [(s.node_id, s.detail) for s in steps] == [("wait", "event order_completed")]


def test_an_awaited_event_that_never_comes_leaves_by_the_timeout_edge() -> None:
    g = wait_for_order()
    clock = ManualClock(START)
    runner = Runner(g, clock)
    enrollment = runner.run(enroll(g, clock.now()))
    clock.advance(timedelta(minutes=59))
    assert runner.run(enrollment) == enrollment  # not due yet
    clock.advance(timedelta(minutes=1))
    done = runner.run(enrollment)
    assert done.state is EnrollmentState.COMPLETED
    assert runner.sent == [("en-p1:remind:0", START + timedelta(hours=1))]
    assert ("wait", StepOutcome.SUCCEEDED, "timeout") in runner.steps


# --- branches and splits ---------------------------------------------------------------------


def test_a_branch_takes_the_first_condition_that_holds_else_the_else_edge() -> None:
    g = graph(Node("check", BranchAction((
        BranchCondition("event.cart_value > 50 && profile.vip == true", "vip"),
        BranchCondition("event.cart_value > 50", "big"),
        BranchCondition("journey.version == 1 && event.missing > 1", "never")), "small")),
        send("vip", "v"), send("big", "b"), send("small", "s"), send("never", "n"))
    chosen = {}
    for name, value, vip in (("a", 80, True), ("b", 80, False), ("c", 10, True)):
        e = enroll(g, START, name, {"email": "x@y.z", "vip": vip}, {"cart_value": value})
        transition = advance(e, g, START)
        assert isinstance(transition.send, SendOrder)
        chosen[name] = (transition.send.node_id, transition.steps[0].detail)
    assert chosen == {"a": ("vip", "condition 0"), "b": ("big", "condition 1"),
                      "c": ("small", "else")}


def test_a_split_is_sticky_per_profile_and_holds_the_control_arm_out() -> None:
    g = graph(Node("split", SplitAction((SplitArm("a", 45, "send_a"), SplitArm("b", 45, "send_b"),
                                         SplitArm("control", 10, control=True)))),
              send("send_a", "a"), send("send_b", "b"))
    arms: Counter[str] = Counter()
    for i in range(2000):
        profile = f"p{i}"
        first = advance(enroll(g, START, profile), g, START)
        again = advance(enroll(g, START + DAY, profile), g, START + DAY)  # a later re-entry
        assert first.steps[0].detail == again.steps[0].detail  # sticky
        arm = first.steps[0].detail.removeprefix("arm ")
        arms[arm] += 1
        if arm == "control":
            assert first.send is None
            assert first.enrollment.state is EnrollmentState.EXITED
            assert first.enrollment.exit_reason == "control"
        else:
            assert isinstance(first.send, SendOrder) and first.send.node_id == f"send_{arm}"
    assert 800 <= arms["a"] <= 1000 and 800 <= arms["b"] <= 1000
    assert 140 <= arms["control"] <= 260
    # Another journey splits the same profiles independently.
    assert split_bucket("j1", "p1") != split_bucket("j2", "p1") or split_bucket(
        "j1", "p2") != split_bucket("j2", "p2")


# --- journey settings ------------------------------------------------------------------------


def test_re_entry_never_after_cooldown_and_always() -> None:
    ended = History(EnrollmentState.COMPLETED, START)
    active = History(EnrollmentState.ACTIVE, START)
    never = graph(send("s", "k"))
    cooldown = graph(send("s", "k"), re_entry=ReEntry.AFTER_COOLDOWN,
                     re_entry_cooldown=timedelta(days=7))
    always = graph(send("s", "k"), re_entry=ReEntry.ALWAYS)
    assert may_enter(never, None, START) == ""
    assert may_enter(never, ended, START + 30 * DAY) == "re_entry_never"
    assert may_enter(cooldown, ended, START + 6 * DAY) == "re_entry_cooldown"
    assert may_enter(cooldown, ended, START + 7 * DAY) == ""
    assert may_enter(always, ended, START) == ""
    for g in (never, cooldown, always):
        assert may_enter(g, active, START + 99 * DAY) == "already_active"


def test_events_enroll_by_the_re_entry_rules_and_the_trigger_filter() -> None:
    g = graph(send("s", "k"), re_entry=ReEntry.ALWAYS)
    g = replace(g, trigger=EventTrigger("cart_updated", "event.cart_value > 50"))
    trigger = Trigger("ws", "j1", 2, g)
    ids = (f"en{i}" for i in itertools.count(1))
    outcome = apply_events(
        [event(1, "cart_updated", "p1", cart_value=10), event(2, "cart_updated", "p1",
                                                              cart_value=60),
         event(3, "cart_updated", "p1", cart_value=70),
         event(4, "cart_updated", "p2", cart_value=99)],
        [trigger], [], {("ws", "j1", "p2"): History(EnrollmentState.ACTIVE, START)}, set(),
        lambda: next(ids), START)
    # p1: the filter drops event 1, event 2 enrolls, event 3 finds it active; p2 is active.
    assert [(e.profile_id, e.event_id) for e, _ in outcome.created.values()] == [("p1", "e2")]
    assert outcome.unmatched == 3


def test_a_segment_trigger_enrolls_on_entering_that_segment_only() -> None:
    g = replace(graph(send("s", "k")), trigger=EventTrigger(kind=TriggerKind.SEGMENT,
                                                            segment_id="vip"))
    outcome = apply_events([event(1, "segment_entered", segment_id="other"),
                            event(2, "segment_entered", segment_id="vip")],
                           [Trigger("ws", "j1", 1, g)], [], {}, set(), lambda: "en1", START)
    assert [e.event_id for e, _ in outcome.created.values()] == ["e2"]


def test_an_exit_criterion_ends_the_enrollment_wherever_it_is() -> None:
    g = graph(wait("wait", "remind", duration=DAY), send("remind", "r"),
              exit_criteria=(ExitCriterion("order_completed", "event.total >= 1"),))
    parked = advance(enroll(g, START), g, START).enrollment
    outcome = apply_events([event(1, "order_completed", total=0),
                            event(2, "order_completed", total=5)],
                           [], [(parked, g)], {}, set(), lambda: "x", START + DAY / 2)
    [(ended, steps)] = outcome.changed.values()
    assert (ended.state, ended.exit_reason, ended.due_time) == (
        EnrollmentState.EXITED, "exit_criteria", None)
    assert [(s.node_id, s.detail) for s in steps] == [("wait",
                                                        "exit criterion order_completed")]
    # One reason for every criterion; the exit is counted at the wait it happened at.
    assert [(f.kind, f.detail, f.node_id) for f in outcome.facts] == [
        (FactKind.JOURNEY_EXITED, "exit_criteria", "wait")]


def test_an_event_in_the_same_batch_reaches_the_enrollment_it_just_created() -> None:
    g = replace(graph(wait("wait", "remind", duration=DAY), send("remind", "r")),
                exit_criteria=(ExitCriterion("order_completed"),))
    outcome = apply_events([event(1, "cart_updated"), event(2, "order_completed")],
                           [Trigger("ws", "j1", 1, g)], [], {}, set(), lambda: "en1", START)
    [(created, _)] = outcome.created.values()
    assert created.state is EnrollmentState.EXITED


def test_the_goal_counts_within_its_window_even_after_the_journey_ended() -> None:
    goal = Goal("order_completed", "event.total > 0", timedelta(days=3))
    g = graph(send("s", "k"), goal=goal)
    clock = ManualClock(START)
    done = Runner(g, clock).run(enroll(g, clock.now()))
    assert done.state is EnrollmentState.COMPLETED and done.goal_deadline == START + 3 * DAY
    outcome = apply_events([event(1, "order_completed", total=10)], [], [(done, g)], {},
                           set(), lambda: "x", START + 2 * DAY)
    [(converted, _)] = outcome.changed.values()
    assert converted.goal_time == START + 2 * DAY
    assert converted.state is EnrollmentState.COMPLETED
    assert [f.kind for f in outcome.facts] == [FactKind.GOAL_REACHED]
    # Counted once; and not at all after the window.
    twice = apply_events([event(2, "order_completed", total=10)], [], [(converted, g)], {},
                         set(), lambda: "x", START + 2 * DAY)
    assert not twice.changed and not twice.facts
    late = apply_events([event(3, "order_completed", total=10)], [], [(done, g)], {}, set(),
                        lambda: "x", START + 4 * DAY)
    assert not late.changed


def test_a_goal_may_end_the_enrollment() -> None:
    g = graph(wait("wait", "s", duration=DAY), send("s", "k"),
              goal=Goal("order_completed", "", timedelta(days=3), exit_on_goal=True))
    parked = advance(enroll(g, START), g, START).enrollment
    outcome = apply_events([event(1, "order_completed")], [], [(parked, g)], {}, set(),
                           lambda: "x", START)
    [(ended, _)] = outcome.changed.values()
    assert (ended.state, ended.exit_reason, ended.goal_time) == (
        EnrollmentState.EXITED, "goal_reached", START)
    # A conversion, then the exit at the wait: analytics counts both as completions.
    assert [(f.kind, f.detail, f.node_id) for f in outcome.facts] == [
        (FactKind.GOAL_REACHED, "order_completed", ""),
        (FactKind.JOURNEY_EXITED, "goal_reached", "wait")]


def test_events_of_a_profile_whose_step_is_running_wait_their_turn() -> None:
    g = graph(wait("wait", "s", duration=DAY), send("s", "k"),
              exit_criteria=(ExitCriterion("order_completed"),))
    parked = advance(enroll(g, START), g, START).enrollment
    outcome = apply_events([event(1, "order_completed"), event(2, "order_completed", "p2")],
                           [], [(parked, g)], {}, {("ws", "p1")}, lambda: "x", START)
    assert outcome.deferred == [1] and not outcome.changed


# --- sends and profile updates ---------------------------------------------------------------


def test_a_channel_preference_picks_the_first_reachable_channel() -> None:
    g = graph(Node("s", SendAction("k", None, "", channel_preference=(
        Channel.PUSH, Channel.SMS, Channel.EMAIL))))
    by_email = advance(enroll(g, START, traits={"email": "a@x.io"}), g, START).send
    by_push = advance(enroll(g, START, traits={"email": "a@x.io", "push_token": "tok"}), g,
                      START).send
    assert isinstance(by_email, SendOrder) and by_email.channel is Channel.EMAIL
    assert isinstance(by_push, SendOrder) and (by_push.channel, by_push.address) == (
        Channel.PUSH, "tok")
    nobody = advance(enroll(g, START, traits={}), g, START)
    assert nobody.enrollment.state is EnrollmentState.FAILED
    assert "push (trait or identifier 'push_token')" in nobody.steps[0].detail


def test_a_continue_policy_moves_past_a_failed_send() -> None:
    g = graph(send("s", "k", "after", on_failure=FailurePolicy.CONTINUE), send("after", "a"))
    first = advance(enroll(g, START), g, START)
    assert isinstance(first.send, SendOrder)
    moved = after_send(first.enrollment, g, first.send, Rejected("content: NOT_FOUND"), START,
                       POLICY)
    assert (moved.enrollment.state, moved.enrollment.current_node_id) == (
        EnrollmentState.ACTIVE, "after")
    assert [(s.node_id, s.outcome) for s in moved.steps] == [("s", StepOutcome.FAILED)]
    # Without the policy the same failure ends the enrollment.
    strict = graph(send("s", "k", "after"), send("after", "a"))
    ended = after_send(first.enrollment, strict, first.send, Rejected("x"), START, POLICY)
    assert (ended.enrollment.state, ended.enrollment.exit_reason) == (
        EnrollmentState.FAILED, "failed")


def test_an_update_profile_node_asks_identity_with_a_derived_message_key() -> None:
    g = graph(Node("tag", UpdateProfileAction({"abandoned_cart": True}, "s")), send("s", "k"))
    first = advance(enroll(g, START, traits={"email": "a@x.io", "user_id": "u1"}), g, START)
    order = first.send
    assert isinstance(order, ProfileOrder)
    assert (order.idempotency_key, dict(order.traits), order.identifiers) == (
        "en-p1:tag:0", {"abandoned_cart": True}, (("user_id", "u1"), ("email", "a@x.io")))
    moved = after_send(first.enrollment, g, order, Sent("ev-9"), START, POLICY)
    assert moved.enrollment.current_node_id == "s" and moved.send is None


# --- publishing ------------------------------------------------------------------------------


def test_publishing_lists_every_problem_of_the_new_node_kinds() -> None:
    g = JourneyGraph(EventTrigger("cart_updated", "event.x >"), (
        Node("w", WaitAction(event=EventWait("", "", timedelta(0), "b", "gone"))),
        Node("b", BranchAction((BranchCondition("nope.x == 1", "s"),), "w")),
        Node("s", SplitAction((SplitArm("a", 60, "b"), SplitArm("a", 30, "b")))),
        Node("orphan", WaitAction(local_time=LocalTime(25, 0, (8,), "Nowhere/City"),
                                  next_node_id="orphan")),
    ), "w", re_entry=ReEntry.AFTER_COOLDOWN, goal=Goal("", "", timedelta(0)))
    found = {v.field: v.description for v in validate_for_publish("", g).items}
    assert found["event_trigger.filter"].startswith("line 1, column")
    assert found["nodes[0].wait.event.event_name"] == "is required"
    assert found["nodes[0].wait.event.timeout"] == "is required and must be positive"
    assert found["nodes[0].wait.event.timeout_next_node_id"] == "names no node: 'gone'"
    assert found["nodes[1].branch.conditions[0].condition"].startswith("unknown variable nope")
    assert found["nodes[2].split.arms[1].name"] == "duplicates arm 'a'"
    assert found["nodes[2].split.arms"] == "percentages must add up to 100, got 90"
    assert found["nodes[3].wait.local_time.hour"] == "0 to 23"
    assert found["nodes[3].wait.local_time.weekdays[0]"] == "1 (Monday) to 7 (Sunday)"
    assert found["nodes[3].wait.local_time.default_time_zone"] == "is not an IANA time zone"
    assert found["nodes[3]"] == "node 'orphan' cannot be reached from the entry node"
    assert found["re_entry_cooldown"] == "is required and must be positive"
    assert found["goal.event_name"] == "is required"
    # b -> s -> b loops without a wait; w -> b -> w and orphan -> orphan pass a wait.
    cycles = {k: v for k, v in found.items() if "cycle" in v}
    assert set(cycles.values()) == {"closes a cycle without a wait: b -> s -> b"}


def test_the_stored_form_round_trips_every_node_kind() -> None:
    g = JourneyGraph(
        EventTrigger("cart_updated", "event.v > 1"), (
            send("s", "k", "w", content_version=3, on_failure=FailurePolicy.CONTINUE),
            wait("w", "e", duration=DAY),
            Node("e", WaitAction(event=EventWait("o", "", DAY, "b", "t"))),
            Node("t", WaitAction(local_time=LocalTime(9, 30, (1, 2), "Europe/Berlin"),
                                 next_node_id="b")),
            Node("b", BranchAction((BranchCondition("profile.x", "sp"),), "")),
            Node("sp", SplitAction((SplitArm("a", 50, "u"), SplitArm("c", 50, control=True)))),
            Node("u", UpdateProfileAction({"k": [1, "x"]}, "x")), Node("x", ExitAction())),
        "s", ReEntry.AFTER_COOLDOWN, timedelta(hours=5), Goal("o", "", DAY, True),
        (ExitCriterion("unsub", "event.a"),))
    assert JourneyGraph.from_dict(g.to_dict()) == g


def test_facts_carry_the_exit_reason_the_split_exposure_and_the_goal_revenue() -> None:
    from cjo.analytics.v1 import fact_pb2
    from cjo_orchestration.adapters.facts import encode

    def decoded(record: object) -> fact_pb2.Fact:
        payload = encode(record)  # type: ignore[arg-type]
        assert payload is not None
        fact = fact_pb2.Fact()
        fact.ParseFromString(payload)
        return fact

    g = graph(Node("split", SplitAction((SplitArm("a", 50, "s"),
                                         SplitArm("holdout", 50, control=True)))),
              send("s", "k"), goal=Goal("order_completed", "", DAY))
    held = next(t for t in (advance(enroll(g, START, f"p{i}"), g, START) for i in range(50))
                if t.enrollment.state is EnrollmentState.EXITED)
    exposure, exited = (decoded(f) for f in held.facts)
    assert (exposure.type, exposure.node_id, exposure.arm, exposure.control,
            exposure.experiment_id, exposure.arm_weight) == (
        fact_pb2.FACT_TYPE_EXPERIMENT_EXPOSED, "split", "holdout", True, "j1:split", 50.0)
    # Conversions count for the experiment within the journey goal's window.
    assert exposure.conversion_deadline.ToDatetime(UTC) == START + DAY
    assert (exited.type, exited.exit_reason, exited.journey_version, exited.node_id) == (
        fact_pb2.FACT_TYPE_JOURNEY_EXITED, "control", 1, "split")
    _, (_, arrival_record) = new_enrollment("ws", "en-p0", "j1", 1, g, "p0", {}, {}, "ev", "",
                                            START)
    arrival = decoded(arrival_record)
    assert (arrival.type, arrival.node_id, arrival.visit_sequence) == (
        fact_pb2.FACT_TYPE_NODE_VISITED, "split", 1)
    entered = enroll(g, START)
    outcome = apply_events([event(1, "order_completed", revenue=42.5, currency="EUR")], [],
                           [(entered, g)], {}, set(), lambda: "x", START)
    [goal] = (decoded(f) for f in outcome.facts)
    assert (goal.type, goal.revenue, goal.currency) == (
        fact_pb2.FACT_TYPE_GOAL_REACHED, 42.5, "EUR")


def test_each_fact_carries_its_own_time_and_every_field_once() -> None:
    from cjo.analytics.v1 import fact_pb2
    from cjo_orchestration.adapters.facts import encode

    g = graph(send("s", "k"))
    entered = enroll(g, START)
    later = START + timedelta(hours=1, microseconds=250)
    first = entered.fact("f1", FactKind.NODE_VISITED, START, node_id="s")
    second = entered.fact("f2", FactKind.MESSAGE_REQUESTED, later, message_id="m1",
                          node_id="s", channel="email", content_key="k")
    decoded = []
    for record in (first, second, first):
        payload = encode(record)
        assert payload is not None
        decoded.append(fact_pb2.Fact.FromString(payload))
    assert [f.occur_time.ToDatetime(UTC) for f in decoded] == [START, later, START]
    assert (decoded[1].fact_id, decoded[1].profile_id, decoded[1].enrollment_id,
            decoded[1].message_id, decoded[1].channel, decoded[1].content_key) == (
        "f2", entered.profile_id, entered.enrollment_id, "m1", 1, "k")
    # One occur_time field per fact (a message's singular field repeated would parse, but
    # would mean the fact was encoded twice over).
    assert all(f.ByteSize() == len(encode(r) or b"") for f, r in zip(
        decoded, (first, second, first), strict=True))
