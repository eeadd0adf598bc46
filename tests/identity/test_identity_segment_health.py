"""A segment whose condition fails for some profiles hurts only itself: ingest goes on for every
profile, the errors are recorded on the segment (and after 50 in a row it is switched off),
other segments and workspaces are unaffected, and UpdateSegment repairs it. Plus List, Update
and Delete of segments. Through the real gRPC server, on both backends."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence

import grpc
from google.protobuf import field_mask_pb2
from grpc_status import rpc_status
from identity_support import START, Identity, Recorder, event, rpc_error

from cjo.identity.v1 import backfill_pb2, event_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.domain.golden import Golden, Trait
from cjo_identity.domain.segments import (
    INVALID_AFTER,
    Health,
    Verdict,
    activation,
    compile_condition,
    evaluate,
)
from cjo_platform.rpc.status import field_violations
from support import eventually

Metadata = tuple[tuple[str, str], ...]
CODES = "int(traits.code) > 0"
# The same, repaired: `&&` absorbs the error of its right side when its left side is false.
CODES_REPAIRED = "traits.code.matches('^[0-9]+$') && int(traits.code) > 0"


def facts(**traits: object) -> dict[str, object]:
    golden = Golden({name: Trait(value, START) for name, value in traits.items()})
    return activation(golden, {})


def test_a_verdict_is_member_not_member_or_the_error_never_an_exception() -> None:
    codes = compile_condition(CODES, "condition")
    assert evaluate(codes, facts(code="12")) == Verdict(True)
    assert evaluate(codes, facts(code="-3")) == Verdict(False)
    # A trait the profile does not have: the condition does not hold, and that is no error.
    assert evaluate(codes, facts(plan="pro")) == Verdict(False)
    failed = evaluate(codes, facts(code="abc"))
    assert not failed.member and "int" in failed.error
    for source, n in [("traits.n / 0 == 1", 5), ("[1, 2][traits.n] == 1", 5),
                      ("traits.n + 9223372036854775807 > 0", 5), ("uint(traits.n) > 0u", -5)]:
        verdict = evaluate(compile_condition(source, "condition"), facts(n=n))
        assert verdict.error and not verdict.member, source
    # A trait of another type than the condition expects is data the profile does not have
    # (as in journeys' conditions): the condition does not hold, and that is no error.
    older = compile_condition("traits.age > 30", "condition")
    for age in (None, "42", [42], {"years": 42}):
        assert evaluate(older, facts(age=age)) == Verdict(False), age
    assert evaluate(compile_condition("traits.n > 'a'", "condition"), facts(n=5)) == Verdict(False)


async def test_odd_trait_values_never_switch_a_segment_off(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    await create(identity, acme, "older", "traits.age > 30")
    odd: list[object] = [None, "42", [42], True]
    batch = [event(f"a{n}", ("user_id", f"a{n}"), traits={"age": odd[n % len(odd)]},
                   identify=True) for n in range(INVALID_AFTER + 10)]
    await ingest(identity, acme, batch)
    fine = await ingest(identity, acme, [event("b", ("user_id", "b"), traits={"age": 41},
                                               identify=True)])
    older = await get(identity, acme, "older")
    assert older.state == segment_pb2.SEGMENT_STATE_ACTIVE
    assert (older.error_count, older.last_error) == (0, "")
    assert await members(identity, acme, "older") == {fine.results[0].profile_id}


def test_health_counts_errors_in_a_row_across_batches() -> None:
    health = Health(held=INVALID_AFTER - 3)
    health.record("p1", Verdict(False, "boom"))
    health.record("p2", Verdict(False, "boom"))
    assert (health.errors, health.consecutive, health.invalid) == (2, INVALID_AFTER - 1, False)
    health.record("p3", Verdict(True))
    health.record("p4", Verdict(False, "bang"))
    assert (health.errors, health.consecutive, health.last_error,
            health.last_error_profile_id) == (3, 1, "bang", "p4")
    fresh = Health(held=INVALID_AFTER - 1)
    fresh.record("p1", Verdict(False, "boom"))
    assert fresh.invalid
    assert not Health().worth_writing
    recovered = Health(held=4)
    recovered.record("p1", Verdict(False))
    assert recovered.worth_writing and recovered.consecutive == 0


async def ingest(identity: Identity, metadata: Metadata,
                 events: Sequence[event_pb2.Event]) -> pb.IngestEventsResponse:
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                               metadata=metadata)
    assert [r.status.code for r in reply.results] == [0] * len(events), reply
    return reply


def person(n: int | str, code: str, prefix: str = "m") -> event_pb2.Event:
    return event(f"{prefix}{n}", ("user_id", f"u{n}"), traits={"code": code, "plan": "pro"},
                 identify=True)


async def create(identity: Identity, metadata: Metadata, segment_id: str,
                 condition: str) -> segment_pb2.Segment:
    reply = await identity.events.CreateSegment(pb.CreateSegmentRequest(
        segment=segment_pb2.Segment(segment_id=segment_id, display_name=segment_id.title(),
                                    condition=condition)), metadata=metadata)
    return reply.segment


async def get(identity: Identity, metadata: Metadata, segment_id: str) -> segment_pb2.Segment:
    return (await identity.events.GetSegment(pb.GetSegmentRequest(
        name=f"segments/{segment_id}"), metadata=metadata)).segment


async def members(identity: Identity, metadata: Metadata, segment_id: str) -> set[str]:
    reply = await identity.events.ListSegmentMembers(pb.ListSegmentMembersRequest(
        parent=f"segments/{segment_id}", page_size=1000), metadata=metadata)
    return set(reply.profile_ids)


def segment_events(recorder: Recorder, name: str, segment_id: str) -> list[str]:
    return [e.profile_id for e in recorder.events if e.event.name == name
            and e.event.properties["segment_id"] == segment_id]


async def test_a_failing_segment_never_stops_ingest_and_is_switched_off_then_repaired(
        identity: Identity, recorder: Recorder) -> None:
    acme = await identity.new_workspace("acme")
    other = await identity.new_workspace("other")
    # Created while the workspace has no profiles: nothing to evaluate it on yet.
    created = await create(identity, acme, "codes", CODES)
    assert created.state == segment_pb2.SEGMENT_STATE_ACTIVE and created.error_count == 0
    await create(identity, acme, "pros", 'traits.plan == "pro"')
    # Fails with a division by zero for code "0": the CEL runtime raises another error class.
    await create(identity, acme, "ratio", "100 / int(traits.code) > 1")
    await create(identity, other, "codes", CODES)
    for metadata, segment_id in ((acme, "codes"), (acme, "pros"), (acme, "ratio"),
                                 (other, "codes")):
        await identity.backfilled(metadata, segment_id)  # nobody to scan yet
    # What fails whatever the data is refused when saved, naming the field.
    for constant in ("1/0 == 1", "traits.code == 'x' || [1, 2][5] == 1"):
        refused = await rpc_error(create(identity, acme, "constant", constant))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "segment.condition" in field_violations(rpc_status.from_call(refused))

    # A batch mixing good and bad codes is accepted whole; the good ones enter.
    first = await ingest(identity, acme, [person(1, "7"), person(2, "abc"), person(3, "12"),
                                          person(0, "0")])
    good = {first.results[0].profile_id, first.results[2].profile_id}
    bad = first.results[1].profile_id
    assert await members(identity, acme, "codes") == good
    codes = await get(identity, acme, "codes")
    assert codes.state == segment_pb2.SEGMENT_STATE_ACTIVE
    # Profiles are evaluated by id: the good ones may come after the bad one, ending its run.
    assert (codes.error_count, codes.consecutive_error_count) in ((1, 1), (1, 0))
    assert "int" in codes.last_error and codes.last_error_profile_id == bad
    assert CODES not in codes.last_error  # the segment shows its condition already
    assert codes.last_error_time.ToDatetime().year == START.year
    # Events were stored and forwarded for every profile, bad code or not.
    await eventually(lambda: sum(e.event.type == event_pb2.EVENT_TYPE_IDENTIFY
                                 for e in recorder.events) == 4)
    assert len(await members(identity, acme, "pros")) == 4
    ratio = await get(identity, acme, "ratio")
    assert ratio.error_count == 2 and ratio.member_count == 2
    assert "division by zero" in ratio.last_error or "int" in ratio.last_error

    # INVALID_AFTER bad codes in a row switch the segment off; ingest never fails.
    bad_batch = [person(f"x{n}", "n/a") for n in range(INVALID_AFTER)]
    reply = await ingest(identity, acme, bad_batch)
    codes = await get(identity, acme, "codes")
    assert codes.state == segment_pb2.SEGMENT_STATE_INVALID
    # Not evaluated any more once the run reached INVALID_AFTER, even within the batch.
    assert codes.consecutive_error_count == INVALID_AFTER
    assert codes.error_count in (INVALID_AFTER, INVALID_AFTER + 1)
    assert codes.last_error_profile_id in {r.profile_id for r in reply.results}
    listed = await identity.events.ListSegments(pb.ListSegmentsRequest(), metadata=acme)
    assert [(s.segment_id, s.state) for s in listed.segments] == [
        ("codes", segment_pb2.SEGMENT_STATE_INVALID), ("pros", segment_pb2.SEGMENT_STATE_ACTIVE),
        ("ratio", segment_pb2.SEGMENT_STATE_INVALID)]

    # Switched off: no longer evaluated (a good code does not enter, nor count an error), while
    # the workspace's other segment and the other workspace go on.
    late = await ingest(identity, acme, [person(4, "5")])
    assert await members(identity, acme, "codes") == good
    assert (await get(identity, acme, "codes")).error_count == codes.error_count
    assert len(await members(identity, acme, "pros")) == 5 + INVALID_AFTER
    theirs = await ingest(identity, other, [person(1, "3", prefix="o")])
    assert await members(identity, other, "codes") == {theirs.results[0].profile_id}
    assert (await get(identity, other, "codes")).error_count == 0

    # Repaired: errors cleared, active again, members recomputed at once (the late one enters;
    # the bad ones stay out, now without an error).
    repaired = await identity.events.UpdateSegment(pb.UpdateSegmentRequest(
        segment=segment_pb2.Segment(name="segments/codes", condition=CODES_REPAIRED,
                                    etag=codes.etag),
        update_mask=field_mask_pb2.FieldMask(paths=["condition"])), metadata=acme)
    fixed = repaired.segment
    assert fixed.state == segment_pb2.SEGMENT_STATE_ACTIVE
    assert (fixed.error_count, fixed.last_error, fixed.HasField("last_error_time")) == (
        0, "", False)
    assert fixed.etag != codes.etag
    # Members are recomputed in the background, right after the answer.
    assert fixed.backfill.state == backfill_pb2.BACKFILL_STATE_PENDING
    assert (await identity.backfilled(acme, "codes")).member_count == 3
    assert await members(identity, acme, "codes") == good | {late.results[0].profile_id}
    await eventually(lambda: late.results[0].profile_id in segment_events(
        recorder, "segment_entered", "codes"))
    await ingest(identity, acme, [person("y", "zz")])
    assert (await get(identity, acme, "codes")).error_count == 0
    assert bad not in await members(identity, acme, "codes")

    # Deleted: gone, its members left it (orchestration hears why), other segments stay.
    await identity.events.DeleteSegment(pb.DeleteSegmentRequest(name="segments/codes"),
                                        metadata=acme)
    gone = await rpc_error(get(identity, acme, "codes"))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    await eventually(lambda: sorted(segment_events(recorder, "segment_exited", "codes"))
                     == sorted(good | {late.results[0].profile_id}))
    exits = [e for e in recorder.events if e.event.name == "segment_exited"]
    assert {e.event.properties["reason"] for e in exits} == {"segment_deleted"}
    listed = await identity.events.ListSegments(pb.ListSegmentsRequest(), metadata=acme)
    assert [s.segment_id for s in listed.segments] == ["pros", "ratio"]
    # The id is free again.
    await create(identity, acme, "codes", CODES_REPAIRED)
    assert (await identity.backfilled(acme, "codes")).member_count == 3


async def test_creating_a_segment_over_bad_data_records_the_errors_not_fails(
        identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    await ingest(identity, acme, [person(n, "abc" if n % 2 else str(n + 1)) for n in range(10)])
    await create(identity, acme, "codes", CODES)
    created = await identity.backfilled(acme, "codes")
    assert created.state == segment_pb2.SEGMENT_STATE_ACTIVE
    assert (created.member_count, created.error_count) == (5, 5)
    assert created.last_error_profile_id
    # Failing for everyone: INVALID at once, and the call still succeeds.
    await ingest(identity, acme, [person(f"x{n}", "n/a") for n in range(INVALID_AFTER)])
    await create(identity, acme, "nobody", "int(traits.plan) > 0")
    everyone = await identity.backfilled(acme, "nobody")
    assert everyone.state == segment_pb2.SEGMENT_STATE_INVALID
    assert everyone.error_count == INVALID_AFTER and everyone.member_count == 0


async def test_list_update_and_delete_segments(identity: Identity, recorder: Recorder) -> None:
    acme = await identity.new_workspace("acme")
    other = await identity.new_workspace("other")
    await ingest(identity, acme, [person(n, str(n)) for n in range(1, 4)])
    for n in range(5):
        await create(identity, acme, f"s{n}", f"int(traits.code) > {n}")
    await create(identity, other, "theirs", "true")
    for n in range(5):
        await identity.backfilled(acme, f"s{n}")

    seen, token, pages = [], "", 0
    while True:
        page = await identity.events.ListSegments(pb.ListSegmentsRequest(
            page_size=2, page_token=token), metadata=acme)
        seen += [(s.segment_id, s.member_count) for s in page.segments]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [("s0", 3), ("s1", 2), ("s2", 1), ("s3", 0), ("s4", 0)]
    assert pages == 3
    crafted = base64.urlsafe_b64encode(json.dumps({"after": "\x00"}).encode()).decode()
    for token in ("not a token", crafted):
        bad_token = await rpc_error(identity.events.ListSegments(pb.ListSegmentsRequest(
            page_token=token), metadata=acme))
        assert bad_token.code() == grpc.StatusCode.INVALID_ARGUMENT

    def update(name: str, paths: list[str], **fields: str) -> pb.UpdateSegmentRequest:
        return pb.UpdateSegmentRequest(segment=segment_pb2.Segment(name=name, **fields),
                                       update_mask=field_mask_pb2.FieldMask(paths=paths))

    s0 = await get(identity, acme, "s0")
    renamed = (await identity.events.UpdateSegment(update(
        "segments/s0", ["display_name"], display_name="Everyone", condition="false"),
        metadata=acme)).segment
    # Only the masked field changed; members were not recomputed.
    assert (renamed.display_name, renamed.condition, renamed.member_count) == (
        "Everyone", s0.condition, 3)
    assert renamed.etag != s0.etag
    assert renamed.update_time.ToDatetime() >= renamed.create_time.ToDatetime()
    stale = await rpc_error(identity.events.UpdateSegment(update(
        "segments/s0", ["display_name"], display_name="x", etag=s0.etag), metadata=acme))
    assert stale.code() == grpc.StatusCode.ABORTED
    narrowed = (await identity.events.UpdateSegment(update(
        "segments/s0", ["condition"], condition="int(traits.code) > 2", etag=renamed.etag),
        metadata=acme)).segment
    assert narrowed.condition == "int(traits.code) > 2"
    assert (await identity.backfilled(acme, "s0")).member_count == 1
    await eventually(lambda: len(segment_events(recorder, "segment_exited", "s0")) == 2)

    for bad, field in [
            (update("segments/s0", []), "update_mask"),
            (update("segments/s0", ["segment_id"]), "update_mask"),
            (update("segments/s0", ["condition"], condition="traits.code >"), "segment.condition"),
            (update("segments/s0", ["condition"], condition="profile.code == 1"),
             "segment.condition"),
            (update("segments/s0", ["condition"], condition="1/0 == 1"), "segment.condition"),
            (update("segments/s0", ["display_name"], display_name="x" * 201),
             "segment.display_name"),
            (update("s0", ["display_name"]), "segment.name")]:
        error = await rpc_error(identity.events.UpdateSegment(bad, metadata=acme))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert field in field_violations(rpc_status.from_call(error)), (bad, field)
    assert (await get(identity, acme, "s0")).condition == "int(traits.code) > 2"

    for call in (identity.events.UpdateSegment(update("segments/nope", ["display_name"]),
                                               metadata=acme),
                 identity.events.DeleteSegment(pb.DeleteSegmentRequest(name="segments/nope"),
                                               metadata=acme),
                 # Another workspace's segment does not exist here.
                 identity.events.DeleteSegment(pb.DeleteSegmentRequest(name="segments/theirs"),
                                               metadata=acme),
                 identity.events.GetSegment(pb.GetSegmentRequest(name="segments/theirs"),
                                            metadata=acme)):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    await identity.events.DeleteSegment(pb.DeleteSegmentRequest(name="segments/s3"),
                                        metadata=acme)
    twice = await rpc_error(identity.events.DeleteSegment(pb.DeleteSegmentRequest(
        name="segments/s3"), metadata=acme))
    assert twice.code() == grpc.StatusCode.NOT_FOUND
    listed = await identity.events.ListSegments(pb.ListSegmentsRequest(), metadata=acme)
    assert [s.segment_id for s in listed.segments] == ["s0", "s1", "s2", "s4"]
    assert [s.segment_id for s in (await identity.events.ListSegments(
        pb.ListSegmentsRequest(), metadata=other)).segments] == ["theirs"]


async def test_concurrent_batches_count_every_error(identity: Identity) -> None:
    acme = await identity.new_workspace("acme")
    await create(identity, acme, "codes", CODES)
    await create(identity, acme, "pros", 'traits.plan == "pro"')
    await identity.backfilled(acme, "codes")
    await identity.backfilled(acme, "pros")
    batches = [[person(f"{b}-{n}", "abc" if n else "1", prefix=f"b{b}-") for n in range(6)]
               for b in range(8)]
    replies = await asyncio.gather(*(identity.events.IngestEvents(
        pb.IngestEventsRequest(events=batch), metadata=acme) for batch in batches))
    assert {r.status.code for reply in replies for r in reply.results} == {0}
    codes = await get(identity, acme, "codes")
    # Counts are added in the database, so concurrent batches lose none.
    assert codes.error_count == 8 * 5 and codes.state == segment_pb2.SEGMENT_STATE_ACTIVE
    assert codes.member_count == 8
    assert (await get(identity, acme, "pros")).member_count == 8 * 6
