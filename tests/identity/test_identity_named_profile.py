"""Events that name their profile (delivery's engagement with a message it sent to that profile)
go to it without identity resolution: an address another profile owns does not move them, a
merged-away id follows its survivor, an erased profile fails the event alone. Through the real
gRPC server, on both backends."""

from __future__ import annotations

from identity_support import Identity, event

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_platform.protobuf import dict_to_struct
from cjo_platform.rpc.status import field_violations


def named(message_id: str, profile_id: str, name: str = "email_opened",
          **traits: str) -> event_pb2.Event:
    return event_pb2.Event(message_id=message_id, type=event_pb2.EVENT_TYPE_TRACK, name=name,
                           profile_id=profile_id, traits=dict_to_struct(traits),
                           source="cjo-delivery")


async def test_an_event_naming_its_profile_lands_on_it_whoever_owns_the_address(
        identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("a", ("user_id", "ada"), traits={"email": "family@example.com"}),
        # user_id is limited to one per profile: Bob cannot join Ada's profile by the email.
        event("b", ("user_id", "bob"), traits={"email": "family@example.com"})]),
        metadata=acme)
    ada, bob = (r.profile_id for r in reply.results)
    assert ada != bob
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        named("open-1", bob),
        # A named event links nothing, even an address trait.
        named("open-2", bob, name="email_clicked", email="other@example.com"),
        # Both at once is ambiguous: refused, naming the field.
        event_pb2.Event(message_id="open-3", type=event_pb2.EVENT_TYPE_TRACK,
                        name="email_opened", profile_id=bob,
                        identifiers=[event_pb2.Identifier(type="email",
                                                          value="family@example.com")])]),
        metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 0, 3]
    assert [r.profile_id for r in reply.results[:2]] == [bob, bob]
    assert "events[2].identifiers" in field_violations(reply.results[2].status)
    profile = (await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{bob}"), metadata=acme)).profile
    assert [(i.type, i.value) for i in profile.identifiers] == [("user_id", "bob")]
    events = await identity.events.ListProfileEvents(pb.ListProfileEventsRequest(
        parent=f"profiles/{ada}", page_size=10), metadata=acme)
    assert [e.event.message_id for e in events.events] == ["a"]
    listed = await identity.events.ListProfiles(pb.ListProfilesRequest(page_size=10),
                                                metadata=acme)
    assert len(listed.profiles) == 2
    # Another workspace does not know the profile.
    other = await identity.new_workspace("other")
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        named("open-1", bob)]), metadata=other)
    assert "events[0].profile_id" in field_violations(reply.results[0].status)


async def test_a_merged_away_profile_s_event_follows_the_survivor_and_an_erased_one_fails(
        identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("a", ("anonymous_id", "cookie-1")), event("b", ("user_id", "cy")),
        event("c", ("user_id", "dee"))]), metadata=acme)
    anonymous, cy, dee = (r.profile_id for r in reply.results)
    # The cookie turns out to be Cy's: Cy's profile merges into the cookie's (the earlier one).
    await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("d", ("anonymous_id", "cookie-1"), ("user_id", "cy"))]), metadata=acme)
    await identity.events.DeleteProfile(pb.DeleteProfileRequest(
        name=f"profiles/{dee}", request_id="erase-dee"), metadata=acme)
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        named("open-1", anonymous), named("open-2", dee), named("open-3", cy)]),
        metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 3, 0]
    assert [reply.results[0].profile_id, reply.results[2].profile_id] == [anonymous, anonymous]
    assert "events[1].profile_id" in field_violations(reply.results[1].status)
