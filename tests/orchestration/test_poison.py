"""Poison isolation through the real gRPC server: a journey whose condition or content fails at
run time for some profiles, or an event whose round raises whatever it raises, fails only its
own item (the enrollment records the error, the journey counts it); the journey's other
profiles, and a fresh journey in another workspace, keep flowing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from orchestration_support import (
    ENGINE_ENV,
    Cluster,
    create_content,
    enrollments,
    events_applied,
    forwarded,
    published,
    running,
)
from sqlalchemy import select

from cjo.common.v1 import common_pb2
from cjo.common.v1 import dead_letter_service_pb2 as dead_letter_pb
from cjo.common.v1 import dead_letter_service_pb2_grpc as dead_letter_grpc
from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2 as content_pb
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_orchestration.adapters.tables import inbox
from cjo_orchestration.service_layer import events as event_use_cases
from support import Backend, as_service, eventually

n = journey_pb2.Node
FAILED = enrollment_pb2.ENROLLMENT_STATE_FAILED
COMPLETED = enrollment_pb2.ENROLLMENT_STATE_COMPLETED
ACTIVE = enrollment_pb2.ENROLLMENT_STATE_ACTIVE
# Long enough for a loaded CI machine, far shorter than the 30 s a stalled round backs off.
PROMPTLY = 8.0


def dead_letter_stub(cluster: Cluster) -> Any:
    channel = cluster.channels.get("dead_letters")
    if channel is None:
        channel = cluster.channels["dead_letters"] = grpc.aio.insecure_channel(
            cluster.targets["orchestration"])
    return dead_letter_grpc.DeadLetterServiceStub(channel)


def hours(count: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(hours=count))
    return value


async def handle(cluster: Cluster, workspace: str, *events: pb.ForwardedEvent) -> None:
    reply = await cluster.orchestration.HandleEvents(pb.HandleEventsRequest(events=events),
                                                      metadata=as_service(workspace))
    assert all(r.status.code == 0 for r in reply.results)


async def states(cluster: Cluster, workspace: str, journey: journey_pb2.Journey,
                 wanted: dict[str, int]) -> dict[str, Any]:
    """The journey's enrollments by profile, once each profile in ``wanted`` is in its state."""
    async def check() -> dict[str, Any] | None:
        found = {e.profile_id: e for e in await enrollments(cluster, workspace, journey)}
        ok = all(p in found and found[p].state == s for p, s in wanted.items())
        return found if ok else None

    return await eventually(check, timeout=PROMPTLY)  # type: ignore[return-value]


async def journey_now(cluster: Cluster, workspace: str,
                      journey: journey_pb2.Journey) -> journey_pb2.Journey:
    reply = await cluster.orchestration.GetJourney(pb.GetJourneyRequest(name=journey.name),
                                                   metadata=as_service(workspace))
    return reply.journey


async def fresh_workspace_flows(cluster: Cluster, tag: str) -> None:
    """A brand-new workspace's event-triggered journey enrolls and completes promptly."""
    journey = await published(cluster, "ws-fresh", journey_pb2.Journey(
        display_name=f"Fresh {tag}", event_trigger=journey_pb2.EventTrigger(event_name=tag),
        entry_node_id="done", nodes=[n(id="done", exit=journey_pb2.ExitNode())]))
    await handle(cluster, "ws-fresh", forwarded(f"fresh-{tag}", f"newcomer-{tag}", tag))
    await states(cluster, "ws-fresh", journey, {f"newcomer-{tag}": COMPLETED})


def failed_at(enrollment: Any, node_id: str, words: Sequence[str]) -> None:
    """The enrollment failed at ``node_id`` with an error naming ``words``, in its last error and
    in its failed step."""
    assert enrollment.state == FAILED and enrollment.exit_reason == "failed"
    step = enrollment.steps[-1]
    assert (step.node_id, step.outcome) == (node_id, enrollment_pb2.STEP_OUTCOME_FAILED)
    assert step.HasField("time")
    for word in words:
        assert word in enrollment.last_error and word in step.detail, (word, enrollment)


async def marked(cluster: Cluster, workspace: str, journey: journey_pb2.Journey,
                 words: Sequence[str]) -> journey_pb2.Journey:
    async def check() -> journey_pb2.Journey | None:
        found = await journey_now(cluster, workspace, journey)
        return found if found.error_count >= 1 else None

    found: journey_pb2.Journey = await eventually(check, timeout=PROMPTLY)  # type: ignore
    assert found.HasField("last_error_time")
    for word in words:
        assert word in found.last_error, (word, found.last_error)
    return found


async def test_a_trigger_filter_failing_at_run_time_keeps_out_only_its_profile(
        backend: Backend) -> None:
    async with running(backend) as cluster:
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="Coded", entry_node_id="done",
            event_trigger=journey_pb2.EventTrigger(event_name="coupon",
                                                   filter="int(event.code) > 0"),
            nodes=[n(id="done", exit=journey_pb2.ExitNode())]))
        await handle(cluster, "ws-a",
                     forwarded("c-bad", "bad", "coupon", properties={"code": "x"}),
                     forwarded("c-good", "good", "coupon", properties={"code": "7"}))
        await states(cluster, "ws-a", journey, {"good": COMPLETED})
        await fresh_workspace_flows(cluster, "after_trigger_filter")
        await events_applied(cluster)
        found = await marked(cluster, "ws-a", journey, ["event_trigger.filter", "int"])
        assert found.error_count == 1
        assert [e.profile_id for e in await enrollments(cluster, "ws-a", journey)] == ["good"]


async def test_a_branch_condition_failing_at_run_time_fails_only_that_enrollment(
        backend: Backend) -> None:
    async with running(backend) as cluster:
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="Average order", entry_node_id="big",
            event_trigger=journey_pb2.EventTrigger(event_name="order"),
            nodes=[n(id="big", branch=journey_pb2.BranchNode(
                       conditions=[journey_pb2.BranchCondition(
                           condition="event.total / event.items > 10", next_node_id="done")],
                       else_next_node_id="done")),
                   n(id="done", exit=journey_pb2.ExitNode())]))
        await handle(cluster, "ws-a",
                     forwarded("o-bad", "bad", "order", properties={"total": 50, "items": 0}),
                     forwarded("o-good", "good", "order", properties={"total": 50, "items": 2}))
        found = await states(cluster, "ws-a", journey, {"bad": FAILED, "good": COMPLETED})
        failed_at(found["bad"], "big", ["branch.condition", "division by zero"])
        await fresh_workspace_flows(cluster, "after_branch")
        assert (await marked(cluster, "ws-a", journey, ["branch.condition"])).error_count == 1


async def test_a_wait_filter_failing_at_run_time_fails_only_that_enrollment(
        backend: Backend) -> None:
    async with running(backend) as cluster:
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="Await payment", entry_node_id="pay",
            event_trigger=journey_pb2.EventTrigger(event_name="checkout"),
            nodes=[n(id="pay", wait=journey_pb2.WaitNode(event=journey_pb2.EventWait(
                       event_name="paid", filter="int(event.code) > 0", timeout=hours(24),
                       event_next_node_id="done", timeout_next_node_id="done"))),
                   n(id="done", exit=journey_pb2.ExitNode())]))
        await handle(cluster, "ws-a", forwarded("k-bad", "bad", "checkout"),
                     forwarded("k-good", "good", "checkout"))

        async def both_wait() -> bool:
            found = await enrollments(cluster, "ws-a", journey)
            return len(found) == 2 and all(e.steps and e.steps[-1].outcome
                                           == enrollment_pb2.STEP_OUTCOME_WAITING
                                           for e in found)

        await eventually(both_wait)
        await handle(cluster, "ws-a", forwarded("p-bad", "bad", "paid", properties={"code": "x"}),
                     forwarded("p-good", "good", "paid", properties={"code": "3"}))
        found = await states(cluster, "ws-a", journey, {"bad": FAILED, "good": COMPLETED})
        failed_at(found["bad"], "pay", ["wait.event.filter", "int"])
        await fresh_workspace_flows(cluster, "after_wait_filter")
        assert (await marked(cluster, "ws-a", journey, ["wait.event.filter"])).error_count == 1


async def test_content_failing_to_render_fails_only_that_enrollment(backend: Backend) -> None:
    async with running(backend) as cluster:
        if "content" not in cluster.real:
            pytest.skip("the real content service did not start")
        content = cluster.stub("content")
        await content.CreateContentItem(content_pb.CreateContentItemRequest(
            content_item=content_item_pb2.ContentItem(
                key="strict", display_name="strict",
                missing_variables=content_item_pb2.MISSING_VARIABLE_POLICY_STRICT,
                email=content_item_pb2.EmailTemplate(subject="Hi {{ profile.nickname }}",
                                                     html="<p>hello</p>"))),
            metadata=as_service("ws-a"))
        await content.PublishContentItem(content_pb.PublishContentItemRequest(
            name="contentItems/strict"), metadata=as_service("ws-a"))
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="Greeting", entry_node_id="mail",
            event_trigger=journey_pb2.EventTrigger(event_name="visit"),
            nodes=[n(id="mail", send=journey_pb2.SendNode(
                       content_key="strict", channel=common_pb2.CHANNEL_EMAIL,
                       next_node_id="done")),
                   n(id="done", exit=journey_pb2.ExitNode())]))
        await handle(cluster, "ws-a",
                     forwarded("v-bad", "bad", "visit", traits={"email": "bad@example.com"}),
                     forwarded("v-good", "good", "visit", traits={
                         "email": "good@example.com", "nickname": "Goodie"}))
        found = await states(cluster, "ws-a", journey, {"bad": FAILED, "good": COMPLETED})
        failed_at(found["bad"], "mail", ["nickname"])
        await fresh_workspace_flows(cluster, "after_render")
        assert (await marked(cluster, "ws-a", journey, ["nickname"])).error_count == 1
        await eventually(lambda: any("Goodie" in str(e.content) for e in
                                     cluster.mailbox.envelopes), timeout=PROMPTLY)


async def test_an_event_whose_round_raises_is_dead_lettered_alone_and_replayed(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever an event raises (here, a bug the engine does not catch), it holds back only its
    own profile's later events, and only until it is given up to the dead letters, from which
    an operator lists it and, once the cause is fixed, replays it."""
    monkeypatch.setitem(ENGINE_ENV, "CJO_ORCHESTRATION_EVENT_MAX_ATTEMPTS", "3")
    real = event_use_cases.apply_events
    bug = {"present": True}

    def apply_events(events: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        if bug["present"] and any(e.properties.get("poison") for e in events):
            raise RuntimeError("a bug the engine did not expect")
        return real(events, *args, **kwargs)

    monkeypatch.setattr(event_use_cases, "apply_events", apply_events)
    async with running(backend) as cluster:
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="Visits", entry_node_id="done",
            re_entry=journey_pb2.RE_ENTRY_POLICY_ALWAYS,
            event_trigger=journey_pb2.EventTrigger(event_name="visit"),
            nodes=[n(id="done", exit=journey_pb2.ExitNode())]))
        # One batch: the poisoned profile's event, its later visit, and another profile's.
        await handle(cluster, "ws-a", forwarded("x-1", "victim", "visit",
                                                properties={"poison": True}),
                     forwarded("x-2", "victim", "visit"), forwarded("y-1", "bystander", "visit"))
        await states(cluster, "ws-a", journey, {"bystander": COMPLETED})
        await fresh_workspace_flows(cluster, "after_raising_event")
        # Given up after three attempts; then the victim's later event flows.
        await states(cluster, "ws-a", journey, {"victim": COMPLETED})
        await events_applied(cluster)

        def poisoned() -> Any:
            with cluster.database.transaction() as session:
                return session.execute(select(inbox.c.attempts, inbox.c.last_error).where(
                    inbox.c.event_id == "x-1")).one()

        attempts, error = await cluster.database.run(poisoned)
        assert attempts == 3 and "a bug the engine did not expect" in error

        letters = dead_letter_stub(cluster)
        listed = await letters.ListDeadLetters(dead_letter_pb.ListDeadLettersRequest(
            source="inbox:events"), metadata=as_service("ws-a"))
        [letter] = listed.dead_letters
        assert (letter.item_key, letter.attempts) == ("x-1", 3)
        assert "a bug the engine did not expect" in letter.error
        assert json.loads(letter.payload)["properties"] == {"poison": True}
        assert not (await letters.ListDeadLetters(dead_letter_pb.ListDeadLettersRequest(),
                                                  metadata=as_service("ws-fresh"))).dead_letters

        bug["present"] = False  # the cause is fixed: the operator replays the letter
        retried = await letters.RetryDeadLetters(dead_letter_pb.RetryDeadLettersRequest(
            all=True, source="inbox:events", request_id="replay-1"),
            metadata=as_service("ws-a"))
        assert list(retried.retried_ids) == [letter.id]

        async def replayed() -> bool:
            found = await enrollments(cluster, "ws-a", journey, "victim")
            return len(found) == 2 and all(e.state == COMPLETED for e in found)

        await eventually(replayed, timeout=PROMPTLY)
        assert not (await letters.ListDeadLetters(dead_letter_pb.ListDeadLettersRequest(),
                                                  metadata=as_service("ws-a"))).dead_letters


async def test_a_step_that_raises_fails_only_its_enrollment(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    from cjo_orchestration.service_layer import steps

    real = steps.advance

    def advance(enrollment: Any, *args: Any, **kwargs: Any) -> Any:
        if enrollment.profile_id == "bad":
            raise OverflowError("date value out of range")
        return real(enrollment, *args, **kwargs)

    monkeypatch.setattr(steps, "advance", advance)
    async with running(backend) as cluster:
        await create_content(cluster, "ws-a", "hello", "Hello {{ profile.name }}", "<p>hi</p>")
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="Hello", entry_node_id="mail",
            event_trigger=journey_pb2.EventTrigger(event_name="visit"),
            nodes=[n(id="mail", send=journey_pb2.SendNode(
                       content_key="hello", channel=common_pb2.CHANNEL_EMAIL,
                       next_node_id="done")),
                   n(id="done", exit=journey_pb2.ExitNode())]))
        await handle(cluster, "ws-a", forwarded("v-bad", "bad", "visit"),
                     forwarded("v-good", "good", "visit"))
        found = await states(cluster, "ws-a", journey, {"bad": FAILED, "good": COMPLETED})
        failed_at(found["bad"], "mail", ["OverflowError", "date value out of range"])
        await fresh_workspace_flows(cluster, "after_raising_step")


async def test_a_scheduled_occurrence_that_raises_fails_alone(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_scheduled_trigger import WS, newsletter_segment, publish, scheduled_suite, weekly

    from cjo.orchestration.v1.schedule_occurrence_pb2 import ScheduleOccurrence
    from cjo_orchestration.service_layer import schedules

    real = schedules.decide

    def decide(*args: Any, **kwargs: Any) -> Any:
        fire_time = args[5]
        if fire_time.minute == 30:  # the broken journey fires at half past
            raise OverflowError("date value out of range")
        return real(*args, **kwargs)

    monkeypatch.setattr(schedules, "decide", decide)
    async with scheduled_suite(backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 2)
        broken = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", cron="30 12 * * *")))
        news = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", cron="0 13 * * *")))
        suite.clock.set(datetime(2026, 3, 7, 13, 5, tzinfo=UTC))
        await suite.settle()

        async def occurrences(journey: journey_pb2.Journey) -> list[Any]:
            reply = await suite.cluster.orchestration.ListScheduleOccurrences(
                pb.ListScheduleOccurrencesRequest(parent=journey.name), metadata=as_service(WS))
            return list(reply.occurrences)

        [failed] = await occurrences(broken)
        assert failed.state == ScheduleOccurrence.STATE_FAILED
        assert "OverflowError: date value out of range" in failed.detail
        assert [(o.state, o.enrolled_count) for o in await occurrences(news)][-1] == (
            ScheduleOccurrence.STATE_DONE, 2)
        marked = (await suite.cluster.orchestration.GetJourney(
            pb.GetJourneyRequest(name=broken.name), metadata=as_service(WS))).journey
        assert marked.error_count == 1 and "OverflowError" in marked.last_error


async def test_enroll_that_raises_fails_only_that_profile(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    from cjo_orchestration.service_layer import enrollment

    real = enrollment.new_enrollment

    def new_enrollment(*args: Any, **kwargs: Any) -> Any:
        if args[5] == "bad":  # the profile id
            raise OverflowError("date value out of range")
        return real(*args, **kwargs)

    monkeypatch.setattr(enrollment, "new_enrollment", new_enrollment)
    async with running(backend) as cluster:
        journey = await published(cluster, "ws-a", journey_pb2.Journey(
            display_name="By API", entry_node_id="done", api_trigger=journey_pb2.ApiTrigger(),
            nodes=[n(id="done", exit=journey_pb2.ExitNode())]))

        async def enroll(profile_id: str) -> pb.EnrollResponse:
            reply: pb.EnrollResponse = await cluster.orchestration.Enroll(pb.EnrollRequest(
                journey=journey.name, profile_id=profile_id, request_id=f"r-{profile_id}"),
                metadata=as_service("ws-a"))
            return reply

        cluster.known_profiles.update({"bad", "good"})
        refused = await enroll("bad")
        assert not refused.HasField("enrollment") and refused.skip_reason == "journey_error"
        assert (await enroll("good")).HasField("enrollment")
        await states(cluster, "ws-a", journey, {"good": COMPLETED})
        found = await journey_now(cluster, "ws-a", journey)
        assert found.error_count == 1 and "OverflowError" in found.last_error
