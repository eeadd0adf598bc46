"""A profile's record stays within its limits whatever makes it grow: every event identity
forwards (outbox or bus, whose messages hold 1 MiB) carries the profile's traits, consents and
identifiers. An identify that would merge people past the traits limit is refused (only events
carrying traits were checked), and identifiers and consents per profile are bounded. Through
the real gRPC server, on both backends."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import grpc
import pytest
from identity_support import START, Identity, Recorder, event, ingest

from cjo.identity.v1 import consent_pb2, event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_identity.adapters.outbox_payloads import event_to_proto, forwarded_event
from cjo_identity.domain.events import Event, EventType
from cjo_identity.domain.golden import ConsentRecord, Golden, Trait
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.ingest import Accepted
from cjo_identity.service_layer import ingest as ingest_use_case
from cjo_identity.service_layer.ingest import apply_events
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.limits import (
    MAX_COMPUTED_TRAITS,
    MAX_EVENT_BYTES,
    MAX_PROFILE_CONSENTS,
    MAX_PROFILE_IDENTIFIERS,
    MAX_PROFILE_TRAITS_BYTES,
    MAX_SEGMENTS,
    MAX_TOPIC_LENGTH,
)
from cjo_platform.rpc.status import field_violations
from support import eventually

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
MERGE_TOO_LARGE = (f"merging would make the profile's traits larger than "
                   f"{MAX_PROFILE_TRAITS_BYTES // 1024} KiB")
Metadata = tuple[tuple[str, str], ...]


def big(message_id: str, identifier: tuple[str, str], trait: str,
        size: int = 200_000) -> event_pb2.Event:
    return event(message_id, identifier, identify=True, traits={trait: "x" * size})


def consent(message_id: str, identifier: tuple[str, str], topic: str,
            name: str = "subscribed") -> event_pb2.Event:
    sent = event(message_id, identifier, name=name)
    sent.properties.update({"channel": "email", "topic": topic})
    return sent


async def profile_of(identity: Identity, md: Metadata, kind: str, value: str) -> Any:
    return (await identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type=kind, value=value)), metadata=md)).profile


async def missing(identity: Identity, md: Metadata, kind: str, value: str) -> bool:
    try:
        await profile_of(identity, md, kind, value)
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.NOT_FOUND
    return False


def forwarded(recorder: Recorder, message_id: str) -> orch_pb.ForwardedEvent | None:
    return next((e for e in recorder.events if e.event.message_id == message_id), None)


def count_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per attempt at a batch (each a transaction of its own)."""
    attempts: list[int] = []

    def counted(uow: UnitOfWork, **arguments: Any) -> ingest_use_case.Applied:
        attempts.append(len(arguments["batch"]))
        return apply_events(uow, **arguments)

    monkeypatch.setattr(ingest_use_case, "apply_events", counted)
    return attempts


async def test_a_merge_past_the_traits_limit_is_refused_and_nothing_of_it_written(
        identity: Identity, recorder: Recorder) -> None:
    """Two people of 200 KB of traits each: the identify that links them (no traits of its
    own) fails alone, naming its identifiers; no link, no merge, the batch's other events are
    ingested as they would be without it (before: the merge was accepted, and every later
    event of the person carried 400 KB of traits)."""
    acme = await identity.new_workspace("acme")
    assert [r.status.code for r in await ingest(
        identity, acme, big("a", ("user_id", "u1"), "a"),
        big("b", ("email", "b@x.io"), "b"))] == [0, 0]
    results = await ingest(
        identity, acme,
        event("link", ("user_id", "u1"), ("email", "b@x.io"), identify=True),
        event("other", ("user_id", "u2"), identify=True, traits={"plan": "pro"}),
        event("t1", ("user_id", "u1"), name="order_completed"),
        event("t2", ("email", "b@x.io"), name="order_completed"))
    assert [r.status.code for r in results] == [INVALID, 0, 0, 0]
    assert MERGE_TOO_LARGE in field_violations(results[0].status)["events[0].identifiers"]
    assert len({r.profile_id for r in results[1:]}) == 3
    u1 = await profile_of(identity, acme, "user_id", "u1")
    b = await profile_of(identity, acme, "email", "b@x.io")
    assert u1.name != b.name
    assert set(u1.traits) == {"a"} and [i.type for i in u1.identifiers] == ["user_id"]
    assert set(b.traits) == {"b"} and [i.type for i in b.identifiers] == ["email"]
    stored = await identity.events.ListProfileEvents(pb.ListProfileEventsRequest(
        parent=u1.name), metadata=acme)
    assert {e.event.message_id for e in stored.events} == {"a", "t1"}
    for message_id in ("t1", "t2", "other"):
        found = await eventually(partial(forwarded, recorder, message_id))
        assert isinstance(found, orch_pb.ForwardedEvent)
        assert found.profile_traits.ByteSize() <= MAX_PROFILE_TRAITS_BYTES
    assert not [e for e in recorder.events if e.event.name == "profile_merged"]


async def test_a_thousand_merging_identifies_are_refused_with_one_replan(
        identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    """999 identifies that would each merge a person near the limit with another, each with a
    new anonymous id, and one unrelated event: all 999 are found in the first plan and the
    batch is planned once more (two transactions, not one per refused event), and no refused
    identify's anonymous id ends up in anyone's profile."""
    acme = await identity.new_workspace("acme")
    assert [r.status.code for r in await ingest(
        identity, acme, big("a", ("user_id", "u1"), "a", 250_000),
        big("b", ("email", "b@x.io"), "b", 20_000))] == [0, 0]
    attempts = count_attempts(monkeypatch)
    results = await ingest(identity, acme, *(
        event(f"link{k}", ("user_id", "u1"), ("anonymous_id", f"anon-{k}"), ("email", "b@x.io"),
              identify=True) for k in range(999)),
        event("other", ("user_id", "u2"), identify=True, traits={"plan": "pro"}))
    assert [r.status.code for r in results] == [INVALID] * 999 + [0]
    assert "events[998].identifiers" in field_violations(results[998].status)
    assert attempts == [1000, 1000]
    for k in (0, 7, 998):
        assert await missing(identity, acme, "anonymous_id", f"anon-{k}")
    u1 = await profile_of(identity, acme, "user_id", "u1")
    assert [i.type for i in u1.identifiers] == ["user_id"]


async def test_a_refused_identifys_new_identifier_and_events_sent_with_it_stay_out(
        identity: Identity) -> None:
    """The refused identify is left out whole: its new anonymous id is not linked to the
    known person, so the events of that anonymous id in the same batch make a profile of
    their own (they are not the known person's, nor the other one's)."""
    acme = await identity.new_workspace("acme")
    await ingest(identity, acme, big("a", ("user_id", "u1"), "a"),
                 big("b", ("email", "b@x.io"), "b"))
    results = await ingest(
        identity, acme,
        event("link", ("user_id", "u1"), ("anonymous_id", "anon-x"), ("email", "b@x.io"),
              identify=True),
        event("page", ("anonymous_id", "anon-x"), traits={"seen": "pricing"}))
    assert [r.status.code for r in results] == [INVALID, 0]
    u1 = await profile_of(identity, acme, "user_id", "u1")
    b = await profile_of(identity, acme, "email", "b@x.io")
    anonymous = await profile_of(identity, acme, "anonymous_id", "anon-x")
    assert anonymous.name == f"profiles/{results[1].profile_id}"
    assert anonymous.name not in (u1.name, b.name)
    assert set(anonymous.traits) == {"seen"}
    assert "seen" not in u1.traits and "seen" not in b.traits


async def test_the_identify_that_merges_is_blamed_not_the_persons_other_events(
        identity: Identity) -> None:
    """In batch order: a trait of the second person sent before the identify fits (it is
    applied first), the identify that would then merge too much is refused, and the first
    person's later trait fits its own record (before: the merge was accepted and the later
    trait, the only event measured, was refused in its place)."""
    acme = await identity.new_workspace("acme")
    await ingest(identity, acme, big("a", ("user_id", "u1"), "a", 210_000),
                 big("b", ("email", "b@x.io"), "b", 40_000))
    results = await ingest(
        identity, acme,
        event("more-b", ("email", "b@x.io"), identify=True, traits={"b2": "y" * 20_000}),
        event("link", ("user_id", "u1"), ("email", "b@x.io"), identify=True),
        event("more-a", ("user_id", "u1"), identify=True, traits={"a2": "z" * 1_000}))
    assert [r.status.code for r in results] == [0, INVALID, 0]
    assert "events[1].identifiers" in field_violations(results[1].status)
    assert set((await profile_of(identity, acme, "user_id", "u1")).traits) == {"a", "a2"}
    assert set((await profile_of(identity, acme, "email", "b@x.io")).traits) == {"b", "b2"}


async def test_a_refused_events_traits_are_not_in_the_record_later_events_see(
        identity: Identity) -> None:
    """An event refused for its traits leaves nothing in the record the later events of the
    batch are judged against (before: every event with traits after it was refused too)."""
    acme = await identity.new_workspace("acme")
    await ingest(identity, acme, big("a", ("user_id", "u1"), "a"))
    results = await ingest(
        identity, acme, big("b", ("user_id", "u1"), "b"),
        event("plan", ("user_id", "u1"), identify=True, traits={"plan": "pro"}),
        big("c", ("user_id", "u1"), "c", 40_000), big("d", ("user_id", "u1"), "d", 40_000))
    assert [r.status.code for r in results] == [INVALID, 0, 0, INVALID]
    assert "events[3].traits" in field_violations(results[3].status)
    assert set((await profile_of(identity, acme, "user_id", "u1")).traits) == {
        "a", "plan", "c"}


async def test_a_late_identify_that_moves_a_large_history_past_the_limit_is_refused(
        identity: Identity) -> None:
    """A split (user_id allows one per profile): a late identify, earlier than the link that
    gave an anonymous id to u1, moves that id, and its 150 KB of traits, to u2's profile of
    150 KB. It is refused, naming its identifiers, and nothing moves (before: u2's record was
    refolded to 300 KB)."""
    acme = await identity.new_workspace("acme")
    t1, t2 = START - timedelta(hours=2), START - timedelta(hours=1)
    assert {r.status.code for r in await ingest(
        identity, acme,
        event("login", ("user_id", "u1"), ("anonymous_id", "a1"), identify=True, at=t2),
        event("visit", ("anonymous_id", "a1"), identify=True, at=t2,
              traits={"seen": "x" * 150_000}),
        event("u2", ("user_id", "u2"), identify=True, at=t2, traits={"own": "y" * 150_000}))
    } == {0}
    late = await ingest(identity, acme, event(
        "late", ("user_id", "u2"), ("anonymous_id", "a1"), identify=True, at=t1))
    assert late[0].status.code == INVALID
    assert "events[0].identifiers" in field_violations(late[0].status)
    u1 = await profile_of(identity, acme, "user_id", "u1")
    assert (await profile_of(identity, acme, "anonymous_id", "a1")).name == u1.name
    assert set((await profile_of(identity, acme, "user_id", "u2")).traits) == {"own"}


async def test_ordinary_merges_still_work(identity: Identity, recorder: Recorder) -> None:
    """Three dozen anonymous visits, each its own profile with a trait, joined at login one
    by one and in one batch; two people of 100 KB each merge too (within the limit)."""
    acme = await identity.new_workspace("acme")
    await ingest(identity, acme, *(
        event(f"visit{k}", ("anonymous_id", f"anon-{k}"), traits={f"v{k}": k})
        for k in range(36)))
    results = await ingest(identity, acme, *(
        event(f"login{k}", ("user_id", "u1"), ("anonymous_id", f"anon-{k}"), identify=True)
        for k in range(36)))
    assert {r.status.code for r in results} == {0}
    assert len({r.profile_id for r in results}) == 1
    u1 = await profile_of(identity, acme, "user_id", "u1")
    assert len(u1.identifiers) == 37 and set(u1.traits) == {f"v{k}" for k in range(36)}
    await ingest(identity, acme, big("c", ("user_id", "u3"), "c", 100_000),
                 big("d", ("email", "d@x.io"), "d", 100_000))
    joined = await ingest(identity, acme, event(
        "join", ("user_id", "u3"), ("email", "d@x.io"), identify=True))
    assert joined[0].status.code == 0
    u3 = await profile_of(identity, acme, "user_id", "u3")
    assert u3.name == (await profile_of(identity, acme, "email", "d@x.io")).name
    assert set(u3.traits) == {"c", "d"}
    merged = await eventually(lambda: next((e for e in recorder.events
                                            if e.event.name == "profile_merged"
                                            and e.profile_id == joined[0].profile_id), None))
    assert set(merged.profile_traits) == {"c", "d"}


async def test_a_profile_holds_at_most_the_identifier_limit(
        identity: Identity, recorder: Recorder) -> None:
    """A type without a limit of its own (anonymous_id) no longer grows a profile without
    bound: past MAX_PROFILE_IDENTIFIERS the link is dropped (the event still goes to the
    person's profile; the extra anonymous id is a profile of its own), so each forwarded event
    carries at most that many identifiers (before: 251, and ~9,700 made a row no bus message
    could hold)."""
    acme = await identity.new_workspace("acme")
    extra = 50
    results = await ingest(identity, acme, *(
        event(f"login{k:03}", ("user_id", "u1"), ("anonymous_id", f"anon-{k:03}"), identify=True)
        for k in range(MAX_PROFILE_IDENTIFIERS + extra)))
    assert {r.status.code for r in results} == {0}
    assert len({r.profile_id for r in results}) == 1
    u1 = await profile_of(identity, acme, "user_id", "u1")
    assert len(u1.identifiers) == MAX_PROFILE_IDENTIFIERS
    last = f"anon-{MAX_PROFILE_IDENTIFIERS + extra - 1:03}"
    assert (await profile_of(identity, acme, "anonymous_id", last)).name != u1.name
    later = await ingest(identity, acme, event("later", ("user_id", "u1"), name="x"))
    found = await eventually(partial(forwarded, recorder, "later"))
    assert isinstance(found, orch_pb.ForwardedEvent)
    assert later[0].profile_id == found.profile_id
    assert len(found.identifiers) == MAX_PROFILE_IDENTIFIERS


async def test_a_profile_holds_at_most_the_consent_limit(identity: Identity) -> None:
    """Consent events for one more (channel, topic) than MAX_PROFILE_CONSENTS: the one past
    the limit fails alone, naming its topic; a consent already held still changes; a merge
    that would hold more is refused (before: every topic was kept and carried by each
    forwarded event)."""
    acme = await identity.new_workspace("acme")
    results = await ingest(identity, acme, *(
        consent(f"c{k}", ("user_id", "u1"), f"topic-{k}")
        for k in range(MAX_PROFILE_CONSENTS + 1)),
        consent("z-again", ("user_id", "u1"), "topic-3", name="unsubscribed"))
    assert [r.status.code for r in results] == [0] * MAX_PROFILE_CONSENTS + [INVALID, 0]
    assert "more than 250 consents" in field_violations(
        results[MAX_PROFILE_CONSENTS].status)[f"events[{MAX_PROFILE_CONSENTS}].properties.topic"]
    u1 = await profile_of(identity, acme, "user_id", "u1")
    assert len(u1.consents) == MAX_PROFILE_CONSENTS
    unsubscribed = consent_pb2.CONSENT_STATE_UNSUBSCRIBED
    assert {c.topic for c in u1.consents if c.state == unsubscribed} == {"topic-3"}
    await ingest(identity, acme, consent("other", ("email", "b@x.io"), "elsewhere"))
    link = await ingest(identity, acme, event(
        "link", ("user_id", "u1"), ("email", "b@x.io"), identify=True))
    assert link[0].status.code == INVALID
    assert "more than 250 consents" in field_violations(link[0].status)["events[0].identifiers"]


def test_the_largest_record_fits_a_bus_message() -> None:
    """Every limit at its worst at once (4-byte characters wherever a string may hold them):
    a forwarded event stays below 900 KiB, within the bus's 1 MiB."""
    wide = "\U0001f600"
    at = datetime(2026, 1, 1, tzinfo=UTC)
    identifiers = tuple(Identifier("custom_type_abcd", f"{k:04}" + wide * 252)
                        for k in range(20))
    sent = Event("m" * 128, EventType.TRACK, "n" * 128, identifiers, {"blob": ""}, {}, at,
                 "s" * 64)
    room = MAX_EVENT_BYTES - event_to_proto(sent).ByteSize() - 8
    sent = replace(sent, properties={"blob": wide * (room // 4)})
    assert MAX_EVENT_BYTES - 8 <= event_to_proto(sent).ByteSize() <= MAX_EVENT_BYTES
    golden = Golden(
        {"t": Trait("x" * (MAX_PROFILE_TRAITS_BYTES - 8), at)},
        {("email", f"{k:03}" + wide * (MAX_TOPIC_LENGTH - 3)): ConsentRecord(
            "email", f"{k:03}" + wide * (MAX_TOPIC_LENGTH - 3), True, at, "m", wide * 64)
         for k in range(MAX_PROFILE_CONSENTS)})
    linked = [("custom_type_abcd", f"{k:04}" + wide * 252) for k in range(MAX_PROFILE_IDENTIFIERS)]
    computed = {f"c{k:02}" + "n" * 125: 1.5e300 for k in range(MAX_COMPUTED_TRAITS)}
    segments = [f"{k:032x}" for k in range(MAX_SEGMENTS)]
    payload = forwarded_event(Accepted("e" * 32, "p" * 32, sent, golden), "t" * 55,
                              (computed, segments, linked))
    assert len(payload) < 900 * 1024
