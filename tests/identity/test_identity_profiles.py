"""IdentityService: ingesting events, resolving profiles, and reading them back, on both
backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
from grpc_status import rpc_status
from identity_support import START, Identity, event, rpc_error

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_platform.rpc.status import field_violations


def lookup(kind: str, value: str) -> pb.LookupProfileRequest:
    return pb.LookupProfileRequest(identifier=event_pb2.Identifier(type=kind, value=value))


async def test_a_profile_is_invisible_to_other_workspaces(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    globex = await identity.new_workspace("globex")
    ingest = pb.IngestEventsRequest(events=[event("m1", ("user_id", "u1"), traits={"plan": "pro"})])
    profile_id = (await identity.events.IngestEvents(ingest, metadata=acme)).results[0].profile_id
    name = f"profiles/{profile_id}"

    for call in (identity.events.GetProfile(pb.GetProfileRequest(name=name), metadata=globex),
                 identity.events.ListProfileEvents(pb.ListProfileEventsRequest(parent=name),
                                                   metadata=globex),
                 identity.events.LookupProfile(lookup("user_id", "u1"), metadata=globex)):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND

    # The same message id and user id in another workspace are another person entirely.
    theirs = (await identity.events.IngestEvents(ingest, metadata=globex)).results[0]
    assert not theirs.duplicate and theirs.profile_id != profile_id
    found = await identity.events.LookupProfile(lookup("user_id", "u1"), metadata=globex)
    assert found.profile.profile_id == theirs.profile_id
    mine = await identity.events.GetProfile(pb.GetProfileRequest(name=name), metadata=acme)
    assert mine.profile.traits["plan"] == "pro"


async def test_one_bad_event_does_not_hold_up_the_others(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", ("user_id", "u1")),
        event("m2", ("cookie", "c1")),
        event("m3", ("user_id", "u1"), name=""),
        event("m4", ("user_id", "u1"), ("email", "")),
        event("m5", ("user_id", "u1")),
    ]), metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 3, 3, 3, 0]
    assert field_violations(reply.results[1].status) == {
        "events[1].identifiers[0].type":
            "must be one of anonymous_id, device_id, email, phone, user_id"}
    assert field_violations(reply.results[2].status) == {
        "events[2].name": "is required for track events"}
    assert list(field_violations(reply.results[3].status)) == ["events[3].identifiers[1].value"]
    assert reply.results[1].event_id == reply.results[1].profile_id == ""

    profile = f"profiles/{reply.results[0].profile_id}"
    listed = await identity.events.ListProfileEvents(
        pb.ListProfileEventsRequest(parent=profile), metadata=acme)
    assert {e.event.message_id for e in listed.events} == {"m1", "m5"}

    for events in ([], [event(f"m{i}", ("user_id", "u")) for i in range(1001)]):
        whole = await rpc_error(identity.events.IngestEvents(
            pb.IngestEventsRequest(events=events), metadata=acme))
        assert whole.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "events" in field_violations(rpc_status.from_call(whole))


async def test_a_repeated_message_id_is_acknowledged_not_applied(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    first = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", ("user_id", "u1"), traits={"plan": "pro"}),
        event("m1", ("user_id", "u2"), traits={"plan": "free"}),  # repeat within the batch
    ]), metadata=acme)
    original, repeat = first.results
    assert not original.duplicate and repeat.duplicate
    assert (repeat.event_id, repeat.profile_id) == (original.event_id, original.profile_id)

    later = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", ("user_id", "u1"), traits={"plan": "free"}, at=START + timedelta(days=1)),
    ]), metadata=acme)
    assert later.results[0].duplicate and later.results[0].event_id == original.event_id

    profile = (await identity.events.GetProfile(
        pb.GetProfileRequest(name=f"profiles/{original.profile_id}"), metadata=acme)).profile
    assert profile.traits["plan"] == "pro"
    assert [(i.type, i.value) for i in profile.identifiers] == [("user_id", "u1")]
    listed = await identity.events.ListProfileEvents(
        pb.ListProfileEventsRequest(parent=profile.name), metadata=acme)
    assert len(listed.events) == 1
    assert (await rpc_error(identity.events.LookupProfile(
        lookup("user_id", "u2"), metadata=acme))).code() == grpc.StatusCode.NOT_FOUND


async def test_an_anonymous_visitor_who_signs_in_stays_one_profile(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    browsing = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", ("anonymous_id", "a1"), name="product_viewed"),
    ]), metadata=acme)
    signed_in = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m2", ("user_id", "u1"), ("anonymous_id", "a1"), ("email", " Ada@Example.COM "),
              traits={"first_name": "Ada"}, identify=True),
        event("m3", ("user_id", "u1"), name="order_completed"),
    ]), metadata=acme)
    profile_id = browsing.results[0].profile_id
    assert [r.profile_id for r in signed_in.results] == [profile_id, profile_id]

    by_email = await identity.events.LookupProfile(lookup("email", "ada@example.com "),
                                                   metadata=acme)
    assert by_email.profile.profile_id == profile_id
    assert sorted((i.type, i.value) for i in by_email.profile.identifiers) == [
        ("anonymous_id", "a1"), ("email", "ada@example.com"), ("user_id", "u1")]
    assert by_email.profile.traits["first_name"] == "Ada"

    # Browsing on another device, then signing in there: the two profiles become one, the
    # oldest survives and the other's id keeps resolving to it. (Received after both events: a
    # time ahead of the receive time would be corrected.)
    identity.clock.set(START + timedelta(hours=2))
    elsewhere = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m4", ("anonymous_id", "a2"), name="product_viewed", at=START + timedelta(hours=1)),
    ]), metadata=acme)
    merged_away = elsewhere.results[0].profile_id
    assert merged_away != profile_id
    login = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m5", ("user_id", "u1"), ("anonymous_id", "a2"), identify=True,
              at=START + timedelta(hours=2)),
    ]), metadata=acme)
    assert login.results[0].profile_id == profile_id
    old = await identity.events.GetProfile(
        pb.GetProfileRequest(name=f"profiles/{merged_away}"), metadata=acme)
    assert old.profile.profile_id == profile_id
    assert [(m.merged_profile_id, m.identifier.type, m.identifier.value, m.message_id)
            for m in old.profile.merged_from] == [(merged_away, "anonymous_id", "a2", "m5")]
    history = await identity.events.ListProfileEvents(
        pb.ListProfileEventsRequest(parent=f"profiles/{merged_away}"), metadata=acme)
    seen = [e.event.message_id for e in history.events]
    assert seen[:2] == ["m5", "m4"] and sorted(seen[2:]) == ["m1", "m2", "m3"]  # m1-m3 tie
    assert {e.profile_id for e in history.events} == {profile_id}


async def test_traits_follow_event_time_not_arrival(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    user = ("user_id", "u1")
    await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m1", user, traits={"plan": "pro"}, at=START, identify=True),
    ]), metadata=acme)
    late = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m0", user, traits={"plan": "free", "city": "Paris"},
              at=START - timedelta(hours=1), identify=True),
    ]), metadata=acme)
    profile = await identity.events.LookupProfile(lookup(*user), metadata=acme)
    assert dict(profile.profile.traits) == {"plan": "pro", "city": "Paris"}

    await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m2", user, traits={"plan": "team"}, at=START + timedelta(hours=1), identify=True),
    ]), metadata=acme)
    profile = await identity.events.LookupProfile(lookup(*user), metadata=acme)
    assert profile.profile.traits["plan"] == "team"
    assert profile.profile.name == f"profiles/{late.results[0].profile_id}"


async def test_profile_events_page_newest_first(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    events = [event(f"m{i}", ("user_id", "u1"), at=START + timedelta(minutes=i)) for i in range(4)]
    events.append(event("m-now", ("user_id", "u1")))  # no time: it happened on receipt
    identity.clock.advance(timedelta(hours=1))
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                               metadata=acme)
    parent = f"profiles/{reply.results[0].profile_id}"

    seen: list[str] = []
    token = ""
    while True:
        page = await identity.events.ListProfileEvents(
            pb.ListProfileEventsRequest(parent=parent, page_size=2, page_token=token),
            metadata=acme)
        assert len(page.events) <= 2
        seen += [e.event.message_id for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["m-now", "m3", "m2", "m1", "m0"]
    newest = (await identity.events.ListProfileEvents(
        pb.ListProfileEventsRequest(parent=parent, page_size=1), metadata=acme)).events[0]
    assert newest.event.timestamp.ToDatetime().isoformat() == "2026-03-01T13:00:00"
    assert newest.name == f"{parent}/events/{newest.event_id}"

    for request, field in ((pb.ListProfileEventsRequest(parent=parent, page_token="nope"),
                            "page_token"),
                           (pb.ListProfileEventsRequest(parent="u1"), "parent")):
        bad = await rpc_error(identity.events.ListProfileEvents(request, metadata=acme))
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(rpc_status.from_call(bad))


async def test_concurrent_batches_about_one_new_person_make_one_profile(
        identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    calls = [identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event(f"m{i}", ("user_id", "u1"), ("anonymous_id", f"a{i}"), traits={f"t{i}": i},
              identify=True)]), metadata=acme) for i in range(12)]
    replies = await asyncio.gather(*calls)
    assert {r.results[0].status.code for r in replies} == {0}
    assert len({r.results[0].profile_id for r in replies}) == 1
    profile = (await identity.events.LookupProfile(lookup("user_id", "u1"), metadata=acme)).profile
    assert len(profile.identifiers) == 13  # u1 and every anonymous id
    assert dict(profile.traits) == {f"t{i}": i for i in range(12)}  # no lost update


async def test_a_batch_of_profiles_answers_each_name_on_its_own(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    ingest = pb.IngestEventsRequest(events=[event("m1", ("user_id", "u1"))])
    profile_id = (await identity.events.IngestEvents(ingest, metadata=acme)).results[0].profile_id
    reply = await identity.events.BatchGetProfiles(pb.BatchGetProfilesRequest(names=[
        f"profiles/{profile_id}", "segments/s1", "profiles/nobody"]), metadata=acme)
    assert [r.status.code for r in reply.results] == [0, 3, 5]
    assert reply.results[0].profile.profile_id == profile_id
    # A bad name is the item itself: the violation names `names[1]`, nothing inside it.
    assert field_violations(reply.results[1].status) == {
        "names[1]": "must be profiles/{profile_id}"}
