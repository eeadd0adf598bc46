"""One event's (or one setting's) bad data hurts only itself: an identifier that outgrows its
column when normalised fails its own event, and a blocked-value pattern that could take
exponential time is refused when saved. Through the real gRPC server, on both backends."""

from __future__ import annotations

import re
import time
from functools import partial

import grpc
import pytest
from grpc_status import rpc_status
from identity_support import DecisioningRecorder, Identity, Recorder, event, rpc_error

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import consent_pb2, event_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_settings_pb2 as settings_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_identity.domain.identifiers import MAX_IDENTIFIER_LENGTH
from cjo_identity.domain.patterns import nested_repetition
from cjo_platform.limits import (
    MAX_COMPUTED_TRAITS,
    MAX_EVENT_BYTES,
    MAX_PROFILE_TRAITS_BYTES,
    MAX_SEGMENTS,
    MAX_TOPIC_LENGTH,
)
from cjo_platform.rpc.status import field_violations
from support import eventually


async def test_an_identifier_that_grows_when_normalised_fails_only_its_event(
        identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    # 200 characters sent, 400 once lower-cased ("İ" becomes "i" and a combining dot).
    grown = "İ" * 200
    assert len(grown) <= MAX_IDENTIFIER_LENGTH < len(grown.lower())
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", ("user_id", "u1")), event("m2", ("email", grown)),
        event("m3", ("user_id", "u3"), traits={"email": grown})]), metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 3, 0]
    assert "events[1].identifiers[0].value" in field_violations(reply.results[1].status)
    # As a trait it is not an identifier, just a trait.
    profile = await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{reply.results[2].profile_id}"), metadata=acme)
    assert [i.type for i in profile.profile.identifiers] == ["user_id"]
    assert profile.profile.traits["email"] == grown


async def test_an_event_larger_than_the_limit_fails_alone_before_anything_is_written(
        identity: Identity) -> None:
    """An event travels on to orchestration and decisioning as one row or bus message (NATS
    takes at most 1 MiB): a larger one is refused at the edge, naming it, and the others of the
    call are ingested."""
    acme = await identity.new_workspace("acme")
    big = event("m2", ("user_id", "big"))
    big.properties.update({"blob": "x" * MAX_EVENT_BYTES})
    largest = event("m3", ("user_id", "u3"))
    length = MAX_EVENT_BYTES
    for _ in range(3):  # the lengths' own varints grow with them
        largest.properties.update({"blob": "x" * length})
        length -= largest.ByteSize() - MAX_EVENT_BYTES
    assert largest.ByteSize() == MAX_EVENT_BYTES
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", ("user_id", "u1")), big, largest]), metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 3, 0]
    assert "at most 256 KiB" in field_violations(reply.results[1].status)["events[1]"]
    missing = await rpc_error(identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type="user_id", value="big")), metadata=acme))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_a_profiles_traits_stay_within_the_limit_so_each_forwarded_event_fits_the_bus(
        identity: Identity, recorder: Recorder, decisioning: DecisioningRecorder) -> None:
    """Every forwarded event carries its profile's traits (orchestration's and decisioning's
    conditions read them): events of 250 KB traits each, every one within the event limit,
    once made a profile of 1.25 MB whose next track event no bus message could hold (NATS: 1
    MiB). The event that would take the traits past the limit fails alone, naming them,
    before anything is written; the others, and the profile's later events, go on."""
    acme = await identity.new_workspace("acme")

    def identify(message_id: str, trait: str) -> event_pb2.Event:
        return event(message_id, ("user_id", "u1"), identify=True,
                     traits={trait: "x" * 250_000})

    first = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        identify("i0", "t0")]), metadata=acme)
    assert first.results[0].status.code == 0
    for n in range(1, 4):
        reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
            identify(f"i{n}", f"t{n}")]), metadata=acme)
        assert reply.results[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert f"larger than {MAX_PROFILE_TRAITS_BYTES // 1024} KiB" in field_violations(
            reply.results[0].status)["events[0].traits"]
    # In one call too: the others of the call are ingested.
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("i5", ("user_id", "u1"), identify=True, traits={"plan": "pro"}),
        identify("i6", "t6"), event("e1", ("user_id", "u1"), name="order_completed")]),
        metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 3, 0]
    assert "events[1].traits" in field_violations(reply.results[1].status)
    profile = await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{first.results[0].profile_id}"), metadata=acme)
    assert set(profile.profile.traits) == {"t0", "plan"}

    def forwarded(receiver: Recorder | DecisioningRecorder) -> orch_pb.ForwardedEvent | None:
        return next((e for e in receiver.events if e.event.message_id == "e1"), None)

    for receiver in (recorder, decisioning):
        found = await eventually(partial(forwarded, receiver))
        assert isinstance(found, orch_pb.ForwardedEvent)
        assert set(found.profile_traits) == {"t0", "plan"}
        assert found.ByteSize() < MAX_EVENT_BYTES + MAX_PROFILE_TRAITS_BYTES
    assert max(e.ByteSize() for e in recorder.events) < 1024 * 1024


@pytest.mark.parametrize("pattern", ["(a+)+", "(\\w*)*@x", "(?:x|y+)*z", "((ab)*c)+"])
async def test_a_pattern_that_can_take_exponential_time_is_refused(
        identity: Identity, pattern: str) -> None:
    acme = await identity.new_workspace("acme")
    error = await rpc_error(identity.events.UpdateIdentitySettings(
        pb.UpdateIdentitySettingsRequest(settings=settings_pb2.IdentitySettings(
            identifier_types=[settings_pb2.IdentifierTypeRule(
                type="email", blocked_values=["null", pattern])])), metadata=acme))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(rpc_status.from_call(error))
    assert "exponential" in violations["settings.identifier_types[0].blocked_values[1]"]
    assert "settings.identifier_types[0].blocked_values[0]" not in violations


def test_usual_patterns_are_accepted_and_refused_ones_really_are_slow() -> None:
    for usual in ("null", "0+", "test@example\\.com", "(unknown|none|n/a)", "[0-9]{3}-\\d+",
                  "(ab)+", "(?:a++)+", "(a{2,3}){2}", ".*@mailinator\\.com"):
        assert not nested_repetition(usual), usual
    # What the refusal prevents: each character more doubles the time; 20 are already
    # noticeable, an identifier may hold 256.
    started = time.perf_counter()
    assert re.fullmatch("(a+)+", "a" * 20 + "!") is None
    assert time.perf_counter() - started > 0.01


async def test_a_consent_topic_longer_than_any_send_can_name_fails_only_its_item(
        identity: Identity) -> None:
    """Delivery and journeys accept topics of MAX_TOPIC_LENGTH characters: identity keeps the
    same limit, so every topic a person unsubscribes from can be named by a send."""
    acme = await identity.new_workspace("acme")
    longest, longer = "t" * MAX_TOPIC_LENGTH, "t" * (MAX_TOPIC_LENGTH + 1)

    def unsubscribe(message_id: str, topic: str) -> event_pb2.Event:
        item = event(message_id, ("user_id", "u1"), name="unsubscribed")
        item.properties.update({"channel": "email", "topic": topic})
        return item

    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        unsubscribe("m1", longest), unsubscribe("m2", longer), event("m3", ("user_id", "u1"))]),
        metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 3, 0]
    assert "at most 64 characters" in field_violations(
        reply.results[1].status)["events[1].properties.topic"]
    profile_id = reply.results[0].profile_id
    profile = await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{profile_id}"), metadata=acme)
    assert [c.topic for c in profile.profile.consents] == [longest]

    answers = await identity.events.BatchCheckConsent(pb.BatchCheckConsentRequest(queries=[
        consent_pb2.ConsentQuery(profile_id=profile_id, channel=common_pb2.CHANNEL_EMAIL,
                                 topic=topic) for topic in (longest, longer)]), metadata=acme)
    assert answers.results[0].decision.state == consent_pb2.CONSENT_STATE_UNSUBSCRIBED
    assert answers.results[1].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "queries[1].topic" in field_violations(answers.results[1].status)


async def test_a_workspace_holds_at_most_max_segments(identity: Identity) -> None:
    """Every event of a profile carries its segment memberships to orchestration: the number
    of segments a workspace can create bounds them."""
    acme = await identity.new_workspace("acme")

    def create(segment_id: str) -> pb.CreateSegmentRequest:
        return pb.CreateSegmentRequest(segment=segment_pb2.Segment(
            segment_id=segment_id, display_name=segment_id, condition="true"))

    for n in range(MAX_SEGMENTS):
        await identity.events.CreateSegment(create(f"s{n}"), metadata=acme)
    error = await rpc_error(identity.events.CreateSegment(create("one-more"), metadata=acme))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_SEGMENTS} segments" in field_violations(
        rpc_status.from_call(error))["segment"]
    # Another workspace has its own; a deleted segment makes room.
    other = await identity.new_workspace("other")
    await identity.events.CreateSegment(create("one-more"), metadata=other)
    await identity.events.DeleteSegment(pb.DeleteSegmentRequest(name="segments/s0"),
                                        metadata=acme)
    created = await identity.events.CreateSegment(create("one-more"), metadata=acme)
    assert created.segment.segment_id == "one-more"


async def test_a_workspace_defines_at_most_max_computed_traits(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")

    def traits(count: int) -> pb.UpdateIdentitySettingsRequest:
        return pb.UpdateIdentitySettingsRequest(settings=settings_pb2.IdentitySettings(
            computed_traits=[settings_pb2.ComputedTrait(
                name=f"orders_{n}", aggregation=settings_pb2.COMPUTED_AGGREGATION_COUNT,
                event_name="order_completed") for n in range(count)]))

    await identity.events.UpdateIdentitySettings(traits(MAX_COMPUTED_TRAITS), metadata=acme)
    error = await rpc_error(identity.events.UpdateIdentitySettings(
        traits(MAX_COMPUTED_TRAITS + 1), metadata=acme))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "settings.computed_traits" in field_violations(rpc_status.from_call(error))
