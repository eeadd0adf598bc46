"""ListScheduleOccurrences and GetScheduleOccurrence: operators see each firing of a scheduled
trigger, its state, its counts and why it ended as it did.

The occurrences are made by the real scheduler (see test_scheduled_trigger.py for the suite:
real identity, content, delivery and analytics, orchestration on a ManualClock).
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_status import rpc_status
from test_scheduled_trigger import (
    START,
    WS,
    Scheduled,
    _delete_segment,
    everyone_segment,
    newsletter_segment,
    publish,
    scheduled_suite,
    weekly,
)

from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo.orchestration.v1.schedule_occurrence_pb2 import ScheduleOccurrence
from cjo_orchestration.domain.names import occurrence_id, parse_occurrence_name
from cjo_platform.errors import InvalidArgument
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service

HOURLY = "0 * * * *"


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 7, hour, minute, tzinfo=UTC)


async def listed(suite: Scheduled, journey: journey_pb2.Journey, page_size: int = 0,
                 state: ScheduleOccurrence.State.ValueType = ScheduleOccurrence.STATE_UNSPECIFIED,
                 ) -> list[ScheduleOccurrence]:
    """Every occurrence of a journey, page after page."""
    found: list[ScheduleOccurrence] = []
    token = ""
    while True:
        reply = await suite.cluster.orchestration.ListScheduleOccurrences(
            pb.ListScheduleOccurrencesRequest(parent=journey.name, page_size=page_size,
                                              page_token=token, state=state),
            metadata=as_service(WS))
        assert page_size == 0 or len(reply.occurrences) <= page_size
        found.extend(reply.occurrences)
        token = reply.next_page_token
        if not token:
            return found


def summary(found: list[ScheduleOccurrence]) -> list[tuple[datetime, int, str, int, int]]:
    return [(o.fire_time.ToDatetime(tzinfo=UTC), o.journey_version,
             ScheduleOccurrence.State.Name(o.state), o.enrolled_count, o.not_enrolled_count)
            for o in found]


def refused(caught: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> dict[str, str]:
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return field_violations(rpc_status.from_call(caught.value))


async def test_finished_occurrences_are_listed_newest_first_with_their_counts(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 5)  # three pages of two
        newsletter = weekly(journey_pb2.ScheduledTrigger(segment_id="newsletter", cron=HOURLY))
        newsletter.re_entry = journey_pb2.RE_ENTRY_POLICY_NEVER  # the second firing enrolls none
        journey = await publish(suite, newsletter)
        [planned] = await listed(suite, journey)
        assert planned.state == ScheduleOccurrence.STATE_PENDING
        assert not planned.HasField("start_time") and not planned.HasField("finish_time")
        assert planned.create_time.ToDatetime(tzinfo=UTC) == START

        suite.clock.set(at(13, 5))
        await suite.settle()
        suite.clock.set(at(14, 5))
        await suite.settle()
        found = await listed(suite, journey)
        assert summary(found) == [
            (at(15), 1, "STATE_PENDING", 0, 0),
            (at(14), 1, "STATE_DONE", 0, 5),  # re-entry NEVER: all five listed, none enrolled
            (at(13), 1, "STATE_DONE", 5, 0)]
        first = found[2]
        assert first.name == f"{journey.name}/occurrences/v1-20260307T130000Z"
        assert (first.occurrence_id, first.journey_id) == ("v1-20260307T130000Z",
                                                           journey.journey_id)
        assert (first.page_count, first.attempts, first.detail) == (3, 0, "")
        assert first.start_time.ToDatetime(tzinfo=UTC) == at(13, 5)
        assert first.finish_time.ToDatetime(tzinfo=UTC) == at(13, 5)

        got = await suite.cluster.orchestration.GetScheduleOccurrence(
            pb.GetScheduleOccurrenceRequest(name=first.name), metadata=as_service(WS))
        assert got.occurrence == first


async def test_missed_and_failed_occurrences_show_their_state_and_why(backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 2)
        await everyone_segment(suite, "doomed")
        doomed = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="doomed", cron="30 12 * * *")))
        news = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", cron=HOURLY)))
        await _delete_segment(suite, "doomed")
        # As if no scheduler ran from 12:00 to 17:10.
        suite.clock.set(at(17, 10))
        await suite.settle()

        following, failed = await listed(suite, doomed)
        assert ScheduleOccurrence.State.Name(failed.state) == "STATE_FAILED"
        assert "NOT_FOUND" in failed.detail and "doomed" in failed.detail
        assert failed.finish_time.ToDatetime(tzinfo=UTC) == at(17, 10)
        assert failed.enrolled_count == 0 and not failed.HasField("start_time")
        assert following.state == ScheduleOccurrence.STATE_PENDING

        assert summary(await listed(suite, news)) == [
            (at(18), 1, "STATE_PENDING", 0, 0),
            (at(17), 1, "STATE_DONE", 2, 0),
            (at(13), 1, "STATE_MISSED", 0, 0)]
        [missed] = await listed(suite, news, state=ScheduleOccurrence.STATE_MISSED)
        assert "4 occurrence(s) left out" in missed.detail
        assert await listed(suite, news, state=ScheduleOccurrence.STATE_FAILED) == []


async def test_pages_follow_fire_time_then_version_and_other_workspaces_see_nothing(
        backend: Backend) -> None:
    async with scheduled_suite(backend) as suite:
        await suite.stop_background_scheduler()
        await newsletter_segment(suite, 0)  # an empty audience: each firing is DONE at once
        stub = suite.cluster.orchestration
        journey = await publish(suite, weekly(journey_pb2.ScheduledTrigger(
            segment_id="newsletter", cron=HOURLY)))
        for hour in (13, 14, 15, 16):
            suite.clock.set(at(hour))
            await suite.settle()
        # Version 2 at 16:30 cancels version 1's 17:00 and plans its own 17:00: same fire time.
        suite.clock.set(at(16, 30))
        await stub.UpdateJourney(pb.UpdateJourneyRequest(
            journey=journey_pb2.Journey(name=journey.name, display_name="Newsletter v2"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"])),
            metadata=as_service(WS))
        await stub.PublishJourney(pb.PublishJourneyRequest(name=journey.name),
                                  metadata=as_service(WS))
        expected = [(at(17), 2, "STATE_PENDING", 0, 0), (at(17), 1, "STATE_CANCELLED", 0, 0),
                    *[(at(hour), 1, "STATE_DONE", 0, 0) for hour in (16, 15, 14, 13)]]
        whole = await listed(suite, journey)
        assert summary(whole) == expected
        for size in (1, 4):  # a page boundary between the two 17:00 occurrences, and after
            assert await listed(suite, journey, page_size=size) == whole
        assert summary(await listed(suite, journey, page_size=1,
                                    state=ScheduleOccurrence.STATE_DONE)) == expected[2:]

        # Bad input names its field; an unknown journey is NOT_FOUND.
        first = await stub.ListScheduleOccurrences(pb.ListScheduleOccurrencesRequest(
            parent=journey.name, page_size=2), metadata=as_service(WS))
        bad_requests = [
            (pb.ListScheduleOccurrencesRequest(parent="journeys"), "parent"),
            (pb.ListScheduleOccurrencesRequest(parent=f"{journey.name}/occurrences"), "parent"),
            (pb.ListScheduleOccurrencesRequest(parent=journey.name, page_token="nonsense"),
             "page_token"),
            # A token is tied to the listing's filter.
            (pb.ListScheduleOccurrencesRequest(parent=journey.name,
                                               page_token=first.next_page_token,
                                               state=ScheduleOccurrence.STATE_DONE),
             "page_token"),
            (pb.ListScheduleOccurrencesRequest(parent=journey.name, page_size=-1), "page_size"),
            (pb.ListScheduleOccurrencesRequest(parent=journey.name, state=99), "state"),
        ]
        for request, field in bad_requests:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListScheduleOccurrences(request, metadata=as_service(WS))
            assert field in refused(caught), request
        for name in ["journeys/j1/occurrences/1-20260307T130000Z",
                     "journeys/j1/occurrences/v1-20261307T130000Z",  # month 13
                     "journeys/j1/enrollments/v1-20260307T130000Z"]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetScheduleOccurrence(pb.GetScheduleOccurrenceRequest(name=name),
                                                 metadata=as_service(WS))
            assert "name" in refused(caught), name

        other = as_service("ws-other")
        hidden_calls = [
            stub.ListScheduleOccurrences(pb.ListScheduleOccurrencesRequest(
                parent="journeys/nobody"), metadata=as_service(WS)),
            stub.GetScheduleOccurrence(pb.GetScheduleOccurrenceRequest(
                name=f"{journey.name}/occurrences/v9-20260307T130000Z"),
                metadata=as_service(WS)),
            stub.ListScheduleOccurrences(pb.ListScheduleOccurrencesRequest(
                parent=journey.name), metadata=other),
            stub.GetScheduleOccurrence(pb.GetScheduleOccurrenceRequest(
                name=whole[0].name), metadata=other),
        ]
        for call in hidden_calls:
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await call
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


def test_occurrence_ids_round_trip_to_the_microsecond() -> None:
    for fire_time in (at(13), at(13).replace(microsecond=250)):
        name = f"journeys/j1/occurrences/{occurrence_id(12, fire_time)}"
        assert parse_occurrence_name(name) == ("j1", 12, fire_time)
    assert occurrence_id(3, at(13).replace(microsecond=250)) == "v3-20260307T130000.000250Z"
    with pytest.raises(InvalidArgument):
        parse_occurrence_name("journeys/j1/occurrences/v0-20260307T130000Z")
