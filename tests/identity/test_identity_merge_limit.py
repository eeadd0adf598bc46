"""A merge keeps the golden record within MAX_PROFILE_TRAITS_BYTES: every event identity
forwards carries its profile's traits, so an identify call (no traits of its own) that joined
two people each under the limit once made every later event of the merged person too large.
Through the real gRPC server, on both backends."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import grpc
import pytest
from identity_support import (
    START,
    DecisioningRecorder,
    Identity,
    Recorder,
    event,
    ingest,
    serve_identity,
)

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_identity.service_layer import ingest as ingest_use_case
from cjo_identity.service_layer.ingest import apply_events
from cjo_platform.clock import ManualClock
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.limits import MAX_PROFILE_TRAITS_BYTES
from cjo_platform.rpc.status import field_violations
from support import Backend, eventually

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
TOO_LARGE = f"merging would make the profile's traits larger than " \
    f"{MAX_PROFILE_TRAITS_BYTES // 1024} KiB"


def big(message_id: str, identifier: tuple[str, str], trait: str,
        size: int = 200_000) -> event_pb2.Event:
    return event(message_id, identifier, identify=True, traits={trait: "x" * size})


async def profile_of(identity: Identity, metadata: tuple[tuple[str, str], ...],
                     kind: str, value: str) -> pb.LookupProfileResponse:
    return await identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event_pb2.Identifier(type=kind, value=value)), metadata=metadata)


def forwarded(receiver: Recorder | DecisioningRecorder, message_id: str
              ) -> orch_pb.ForwardedEvent | None:
    return next((e for e in receiver.events if e.event.message_id == message_id), None)


async def test_a_merge_that_would_make_the_traits_too_large_fails_alone(
        identity: Identity, recorder: Recorder, decisioning: DecisioningRecorder) -> None:
    """Two people of 200 KB of traits each: the identify call that links them (no traits of
    its own) fails alone, naming its identifiers, before anything is written; the profiles
    stay apart, the batch's other events are ingested, and no forwarded event carries more
    than the limit (before: the merge was accepted and every later event of the person carried
    400 KB of traits)."""
    acme = await identity.new_workspace("acme")
    assert [r.status.code for r in await ingest(
        identity, acme, big("a", ("user_id", "u1"), "a"),
        big("b", ("email", "b@x.io"), "b"))] == [0, 0]
    link = event("link", ("user_id", "u1"), ("email", "b@x.io"), identify=True)
    results = await ingest(
        identity, acme, link, event("other", ("user_id", "u2"), identify=True,
                                    traits={"plan": "pro"}),
        event("t1", ("user_id", "u1"), name="order_completed"),
        event("t2", ("email", "b@x.io"), name="order_completed"))
    assert [r.status.code for r in results] == [INVALID, 0, 0, 0]
    assert TOO_LARGE in field_violations(results[0].status)["events[0].identifiers"]
    assert results[2].profile_id != results[3].profile_id
    # A call of that one event alone, and its repeat, fail the same way.
    for _ in range(2):
        alone = await ingest(identity, acme, link)
        assert alone[0].status.code == INVALID
        assert TOO_LARGE in field_violations(alone[0].status)["events[0].identifiers"]
    u1 = (await profile_of(identity, acme, "user_id", "u1")).profile
    b = (await profile_of(identity, acme, "email", "b@x.io")).profile
    assert u1.name != b.name
    assert set(u1.traits) == {"a"} and [i.type for i in u1.identifiers] == ["user_id"]
    assert set(b.traits) == {"b"} and [i.type for i in b.identifiers] == ["email"]
    stored = await identity.events.ListProfileEvents(pb.ListProfileEventsRequest(
        parent=u1.name), metadata=acme)
    assert {e.event.message_id for e in stored.events} == {"a", "t1"}
    for receiver in (recorder, decisioning):
        for message_id in ("t1", "t2"):
            found = await eventually(partial(forwarded, receiver, message_id))
            assert isinstance(found, orch_pb.ForwardedEvent)
            assert found.profile_traits.ByteSize() <= MAX_PROFILE_TRAITS_BYTES
        assert not [e for e in receiver.events if e.event.name == "profile_merged"]


async def test_merged_people_stay_within_the_limit_on_the_grpc_outbox_path(
        identity: Identity, recorder: Recorder) -> None:
    """What an oversized merge did on the gRPC outbox path (no bus): five people of 250 KB
    of traits, each within the limit, joined by one identify call. The forwarder sends a row
    larger than a call's payload budget alone and gRPC takes up to 32 MiB, so orchestration
    received every later event of the person carrying 1.25 MB of traits (on the bus, whose
    messages hold 1 MiB, each of them was dead-lettered). Now the call that would join them is
    refused and each event that reaches orchestration carries at most the limit."""
    acme = await identity.new_workspace("acme")
    people = [("email", f"p{n}@x.io") for n in range(5)]
    assert {r.status.code for r in await ingest(identity, acme, *(
        big(f"p{n}", person, f"t{n}", 250_000) for n, person in enumerate(people)))} == {0}
    results = await ingest(identity, acme, event("join", *people, identify=True),
                           event("after", people[0], name="order_completed"))
    assert [r.status.code for r in results] == [INVALID, 0]
    assert "events[0].identifiers" in field_violations(results[0].status)
    found = await eventually(partial(forwarded, recorder, "after"))
    assert isinstance(found, orch_pb.ForwardedEvent)
    assert set(found.profile_traits) == {"t0"}
    assert max(e.profile_traits.ByteSize() for e in recorder.events) <= MAX_PROFILE_TRAITS_BYTES


async def test_a_refused_event_is_not_in_the_record_later_events_of_the_batch_see(
        identity: Identity, recorder: Recorder) -> None:
    """A batch is applied event by event: an event whose traits are refused leaves no trace
    in the record the later events of the batch are checked against (before: a small trait
    after a refused large one was refused too, as if the large one had been kept)."""
    acme = await identity.new_workspace("acme")
    assert (await ingest(identity, acme, big("a", ("user_id", "u1"), "a")))[0].status.code == 0
    results = await ingest(
        identity, acme, big("b", ("user_id", "u1"), "b"),
        event("plan", ("user_id", "u1"), identify=True, traits={"plan": "pro"}),
        big("c", ("user_id", "u1"), "c", 40_000), big("d", ("user_id", "u1"), "d", 40_000))
    assert [r.status.code for r in results] == [INVALID, 0, 0, INVALID]
    assert "events[0].traits" in field_violations(results[0].status)
    assert "events[3].traits" in field_violations(results[3].status)
    profile = (await profile_of(identity, acme, "user_id", "u1")).profile
    assert set(profile.traits) == {"a", "plan", "c"}
    found = await eventually(partial(forwarded, recorder, "plan"))
    assert isinstance(found, orch_pb.ForwardedEvent)
    assert set(found.profile_traits) == {"a", "plan"}


async def test_oversize_events_of_a_known_person_cost_one_transaction(
        identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events refused for their traits that shaped nothing in the identity graph are refused
    in the batch's plan: the batch is written in one transaction (before: one more attempt,
    rolled back, to refuse them)."""
    acme = await identity.new_workspace("acme")
    assert (await ingest(identity, acme, big("a", ("user_id", "u1"), "a")))[0].status.code == 0
    attempts: list[str] = []

    def counted(uow: UnitOfWork, **arguments: Any) -> ingest_use_case.Applied:
        attempts.append(arguments["workspace_id"])
        return apply_events(uow, **arguments)

    monkeypatch.setattr(ingest_use_case, "apply_events", counted)
    results = await ingest(identity, acme, *(
        big(f"b{n}", ("user_id", "u1"), f"b{n}", 100_000) for n in range(3)))
    assert [r.status.code for r in results] == [INVALID] * 3
    assert attempts == ["acme"]


async def test_an_oversize_merge_fails_only_its_own_call_in_a_group(
        backend: Backend, recorder: Recorder) -> None:
    """Calls that share a transaction (group commit): the call whose event would make the
    oversize merge gets the error, the others their outcomes."""
    async with serve_identity(backend, recorder, ManualClock(START),
                              CJO_IDENTITY_GROUP_COMMIT_MS="1000") as grouping:
        acme = await grouping.new_workspace("acme")
        await ingest(grouping, acme, big("a", ("user_id", "u1"), "a"),
                     big("b", ("email", "b@x.io"), "b"))
        replies = await asyncio.gather(
            ingest(grouping, acme, event("t1", ("user_id", "u1"), name="order_completed")),
            ingest(grouping, acme, event("link", ("user_id", "u1"), ("email", "b@x.io"),
                                         identify=True),
                   event("t2", ("email", "b@x.io"), name="order_completed")),
            ingest(grouping, acme, event("t3", ("user_id", "u3"), name="order_completed")))
    assert [[r.status.code for r in reply] for reply in replies] == [[0], [INVALID, 0], [0]]
    assert "events[0].identifiers" in field_violations(replies[1][0].status)
    assert replies[0][0].profile_id != replies[1][1].profile_id
