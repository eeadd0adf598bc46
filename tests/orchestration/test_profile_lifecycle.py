"""Erasures and merges reach orchestration and delivery.

Real identity, content, delivery (with an SMTP server) and analytics run in-process; orchestration
runs on a ManualClock so a test moves it past a journey's wait. Identity forwards
`profile_deleted` and `profile_merged` through its outbox; orchestration ends or re-keys the
enrollments and forwards erasures to delivery's EraseProfiles through its own outbox.

"Nothing was sent" is never waited out: each test enrolls a control person in the same journey,
moves the clock past the wait, and asserts once the control's email has arrived (the step worker
runs due enrollments earliest first in one pass, so the erased or converted person's turn, had it
come, came with the control's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from aiosmtpd.controller import Controller
from google.protobuf import duration_pb2
from orchestration_support import (
    ENGINE_ENV,
    Cluster,
    _start_content,
    create_content,
    enrollments,
    parked,
)
from sqlalchemy import select

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import message_pb2, policy_pb2
from cjo.identity.v1 import event_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.identity.v1 import identity_service_pb2_grpc as identity_grpc
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_analytics.bootstrap import build as build_analytics
from cjo_delivery.adapters.tables import inbox_messages as delivery_inbox
from cjo_delivery.adapters.tables import messages as delivery_messages
from cjo_delivery.bootstrap import build as build_delivery
from cjo_identity.bootstrap import build as build_identity
from cjo_orchestration.adapters.tables import enrollments as enrollment_table
from cjo_orchestration.adapters.tables import inbox as inbox_table
from cjo_orchestration.adapters.tables import steps as step_table
from cjo_orchestration.api.convert import graph_from_proto
from cjo_orchestration.bootstrap import build as build_orchestration
from cjo_orchestration.domain.enrollment import Enrollment, EnrollmentState
from cjo_orchestration.domain.entry import InboxEvent
from cjo_orchestration.domain.events import apply_events
from cjo_orchestration.domain.journeys import JourneyGraph
from cjo_orchestration.domain.lifecycle import merge_enrollments, resolve_profile
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db import Database
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.server import ServiceApp
from support import (
    Backend,
    as_service,
    counted_events,
    eventually,
    free_port,
    segment_backfilled,
    serving,
    settings_for,
)

WS = "ws-lifecycle"
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
ACTIVE = enrollment_pb2.ENROLLMENT_STATE_ACTIVE
EXITED = enrollment_pb2.ENROLLMENT_STATE_EXITED


@dataclass
class Suite:
    cluster: Cluster
    clock: ManualClock
    identity: Any
    orchestration_app: ServiceApp
    delivery_app: ServiceApp
    journey: journey_pb2.Journey

    @property
    def orchestration(self) -> Any:
        return self.cluster.orchestration

    @property
    def delivery(self) -> Any:
        return self.cluster.stub("delivery")

    def mailed_to(self) -> list[str]:
        return [rcpt for envelope in self.cluster.mailbox.envelopes
                for rcpt in envelope.rcpt_tos]


def cart_journey() -> journey_pb2.Journey:
    """cart_updated -> wait 1 h -> email -> exit; exit on order_completed."""
    wait = duration_pb2.Duration()
    wait.FromTimedelta(timedelta(hours=1))
    n = journey_pb2.Node
    return journey_pb2.Journey(
        display_name="Cart abandonment",
        event_trigger=journey_pb2.EventTrigger(event_name="cart_updated"),
        exit_criteria=[journey_pb2.ExitCriterion(event_name="order_completed")],
        entry_node_id="wait",
        nodes=[n(id="wait", wait=journey_pb2.WaitNode(duration=wait, next_node_id="email")),
               n(id="email", send=journey_pb2.SendNode(
                   content_key="cart", channel=common_pb2.CHANNEL_EMAIL, next_node_id="done")),
               n(id="done", exit=journey_pb2.ExitNode())])


@asynccontextmanager
async def lifecycle_suite(backend: Backend) -> AsyncIterator[Suite]:
    clock = ManualClock(T0)
    async with AsyncExitStack() as stack:
        cluster = Cluster(backend, stack)
        cluster.targets["analytics"] = await stack.enter_async_context(
            serving(build_analytics(settings_for("analytics", backend), Env({}))))
        cluster.targets["content"] = await stack.enter_async_context(_start_content(cluster))
        smtp_port = free_port()
        smtp = Controller(cluster.mailbox, hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        stack.callback(smtp.stop)
        delivery_app = build_delivery(
            settings_for("delivery", backend, CJO_ANALYTICS_TARGET=cluster.targets["analytics"]),
            # No consent checks: consent is identity's and delivery's to test.
            Env({"CJO_SMTP_HOST": "127.0.0.1", "CJO_SMTP_PORT": str(smtp_port),
                 "CJO_DELIVERY_POLL_SECONDS": "0.05", "CJO_DELIVERY_CHECK_CONSENT": "false"}))
        cluster.targets["delivery"] = await stack.enter_async_context(serving(delivery_app))
        orchestration_port = free_port()
        cluster.targets["identity"] = await stack.enter_async_context(serving(build_identity(
            settings_for("identity", backend,
                         CJO_ORCHESTRATION_TARGET=f"127.0.0.1:{orchestration_port}"), Env({}))))
        orchestration_app = build_orchestration(
            settings_for("orchestration", backend, CJO_ORCHESTRATION_PORT=str(orchestration_port),
                         **{f"CJO_{name.upper()}_TARGET": target
                            for name, target in cluster.targets.items()}),
            Env(ENGINE_ENV), clock)
        cluster.targets["orchestration"] = await stack.enter_async_context(
            serving(orchestration_app))
        channel = grpc.aio.insecure_channel(cluster.targets["identity"])
        stack.push_async_callback(channel.close)
        try:
            await create_content(cluster, WS, "cart", "Your cart, {{ profile.email }}",
                                 "<p>Still thinking it over?</p>")
            created = (await cluster.orchestration.CreateJourney(
                pb.CreateJourneyRequest(journey=cart_journey()), metadata=as_service(WS))).journey
            journey = (await cluster.orchestration.PublishJourney(
                pb.PublishJourneyRequest(name=created.name), metadata=as_service(WS))).journey
            yield Suite(cluster, clock, identity_grpc.IdentityServiceStub(channel),
                        orchestration_app, delivery_app, journey)
        finally:
            for open_channel in cluster.channels.values():
                await open_channel.close()


# --- requests ----------------------------------------------------------------------------------


async def ingest(suite: Suite, message_id: str, name: str, identifiers: dict[str, str],
                 traits: dict[str, Any] | None = None,
                 properties: dict[str, Any] | None = None) -> str:
    """One event through identity; returns the profile it resolved to."""
    kind = event_pb2.EVENT_TYPE_IDENTIFY if name == "identify" else event_pb2.EVENT_TYPE_TRACK
    event = event_pb2.Event(
        message_id=message_id, type=kind, name="" if name == "identify" else name,
        source="web", identifiers=[event_pb2.Identifier(type=t, value=v)
                                   for t, v in identifiers.items()],
        traits=dict_to_struct(traits or {}), properties=dict_to_struct(properties or {}))
    reply = await suite.identity.IngestEvents(identity_pb.IngestEventsRequest(events=[event]),
                                              metadata=as_service(WS))
    (result,) = reply.results
    assert result.status.code == 0, result.status
    return str(result.profile_id)


async def enrollments_of(suite: Suite, profile_id: str) -> list[Any]:
    reply = await suite.orchestration.ListEnrollments(
        pb.ListEnrollmentsRequest(parent=suite.journey.name, profile_id=profile_id),
        metadata=as_service(WS))
    return list(reply.enrollments)


async def enrolled(suite: Suite, profile_id: str, count: int = 1) -> list[Any]:
    async def check() -> list[Any] | None:
        found = await enrollments_of(suite, profile_id)
        return found if len(found) >= count else None

    result = await eventually(check)
    assert isinstance(result, list)
    return result


async def enroll_control(suite: Suite, email: str) -> None:
    """Enroll a control person now and return once they wait at the wait node, their timer set
    by the orchestrator's clock as it is now. The caller then moves the clock past the wait and
    awaits the control's reminder. (Returning as soon as the enrollment exists would race: the
    step that enters the wait could read the clock after the caller moved it, and wait on.)"""
    control = await ingest(suite, f"cart-{email}", "cart_updated", {"email": email},
                           {"email": email})
    await parked(suite.cluster, WS, suite.journey, suite.clock, control)


async def rows(db: Database, table: Any, **where: str) -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        with db.transaction() as session:
            query = select(table).where(*(table.c[k] == v for k, v in where.items()))
            return [dict(r._mapping) for r in session.execute(query)]

    return await db.run(read)


# --- tests -------------------------------------------------------------------------------------


async def test_erasing_a_waiting_person_exits_the_journey_cancels_and_erases_messages(
        backend: Backend) -> None:
    async with lifecycle_suite(backend) as suite:
        pat = await ingest(suite, "cart-pat", "cart_updated", {"email": "pat@example.com"},
                           {"email": "pat@example.com", "first_name": "Patricia"},
                           {"cart_value": 80, "sku": "SECRET-SKU"})
        (waiting,) = await enrolled(suite, pat)
        assert waiting.state == ACTIVE
        # Delivery holds a frequency-capped (DEFERRED) message for Pat: one email a day.
        await suite.delivery.UpdateDeliveryPolicy(delivery_pb.UpdateDeliveryPolicyRequest(
            policy=policy_pb2.DeliveryPolicy(frequency_caps=[policy_pb2.FrequencyCap(
                channel=common_pb2.CHANNEL_EMAIL, max_messages=1, window_seconds=86400)])),
            metadata=as_service(WS))
        ids = []
        for n in (1, 2):
            sent = await suite.delivery.SendMessage(delivery_pb.SendMessageRequest(
                idempotency_key=f"direct-{n}",
                recipient=message_pb2.Recipient(profile_id=pat, address="pat@example.com"),
                content=common_pb2.RenderedMessage(
                    channel=common_pb2.CHANNEL_EMAIL,
                    email=common_pb2.RenderedEmail(subject=f"Hello Patricia {n}",
                                                   html="<p>Hi</p>"))),
                metadata=as_service(WS))
            ids.append(sent.message.name)
            wanted = (message_pb2.MESSAGE_STATUS_SENT, message_pb2.MESSAGE_STATUS_DEFERRED)[n - 1]

            async def status_is(name: str = sent.message.name, wanted: int = wanted) -> bool:
                got = await suite.delivery.GetMessage(delivery_pb.GetMessageRequest(name=name),
                                                      metadata=as_service(WS))
                return bool(got.message.status == wanted)

            await eventually(status_is)

        await suite.identity.DeleteProfile(identity_pb.DeleteProfileRequest(
            name=f"profiles/{pat}"), metadata=as_service(WS))

        async def exited() -> Any:
            (found,) = await enrollments_of(suite, pat)
            return found if found.state == EXITED else None

        ended = await eventually(exited)
        assert ended.exit_reason == "profile_deleted"
        assert ended.steps[-1].detail == "profile deleted"

        async def canceled() -> Any:
            got = await suite.delivery.GetMessage(delivery_pb.GetMessageRequest(name=ids[1]),
                                                  metadata=as_service(WS))
            return got.message if got.message.status != message_pb2.MESSAGE_STATUS_DEFERRED \
                else None

        deferred = await eventually(canceled)
        assert deferred.status == message_pb2.MESSAGE_STATUS_SUPPRESSED
        assert deferred.error == "canceled: profile erased"
        assert deferred.recipient.address == ""

        # Past the wait: the control's reminder goes out, Pat's never does.
        await enroll_control(suite, "control@example.com")
        suite.clock.advance(timedelta(hours=2))
        await eventually(lambda: "control@example.com" in suite.mailed_to())
        assert suite.mailed_to().count("pat@example.com") == 1  # the direct message 1 only
        reply = await suite.delivery.ListMessages(delivery_pb.ListMessagesRequest(
            journey_id=suite.journey.journey_id), metadata=as_service(WS))
        assert [m.recipient.address for m in reply.messages] == ["control@example.com"]

        # Neither service keeps Pat's traits, event properties, address or rendered content.
        orchestration_db = suite.orchestration_app.db
        kept = [*await rows(orchestration_db, enrollment_table, profile_id=pat),
                *await rows(orchestration_db, inbox_table, profile_id=pat)]
        kept += await rows(orchestration_db, step_table, enrollment_id=waiting.enrollment_id)
        assert kept and not [r for r in kept
                             if "pat@example.com" in repr(r) or "Patricia" in repr(r)
                             or "SECRET-SKU" in repr(r)]
        held = [*await rows(suite.delivery_app.db, delivery_messages, profile_id=pat),
                *await rows(suite.delivery_app.db, delivery_inbox, profile_id=pat)]
        assert len(held) == 2
        assert not [r for r in held if "pat@example.com" in repr(r) or b"Patricia" in r["content"]]


async def test_an_identified_visitor_exits_by_the_buyers_order(backend: Backend) -> None:
    async with lifecycle_suite(backend) as suite:
        buyer = await ingest(suite, "crm-1", "identify", {"user_id": "u-1"},
                             {"email": "buyer@example.com"})
        visitor = await ingest(suite, "cart-anon", "cart_updated", {"anonymous_id": "anon-1"},
                               {"email": "visitor@example.com"}, {"cart_value": 80})
        assert visitor != buyer
        (entered,) = await enrolled(suite, visitor)
        # Logging in ties the visitor's cookie to the account: identity merges the visitor
        # into the buyer, and the order then arrives for the buyer only.
        survivor = await ingest(suite, "login", "identify",
                                {"anonymous_id": "anon-1", "user_id": "u-1"})
        assert survivor == buyer
        await ingest(suite, "order", "order_completed", {"user_id": "u-1"}, {},
                     {"revenue": 120.0})

        async def exited() -> Any:
            found = await enrollments_of(suite, buyer)
            return found[0] if found and found[0].state == EXITED else None

        ended = await eventually(exited)
        assert ended.enrollment_id == entered.enrollment_id
        assert ended.profile_id == buyer
        assert ended.exit_reason == "exit_criteria"
        assert f"merged from profile {visitor}" in [s.detail for s in ended.steps]
        assert await enrollments_of(suite, visitor) == []

        await enroll_control(suite, "control@example.com")
        suite.clock.advance(timedelta(hours=2))
        await eventually(lambda: "control@example.com" in suite.mailed_to())
        assert suite.mailed_to() == ["control@example.com"]

        # Erasing the buyer erases the visitor they once were, in delivery too.
        sent = await suite.delivery.SendMessage(delivery_pb.SendMessageRequest(
            idempotency_key="to-the-old-id",
            recipient=message_pb2.Recipient(profile_id=visitor, address="visitor@example.com"),
            content=common_pb2.RenderedMessage(
                channel=common_pb2.CHANNEL_EMAIL,
                email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>"))),
            metadata=as_service(WS))
        await eventually(lambda: "visitor@example.com" in suite.mailed_to())
        await suite.identity.DeleteProfile(identity_pb.DeleteProfileRequest(
            name=f"profiles/{buyer}"), metadata=as_service(WS))

        async def blanked() -> bool:
            got = await suite.delivery.GetMessage(delivery_pb.GetMessageRequest(
                name=sent.message.name), metadata=as_service(WS))
            return got.message.recipient.address == ""

        await eventually(blanked)


async def test_a_segment_member_merged_into_a_buyer_exits_the_segments_journey(
        backend: Backend) -> None:
    """An abandoned-cart segment's journey ends on segment_exited. A visitor adds to cart
    (enters the segment and the journey); logging in merges them into an account that has
    ordered: identity moves the membership to the survivor, which no longer matches, and
    orchestration applies the survivor's segment_exited to the enrollment the merge moved."""
    async with lifecycle_suite(backend) as suite:
        await suite.identity.UpdateIdentitySettings(identity_pb.UpdateIdentitySettingsRequest(
            settings=counted_events(carts="cart_updated", orders="order_completed")),
            metadata=as_service(WS))
        await suite.identity.CreateSegment(identity_pb.CreateSegmentRequest(
            segment=segment_pb2.Segment(
                segment_id="abandoned", condition="computed.carts >= 1 && computed.orders == 0")),
            metadata=as_service(WS))
        await segment_backfilled(suite.identity, as_service(WS), "abandoned")
        wait = duration_pb2.Duration()
        wait.FromTimedelta(timedelta(hours=1))
        in_segment = 'event.segment_id == "abandoned"'
        created = (await suite.orchestration.CreateJourney(pb.CreateJourneyRequest(
            journey=journey_pb2.Journey(
                display_name="Abandoned cart segment",
                event_trigger=journey_pb2.EventTrigger(event_name="segment_entered",
                                                       filter=in_segment),
                exit_criteria=[journey_pb2.ExitCriterion(event_name="segment_exited",
                                                         filter=in_segment)],
                entry_node_id="wait",
                nodes=[journey_pb2.Node(id="wait", wait=journey_pb2.WaitNode(
                           duration=wait, next_node_id="done")),
                       journey_pb2.Node(id="done", exit=journey_pb2.ExitNode())])),
            metadata=as_service(WS))).journey
        journey = (await suite.orchestration.PublishJourney(pb.PublishJourneyRequest(
            name=created.name), metadata=as_service(WS))).journey
        buyer = await ingest(suite, "order-3", "order_completed", {"user_id": "u-3"})
        visitor = await ingest(suite, "cart-anon-3", "cart_updated", {"anonymous_id": "anon-3"})
        (entered,) = await parked(suite.cluster, WS, journey, suite.clock, visitor)
        assert await ingest(suite, "login-3", "identify",
                            {"anonymous_id": "anon-3", "user_id": "u-3"}) == buyer

        async def exited() -> Any:
            found = await enrollments(suite.cluster, WS, journey, buyer)
            return found[0] if found and found[0].state == EXITED else None

        ended = await eventually(exited)
        assert ended.enrollment_id == entered.enrollment_id
        assert ended.exit_reason == "exit_criteria"
        assert await enrollments(suite.cluster, WS, journey, visitor) == []


async def both_enrolled_then_merged(suite: Suite) -> tuple[str, str, Any, Any]:
    """The visitor enrolls first, the known buyer a minute later; then the visitor logs in."""
    buyer = await ingest(suite, "crm-2", "identify", {"user_id": "u-2"},
                         {"email": "buyer2@example.com"})
    visitor = await ingest(suite, "cart-anon-2", "cart_updated", {"anonymous_id": "anon-2"},
                           {"email": "visitor2@example.com"}, {"cart_value": 60})
    assert visitor != buyer
    # Parked before the clock moves, or its wait could start from the moved clock.
    (first,) = await parked(suite.cluster, WS, suite.journey, suite.clock, visitor)
    suite.clock.advance(timedelta(minutes=1))
    await ingest(suite, "cart-buyer-2", "cart_updated", {"user_id": "u-2"}, {},
                 {"cart_value": 70})
    (second,) = await enrolled(suite, buyer)
    assert await ingest(suite, "login-2", "identify",
                        {"anonymous_id": "anon-2", "user_id": "u-2"}) == buyer
    return buyer, visitor, first, second


async def test_when_both_profiles_walk_the_journey_the_earlier_enrollment_continues(
        backend: Backend) -> None:
    async with lifecycle_suite(backend) as suite:
        buyer, visitor, first, second = await both_enrolled_then_merged(suite)

        async def merged() -> list[Any] | None:
            found = await enrollments_of(suite, buyer)
            return found if len(found) == 2 and any(e.state == EXITED for e in found) else None

        found = {e.enrollment_id: e for e in await eventually(merged)}  # type: ignore[union-attr]
        kept, dropped = found[first.enrollment_id], found[second.enrollment_id]
        assert (kept.state, kept.profile_id) == (ACTIVE, buyer)
        assert f"merged from profile {visitor}" in [s.detail for s in kept.steps]
        assert (dropped.state, dropped.exit_reason) == (EXITED, "merged")

        # One reminder for the person, from the enrollment that continued.
        await enroll_control(suite, "control@example.com")
        suite.clock.advance(timedelta(hours=2))
        await eventually(lambda: "control@example.com" in suite.mailed_to())

        async def reminded() -> list[str] | None:
            reply = await suite.delivery.ListMessages(delivery_pb.ListMessagesRequest(
                journey_id=suite.journey.journey_id), metadata=as_service(WS))
            ids = sorted(m.enrollment_id for m in reply.messages
                         if m.recipient.address != "control@example.com")
            return ids if first.enrollment_id in ids else None

        assert await eventually(reminded) == [first.enrollment_id]


async def test_redelivered_merges_and_erasures_change_nothing(backend: Backend) -> None:
    async with lifecycle_suite(backend) as suite:
        buyer, visitor, _, _ = await both_enrolled_then_merged(suite)
        await eventually(lambda: _has_exit(suite, buyer))
        gone = await ingest(suite, "cart-gone", "cart_updated", {"email": "gone@example.com"},
                            {"email": "gone@example.com"})
        await enrolled(suite, gone)
        await suite.identity.DeleteProfile(identity_pb.DeleteProfileRequest(
            name=f"profiles/{gone}"), metadata=as_service(WS))

        async def erased() -> bool:
            return all(e.state == EXITED for e in await enrollments_of(suite, gone))

        await eventually(erased)
        before = [await enrollments_of(suite, p) for p in (buyer, visitor, gone)]

        merge = pb.ForwardedEvent(
            event_id=f"profile_merged:{visitor}:{buyer}", profile_id=buyer,
            event=event_pb2.Event(message_id=f"profile_merged:{visitor}:{buyer}",
                                  type=event_pb2.EVENT_TYPE_TRACK, name="profile_merged",
                                  properties=dict_to_struct({"merged_profile_id": visitor})))
        again = pb.ForwardedEvent()
        again.CopyFrom(merge)
        again.event_id = "replanned-merge"  # as if the merge were forwarded under a new id
        deleted = pb.ForwardedEvent(
            event_id="late-erasure", profile_id=gone,
            event=event_pb2.Event(message_id=f"profile_deleted:{gone}", name="profile_deleted",
                                  type=event_pb2.EVENT_TYPE_TRACK))
        # An event of the erased person that was still on its way, and one still addressed to
        # the merged visitor: the first reaches nobody, the second the buyer.
        late = pb.ForwardedEvent(
            event_id="late-cart", profile_id=gone,
            event=event_pb2.Event(message_id="late-cart", name="cart_updated",
                                  type=event_pb2.EVENT_TYPE_TRACK),
            profile_traits=dict_to_struct({"email": "gone@example.com"}))
        reply = await suite.orchestration.HandleEvents(
            pb.HandleEventsRequest(events=[merge, again, deleted, late]),
            metadata=as_service(WS))
        assert [r.duplicate for r in reply.results] == [True, False, False, False]
        # Events are applied in receive order: once the control enrolled, those before it were.
        await enroll_control(suite, "control@example.com")
        assert [await enrollments_of(suite, p) for p in (buyer, visitor, gone)] == before

        # Enroll by API: an erased id is refused; a merged-away id enrolls as its survivor.
        def enroll(profile: str) -> pb.EnrollRequest:
            return pb.EnrollRequest(journey=suite.journey.name, profile_id=profile,
                                    request_id=f"api-{profile}",
                                    profile_traits=dict_to_struct({"email": "x@example.com"}))

        refused = await suite.orchestration.Enroll(enroll(gone), metadata=as_service(WS))
        assert (refused.HasField("enrollment"), refused.skip_reason) == (False, "profile_erased")
        merged = await suite.orchestration.Enroll(enroll(visitor), metadata=as_service(WS))
        assert merged.skip_reason != "profile_erased"
        assert await enrollments_of(suite, visitor) == before[1]
        if merged.HasField("enrollment"):
            assert merged.enrollment.profile_id == buyer

        # Delivery's erasure is idempotent too.
        for _ in range(2):
            erase = await suite.delivery.EraseProfiles(
                delivery_pb.EraseProfilesRequest(profile_ids=[gone]), metadata=as_service(WS))
            assert [(r.profile_id, r.canceled_count, r.in_flight_count)
                    for r in erase.results] == [(gone, 0, 0)]


async def _has_exit(suite: Suite, profile_id: str) -> bool:
    return any(e.state == EXITED for e in await enrollments_of(suite, profile_id))


# --- the rules, without I/O --------------------------------------------------------------------


def _active(enrollment_id: str, profile_id: str, created: datetime) -> Enrollment:
    return Enrollment(
        workspace_id=WS, enrollment_id=enrollment_id, journey_id="j", journey_version=1,
        profile_id=profile_id, state=EnrollmentState.ACTIVE, current_node_id="wait",
        due_time=created + timedelta(hours=1), create_time=created, update_time=created,
        traits={"email": f"{profile_id}@example.com"}, waiting=True)


def _inbox(seq: int, profile_id: str, name: str, **properties: Any) -> InboxEvent:
    return InboxEvent(WS, seq, f"e{seq}", profile_id, name, properties, {}, "")


def test_a_merge_keeps_the_enrollment_that_entered_first_whoever_owned_it() -> None:
    now = T0 + timedelta(hours=0.5)
    older, newer = _active("e-old", "b", T0), _active("e-new", "a", T0 + timedelta(minutes=1))
    moves = {t.enrollment.enrollment_id: t for t in
             merge_enrollments([newer], [older], "b", now)}
    assert moves["e-new"].enrollment.state is EnrollmentState.EXITED
    assert moves["e-new"].enrollment.exit_reason == "merged"
    assert moves["e-new"].enrollment.profile_id == "b"
    assert moves["e-new"].facts[-1].detail == "merged"
    assert "e-old" not in moves  # the survivor's own enrollment just continues


def test_a_busy_profile_defers_its_merge_and_every_later_event_of_both() -> None:
    graph = cart_journey_graph()
    a, b = _active("ea", "a", T0), _active("eb", "b", T0)
    outcome = apply_events(
        [_inbox(1, "b", "profile_merged", merged_profile_id="a"),
         _inbox(2, "a", "order_completed"), _inbox(3, "b", "order_completed")],
        [], [(a, graph), (b, graph)], {}, {(WS, "a")}, lambda: "new", T0)
    assert outcome.deferred == [1, 2, 3]
    assert not outcome.changed and not outcome.retired


def test_events_of_retired_profiles_reach_the_survivor_or_nobody() -> None:
    retired = {(WS, "a"): "b", (WS, "b"): "c", (WS, "gone"): ""}
    assert resolve_profile(retired, WS, "a") == "c"
    assert resolve_profile(retired, WS, "gone") == ""
    graph = cart_journey_graph()
    c = _active("ec", "c", T0)
    outcome = apply_events(
        [_inbox(1, "a", "order_completed"), _inbox(2, "gone", "cart_updated")], [],
        [(c, graph)], {}, set(), lambda: "new", T0, retired)
    assert outcome.changed["ec"][0].exit_reason == "exit_criteria"
    assert outcome.dropped == [2]


def cart_journey_graph() -> JourneyGraph:
    return graph_from_proto(cart_journey())
