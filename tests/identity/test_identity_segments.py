"""Computed traits, CEL-filtered profile lists, real-time segments forwarded through the outbox,
and erasure/export of a profile, over a real gRPC server on both backends."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from grpc_status import rpc_status
from identity_support import START, Identity, Recorder, event, rpc_error

from cjo.identity.v1 import backfill_pb2, event_pb2, identity_settings_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters import profiles as profile_store
from cjo_identity.adapters import segments as segment_store
from cjo_identity.service_layer import backfills as backfill_use_cases
from cjo_identity.service_layer import segments as segment_use_cases
from cjo_platform.rpc.status import field_violations
from support import Backend, eventually

Metadata = tuple[tuple[str, str], ...]
DAY = timedelta(days=1)


def order(message_id: str, user: str, revenue: float, at: timedelta) -> event_pb2.Event:
    item = event(message_id, ("user_id", user), name="order_completed", at=START + at)
    item.properties.update({"revenue": revenue})
    return item


async def ingest(identity: Identity, metadata: Metadata,
                 *events: event_pb2.Event) -> pb.IngestEventsResponse:
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                               metadata=metadata)
    assert {r.status.code for r in reply.results} == {0}, reply
    return reply


async def with_computed_traits(identity: Identity, metadata: Metadata) -> None:
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(computed_traits=[
            identity_settings_pb2.ComputedTrait(
                name="orders_30d", aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_COUNT,
                event_name="order_completed", window=duration_pb2.Duration(seconds=30 * 86400)),
            identity_settings_pb2.ComputedTrait(
                name="lifetime_value", event_name="order_completed", property="revenue",
                aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_SUM),
            identity_settings_pb2.ComputedTrait(
                name="last_order_at", event_name="order_completed",
                aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_LAST_TIME),
        ])), metadata=metadata)


async def test_computed_traits_and_filtered_lists(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    bad = await rpc_error(identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(computed_traits=[
            identity_settings_pb2.ComputedTrait(
                name="ltv", event_name="order_completed",
                aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_SUM)])), metadata=acme))
    assert "settings.computed_traits[0].property" in field_violations(rpc_status.from_call(bad))
    await with_computed_traits(identity, acme)
    identity.clock.advance(60 * DAY)
    reply = await ingest(identity, acme,
                         order("o1", "u1", 10, 10 * DAY),  # outside the 30 days
                         order("o2", "u1", 20, 50 * DAY),
                         order("o3", "u1", 30, 55 * DAY),
                         order("o4", "u2", 5, 58 * DAY),
                         event("v1", ("user_id", "u3"), traits={"plan": "pro"}, identify=True))
    u1 = (await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{reply.results[0].profile_id}"), metadata=acme)).profile
    assert dict(u1.computed_traits) == {
        "orders_30d": 2, "lifetime_value": 60.0,
        "last_order_at": (START + 55 * DAY).isoformat()}

    async def listed(condition: str, size: int = 0) -> list[str]:
        users, token = [], ""
        while True:
            page = await identity.events.ListProfiles(pb.ListProfilesRequest(
                filter=condition, page_size=size, page_token=token), metadata=acme)
            users += [i.value for p in page.profiles for i in p.identifiers]
            token = page.next_page_token
            if not token:
                return sorted(users)

    assert await listed("computed.orders_30d >= 1") == ["u1", "u2"]
    assert await listed("computed.lifetime_value > 10.0 || traits.plan == 'pro'", 1) == [
        "u1", "u3"]
    assert await listed("") == ["u1", "u2", "u3"]
    invalid = await rpc_error(identity.events.ListProfiles(
        pb.ListProfilesRequest(filter="traits.plan == "), metadata=acme))
    assert field_violations(rpc_status.from_call(invalid))["filter"].startswith("line 1, column")
    unknown = await rpc_error(identity.events.ListProfiles(
        pb.ListProfilesRequest(filter="profile.plan == 'pro'"), metadata=acme))
    assert "unknown variable profile" in field_violations(rpc_status.from_call(unknown))["filter"]


async def test_segment_members_follow_profiles_and_orchestration_hears_it(
        identity: Identity, recorder: Recorder) -> None:
    acme = await identity.new_workspace("acme")
    await with_computed_traits(identity, acme)
    identity.clock.advance(60 * DAY)
    await ingest(identity, acme, order("o1", "u1", 20, 50 * DAY))

    def segment(condition: str) -> pb.CreateSegmentRequest:
        return pb.CreateSegmentRequest(segment=segment_pb2.Segment(
            segment_id="repeat-buyers", display_name="Repeat buyers", condition=condition))

    bad = await rpc_error(identity.events.CreateSegment(
        segment("computed.orders_30d >= && 2"), metadata=acme))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(rpc_status.from_call(bad))["segment.condition"].startswith(
        "line 1, column ")
    condition = "computed.orders_30d >= 2 && consent.email != 'unsubscribed'"
    created = await identity.events.CreateSegment(segment(condition), metadata=acme)
    assert created.segment.member_count == 0
    taken = await rpc_error(identity.events.CreateSegment(segment(condition), metadata=acme))
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS

    second = await ingest(identity, acme, order("o2", "u1", 20, 51 * DAY),
                          order("o3", "u2", 1, 52 * DAY), order("o4", "u2", 1, 53 * DAY))
    u1 = second.results[0].profile_id
    u2 = second.results[1].profile_id
    got = await identity.events.GetSegment(pb.GetSegmentRequest(name="segments/repeat-buyers"),
                                           metadata=acme)
    assert got.segment.member_count == 2
    page = await identity.events.ListSegmentMembers(pb.ListSegmentMembersRequest(
        parent="segments/repeat-buyers", page_size=1), metadata=acme)
    rest = await identity.events.ListSegmentMembers(pb.ListSegmentMembersRequest(
        parent="segments/repeat-buyers", page_token=page.next_page_token), metadata=acme)
    assert sorted([*page.profile_ids, *rest.profile_ids]) == sorted([u1, u2])
    assert not rest.next_page_token
    profile = (await identity.events.GetProfile(pb.GetProfileRequest(name=f"profiles/{u2}"),
                                                metadata=acme)).profile
    assert list(profile.segments) == ["segments/repeat-buyers"]

    # u2 unsubscribes from email: u2 leaves the segment.
    unsubscribe = event("c1", ("user_id", "u2"), name="unsubscribed", at=START + 54 * DAY)
    unsubscribe.properties.update({"channel": "email"})
    await ingest(identity, acme, unsubscribe)

    def transitions() -> list[tuple[str, str, str]]:
        return [(e.event.name, e.profile_id, e.event.properties["segment_name"])
                for e in recorder.events if e.event.name.startswith("segment_")]

    await eventually(lambda: len(transitions()) == 3)
    assert Counter(transitions()) == Counter([
        ("segment_entered", u1, "Repeat buyers"), ("segment_entered", u2, "Repeat buyers"),
        ("segment_exited", u2, "Repeat buyers")])
    # Per profile, the segment event follows the event that caused it.
    of_u2 = [e.event.name for e in recorder.events if e.profile_id == u2]
    assert of_u2 == ["order_completed", "order_completed", "segment_entered", "unsubscribed",
                     "segment_exited"]
    got = await identity.events.GetSegment(pb.GetSegmentRequest(name="segments/repeat-buyers"),
                                           metadata=acme)
    assert got.segment.member_count == 1

    # A segment created later admits the profiles that already match.
    late = await identity.events.CreateSegment(pb.CreateSegmentRequest(
        segment=segment_pb2.Segment(segment_id="buyers", display_name="Buyers",
                                    condition="computed.lifetime_value > 0.0")), metadata=acme)
    assert late.segment.backfill.state == backfill_pb2.BACKFILL_STATE_PENDING
    assert (await identity.backfilled(acme, "buyers")).member_count == 2


async def test_a_deleted_profile_is_gone_and_its_identifiers_can_be_blocked(
        identity: Identity, recorder: Recorder) -> None:
    acme = await identity.new_workspace("acme")
    first = await ingest(identity, acme,
                         event("m1", ("anonymous_id", "a1"), name="page_viewed"),
                         event("m2", ("user_id", "u1"), ("email", "ada@example.com"),
                               traits={"first_name": "Ada"}, identify=True,
                               at=START + timedelta(minutes=1)))
    anon, user = first.results[0].profile_id, first.results[1].profile_id
    await ingest(identity, acme, event("m3", ("user_id", "u1"), ("anonymous_id", "a1"),
                                       at=START + timedelta(minutes=2)))
    exported = await identity.events.ExportProfile(pb.ExportProfileRequest(
        name=f"profiles/{user}"), metadata=acme)
    document = json.loads(exported.json)
    assert document["profile"]["traits"] == {"first_name": "Ada"}
    assert sorted(e["event"]["messageId"] for e in document["events"]) == ["m1", "m2", "m3"]
    # The anonymous profile was seen first, so it survived the login and took u1 in.
    survivor = document["profile"]["profileId"]
    assert survivor == anon
    assert [m["mergedProfileId"] for m in document["profile"]["mergedFrom"]] == [user]
    await identity.events.DeleteProfile(pb.DeleteProfileRequest(
        name=f"profiles/{user}", block_identifiers=True), metadata=acme)
    for name in (f"profiles/{anon}", f"profiles/{user}"):
        gone = await rpc_error(identity.events.GetProfile(pb.GetProfileRequest(name=name),
                                                          metadata=acme))
        assert gone.code() == grpc.StatusCode.NOT_FOUND
    missing = await rpc_error(identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type="email", value="ada@example.com")), metadata=acme))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    again = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("m4", ("email", "ada@example.com")),
        event("m5", ("email", "ada@example.com"), ("anonymous_id", "fresh"))]), metadata=acme)
    assert "events[0].identifiers" in field_violations(again.results[0].status)
    assert again.results[1].status.code == 0
    fresh = (await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{again.results[1].profile_id}"), metadata=acme)).profile
    assert [(i.type, i.value) for i in fresh.identifiers] == [("anonymous_id", "fresh")]

    await eventually(lambda: any(e.event.name == "profile_deleted" for e in recorder.events))
    erased = [e for e in recorder.events if e.event.name == "profile_deleted"]
    assert [e.profile_id for e in erased] == [survivor]


async def test_a_merge_that_only_brings_computed_traits_moves_membership(
        identity: Identity, recorder: Recorder) -> None:
    """Ingest skips re-evaluating segments (and rewriting records) of profiles whose inputs did
    not change; a survivor whose record stays the same but whose computed traits change through
    a merge must still be a member (the buyer's membership moves to it: no second
    segment_entered, the person was in already), and an event that changes nothing keeps it a
    member."""
    acme = await identity.new_workspace("acme")
    await with_computed_traits(identity, acme)
    identity.clock.advance(60 * DAY)
    await identity.events.CreateSegment(pb.CreateSegmentRequest(segment=segment_pb2.Segment(
        segment_id="buyers", display_name="Buyers", condition="computed.orders_30d > 0")),
        metadata=acme)
    known = (await ingest(identity, acme, event("k1", ("user_id", "u1"), at=START + 50 * DAY))
             ).results[0].profile_id
    anonymous = order("o1", "a1", 5, 51 * DAY)
    del anonymous.identifiers[:]
    anonymous.identifiers.add(type="anonymous_id", value="a1")
    buyer = (await ingest(identity, acme, anonymous)).results[0].profile_id
    assert buyer != known

    def members() -> list[str]:
        return [e.profile_id for e in recorder.events if e.event.name == "segment_entered"]

    await eventually(lambda: members() == [buyer])
    # The sign-in merges the anonymous buyer into the known profile: its record (no traits on
    # either side) is unchanged, its computed traits are not.
    identity.clock.advance(timedelta(minutes=1))
    signed_in = await ingest(identity, acme, event("s1", ("user_id", "u1"), ("anonymous_id", "a1"),
                                                   name="signed_in", at=START + 52 * DAY))
    assert signed_in.results[0].profile_id == known
    await eventually(lambda: any(e.event.message_id == "s1" for e in recorder.events))
    assert members() == [buyer]
    first = (await identity.events.GetProfile(pb.GetProfileRequest(name=f"profiles/{known}"),
                                              metadata=acme)).profile
    assert list(first.segments) == ["segments/buyers"]
    assert first.computed_traits["orders_30d"] == 1

    # An event that changes neither record nor computed traits: still a member, no new
    # transition, but the profile's update time moves.
    identity.clock.advance(timedelta(minutes=1))
    await ingest(identity, acme, event("p1", ("user_id", "u1"), at=START + 53 * DAY))
    again = (await identity.events.GetProfile(pb.GetProfileRequest(name=f"profiles/{known}"),
                                              metadata=acme)).profile
    assert list(again.segments) == ["segments/buyers"]
    assert again.computed_traits["orders_30d"] == 1
    assert again.update_time.ToDatetime() > first.update_time.ToDatetime()
    await eventually(lambda: any(e.event.message_id == "p1" for e in recorder.events))
    assert members() == [buyer]
    assert not [e for e in recorder.events if e.event.name == "segment_exited"]


async def test_a_segment_backfill_runs_one_short_transaction_per_chunk_of_profiles(
        identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating a segment, or changing its condition, answers at once and the time worker
    scans the workspace a chunk of profiles per transaction (never one transaction holding
    the segment for the whole workspace, which held up ingest); a repeat of the request gets
    the first answer."""
    acme = await identity.new_workspace("acme")
    await ingest(identity, acme, *(
        event(f"m{n}", ("user_id", f"u{n}"), identify=True,
              traits={"plan": "pro" if n % 2 else "free"}) for n in range(7)))
    monkeypatch.setattr(backfill_use_cases, "SCAN_CHUNK", 2)
    transactions: list[object] = []  # the session of each chunk read (kept: ids stay unique)
    scan = profile_store.scan_profiles

    def counted(session: object, *args: Any, **kwargs: Any) -> Any:
        transactions.append(session)
        return scan(session, *args, **kwargs)

    monkeypatch.setattr(profile_store, "scan_profiles", counted)
    create = pb.CreateSegmentRequest(request_id="r1", segment=segment_pb2.Segment(
        segment_id="pros", condition='traits.plan == "pro"'))
    created = await identity.events.CreateSegment(create, metadata=acme)
    assert created.segment.backfill.state == backfill_pb2.BACKFILL_STATE_PENDING
    done = await identity.backfilled(acme, "pros")
    assert done.member_count == 3
    assert (done.backfill.profiles_scanned, done.backfill.profiles_total) == (7, 7)
    assert done.backfill.end_time.ToDatetime() >= done.backfill.start_time.ToDatetime()
    assert len({id(t) for t in transactions}) == 4  # 7 profiles, 2 a chunk
    again = await identity.events.CreateSegment(create, metadata=acme)
    assert again == created and len(transactions) == 4
    update = pb.UpdateSegmentRequest(
        request_id="r2", update_mask=field_mask_pb2.FieldMask(paths=["condition"]),
        segment=segment_pb2.Segment(name="segments/pros", condition='traits.plan == "free"'))
    updated = await identity.events.UpdateSegment(update, metadata=acme)
    assert updated.segment.backfill.state == backfill_pb2.BACKFILL_STATE_PENDING
    assert (await identity.backfilled(acme, "pros")).member_count == 4
    assert len({id(t) for t in transactions}) == 8
    assert await identity.events.UpdateSegment(update, metadata=acme) == updated


async def test_deleting_a_segment_lets_its_members_leave_a_chunk_per_transaction(
        identity: Identity, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """DeleteSegment: the members leave a chunk per transaction (not a million outbox rows in
    one), each announced once; then the segment goes; a repeat gets the first answer."""
    acme = await identity.new_workspace("acme")
    people = await ingest(identity, acme, *(
        event(f"m{n}", ("user_id", f"u{n}"), identify=True, traits={"plan": "pro"})
        for n in range(7)))
    await identity.events.CreateSegment(pb.CreateSegmentRequest(segment=segment_pb2.Segment(
        segment_id="pros", condition='traits.plan == "pro"')), metadata=acme)
    await identity.backfilled(acme, "pros")
    monkeypatch.setattr(segment_use_cases, "SCAN_CHUNK", 2)
    transactions: list[object] = []  # the session of each read of members
    read = segment_store.list_members

    def counted(session: object, *args: Any) -> Any:
        transactions.append(session)
        return read(session, *args)

    monkeypatch.setattr(segment_store, "list_members", counted)
    delete = pb.DeleteSegmentRequest(request_id="d1", name="segments/pros")
    await identity.events.DeleteSegment(delete, metadata=acme)
    assert len({id(t) for t in transactions}) >= 4  # 7 members, 2 a chunk
    await identity.events.DeleteSegment(delete, metadata=acme)  # a repeat: the same answer
    gone = await rpc_error(identity.events.GetSegment(
        pb.GetSegmentRequest(name="segments/pros"), metadata=acme))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    members = sorted(r.profile_id for r in people.results)

    def exits() -> list[str]:
        return sorted(e.profile_id for e in recorder.events
                      if e.event.name == "segment_exited"
                      and e.event.properties["reason"] == "segment_deleted")

    await eventually(lambda: exits() == members)


async def test_ingest_that_hits_segment_errors_goes_on_while_the_segment_is_rescanned(
        identity: Identity, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose profiles make a segment's condition fail records the errors on the
    segment's row: while that segment's new condition is being scanned, the batch is not
    held up until the scan ends (PostgreSQL; SQLite runs one transaction at a time, between
    the scan's chunks)."""
    if backend.kind != "postgresql":
        pytest.skip("SQLite has one writer: ingest runs between the scan's chunks")
    acme = await identity.new_workspace("acme")
    await ingest(identity, acme, *(
        event(f"m{n}", ("user_id", f"u{n}"), identify=True, traits={"code": str(n)})
        for n in range(7)))
    await identity.events.CreateSegment(pb.CreateSegmentRequest(segment=segment_pb2.Segment(
        segment_id="codes", condition="int(traits.code) > 5")), metadata=acme)
    await identity.backfilled(acme, "codes")
    monkeypatch.setattr(backfill_use_cases, "SCAN_CHUNK", 2)
    loop = asyncio.get_running_loop()
    scan = profile_store.scan_profiles
    ingested: list[bool] = []

    async def ingest_bad() -> pb.IngestEventsResponse:
        bad = event("bad", ("user_id", "u-bad"), identify=True, traits={"code": "x"})
        return await identity.events.IngestEvents(pb.IngestEventsRequest(events=[bad]),
                                                  metadata=acme)

    def meanwhile(session: object, *args: Any, **kwargs: Any) -> Any:
        if len(ingested) == 0 and args[1] != "":  # the scan's second chunk, in its transaction
            call = asyncio.run_coroutine_threadsafe(ingest_bad(), loop)
            try:
                ingested.append(call.result(timeout=10).results[0].status.code == 0)
            except TimeoutError:
                ingested.append(False)
        return scan(session, *args, **kwargs)

    monkeypatch.setattr(profile_store, "scan_profiles", meanwhile)
    updated = await identity.events.UpdateSegment(pb.UpdateSegmentRequest(
        update_mask=field_mask_pb2.FieldMask(paths=["condition"]),
        segment=segment_pb2.Segment(name="segments/codes", condition="int(traits.code) > 0")),
        metadata=acme)
    assert updated.segment.backfill.state == backfill_pb2.BACKFILL_STATE_PENDING
    done = await identity.backfilled(acme, "codes")
    assert ingested == [True]
    assert done.member_count == 6
    assert done.error_count >= 1  # the bad profile's error, recorded by ingest
