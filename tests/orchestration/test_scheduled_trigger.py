"""Scheduled triggers: a segment's members enroll at a time or on a cron schedule.

Real identity (segments, ListSegmentMembers, BatchGetProfiles), content, delivery (SMTP) and
analytics run in-process; orchestration runs on a ManualClock, so the tests move its time across
fire times and a daylight-saving change. Identity, content and delivery keep the wall clock.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2
from grpc_status import rpc_status
from orchestration_support import (
    ENGINE_ENV,
    Cluster,
    create_content,
    enrollments,
    forwarded,
    journey_counts,
    parked,
    start_peers,
)
from sqlalchemy import delete, update

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.identity.v1 import event_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_identity.adapters.tables import segments as identity_segments
from cjo_identity.bootstrap import build as build_identity
from cjo_orchestration import journeyfile
from cjo_orchestration.adapters import schedules as schedule_store
from cjo_orchestration.adapters.audience import Audience
from cjo_orchestration.adapters.tables import schedule_occurrences
from cjo_orchestration.api.convert import graph_from_proto, journey_to_proto
from cjo_orchestration.bootstrap import build as build_orchestration
from cjo_orchestration.domain.graph import validate_for_publish, validate_shape
from cjo_orchestration.domain.journeys import (
    EventTrigger,
    Journey,
    JourneyGraph,
    JourneyState,
    Schedule,
    TriggerKind,
)
from cjo_orchestration.domain.schedule import (
    Occurrence,
    OccurrenceState,
    catch_up,
    first_fire,
    next_fire,
)
from cjo_orchestration.service_layer.schedules import ScheduleRound
from cjo_orchestration.workers.schedules import ScheduleWorker
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.server import ServiceApp
from cjo_platform.rpc.status import field_violations
from support import (
    Backend,
    as_service,
    eventually,
    free_port,
    segment_backfilled,
    serving,
    settings_for,
)

WS = "ws-sched"
PAGE_SIZE = 2  # five members make three pages
NEW_YORK = "America/New_York"
# Saturday 2026-03-07 noon UTC: New York changes to daylight time on Sunday 2026-03-08.
START = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


# --- schedule arithmetic (pure) ----------------------------------------------------------------


def test_cron_is_evaluated_in_its_zone_across_daylight_saving() -> None:
    daily = Schedule(cron="0 9 * * *", time_zone=NEW_YORK)
    first = next_fire(daily, START)
    assert first == datetime(2026, 3, 7, 14, 0, tzinfo=UTC)  # 09:00 EST (UTC-5)
    assert next_fire(daily, first) == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)  # 09:00 EDT
    # 02:30 does not exist on the night of the change: it fires at 03:00 EDT, once.
    skipped = Schedule(cron="30 2 * * *", time_zone=NEW_YORK)
    assert next_fire(skipped, START) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    # Bounds: nothing before start_time, nothing after end_time.
    bounded = Schedule(cron="0 9 * * *", time_zone=NEW_YORK,
                       start_time=datetime(2026, 3, 10, 13, 0, tzinfo=UTC),
                       end_time=datetime(2026, 3, 11, 13, 0, tzinfo=UTC))
    assert first_fire(bounded, START) == datetime(2026, 3, 10, 13, 0, tzinfo=UTC)
    assert next_fire(bounded, datetime(2026, 3, 10, 13, 0, tzinfo=UTC)) == datetime(
        2026, 3, 11, 13, 0, tzinfo=UTC)
    assert next_fire(bounded, datetime(2026, 3, 11, 13, 0, tzinfo=UTC)) is None
    once = Schedule(at=START + timedelta(hours=1))
    assert first_fire(once, START) == START + timedelta(hours=1)
    assert next_fire(once, START + timedelta(hours=1)) is None


def test_missed_occurrences_collapse_into_the_latest() -> None:
    hourly = Schedule(cron="0 * * * *")
    due = datetime(2026, 3, 7, 13, 0, tzinfo=UTC)
    assert catch_up(hourly, due, due + timedelta(minutes=59)) is None  # merely late
    late = catch_up(hourly, due, due + timedelta(hours=4, minutes=10))
    assert late is not None
    assert late.latest == due + timedelta(hours=4)
    assert late.missed == 4  # 13:00, 14:00, 15:00 and 16:00 left out; 17:00 fires


def _scheduled(schedule: Schedule, segment_id: str = "newsletter") -> JourneyGraph:
    return JourneyGraph(trigger=EventTrigger(kind=TriggerKind.SCHEDULED, segment_id=segment_id,
                                             schedule=schedule))


def test_schedule_problems_are_listed_with_the_graphs_own() -> None:
    bad = _scheduled(Schedule(cron="61 9 * *", time_zone="Mars/Olympus_Mons"))
    problems = {v.field: v.description for v in validate_shape("x", bad).items}
    assert "5 fields" in problems["scheduled_trigger.cron"]
    assert "IANA" in problems["scheduled_trigger.time_zone"]
    six = _scheduled(Schedule(cron="0 61 9 * * *"))
    assert "5 fields" in {v.field: v.description
                          for v in validate_shape("x", six).items}["scheduled_trigger.cron"]
    minute = _scheduled(Schedule(cron="61 9 * * *"))
    assert "Bad minute" in {v.field: v.description for v in
                            validate_shape("x", minute).items}["scheduled_trigger.cron"]
    past = _scheduled(Schedule(at=START - timedelta(days=1)), segment_id="")
    problems = {v.field: v.description
                for v in validate_for_publish("x", past, now=START).items}
    assert {"scheduled_trigger.at", "scheduled_trigger.segment_id", "entry_node_id",
            "nodes"} <= set(problems)
    assert "required" in {v.field: v.description for v in validate_for_publish(
        "x", _scheduled(Schedule())).items}["scheduled_trigger.cron"]


# --- the running suite -------------------------------------------------------------------------


class Delegating:
    """Identity's audience as it is; a test overrides the call it breaks or races."""

    def __init__(self, real: Any) -> None:
        self.real = real

    async def members(self, *args: Any) -> Any:
        return await self.real.members(*args)

    async def traits(self, *args: Any) -> Any:
        return await self.real.traits(*args)


class BackgroundRounds:
    """Wraps the service's own scheduler rounds (before the service starts) so a test can stop
    them and wait for the one in flight."""

    def __init__(self, worker: ScheduleWorker) -> None:
        self.round = worker.run_once
        self.stopped = False
        self.idle = asyncio.Event()
        self.idle.set()
        worker.run_once = self.run_once  # type: ignore[method-assign]

    async def run_once(self) -> bool:
        if self.stopped:
            return False
        self.idle.clear()
        try:
            return await self.round()
        finally:
            self.idle.set()

    async def stop(self) -> None:
        self.stopped = True
        await self.idle.wait()


@dataclass
class Scheduled:
    cluster: Cluster
    clock: ManualClock
    app: ServiceApp
    identity: identity_grpc.IdentityServiceStub
    identity_app: ServiceApp
    background: BackgroundRounds

    @property
    def worker(self) -> ScheduleWorker:
        """The service's own scheduler, running in the background."""
        return scheduler_of(self.app)

    def replica(self, audience: Any = None) -> ScheduleWorker:
        """Another scheduler on the same database, as a second replica or a restarted one
        would be; the test runs its rounds itself."""
        own = self.worker.round
        return ScheduleWorker(
            ScheduleRound(own.transactions, own.settings, audience or own.audience, own.new_id),
            own.settings.poll_seconds, self.worker.wake_steps)

    async def stop_background_scheduler(self) -> None:
        """Leave scheduling to rounds the test runs, so it knows exactly what ran when. Returns
        once a background round that had already begun has finished: it could otherwise read
        the clock the test moves next and claim an occurrence meant for the test's rounds."""
        await self.background.stop()

    async def occurrences(self, journey: journey_pb2.Journey) -> list[Occurrence]:
        def read() -> list[Occurrence]:
            with self.app.db.transaction() as session:
                return schedule_store.of_journey(session, WS, journey.journey_id)
        return await self.app.db.run(read)

    async def settle(self) -> None:
        """Run scheduler rounds until one finds nothing to do (the background scheduler must
        be stopped, or it could hold an occurrence this round skips)."""
        driver = self.replica()
        while await driver.run_once():
            pass


def scheduler_of(app: ServiceApp) -> ScheduleWorker:
    owners = [getattr(task, "__self__", None) for task in app.background]
    return next(o for o in owners if isinstance(o, ScheduleWorker))


@asynccontextmanager
async def scheduled_suite(backend: Backend) -> AsyncIterator[Scheduled]:
    clock = ManualClock(START)
    async with AsyncExitStack() as stack:
        cluster = Cluster(backend, stack)
        await start_peers(cluster)
        orchestration_port = free_port()
        identity_app = build_identity(
            settings_for("identity", backend,
                         CJO_ORCHESTRATION_TARGET=f"127.0.0.1:{orchestration_port}"), Env({}))
        cluster.targets["identity"] = await stack.enter_async_context(serving(identity_app))
        app = build_orchestration(
            settings_for("orchestration", backend, CJO_ORCHESTRATION_PORT=str(orchestration_port),
                         **{f"CJO_{name.upper()}_TARGET": target
                            for name, target in cluster.targets.items()}),
            Env({**ENGINE_ENV, "CJO_ORCHESTRATION_SCHEDULE_PAGE_SIZE": str(PAGE_SIZE)}), clock)
        background = BackgroundRounds(scheduler_of(app))
        cluster.targets["orchestration"] = await stack.enter_async_context(serving(app))
        channel = grpc.aio.insecure_channel(cluster.targets["identity"])
        stack.push_async_callback(channel.close)
        try:
            yield Scheduled(cluster, clock, app, identity_grpc.IdentityServiceStub(channel),
                            identity_app, background)
        finally:
            for open_channel in cluster.channels.values():
                await open_channel.close()


async def newsletter_segment(suite: Scheduled, members: int) -> list[str]:
    """``members`` subscribers and one person who is not; returns the subscribers' emails."""
    emails = [f"reader{i}@example.com" for i in range(members)]
    events = [event_pb2.Event(
        message_id=f"id-{address}", type=event_pb2.EVENT_TYPE_IDENTIFY, source="crm",
        identifiers=[event_pb2.Identifier(type="email", value=address)])
        for address in [*emails, "other@example.com"]]
    for item, address in zip(events, [*emails, "other@example.com"], strict=True):
        item.traits.update({"email": address, "newsletter": address != "other@example.com"})
    reply = await suite.identity.IngestEvents(identity_pb.IngestEventsRequest(events=events),
                                              metadata=as_service(WS))
    assert {r.status.code for r in reply.results} == {0}, reply
    await suite.identity.CreateSegment(identity_pb.CreateSegmentRequest(
        segment=segment_pb2.Segment(segment_id="newsletter", display_name="Newsletter",
                                    condition="traits.newsletter == true")),
        metadata=as_service(WS))
    await segment_backfilled(suite.identity, as_service(WS), "newsletter")
    await create_content(suite.cluster, WS, "weekly", "This week for {{ profile.email }}",
                         "<p>News</p>")
    return emails


async def everyone_segment(suite: Scheduled, segment_id: str) -> None:
    """A segment every profile of the workspace is a member of."""
    await suite.identity.CreateSegment(identity_pb.CreateSegmentRequest(
        segment=segment_pb2.Segment(segment_id=segment_id, condition="true")),
        metadata=as_service(WS))
    await segment_backfilled(suite.identity, as_service(WS), segment_id)


def weekly(trigger: journey_pb2.ScheduledTrigger) -> journey_pb2.Journey:
    return journey_pb2.Journey(
        display_name="Newsletter", scheduled_trigger=trigger, entry_node_id="send",
        re_entry=journey_pb2.RE_ENTRY_POLICY_ALWAYS,
        nodes=[journey_pb2.Node(id="send", send=journey_pb2.SendNode(
                   content_key="weekly", channel=common_pb2.CHANNEL_EMAIL, next_node_id="done")),
               journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])


async def publish(suite: Scheduled, journey: journey_pb2.Journey) -> journey_pb2.Journey:
    stub = suite.cluster.orchestration
    created = (await stub.CreateJourney(pb.CreateJourneyRequest(journey=journey),
                                        metadata=as_service(WS))).journey
    return (await stub.PublishJourney(pb.PublishJourneyRequest(name=created.name),
                                      metadata=as_service(WS))).journey


async def newsletter_by_hand(suite: Scheduled, members: int, **trigger: Any
                             ) -> tuple[journey_pb2.Journey, list[str]]:
    """The background scheduler stopped (the test runs the passes), a newsletter segment of
    ``members`` subscribers, and a published journey with this scheduled ``trigger``; returns
    the journey and the subscribers' emails."""
    await suite.stop_background_scheduler()
    emails = await newsletter_segment(suite, members)
    journey = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
        segment_id="newsletter", **trigger)))
    return journey, emails


def mailed(suite: Scheduled) -> Counter[str]:
    return Counter(rcpt for envelope in suite.cluster.mailbox.envelopes
                   for rcpt in envelope.rcpt_tos)


async def test_a_one_off_schedule_enrolls_every_member_once_page_by_page(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        emails = await newsletter_segment(suite, 5)
        at = START + timedelta(hours=1)
        journey = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", at=to_timestamp(at))))
        read = (await suite.cluster.orchestration.GetJourney(
            pb.GetJourneyRequest(name=journey.name), metadata=as_service(WS))).journey
        assert read.scheduled_trigger.at.ToDatetime(tzinfo=UTC) == at
        assert [o.fire_time for o in await suite.occurrences(journey)] == [at]

        # The service's own scheduler runs here; a replica's round shows nothing is due yet.
        suite.clock.set(at - timedelta(seconds=1))
        assert not await suite.replica().run_once()
        assert await enrollments(suite.cluster, WS, journey) == []

        suite.clock.set(at)

        async def done() -> Occurrence | None:
            [occurrence] = await suite.occurrences(journey)  # one-off: nothing planned after
            return occurrence if occurrence.state is OccurrenceState.DONE else None
        occurrence = await eventually(done)
        assert isinstance(occurrence, Occurrence)
        assert (occurrence.pages, occurrence.enrolled) == (3, 5)
        entered = await enrollments(suite.cluster, WS, journey)
        assert len(entered) == 5
        # The enrollments walk the journey like any other: one email per member.
        await eventually(lambda: set(mailed(suite)) == set(emails))
        assert set(mailed(suite).values()) == {1}
        assert {e.journey_version for e in entered} == {1}

        # Ordinary entries for analytics.
        async def counted() -> bool:
            counts = await journey_counts(suite.cluster, WS, journey.name)
            return counts.get(fact_pb2.FACT_TYPE_JOURNEY_ENTERED) == 5
        await eventually(counted)

        # Replaying the whole audience (as a worker whose lease expired would, had its page
        # been recorded) enrolls nobody again, though re-entry is ALWAYS and the first
        # enrollments have ended: the occurrence id guards each (occurrence, profile).
        await eventually(lambda: _all_ended(suite, journey))

        def rewind() -> None:
            with suite.app.db.transaction() as session:
                session.execute(update(schedule_occurrences).values(
                    state=OccurrenceState.RUNNING.value, page_token=""))
        await suite.app.db.run(rewind)
        replayed = await eventually(done)
        assert isinstance(replayed, Occurrence)
        assert (replayed.pages, replayed.enrolled, replayed.not_enrolled) == (6, 5, 5)
        assert len(await enrollments(suite.cluster, WS, journey)) == 5


async def _all_ended(suite: Scheduled, journey: journey_pb2.Journey) -> bool:
    found = await enrollments(suite.cluster, WS, journey)
    return bool(found) and all(e.state != 1 for e in found)  # 1: ENROLLMENT_STATE_ACTIVE


async def test_a_cron_schedule_fires_at_local_time_across_daylight_saving(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        journey, emails = await newsletter_by_hand(suite, 2, cron="0 9 * * *",
                                                   time_zone=NEW_YORK)
        est = datetime(2026, 3, 7, 14, 0, tzinfo=UTC)  # 09:00 before the change
        edt = datetime(2026, 3, 8, 13, 0, tzinfo=UTC)  # 09:00 after it
        assert [o.fire_time for o in await suite.occurrences(journey)] == [est]

        suite.clock.set(est)
        await suite.settle()
        assert len(await enrollments(suite.cluster, WS, journey)) == 2
        await eventually(lambda: _all_ended(suite, journey))
        first, following = await suite.occurrences(journey)
        assert first.state is OccurrenceState.DONE
        assert (following.fire_time, following.state) == (edt, OccurrenceState.PENDING)

        suite.clock.set(edt - timedelta(minutes=1))
        await suite.settle()
        assert len(await enrollments(suite.cluster, WS, journey)) == 2
        suite.clock.set(edt)
        await suite.settle()
        assert len(await enrollments(suite.cluster, WS, journey)) == 4
        await eventually(lambda: mailed(suite) == Counter({e: 2 for e in emails}))


async def test_a_crash_mid_audience_resumes_at_the_stored_page(backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        await newsletter_segment(suite, 5)
        journey = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", at=to_timestamp(START + timedelta(minutes=5)))))
        await suite.stop_background_scheduler()
        # The failure is injected into the identity client (a real identity answers every
        # call that is made): the second page's profile read fails, as if identity went away.
        audience = suite.worker.round.audience
        calls = 0

        class Failing(Delegating):
            async def traits(self, *args: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == 2:
                    raise RuntimeError("identity went away")
                return await super().traits(*args)

        crashing = suite.replica(Failing(audience))
        fresh = suite.replica()  # the restarted replica
        suite.clock.set(START + timedelta(minutes=5))
        assert await crashing.run_once()  # page 1 enrolled
        # Page 2 fails after listing, before anything is written: an unexpected error is
        # retried later (this occurrence only), not raised out of the pass.
        assert await crashing.run_once()
        [stopped] = await suite.occurrences(journey)
        assert (stopped.state, stopped.pages, stopped.enrolled, stopped.attempts) == (
            OccurrenceState.RUNNING, 1, 2, 1)
        assert "identity went away" in stopped.detail
        assert stopped.page_token  # the cursor of page 2 was kept
        assert len(await enrollments(suite.cluster, WS, journey)) == 2

        assert not await fresh.run_once()  # backing off: not claimed again yet
        suite.clock.advance(timedelta(seconds=1))
        while await fresh.run_once():
            pass
        [finished] = await suite.occurrences(journey)
        assert (finished.state, finished.pages, finished.enrolled) == (OccurrenceState.DONE, 3, 5)
        entered = await enrollments(suite.cluster, WS, journey)
        assert sorted(Counter(e.profile_id for e in entered).values()) == [1] * 5


async def test_paused_journeys_skip_their_occurrences_and_resume_without_backfill(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        journey, _ = await newsletter_by_hand(suite, 2, cron="0 * * * *")
        stub = suite.cluster.orchestration
        await stub.PauseJourney(pb.PauseJourneyRequest(name=journey.name),
                                metadata=as_service(WS))
        suite.clock.set(START + timedelta(hours=1))  # 13:00 comes due while paused
        await suite.settle()
        assert await enrollments(suite.cluster, WS, journey) == []
        suite.clock.set(START + timedelta(hours=2, minutes=30))  # 14:00 too, unseen
        await stub.ResumeJourney(pb.ResumeJourneyRequest(name=journey.name),
                                 metadata=as_service(WS))
        await suite.settle()
        assert await enrollments(suite.cluster, WS, journey) == []  # nothing made up
        states = {o.fire_time.hour: o.state for o in await suite.occurrences(journey)}
        assert states == {13: OccurrenceState.SKIPPED, 14: OccurrenceState.SKIPPED,
                          15: OccurrenceState.PENDING}
        suite.clock.set(START + timedelta(hours=3))
        await suite.settle()
        assert len(await enrollments(suite.cluster, WS, journey)) == 2

        await stub.ArchiveJourney(pb.ArchiveJourneyRequest(name=journey.name),
                                  metadata=as_service(WS))
        states = {o.fire_time.hour: o.state for o in await suite.occurrences(journey)}
        assert states[16] is OccurrenceState.CANCELLED
        suite.clock.set(START + timedelta(hours=5))
        await suite.settle()
        assert len(await enrollments(suite.cluster, WS, journey)) == 2


async def test_missed_occurrences_fire_the_latest_once(backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        journey, _ = await newsletter_by_hand(suite, 2, cron="0 * * * *")
        # As if the scheduler were down from 12:00 to 17:10.
        suite.clock.set(START + timedelta(hours=5, minutes=10))
        await suite.settle()
        found = await suite.occurrences(journey)
        assert [(o.fire_time.hour, o.state) for o in found] == [
            (13, OccurrenceState.MISSED), (17, OccurrenceState.DONE),
            (18, OccurrenceState.PENDING)]
        assert "4 occurrence(s) left out" in found[0].detail
        assert len(await enrollments(suite.cluster, WS, journey)) == 2


async def test_invalid_schedules_are_refused_with_field_violations(
        sqlite_backend: Backend) -> None:
    async with scheduled_suite(sqlite_backend) as suite:
        stub = suite.cluster.orchestration
        bad = weekly(journey_pb2.ScheduledTrigger(segment_id="newsletter", cron="0 25 * * *",
                                                  time_zone="Europe/Atlantis"))
        bad.nodes[0].send.content_key = ""  # a graph problem, reported alongside
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateJourney(pb.CreateJourneyRequest(journey=bad),
                                     metadata=as_service(WS))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = field_violations(rpc_status.from_call(caught.value))
        assert {"journey.scheduled_trigger.cron", "journey.scheduled_trigger.time_zone",
                "journey.nodes[0].send.content_key"} <= set(violations)

        past = weekly(journey_pb2.ScheduledTrigger(
            segment_id="", at=to_timestamp(START - timedelta(minutes=1))))
        created = (await stub.CreateJourney(pb.CreateJourneyRequest(journey=past),
                                            metadata=as_service(WS))).journey
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PublishJourney(pb.PublishJourneyRequest(name=created.name),
                                      metadata=as_service(WS))
        violations = field_violations(rpc_status.from_call(caught.value))
        assert {"scheduled_trigger.at", "scheduled_trigger.segment_id"} <= set(violations)

        # A start in year 9999 is a valid Timestamp, but stepping the cron expression from it
        # overflowed (INTERNAL at publish): a schedule's times lie in the shared sensible range.
        late = weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", cron="0 9 * * 1",
            start_time=to_timestamp(datetime(9999, 12, 31, tzinfo=UTC))))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateJourney(pb.CreateJourneyRequest(journey=late),
                                     metadata=as_service(WS))
        assert field_violations(rpc_status.from_call(caught.value)) == {
            "journey.scheduled_trigger.start_time": "must be between 1970-01-01 and 2200-01-01"}


def test_the_example_journey_file_maps_onto_the_proto_and_back() -> None:
    example = Path(__file__).parents[2] / "examples" / "journeys" / "weekly_newsletter.yaml"
    journey = journeyfile.load(example)
    assert journeyfile.problems(journey) == []
    graph = graph_from_proto(journey)
    assert graph.trigger is not None and graph.trigger.schedule is not None
    assert (graph.trigger.segment_id, graph.trigger.schedule.cron,
            graph.trigger.schedule.time_zone) == ("newsletter", "0 9 * * MON", "Europe/Berlin")
    # Stored as JSON and read back (as a published version is), then served as the proto.
    stored = JourneyGraph.from_dict(json.loads(json.dumps(graph.to_dict())))
    assert stored == graph
    served = journey_to_proto(Journey("ws", "j1", journey.display_name, JourneyState.DRAFT,
                                      stored, 0, 1, START, START))
    assert served.scheduled_trigger == journey.scheduled_trigger


async def test_identity_reads_many_profiles_in_one_call(sqlite_backend: Backend) -> None:
    async with scheduled_suite(sqlite_backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 2)
        members = await suite.identity.ListSegmentMembers(identity_pb.ListSegmentMembersRequest(
            parent="segments/newsletter"), metadata=as_service(WS))
        first, second = members.profile_ids
        reply = await suite.identity.BatchGetProfiles(identity_pb.BatchGetProfilesRequest(
            names=[f"profiles/{second}", "profiles/nobody", "people/x", f"profiles/{first}"]),
            metadata=as_service(WS))
        codes = [r.status.code for r in reply.results]
        assert codes == [code_pb2.OK, code_pb2.NOT_FOUND, code_pb2.INVALID_ARGUMENT, code_pb2.OK]
        assert [r.profile.profile_id for r in reply.results] == [second, "", "", first]
        assert reply.results[0].profile.traits["newsletter"] is True
        assert "names[2]" in field_violations(reply.results[2].status)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await suite.identity.BatchGetProfiles(identity_pb.BatchGetProfilesRequest(
                names=["profiles/x"] * 1001), metadata=as_service(WS))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- failures, races and replays (review findings) ----------------------------------------------


def test_segment_ids_follow_identitys_rule() -> None:
    for bad in ("news/letter", "News", "-news", "a" * 64):
        problems = {v.field: v.description
                    for v in validate_shape("x", _scheduled(Schedule(cron="0 9 * * *"),
                                                            segment_id=bad)).items}
        assert "lower-case letters" in problems["scheduled_trigger.segment_id"], bad
    segment = JourneyGraph(trigger=EventTrigger(kind=TriggerKind.SEGMENT, segment_id="a_b"))
    assert "segment_trigger.segment_id" in {v.field for v in validate_shape("x", segment).items}
    good = _scheduled(Schedule(cron="0 9 * * *"), segment_id="news-letter-2")
    assert not validate_shape("x", good).items


async def test_a_segment_id_identity_refuses_is_refused_at_create(
        sqlite_backend: Backend) -> None:
    async with scheduled_suite(sqlite_backend) as suite:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await suite.cluster.orchestration.CreateJourney(pb.CreateJourneyRequest(
                journey=weekly(journey_pb2.ScheduledTrigger(segment_id="news/letter",
                                                            cron="0 9 * * *"))),
                metadata=as_service(WS))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = field_violations(rpc_status.from_call(caught.value))
        assert "journey.scheduled_trigger.segment_id" in violations
        # Identity refuses the very same id.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await everyone_segment(suite, "news/letter")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _delete_segment(suite: Scheduled, segment_id: str) -> None:
    """Identity has no DeleteSegment RPC (yet): the row goes from identity's own database, which
    is what deleting it would do; ListSegmentMembers then answers NOT_FOUND for real."""
    def drop() -> None:
        with suite.identity_app.db.transaction() as session:
            c = identity_segments.c
            session.execute(delete(identity_segments).where(c.workspace_id == WS,
                                                            c.segment_id == segment_id))
    await suite.identity_app.db.run(drop)


async def test_a_deleted_segment_fails_its_occurrence_and_plans_the_next(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 2)
        await everyone_segment(suite, "doomed")
        hourly = "0 * * * *"
        # The doomed journey's occurrence is the earliest due: it is claimed first every pass.
        doomed = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="doomed", cron="30 12 * * *")))
        news = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", cron=hourly)))
        await _delete_segment(suite, "doomed")
        suite.clock.set(START + timedelta(hours=1))
        await suite.settle()
        failed, following = await suite.occurrences(doomed)
        assert failed.state is OccurrenceState.FAILED
        assert "NOT_FOUND" in failed.detail and "doomed" in failed.detail
        assert (following.state, following.fire_time) == (
            OccurrenceState.PENDING, datetime(2026, 3, 8, 12, 30, tzinfo=UTC))
        assert await enrollments(suite.cluster, WS, doomed) == []
        [done, _] = await suite.occurrences(news)
        assert done.state is OccurrenceState.DONE
        assert len(await enrollments(suite.cluster, WS, news)) == 2


async def test_an_unavailable_audience_backs_off_without_holding_up_the_others(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 2)
        await everyone_segment(suite, "flaky")
        flaky = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="flaky", at=to_timestamp(START + timedelta(minutes=1)))))
        news = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", at=to_timestamp(START + timedelta(minutes=2)))))
        real = suite.worker.round.audience
        # A real gRPC call to a port nobody listens on: UNAVAILABLE, for the flaky segment only.
        nobody = Audience(replace(real.settings, peers={
            **real.settings.peers, "identity": f"127.0.0.1:{free_port()}"}), timeout=2.0)
        down = True

        class Split:
            def _for(self, segment_id: str) -> Audience:
                return nobody if down and segment_id == "flaky" else real

            async def members(self, workspace_id: str, segment_id: str, *args: Any) -> Any:
                self.segment = segment_id
                return await self._for(segment_id).members(workspace_id, segment_id, *args)

            async def traits(self, *args: Any) -> Any:
                return await self._for(self.segment).traits(*args)

        worker = suite.replica(Split())
        suite.clock.set(START + timedelta(minutes=2))
        assert await worker.run_once()  # both claimed in one batch; flaky first
        [waiting] = await suite.occurrences(flaky)
        assert (waiting.state, waiting.attempts) == (OccurrenceState.PENDING, 1)
        assert "UNAVAILABLE" in waiting.detail
        # The other occurrence of the batch went on: its members are enrolled.
        assert len(await enrollments(suite.cluster, WS, news)) == 2

        async def lease_until() -> datetime:
            def read() -> datetime:
                with suite.app.db.transaction() as session:
                    value = session.execute(
                        schedule_occurrences.select().where(
                            schedule_occurrences.c.journey_id == flaky.journey_id)).one()
                    return value.lease_until  # type: ignore[no-any-return]
            return await suite.app.db.run(read)

        first_retry = await lease_until()
        assert first_retry == suite.clock.now() + timedelta(seconds=0.05)  # RETRY_BASE_SECONDS
        assert not await worker.run_once()  # not retried before its time
        suite.clock.set(first_retry)
        assert await worker.run_once()
        [waiting] = await suite.occurrences(flaky)
        assert waiting.attempts == 2
        assert await lease_until() == first_retry + timedelta(seconds=0.1)  # doubled

        down = False
        suite.clock.set(first_retry + timedelta(seconds=0.1))
        while await worker.run_once():
            pass
        [done] = await suite.occurrences(flaky)
        assert (done.state, done.attempts, done.enrolled) == (OccurrenceState.DONE, 0, 3)


def wait_for_click() -> journey_pb2.Journey:
    """scheduled -> wait up to an hour for `clicked` -> exit."""
    hour = duration_pb2.Duration(seconds=3600)
    return journey_pb2.Journey(
        display_name="Click", entry_node_id="wait", re_entry=journey_pb2.RE_ENTRY_POLICY_ALWAYS,
        scheduled_trigger=journey_pb2.ScheduledTrigger(
            segment_id="newsletter", at=to_timestamp(START + timedelta(minutes=5))),
        nodes=[journey_pb2.Node(id="wait", wait=journey_pb2.WaitNode(
                   event=journey_pb2.EventWait(event_name="clicked", timeout=hour,
                                               event_next_node_id="done",
                                               timeout_next_node_id="done"))),
               journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])


async def _rewind(suite: Scheduled) -> None:
    """As a worker whose lease expired would do, had the pages been recorded: start over."""
    def rewind() -> None:
        with suite.app.db.transaction() as session:
            session.execute(update(schedule_occurrences).values(
                state=OccurrenceState.RUNNING.value, page_token=""))
    await suite.app.db.run(rewind)


async def test_a_replayed_page_does_not_enroll_again_after_a_wait_for_event_woke(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 2)
        journey = await publish(suite, wait_for_click())
        suite.clock.set(START + timedelta(minutes=5))
        await suite.settle()
        # Both wait for the click before it is sent: one sent sooner would go by unseen.
        entered = await parked(suite.cluster, WS, journey, suite.clock, count=2)
        clicker = entered[0].profile_id
        reply = await suite.cluster.orchestration.HandleEvents(pb.HandleEventsRequest(
            events=[forwarded("click-1", clicker, "clicked")]), metadata=as_service(WS))
        assert [r.status.code for r in reply.results] == [0]

        async def woke() -> bool:
            found = {e.profile_id: e for e in await enrollments(suite.cluster, WS, journey)}
            return found[clicker].state != 1  # 1: ENROLLMENT_STATE_ACTIVE
        await eventually(woke)

        await _rewind(suite)
        await suite.settle()
        assert sorted(e.profile_id for e in await enrollments(suite.cluster, WS, journey)) == (
            sorted(e.profile_id for e in entered))


async def test_a_merge_between_listing_and_reading_enrolls_the_survivor_once(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        journey, emails = await newsletter_by_hand(
            suite, 2, at=to_timestamp(START + timedelta(minutes=5)))
        real = suite.worker.round.audience
        listed: list[str] = []

        class MergingInBetween:
            async def members(self, *args: Any) -> Any:
                page = await real.members(*args)
                listed.extend(page.profile_ids)
                # One event names both readers' emails: identity merges the two profiles.
                both = event_pb2.Event(
                    message_id="merge-1", type=event_pb2.EVENT_TYPE_IDENTIFY, source="crm",
                    identifiers=[event_pb2.Identifier(type="email", value=e) for e in emails])
                reply = await suite.identity.IngestEvents(identity_pb.IngestEventsRequest(
                    events=[both]), metadata=as_service(WS))
                assert reply.results[0].status.code == 0
                return page

            async def traits(self, *args: Any) -> Any:
                return await real.traits(*args)

        suite.clock.set(START + timedelta(minutes=5))
        worker = suite.replica(MergingInBetween())
        while await worker.run_once():
            pass
        assert len(listed) == 2
        survivors = await suite.identity.BatchGetProfiles(identity_pb.BatchGetProfilesRequest(
            names=[f"profiles/{p}" for p in listed]), metadata=as_service(WS))
        [survivor] = {r.profile.profile_id for r in survivors.results}
        entered = await enrollments(suite.cluster, WS, journey)
        assert [e.profile_id for e in entered] == [survivor]
        [occurrence] = await suite.occurrences(journey)
        assert (occurrence.enrolled, occurrence.not_enrolled) == (1, 1)


async def test_a_page_in_flight_when_the_journey_is_paused_enrolls_nobody(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        journey, _ = await newsletter_by_hand(
            suite, 2, at=to_timestamp(START + timedelta(minutes=5)))
        real = suite.worker.round.audience

        class PausedMeanwhile(Delegating):
            async def traits(self, *args: Any) -> Any:
                found = await super().traits(*args)
                await suite.cluster.orchestration.PauseJourney(
                    pb.PauseJourneyRequest(name=journey.name), metadata=as_service(WS))
                return found

        suite.clock.set(START + timedelta(minutes=5))
        assert await suite.replica(PausedMeanwhile(real)).run_once()
        assert await enrollments(suite.cluster, WS, journey) == []
        await suite.settle()
        [skipped] = await suite.occurrences(journey)
        assert skipped.state is OccurrenceState.SKIPPED
        assert await enrollments(suite.cluster, WS, journey) == []


async def test_a_lease_lost_mid_page_commits_nothing(backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        journey, _ = await newsletter_by_hand(
            suite, 2, at=to_timestamp(START + timedelta(minutes=5)))
        real = suite.worker.round.audience

        class TakenOver(Delegating):
            async def traits(self, *args: Any) -> Any:
                # While the page is read, the lease passes to another worker (as after expiry).
                def take_over() -> None:
                    with suite.app.db.transaction() as session:
                        session.execute(update(schedule_occurrences).values(
                            lease_token="another-worker"))
                await suite.app.db.run(take_over)
                return await super().traits(*args)

        suite.clock.set(START + timedelta(minutes=5))
        await suite.replica(TakenOver(real)).run_once()
        assert await enrollments(suite.cluster, WS, journey) == []
        [untouched] = await suite.occurrences(journey)
        assert (untouched.state, untouched.pages, untouched.page_token) == (
            OccurrenceState.PENDING, 0, "")


async def test_two_replicas_enroll_each_member_once(backend: Backend) -> None:
    if backend.kind != "postgresql":
        pytest.skip("row locks (SKIP LOCKED) between replicas: PostgreSQL")
    async with scheduled_suite(backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 5)
        journeys = [await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", at=to_timestamp(START + timedelta(minutes=minute)))))
            for minute in (1, 2, 3, 4)]
        suite.clock.set(START + timedelta(minutes=5))
        async def drain(worker: ScheduleWorker) -> None:
            while await worker.run_once():
                pass
        # Three replicas on one database, at once: each claims with SKIP LOCKED.
        await asyncio.gather(*(drain(suite.replica()) for _ in range(3)))
        for journey in journeys:
            entered = await enrollments(suite.cluster, WS, journey)
            assert sorted(Counter(e.profile_id for e in entered).values()) == [1] * 5
            [occurrence] = await suite.occurrences(journey)
            assert (occurrence.state, occurrence.enrolled) == (OccurrenceState.DONE, 5)


async def test_old_final_occurrences_are_swept_keeping_each_journeys_latest(
        sqlite_backend: Backend) -> None:
    async with scheduled_suite(sqlite_backend) as suite:
        journey, _ = await newsletter_by_hand(suite, 1, cron="0 * * * *")
        for hour in (1, 2, 3):
            suite.clock.set(START + timedelta(hours=hour))
            await suite.settle()
        assert [o.state for o in await suite.occurrences(journey)] == [
            OccurrenceState.DONE] * 3 + [OccurrenceState.PENDING]
        # 30 days (the default) after the first two finished, they go; the latest done stays.
        suite.clock.set(START + timedelta(days=30, hours=2, minutes=30))
        assert not await suite.replica().round.sweep()  # not a full batch
        kept = await suite.occurrences(journey)
        assert [(o.fire_time.hour, o.state) for o in kept] == [
            (15, OccurrenceState.DONE), (16, OccurrenceState.PENDING)]
