"""OrchestrationService over real gRPC, with analytics, content and delivery running in this
process (see orchestration_support), on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_status import rpc_status
from orchestration_support import (
    create_content,
    enrollments,
    events_applied,
    failed_attempts,
    forwarded,
    journey_counts,
    messages,
    published,
    running,
    send_then_exit,
)

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_platform.rpc.status import error_reason, field_violations
from support import Backend, as_service, eventually

COMPLETED = enrollment_pb2.ENROLLMENT_STATE_COMPLETED
FAILED = enrollment_pb2.ENROLLMENT_STATE_FAILED
ACTIVE = enrollment_pb2.ENROLLMENT_STATE_ACTIVE
SUCCEEDED = enrollment_pb2.STEP_OUTCOME_SUCCEEDED


async def test_a_matching_event_runs_the_journey_once(backend: Backend) -> None:
    async with running(backend) as cluster:
        stub = cluster.orchestration
        await create_content(cluster, "ws-a", "cart", "Hello {{ profile.name }}",
                             "<p>You left {{ event.sku }} in your cart.</p>")
        journey = await published(cluster, "ws-a", send_then_exit("cart"))
        assert (journey.state, journey.published_version) == (
            journey_pb2.JOURNEY_STATE_ACTIVE, 1)

        event = forwarded("ev-1", "ada", properties={"sku": "A-1"})
        reply = await stub.HandleEvents(pb.HandleEventsRequest(events=[event]),
                                        metadata=as_service("ws-a"))
        assert [(r.status.code, r.duplicate) for r in reply.results] == [(0, False)]

        async def completed() -> list[enrollment_pb2.Enrollment] | None:
            found = await enrollments(cluster, "ws-a", journey)
            return found if found and found[0].state == COMPLETED else None

        [enrollment] = await eventually(completed)  # type: ignore[misc]
        assert (enrollment.profile_id, enrollment.journey_version) == ("ada", 1)
        assert enrollment.current_node_id == ""

        got = (await stub.GetEnrollment(pb.GetEnrollmentRequest(name=enrollment.name),
                                        metadata=as_service("ws-a"))).enrollment
        assert [(s.node_id, s.visit, s.outcome) for s in got.steps] == [
            ("remind", 0, SUCCEEDED), ("done", 0, SUCCEEDED)]

        [message] = await messages(cluster, "ws-a", journey.journey_id)
        assert message.idempotency_key == f"{enrollment.enrollment_id}:remind:0"
        assert message.recipient.address == "ada@example.com"
        assert message.enrollment_id == enrollment.enrollment_id
        assert message.content.email.subject == "Hello Ada"
        assert "You left A-1 in your cart." in message.content.email.html
        assert got.steps[0].detail == message.message_id
        if "delivery" in cluster.real:  # the real delivery hands the email to the SMTP server
            await eventually(lambda: cluster.mailbox.envelopes)
            assert cluster.mailbox.envelopes[0].rcpt_tos == ["ada@example.com"]

        def counted(counts: dict[int, int]) -> bool:
            return (counts.get(fact_pb2.FACT_TYPE_JOURNEY_ENTERED) == 1
                    and counts.get(fact_pb2.FACT_TYPE_MESSAGE_REQUESTED) == 1
                    and counts.get(fact_pb2.FACT_TYPE_JOURNEY_EXITED) == 1)

        async def facts() -> bool:
            return counted(await journey_counts(cluster, "ws-a", journey.name))

        await eventually(facts)

        # The same event again (identity redelivering) is a duplicate and enrolls nobody.
        again = await stub.HandleEvents(pb.HandleEventsRequest(events=[event]),
                                        metadata=as_service("ws-a"))
        assert again.results[0].duplicate
        # Two events of one profile in one batch enroll it once.
        pair = await stub.HandleEvents(pb.HandleEventsRequest(events=[
            forwarded("ev-2", "bob"), forwarded("ev-3", "bob")]), metadata=as_service("ws-a"))
        assert [r.duplicate for r in pair.results] == [False, False]

        async def bob_done() -> bool:
            found = await enrollments(cluster, "ws-a", journey, profile_id="bob")
            return bool(found) and all(e.state == COMPLETED for e in found)

        await eventually(bob_done)
        await events_applied(cluster)  # a wrongful second enrollment would exist by now
        assert [e.profile_id for e in await enrollments(cluster, "ws-a", journey)] == [
            "bob", "ada"]  # newest first
        first_page = await stub.ListEnrollments(pb.ListEnrollmentsRequest(
            parent=journey.name, page_size=1), metadata=as_service("ws-a"))
        second_page = await stub.ListEnrollments(pb.ListEnrollmentsRequest(
            parent=journey.name, page_size=1, page_token=first_page.next_page_token),
            metadata=as_service("ws-a"))
        assert [e.profile_id for e in first_page.enrollments] == ["bob"]
        assert [e.profile_id for e in second_page.enrollments] == ["ada"]
        assert second_page.next_page_token == ""
        assert len(second_page.enrollments[0].steps) == 2
        with pytest.raises(grpc.aio.AioRpcError) as other_filter:
            await stub.ListEnrollments(pb.ListEnrollmentsRequest(
                parent=journey.name, profile_id="ada", page_token=first_page.next_page_token),
                metadata=as_service("ws-a"))
        assert field_violations(rpc_status.from_call(other_filter.value)) == {
            "page_token": "belongs to a listing with other filters"}
        assert len(await messages(cluster, "ws-a", journey.journey_id)) == 2

        async def two_entered() -> bool:
            counts = await journey_counts(cluster, "ws-a", journey.name)
            return counts.get(fact_pb2.FACT_TYPE_JOURNEY_ENTERED) == 2

        await eventually(two_entered)


async def test_a_profile_without_an_email_fails_with_a_recorded_step(backend: Backend) -> None:
    async with running(backend) as cluster:
        await create_content(cluster, "ws-a", "cart", "Hi", "<p>Hi</p>")
        journey = await published(cluster, "ws-a", send_then_exit("cart"))
        # Unknown content is refused when publishing, with the node's field named.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await published(cluster, "ws-a", send_then_exit("no-such-item", "viewed"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nodes[0].send.content_key: names no content item: 'no-such-item'" in (
            refused.value.details() or "")
        await cluster.orchestration.HandleEvents(pb.HandleEventsRequest(events=[
            forwarded("ev-1", "anon", traits={"name": "Anon"}),
        ]), metadata=as_service("ws-a"))

        async def ended(j: journey_pb2.Journey) -> list[enrollment_pb2.Enrollment] | None:
            found = await enrollments(cluster, "ws-a", j)
            return found if found and found[0].state != ACTIVE else None

        [failed] = await eventually(lambda: ended(journey))  # type: ignore[misc]
        assert failed.state == FAILED
        [step] = failed.steps
        assert (step.node_id, step.outcome) == ("remind", enrollment_pb2.STEP_OUTCOME_FAILED)
        assert "email" in step.detail
        assert failed.exit_reason == "failed"
        assert await messages(cluster, "ws-a", journey.journey_id) == []

        async def exited() -> bool:
            counts = await journey_counts(cluster, "ws-a", journey.name)
            return counts.get(fact_pb2.FACT_TYPE_JOURNEY_EXITED) == 1

        await eventually(exited)


async def test_content_down_at_first_is_retried_and_sends_once(backend: Backend) -> None:
    async with running(backend, content_gate=True) as cluster:
        gate = cluster.content_gate
        assert gate is not None
        await create_content(cluster, "ws-a", "cart", "Hello {{ profile.name }}", "<p>x</p>")
        journey = await published(cluster, "ws-a", send_then_exit("cart"))
        await cluster.orchestration.HandleEvents(pb.HandleEventsRequest(events=[
            forwarded("ev-1", "ada")]), metadata=as_service("ws-a"))

        [waiting] = await eventually(lambda: enrollments(cluster, "ws-a", journey))  # type: ignore[misc]
        await failed_attempts(cluster, waiting.enrollment_id, at_least=3)
        [waiting] = await enrollments(cluster, "ws-a", journey)
        assert (waiting.state, waiting.current_node_id, list(waiting.steps)) == (
            ACTIVE, "remind", [])
        # Another matching event while the profile is enrolled does not enroll it again.
        await cluster.orchestration.HandleEvents(pb.HandleEventsRequest(events=[
            forwarded("ev-2", "ada")]), metadata=as_service("ws-a"))

        await gate.open()

        async def completed() -> bool:
            found = await enrollments(cluster, "ws-a", journey)
            return bool(found) and found[0].state == COMPLETED

        await eventually(completed, timeout=20)
        [done] = await enrollments(cluster, "ws-a", journey)
        assert done.enrollment_id == waiting.enrollment_id
        [message] = await messages(cluster, "ws-a", journey.journey_id)
        assert message.idempotency_key == f"{done.enrollment_id}:remind:0"
        assert message.content.email.subject == "Hello Ada"


async def test_publish_reports_every_problem(sqlite_backend: Backend) -> None:
    async with running(sqlite_backend) as cluster:
        stub = cluster.orchestration
        draft = journey_pb2.Journey(display_name="Broken", entry_node_id="start", nodes=[
            journey_pb2.Node(id="start", send=journey_pb2.SendNode(
                content_key="a", channel=common_pb2.CHANNEL_EMAIL, next_node_id="nowhere")),
            journey_pb2.Node(id="loop1", send=journey_pb2.SendNode(
                content_key="a", channel=common_pb2.CHANNEL_EMAIL, next_node_id="loop2")),
            journey_pb2.Node(id="loop2", send=journey_pb2.SendNode(
                content_key="a", channel=common_pb2.CHANNEL_EMAIL, next_node_id="loop1")),
        ])
        created = (await stub.CreateJourney(pb.CreateJourneyRequest(journey=draft),
                                            metadata=as_service("ws-a"))).journey
        assert created.state == journey_pb2.JOURNEY_STATE_DRAFT
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PublishJourney(pb.PublishJourneyRequest(name=created.name),
                                      metadata=as_service("ws-a"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(refused.value)
        assert error_reason(status) == "JOURNEY_NOT_PUBLISHABLE"
        assert field_violations(status) == {
            "event_trigger": "is required: a journey needs a trigger to enroll anyone",
            "nodes[0].send.next_node_id": "names no node: 'nowhere'",
            "nodes[1]": "node 'loop1' cannot be reached from the entry node",
            "nodes[2]": "node 'loop2' cannot be reached from the entry node",
            "nodes[2].send.next_node_id": "closes a cycle without a wait: loop1 -> loop2 -> loop1",
            # Content said it has no item "a" (one violation per send node naming it).
            "nodes[0].send.content_key": "names no content item: 'a'",
            "nodes[1].send.content_key": "names no content item: 'a'",
            "nodes[2].send.content_key": "names no content item: 'a'",
        }
        again = (await stub.GetJourney(pb.GetJourneyRequest(name=created.name),
                                       metadata=as_service("ws-a"))).journey
        assert (again.state, again.published_version) == (journey_pb2.JOURNEY_STATE_DRAFT, 0)

        # A malformed draft is refused before it is stored, naming the field in the request.
        bad = journey_pb2.Journey(
            event_trigger=journey_pb2.EventTrigger(event_name="cart_updated",
                                                   filter="event.value >"),
            nodes=[journey_pb2.Node(id="x", send=journey_pb2.SendNode(
                content_key="a", channel=common_pb2.CHANNEL_SMS)), journey_pb2.Node(id="x")])
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await stub.CreateJourney(pb.CreateJourneyRequest(journey=bad),
                                     metadata=as_service("ws-a"))
        assert field_violations(rpc_status.from_call(malformed.value)) == {
            "journey.event_trigger.filter": "line 1, column 14: Syntax error: mismatched "
                                            "input '<EOF>' expecting {'[', '{', '(', '.', '-', "
                                            "'!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, "
                                            "NUM_UINT, STRING, BYTES, IDENTIFIER}",
            "journey.nodes[1].id": "duplicates nodes[0].id 'x'",
            "journey.nodes[1]": "must have a kind: send, wait, branch, split, update_profile, "
                                "decide or exit",
        }


async def test_editing_archiving_and_idempotent_creation(sqlite_backend: Backend) -> None:
    async with running(sqlite_backend) as cluster:
        stub = cluster.orchestration
        ws = as_service("ws-a")
        await create_content(cluster, "ws-a", "cart", "Hi", "<p>Hi</p>")
        first = (await stub.CreateJourney(pb.CreateJourneyRequest(
            journey=send_then_exit("cart"), request_id="create-1"), metadata=ws)).journey
        repeat = (await stub.CreateJourney(pb.CreateJourneyRequest(
            journey=send_then_exit("cart"), request_id="create-1"), metadata=ws)).journey
        assert repeat.journey_id == first.journey_id

        active = (await stub.PublishJourney(pb.PublishJourneyRequest(name=first.name),
                                            metadata=ws)).journey
        # Editing an active journey changes its draft; the published version stays.
        renamed = (await stub.UpdateJourney(pb.UpdateJourneyRequest(
            journey=journey_pb2.Journey(name=first.name, display_name="Renamed",
                                        etag=active.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"])), metadata=ws)).journey
        assert (renamed.display_name, renamed.state, renamed.published_version) == (
            "Renamed", journey_pb2.JOURNEY_STATE_ACTIVE, 1)
        assert list(renamed.nodes) == list(first.nodes)

        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await stub.UpdateJourney(pb.UpdateJourneyRequest(
                journey=journey_pb2.Journey(name=first.name, display_name="Again",
                                            etag=active.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"])), metadata=ws)
        assert stale.value.code() == grpc.StatusCode.ABORTED
        with pytest.raises(grpc.aio.AioRpcError) as bad_mask:
            await stub.UpdateJourney(pb.UpdateJourneyRequest(
                journey=journey_pb2.Journey(name=first.name),
                update_mask=field_mask_pb2.FieldMask(paths=["state"])), metadata=ws)
        assert "update_mask.paths[0]" in field_violations(rpc_status.from_call(bad_mask.value))

        archived = (await stub.ArchiveJourney(pb.ArchiveJourneyRequest(name=first.name),
                                              metadata=ws)).journey
        assert archived.state == journey_pb2.JOURNEY_STATE_ARCHIVED
        with pytest.raises(grpc.aio.AioRpcError) as frozen:
            await stub.UpdateJourney(pb.UpdateJourneyRequest(
                journey=journey_pb2.Journey(name=first.name, display_name="Nope"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"])), metadata=ws)
        assert frozen.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as republish:
            await stub.PublishJourney(pb.PublishJourneyRequest(name=first.name), metadata=ws)
        assert republish.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # Archived journeys enroll nobody.
        await stub.HandleEvents(pb.HandleEventsRequest(events=[forwarded("ev-1", "ada")]),
                                metadata=ws)
        await events_applied(cluster)
        assert await enrollments(cluster, "ws-a", first) == []

        # Pagination, oldest first.
        for index in range(3):
            await stub.CreateJourney(pb.CreateJourneyRequest(
                journey=journey_pb2.Journey(display_name=f"j{index}")), metadata=ws)
        names: list[str] = []
        token = ""
        while True:
            page = await stub.ListJourneys(pb.ListJourneysRequest(page_size=2, page_token=token),
                                           metadata=ws)
            names.extend(j.display_name for j in page.journeys)
            token = page.next_page_token
            if not token:
                break
        assert names == ["Renamed", "j0", "j1", "j2"]


async def test_workspaces_are_isolated(sqlite_backend: Backend) -> None:
    async with running(sqlite_backend) as cluster:
        stub = cluster.orchestration
        await create_content(cluster, "ws-a", "cart", "Hi", "<p>Hi</p>")
        journey = await published(cluster, "ws-a", send_then_exit("cart"))
        await stub.HandleEvents(pb.HandleEventsRequest(events=[forwarded("ev-1", "ada")]),
                                metadata=as_service("ws-a"))
        [enrollment] = await eventually(lambda: enrollments(cluster, "ws-a", journey))  # type: ignore[misc]

        other = as_service("ws-b")
        calls = [
            stub.GetJourney(pb.GetJourneyRequest(name=journey.name), metadata=other),
            stub.UpdateJourney(pb.UpdateJourneyRequest(
                journey=journey_pb2.Journey(name=journey.name, display_name="Mine"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"])), metadata=other),
            stub.PublishJourney(pb.PublishJourneyRequest(name=journey.name), metadata=other),
            stub.ArchiveJourney(pb.ArchiveJourneyRequest(name=journey.name), metadata=other),
            stub.GetEnrollment(pb.GetEnrollmentRequest(name=enrollment.name), metadata=other),
            stub.ListEnrollments(pb.ListEnrollmentsRequest(parent=journey.name), metadata=other),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await call
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        assert list((await stub.ListJourneys(pb.ListJourneysRequest(), metadata=other)).journeys
                    ) == []

        # The same event id in another workspace is another event, and triggers nothing here.
        reply = await stub.HandleEvents(pb.HandleEventsRequest(events=[
            forwarded("ev-1", "eve")]), metadata=other)
        assert not reply.results[0].duplicate
        await events_applied(cluster)
        assert [e.profile_id for e in await enrollments(cluster, "ws-a", journey)] == ["ada"]
        mine = (await stub.GetJourney(pb.GetJourneyRequest(name=journey.name),
                                      metadata=as_service("ws-a"))).journey
        assert mine.display_name == "Cart reminder"


async def test_a_persons_enrollments_in_every_journey_in_one_listing(
        sqlite_backend: Backend) -> None:
    # AIP-159: parent journeys/- with a profile lists that person's enrollments across the
    # workspace's journeys (the console's profile page: one call, not one per journey).
    async with running(sqlite_backend) as cluster:
        stub = cluster.orchestration
        for workspace in ("ws-a", "ws-b"):
            await create_content(cluster, workspace, "cart", "Hi", "<p>Hi</p>")
        first = await published(cluster, "ws-a", send_then_exit("cart", display_name="One"))
        second = await published(cluster, "ws-a", send_then_exit("cart", display_name="Two"))
        other = await published(cluster, "ws-b", send_then_exit("cart", display_name="B"))
        for workspace, event_id, profile in (("ws-a", "ev-1", "ada"), ("ws-a", "ev-2", "bob"),
                                             ("ws-b", "ev-1", "ada")):
            await stub.HandleEvents(pb.HandleEventsRequest(events=[
                forwarded(event_id, profile)]), metadata=as_service(workspace))

        async def entered() -> bool:
            found = [*await enrollments(cluster, "ws-a", first),
                     *await enrollments(cluster, "ws-a", second),
                     *await enrollments(cluster, "ws-b", other)]
            return len(found) == 5 and all(e.steps for e in found)

        await eventually(entered)

        async def listing(workspace: str, profile: str) -> list[tuple[str, str]]:
            found: list[tuple[str, str]] = []
            token = ""
            while True:
                page = await stub.ListEnrollments(pb.ListEnrollmentsRequest(
                    parent="journeys/-", profile_id=profile, page_size=1, page_token=token),
                    metadata=as_service(workspace))
                found.extend((e.journey_id, e.profile_id) for e in page.enrollments)
                assert all(e.steps for e in page.enrollments)
                token = page.next_page_token
                if not token:
                    return found

        assert sorted(await listing("ws-a", "ada")) == sorted([
            (first.journey_id, "ada"), (second.journey_id, "ada")])
        assert await listing("ws-b", "ada") == [(other.journey_id, "ada")]
        assert await listing("ws-b", "bob") == []
        with pytest.raises(grpc.aio.AioRpcError) as no_profile:
            await stub.ListEnrollments(pb.ListEnrollmentsRequest(parent="journeys/-"),
                                       metadata=as_service("ws-a"))
        assert field_violations(rpc_status.from_call(no_profile.value)) == {
            "profile_id": "is required with parent journeys/- (every journey)"}


async def test_handle_events_checks_each_item_and_the_caller(sqlite_backend: Backend) -> None:
    async with running(sqlite_backend) as cluster:
        stub = cluster.orchestration
        reply = await stub.HandleEvents(pb.HandleEventsRequest(events=[
            forwarded("ev-1", "ada"), forwarded("", "bob"), forwarded("ev-3", ""),
            forwarded("ev-1", "ada")]), metadata=as_service("ws-a"))
        assert [r.status.code for r in reply.results] == [0, 3, 3, 0]
        assert [r.duplicate for r in reply.results] == [False, False, False, True]
        assert field_violations(reply.results[1].status) == {"events[1].event_id": "is required"}
        assert field_violations(reply.results[2].status) == {
            "events[2].profile_id": "is required"}

        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.HandleEvents(pb.HandleEventsRequest(), metadata=as_service("ws-a"))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.HandleEvents(pb.HandleEventsRequest(events=[forwarded("e", "p")]))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as bad_name:
            await stub.GetEnrollment(pb.GetEnrollmentRequest(name="journeys/j1"),
                                     metadata=as_service("ws-a"))
        assert field_violations(rpc_status.from_call(bad_name.value)) == {
            "name": "must be journeys/{journey_id}/enrollments/{enrollment_id}"}
