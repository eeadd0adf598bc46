"""The engine's parts on their own: the rules apply_events and the walk delegate to (goals, exit
criteria, event waits, erasures and merges, transitions, wait timers, addresses, splits, the
step retry policy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo_identity.domain.events import EventType, parse_event
from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    ExitReason,
    FactKind,
    StepOutcome,
)
from cjo_orchestration.domain.entry import InboxEvent
from cjo_orchestration.domain.events import apply_events
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    EventWait,
    ExitAction,
    ExitCriterion,
    Goal,
    JourneyGraph,
    LocalTime,
    Node,
    SendAction,
    SplitAction,
    SplitArm,
    WaitAction,
)
from cjo_orchestration.domain.lifecycle import (
    erase_enrollment,
    merge_enrollments,
    resolve_profile,
)
from cjo_orchestration.domain.orders import (
    Deferred,
    Sent,
    identity_identifiers,
    recipient_address,
)
from cjo_orchestration.domain.reactions import (
    awaited_event,
    conversion_value,
    goal_reached,
    met_exit_criterion,
    on_event,
    reach_goal,
    wake_on_event,
)
from cjo_orchestration.domain.splits import experiment_id, split_arm, split_bucket
from cjo_orchestration.domain.timing import profile_zone, wait_until
from cjo_orchestration.domain.transitions import (
    end_enrollment,
    move_on,
    step_at_current_node,
)
from cjo_orchestration.domain.walk import advance, after_send
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.config import Env
from cjo_platform.profiles import profile_view

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday
GOAL = Goal("order", 'event.total > 10', timedelta(days=7))
PAID = EventWait("paid", 'event.method == "card"', timedelta(hours=2), "thanks", "remind")
GRAPH = JourneyGraph(EventTrigger("cart"), (
    Node("wait", WaitAction(event=PAID)),
    Node("thanks", SendAction("thanks", Channel.EMAIL, "done")),
    Node("remind", SendAction("remind", Channel.EMAIL, "done")),
    Node("done", ExitAction()),
), "wait", goal=GOAL, exit_criteria=(ExitCriterion("unsubscribed", 'event.all == true'),))


def event(name: str, properties: dict[str, object] | None = None,
          traits: dict[str, object] | None = None, profile: str = "p1") -> InboxEvent:
    return InboxEvent("ws", 1, "e9", profile, name, properties or {}, traits or {}, "tp-event")


def enrollment(state: EnrollmentState = EnrollmentState.ACTIVE, node: str = "wait",
               **changes: object) -> Enrollment:
    fields: dict[str, object] = dict(
        workspace_id="ws", enrollment_id="en1", journey_id="j1", journey_version=1,
        profile_id="p1", state=state, current_node_id=node, due_time=NOW,
        create_time=NOW - timedelta(hours=1), update_time=NOW - timedelta(hours=1),
        visits={"wait": 1}, traits={"email": "ada@example.com", "tier": "gold"},
        properties={"sku": "A1"}, event_id="e1", traceparent="tp-entry", waiting=True,
        goal_deadline=NOW + timedelta(days=1))
    fields.update(changes)
    return Enrollment(**fields)  # type: ignore[arg-type]


# --- goals -------------------------------------------------------------------------------------


def test_a_goal_counts_once_inside_its_window_and_only_when_its_filter_holds() -> None:
    order = event("order", {"total": 20})
    assert goal_reached(enrollment(), GOAL, order, NOW)
    assert not goal_reached(enrollment(), GOAL, event("order", {"total": 5}), NOW)
    assert not goal_reached(enrollment(), GOAL, event("viewed", {"total": 20}), NOW)
    assert not goal_reached(enrollment(goal_time=NOW), GOAL, order, NOW)
    assert not goal_reached(enrollment(goal_deadline=None), GOAL, order, NOW)
    assert not goal_reached(enrollment(), GOAL, order, NOW + timedelta(days=2))


def test_a_goal_reached_after_the_end_keeps_the_end_time_for_the_cooldown() -> None:
    ended = enrollment(EnrollmentState.COMPLETED, node="")
    reached, fact = reach_goal(ended, GOAL, event("order", {"total": 20, "revenue": 30}), NOW)
    assert reached.goal_time == NOW and reached.update_time == ended.update_time
    assert (fact.kind, fact.fact_id, fact.detail) == (FactKind.GOAL_REACHED, "goal:en1", "order")
    # The event's id lets analytics count the purchase once when identity also reports it.
    assert fact.extra == {"revenue": 30.0, "currency": "", "source_event_id": "e9"}
    active, _ = reach_goal(enrollment(), GOAL, event("order", {"total": 20}), NOW)
    assert active.update_time == NOW


def test_only_a_numeric_revenue_is_a_conversion_value() -> None:
    assert conversion_value({"revenue": 12, "currency": "EUR"}) == {"revenue": 12.0,
                                                                     "currency": "EUR"}
    assert conversion_value({"revenue": True}) == {}
    assert conversion_value({"revenue": "12"}) == {}
    assert conversion_value({}) == {}


# --- exit criteria -----------------------------------------------------------------------------


def test_an_exit_criterion_needs_its_event_and_its_filter() -> None:
    criteria = GRAPH.exit_criteria
    assert met_exit_criterion(criteria, event("unsubscribed", {"all": True}),
                              enrollment()) == criteria[0]
    assert met_exit_criterion(criteria, event("unsubscribed", {"all": False}),
                              enrollment()) is None
    assert met_exit_criterion(criteria, event("order", {"all": True}), enrollment()) is None


def test_an_exit_criterion_is_checked_after_the_goal_and_carries_its_fact() -> None:
    graph = JourneyGraph(GRAPH.trigger, GRAPH.nodes, "wait", goal=GOAL,
                         exit_criteria=(ExitCriterion("order"),))
    transition = on_event(enrollment(), graph, event("order", {"total": 20}), NOW)
    assert transition is not None
    assert transition.enrollment.exit_reason == "exit_criteria"
    # The exit happened at the wait the enrollment was parked at; the step names the criterion.
    assert [(f.kind, f.node_id) for f in transition.facts] == [
        (FactKind.GOAL_REACHED, ""), (FactKind.JOURNEY_EXITED, "wait")]
    assert transition.steps[0].detail == "exit criterion order"
    assert transition.steps[0].node_id == "wait" and transition.steps[0].visit == 1


def test_an_ended_enrollment_ignores_everything_but_its_goal() -> None:
    ended = enrollment(EnrollmentState.EXITED, node="", waiting=False)
    assert on_event(ended, GRAPH, event("unsubscribed", {"all": True}), NOW) is None
    assert on_event(ended, GRAPH, event("paid", {"method": "card"}), NOW) is None
    goal = on_event(ended, GRAPH, event("order", {"total": 20}), NOW)
    assert goal is not None and goal.enrollment.state is EnrollmentState.EXITED
    assert goal.steps == () and [f.kind for f in goal.facts] == [FactKind.GOAL_REACHED]


# --- event waits -------------------------------------------------------------------------------


def test_only_a_parked_enrollment_at_that_wait_awaits_the_event() -> None:
    paid = event("paid", {"method": "card"})
    assert awaited_event(enrollment(), GRAPH, paid) == PAID
    assert awaited_event(enrollment(waiting=False), GRAPH, paid) is None
    assert awaited_event(enrollment(node="thanks"), GRAPH, paid) is None
    assert awaited_event(enrollment(), GRAPH, event("paid", {"method": "cash"})) is None
    assert awaited_event(enrollment(), GRAPH, event("order")) is None


def test_the_awaited_event_becomes_what_later_nodes_render_against() -> None:
    woken = wake_on_event(enrollment(), GRAPH, event("paid", {"method": "card"},
                                                     {"tier": "platinum"}), NOW, ())
    assert woken is not None and woken.send is None  # the next node runs on a later pass
    moved = woken.enrollment
    assert (moved.current_node_id, moved.due_time, moved.waiting) == ("thanks", NOW, False)
    assert moved.traits == {"email": "ada@example.com", "tier": "platinum"}
    assert moved.properties == {"method": "card"}
    assert (moved.event_id, moved.traceparent, moved.visits["wait"]) == ("e9", "tp-event", 2)
    assert woken.steps[0].detail == "event paid" and woken.steps[0].visit == 1
    # Leaving the wait counts the arrival at the next node (its first visit), third arrival.
    assert [(f.fact_id, f.extra) for f in woken.facts] == [
        ("arrived:en1:thanks:0", {"visit_sequence": 3})]
    quiet = wake_on_event(enrollment(), GRAPH, InboxEvent(
        "ws", 1, "e9", "p1", "paid", {"method": "card"}, {}, ""), NOW, ())
    assert quiet is not None and quiet.enrollment.traceparent == "tp-entry"


# --- event application -------------------------------------------------------------------------


def test_events_that_change_nothing_are_counted_unmatched() -> None:
    outcome = apply_events([event("viewed"), event("paid", {"method": "card"})], [],
                           [(enrollment(), GRAPH)], {}, set(), lambda: "new", NOW)
    assert outcome.unmatched == 1 and list(outcome.changed) == ["en1"]


def test_a_merge_into_itself_or_repeated_changes_nothing() -> None:
    merged = InboxEvent("ws", 1, "m1", "p1", "profile_merged", {"merged_profile_id": "p1"},
                        {}, "")
    again = InboxEvent("ws", 2, "m2", "p1", "profile_merged", {"merged_profile_id": "p2"},
                       {}, "")
    outcome = apply_events([merged, again], [], [(enrollment(), GRAPH)], {}, set(),
                           lambda: "new", NOW, retired={("ws", "p2"): "p1"})
    assert outcome.retired == [] and outcome.changed == {} and outcome.unmatched == 0


# --- erasures and merges ----------------------------------------------------------------------


def test_a_profile_resolves_through_merges_and_to_nobody_once_erased() -> None:
    successors = {("ws", "a"): "b", ("ws", "b"): "c", ("ws", "gone"): ""}
    assert resolve_profile(successors, "ws", "a") == "c"
    assert resolve_profile(successors, "ws", "gone") == ""
    assert resolve_profile(successors, "other", "a") == "a"


def test_erasing_an_ended_enrollment_forgets_its_data_without_a_step() -> None:
    ended = enrollment(EnrollmentState.COMPLETED, node="", last_error="boom")
    erased = erase_enrollment(ended, NOW)
    assert erased.steps == () and erased.facts == ()
    assert (erased.enrollment.traits, erased.enrollment.properties) == ({}, {})
    assert erased.enrollment.last_error == ""
    assert erased.enrollment.state is EnrollmentState.COMPLETED


def test_a_merge_tie_on_the_entry_time_goes_to_the_smaller_enrollment_id() -> None:
    mine = enrollment(enrollment_id="en2", profile_id="old")
    theirs = enrollment(enrollment_id="en1", profile_id="p1")
    exited, = merge_enrollments([mine], [theirs], "p1", NOW)
    assert exited.enrollment.enrollment_id == "en2"
    assert exited.enrollment.exit_reason == "merged"
    kept, moved = merge_enrollments([theirs], [mine], "p9", NOW)
    assert (kept.enrollment.enrollment_id, kept.enrollment.state) == ("en2",
                                                                     EnrollmentState.EXITED)
    assert moved.enrollment.profile_id == "p9" and moved.enrollment.update_time == NOW
    assert moved.steps[0].detail == "merged from profile p1"


# --- transitions -------------------------------------------------------------------------------


def test_an_empty_edge_completes_the_journey() -> None:
    done = move_on(enrollment(), "", NOW, [], [])
    assert done.enrollment.state is EnrollmentState.COMPLETED
    assert done.enrollment.exit_reason == "completed" and done.send is None
    assert done.facts[-1].fact_id == "exited:en1"


def test_an_end_says_why_and_where() -> None:
    failed = end_enrollment(enrollment(), EnrollmentState.FAILED, NOW, [], [], error="boom",
                            reason=ExitReason.FAILED)
    ended = failed.enrollment
    assert (ended.exit_reason, ended.last_error, ended.current_node_id, ended.due_time) == (
        "failed", "boom", "", None)
    assert (failed.facts[-1].detail, failed.facts[-1].node_id) == ("failed", "wait")
    assert not ended.waiting
    step = step_at_current_node(enrollment(), "why", NOW)
    assert (step.node_id, step.visit, step.outcome) == ("wait", 1, StepOutcome.SUCCEEDED)


# --- time --------------------------------------------------------------------------------------


def test_a_wait_timer_fires_after_its_duration_at_local_time_or_at_its_timeout() -> None:
    duration = wait_until(WaitAction(duration=timedelta(hours=3)), {}, NOW)
    assert duration == (NOW + timedelta(hours=3), "until 2026-03-02T15:00:00+00:00")
    friday_nine = WaitAction(local_time=LocalTime(9, 0, (5,), "Europe/Paris"))
    until, detail = wait_until(friday_nine, {"timezone": "Asia/Tokyo"}, NOW)
    assert until == datetime(2026, 3, 6, 0, tzinfo=UTC)  # 09:00 in Tokyo, Friday
    assert detail.startswith("until (Asia/Tokyo)")
    timeout = wait_until(WaitAction(event=PAID), {}, NOW)
    assert timeout[0] == NOW + timedelta(hours=2)
    assert timeout[1].startswith("for event paid until")


def test_a_profile_zone_falls_back_from_timezone_to_time_zone_to_the_default() -> None:
    assert profile_zone({"timezone": "America", "time_zone": "Asia/Tokyo"}, "UTC").key == (
        "Asia/Tokyo")
    assert profile_zone({"timezone": "x" * 65}, "Europe/Paris").key == "Europe/Paris"
    assert profile_zone({}, "Mars/Base").key == "UTC"


# --- orders and splits -------------------------------------------------------------------------


def test_addresses_come_from_the_channels_trait_and_identifiers_in_a_fixed_order() -> None:
    traits = {"email": " ada@example.com ", "phone": 42, "user_id": "u1"}
    assert recipient_address(Channel.EMAIL, traits) == "ada@example.com"
    assert recipient_address(Channel.SMS, traits) == ""
    assert recipient_address(Channel.IN_APP, {}) == "-"
    assert identity_identifiers({"email": "a@x", "phone": " ", "user_id": "u1"}) == (
        ("user_id", "u1"), ("email", "a@x"))


def test_an_update_of_a_profile_of_many_identifiers_names_the_newest_of_each_type() -> None:
    # A profile merged from many people: 2 emails, 30 anonymous ids. Every one went into the
    # identify event, which identity refused (1 to 20 identifiers): the update_profile node
    # failed. The newest of each type (what a bounded copy of the profile keeps) and the
    # traits resolve it.
    view = profile_view({"email": "new@example.com"}, identifiers=[
        ("user_id", "u"), ("email", "old@example.com"), ("email", "new@example.com"),
        *(("anonymous_id", f"a{i}") for i in range(30))])
    found = identity_identifiers(view)
    assert found == (("user_id", "u"), ("email", "new@example.com"), ("anonymous_id", "a29"))
    parse_event(message_id="orchestration:k", event_type=EventType.IDENTIFY, name="",
                identifiers=found, properties={}, traits={"plan": "pro"}, timestamp=None,
                source="orchestration", now=NOW)  # accepted: raises naming the field else


def test_split_arms_follow_their_percentages_and_name_the_experiment() -> None:
    split = SplitAction((SplitArm("a", 30, "x"), SplitArm("b", 70, "y")))
    arms = [split_arm(split, "j1", f"p{i}").name for i in range(2000)]
    assert 0.25 < arms.count("a") / len(arms) < 0.35
    assert all(split_arm(split, "j1", f"p{i}").name == ("a" if split_bucket("j1", f"p{i}") < 30
                                                        else "b") for i in range(50))
    assert experiment_id("j1", "split") == "j1:split"


# --- the step retry policy ---------------------------------------------------------------------


def test_the_default_step_retry_waits_one_second_doubling_to_five_minutes_ten_times() -> None:
    policy = load_engine_settings(Env({})).retry
    assert [policy.delay(n).total_seconds() for n in range(1, 11)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert not policy.exhausted(9) and policy.exhausted(10)
    configured = load_engine_settings(Env({"CJO_ORCHESTRATION_RETRY_BASE_SECONDS": "0.5",
                                           "CJO_ORCHESTRATION_RETRY_MAX_SECONDS": "3",
                                           "CJO_ORCHESTRATION_RETRY_MAX_ATTEMPTS": "3"})).retry
    assert [configured.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [0.5, 1, 2, 3]
    assert configured.exhausted(3)


@pytest.mark.parametrize("failures", [1, 9])
def test_a_deferred_send_is_due_again_after_the_policy_delay(failures: int) -> None:
    policy = load_engine_settings(Env({})).retry
    graph = JourneyGraph(EventTrigger("cart"), (Node("send", SendAction("k", Channel.EMAIL)),),
                         "send")
    start = enrollment(node="send", waiting=False, attempts=failures - 1)
    order = advance(start, graph, NOW).send
    assert order is not None
    retried = after_send(start, graph, order, Deferred("busy"), NOW, policy)
    assert retried.enrollment.due_time == NOW + policy.delay(failures)
    assert retried.enrollment.attempts == failures and retried.enrollment.last_error == "busy"
    sent = after_send(retried.enrollment, graph, order, Sent("m1"), NOW, policy)
    assert sent.enrollment.state is EnrollmentState.COMPLETED and sent.enrollment.attempts == 0
