"""A profile grown past the limits by merges hurts only itself, at every seam where identity hands
it on: an identify call joining 20 people of ~240 KB of traits each makes a 4.8 MB record, which
no check refuses (merges are never refused). Its events are forwarded bounded (the largest
traits left out, ``profile_trimmed``), so they reach a receiver that takes 4 MiB at most and
nothing of its workspace waits behind them; BatchGetProfiles answers it bounded, and an answer
too large for one gRPC message (150 profiles of ~240 KB, each within the limits) comes in halves
to orchestration and decisioning instead of failing every profile of the step.

Real gRPC servers: identity in-process, the recorder (a stand-in for orchestration and
decisioning with gRPC's default 4 MiB receive limit) on a server of its own; with the event bus,
the real NATS JetStream at 127.0.0.1:4222 (whose messages hold 1 MiB at most)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import grpc
import pytest
from identity_support import START, Identity, Metadata, Recorder, event, serve_identity
from nats_support import NATS_URL, bus_env, drop_streams, nats_listening, stream_rows

from cjo.common.v1 import dead_letter_service_pb2 as dl_pb
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1.identity_service_pb2_grpc import IdentityServiceStub
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_decisioning.adapters.identity import Profile, ProfileBook
from cjo_orchestration.adapters.audience import Audience
from cjo_orchestration.adapters.peers import LiveProfile, Peers
from cjo_orchestration.domain.journeys import Channel
from cjo_orchestration.domain.orders import recipient_address
from cjo_platform.bus import Bus, BusSettings
from cjo_platform.clock import ManualClock
from cjo_platform.profiles import identifier_values, profile_view
from cjo_platform.profiles import view_from_proto as profile_view_from_proto
from cjo_platform.protobuf import struct_to_dict
from cjo_platform.rpc.client import CHANNEL_OPTIONS
from support import Backend, eventually, settings_for

# What identity hands on of one profile at most (limits.MAX_FORWARDED_PROFILE_BYTES, as
# docs/api-guide.md "Limits" states it).
MAX_FORWARDED_PROFILE_BYTES = 768 * 1024
BLOB = 240_000  # one person's traits, each within the 256 KiB limits
PEOPLE = 20  # the most identifiers one event carries: one identify call joins them all


def blob(i: int) -> str:
    return chr(ord("a") + i % 26) * BLOB


async def ingest(identity: Identity, metadata: Metadata,
                 events: Sequence[object]) -> list[pb.IngestEventResult]:
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                               metadata=metadata)
    assert all(r.status.code == 0 for r in reply.results), reply
    return list(reply.results)


async def merged_giant(identity: Identity, metadata: Metadata) -> str:
    """20 people of ~240 KB of traits each, then one identify call naming them all: one profile
    of ~4.8 MB of traits (plus a small ``first_name``). Returns its profile id."""
    for start in range(0, PEOPLE, 10):
        await ingest(identity, metadata, [
            event(f"big-{i}", ("anonymous_id", f"g{i}"), identify=True,
                  traits={f"blob_{i}": blob(i), **({"first_name": "Ada"} if i == 0 else {})})
            for i in range(start, start + 10)])
    results = await ingest(identity, metadata, [event(
        "join", *((("anonymous_id", f"g{i}")) for i in range(PEOPLE)), identify=True)])
    return results[0].profile_id


async def test_a_merged_profile_past_the_limits_is_forwarded_bounded_and_nothing_waits(
        identity: Identity, recorder: Recorder) -> None:
    acme = await identity.new_workspace("acme")
    other = await identity.new_workspace("other")
    giant = await merged_giant(identity, acme)
    # The giant's next event, then someone else's of the same workspace, and another
    # workspace's: each must arrive (the giant's rows passed the receiver's 4 MiB whole and
    # were asked for "later" for ever, holding up every later row of acme).
    await ingest(identity, acme, [event("after", ("anonymous_id", "g0"),
                                        name="order_completed")])
    await ingest(identity, acme, [event("later", ("user_id", "bo"), name="order_completed")])
    await ingest(identity, other, [event("elsewhere", ("user_id", "cy"),
                                         name="order_completed")])

    def arrived() -> set[str]:
        return {e.event.message_id for e in recorder.events}

    await eventually(lambda: {"join", "after", "later", "elsewhere"} <= arrived(), timeout=30)
    forwarded = {e.event.message_id: e for e in recorder.events}
    for message_id in ("join", "after"):
        copy = forwarded[message_id]
        assert copy.profile_id == giant
        assert copy.profile_trimmed
        assert copy.ByteSize() <= MAX_FORWARDED_PROFILE_BYTES
        # The largest traits went first: the small ones stay for conditions and templates.
        assert copy.profile_traits["first_name"] == "Ada"
        assert len(copy.profile_traits) < PEOPLE + 1
        assert len(copy.identifiers) == PEOPLE
    merges = [e for e in recorder.events if e.event.name == "profile_merged"]
    assert merges and all(m.profile_trimmed and m.ByteSize() <= MAX_FORWARDED_PROFILE_BYTES
                          for m in merges)
    # Profiles within the limits travel whole and unflagged.
    for message_id in ("big-1", "later", "elsewhere"):
        assert not forwarded[message_id].profile_trimmed
    assert forwarded["big-1"].profile_traits["blob_1"] == blob(1)
    # Nothing was buried, and the profile itself is whole.
    letters = await identity.dead_letters.ListDeadLetters(dl_pb.ListDeadLettersRequest(),
                                                          metadata=acme)
    assert list(letters.dead_letters) == []
    async with grpc.aio.insecure_channel(identity.address, options=CHANNEL_OPTIONS) as channel:
        whole = (await IdentityServiceStub(channel).GetProfile(
            pb.GetProfileRequest(name=f"profiles/{giant}"), metadata=acme)).profile
    assert len(whole.traits) == PEOPLE + 1


async def test_batch_get_profiles_answers_a_giant_bounded_and_a_large_answer_in_halves(
        identity: Identity, backend: Backend) -> None:
    acme = await identity.new_workspace("acme")
    giant = await merged_giant(identity, acme)
    # 150 people of ~240 KB each, within the limits: ~36 MB together, past the 32 MiB of one
    # gRPC message, so one BatchGetProfiles of them all fails RESOURCE_EXHAUSTED.
    people: list[str] = []
    for start in range(0, 150, 30):
        people += [r.profile_id for r in await ingest(identity, acme, [
            event(f"p-{i}", ("user_id", f"p{i}"), identify=True,
                  traits={"first_name": f"P{i}", "notes": blob(i)})
            for i in range(start, start + 30)])]
    small = (await ingest(identity, acme, [event("s", ("user_id", "s"), identify=True,
                                                 traits={"first_name": "Sam"})]))[0].profile_id

    # A journey step's read of them all (orchestration), a BatchDecide's (decisioning) and a
    # scheduled journey's (below):
    # every profile answered, none held back by the others' size.
    wanted = [*people[:75], giant, *people[75:], small]
    peers = Peers(settings_for("orchestration", backend, CJO_IDENTITY_TARGET=identity.address),
                  timeout=30)
    answers = await peers.profiles("acme", wanted)
    assert all(isinstance(a, LiveProfile) for a in answers), {
        type(a).__name__: str(a)[:200] for a in answers if not isinstance(a, LiveProfile)}
    views = [a.view for a in answers if isinstance(a, LiveProfile)]
    assert [v["first_name"] for v in views] == [
        *(f"P{i}" for i in range(75)), "Ada", *(f"P{i}" for i in range(75, 150)), "Sam"]
    assert views[0]["notes"] == blob(0)
    book = ProfileBook(settings_for("decisioning", backend,
                                    CJO_IDENTITY_TARGET=identity.address), timeout=30)
    decided = await book.profiles("acme", wanted)
    assert [p.profile_id for p in decided if isinstance(p, Profile)] == [
        *people[:75], giant, *people[75:], small]

    # A scheduled journey's read of a segment's members (orchestration's audience).
    audience = Audience(settings_for("orchestration", backend,
                                     CJO_IDENTITY_TARGET=identity.address), timeout=30)
    assert list(await audience.traits("acme", wanted)) == wanted

    # Identity answers the giant bounded and flagged, the others whole.
    reply = await identity.events.BatchGetProfiles(pb.BatchGetProfilesRequest(
        names=[f"profiles/{p}" for p in (giant, small)]), metadata=acme)
    trimmed, whole = reply.results
    assert trimmed.profile_trimmed and not whole.profile_trimmed
    assert trimmed.profile.ByteSize() <= MAX_FORWARDED_PROFILE_BYTES
    assert trimmed.profile.traits["first_name"] == "Ada"
    assert set(trimmed.profile.trait_provenance) == set(trimmed.profile.traits)
    assert dict(whole.profile.traits) == {"first_name": "Sam"}


@pytest.mark.skipif(not nats_listening(), reason="no NATS server with JetStream at 127.0.0.1:4222")
async def test_with_the_bus_a_merged_profile_past_the_limits_is_published_bounded(
        backend: Backend, recorder: Recorder) -> None:
    # Over the bus (1 MiB a message) the giant's 4.8 MB rows were buried in the dead letters:
    # its events never reached a journey. Bounded, they are published like any other; the
    # rows behind them, of its workspace and another, flow as before.
    prefix = f"t{uuid.uuid4().hex[:10]}"
    topics = ("orchestration.events", "analytics.facts", "decisioning.events")
    try:
        async with serve_identity(backend, recorder, ManualClock(START),
                                  **bus_env(prefix)) as identity:
            acme = await identity.new_workspace("acme")
            other = await identity.new_workspace("other")
            giant = await merged_giant(identity, acme)
            await ingest(identity, acme, [event("after", ("anonymous_id", "g0"),
                                                name="order_completed")])
            await ingest(identity, acme, [event("later", ("user_id", "bo"),
                                                name="order_completed")])
            await ingest(identity, other, [event("elsewhere", ("user_id", "cy"),
                                                 name="order_completed")])

            async def published() -> bool:
                return await identity.outbox_rows() == 0
            await eventually(published, timeout=30)
            letters = await identity.dead_letters.ListDeadLetters(
                dl_pb.ListDeadLettersRequest(), metadata=acme)
            assert [letter.error for letter in letters.dead_letters] == []
        bus = Bus(BusSettings(url=NATS_URL, prefix=prefix))
        rows = await stream_rows(bus, "orchestration.events")
        await bus.close()
    finally:
        await drop_streams(prefix, topics)
    forwarded = {e.event.message_id: e for e in (
        orch_pb.ForwardedEvent.FromString(row) for found in rows.values() for row in found)}
    assert {"join", "after", "later", "elsewhere"} <= set(forwarded)
    for message_id in ("join", "after"):
        assert forwarded[message_id].profile_id == giant
        assert forwarded[message_id].profile_trimmed
        assert forwarded[message_id].profile_traits["first_name"] == "Ada"
    assert not forwarded["later"].profile_trimmed


async def test_a_profile_past_the_limits_by_its_identifiers_keeps_its_traits_and_address(
        identity: Identity, recorder: Recorder, backend: Backend) -> None:
    # A person joined over time to ~4,000 anonymous ids of 200 characters (web sessions, device
    # tokens): ~0.9 MB of identifiers, small traits. The copies left out every trait (the
    # email trait too) and then the newest identifiers, so a send went to the person's old
    # address and every condition saw no traits. Now the oldest identifiers go, the newest of
    # each type and every trait stay.
    acme = await identity.new_workspace("acme")
    [first] = await ingest(identity, acme, [event(
        "u0", ("user_id", "u"), ("email", "old@example.com"), identify=True,
        traits={"email": "old@example.com", "first_name": "Ada"})])
    for start in range(0, 210, 70):
        identity.clock.advance(timedelta(seconds=1))
        await ingest(identity, acme, [event(f"s{i}", ("user_id", "u"), *(
            ("anonymous_id", f"{i:03d}-{j:02d}-" + "a" * 193) for j in range(19)),
            identify=True) for i in range(start, start + 70)])
    identity.clock.advance(timedelta(seconds=1))
    # The person's new address: the newest email identifier and the email trait.
    await ingest(identity, acme, [event("u1", ("user_id", "u"), ("email", "new@example.com"),
                                        identify=True, traits={"email": "new@example.com"})])
    profile_id = first.profile_id
    traits = {"email": "new@example.com", "first_name": "Ada"}

    peers = Peers(settings_for("orchestration", backend, CJO_IDENTITY_TARGET=identity.address),
                  timeout=30)
    [answer] = await peers.profiles("acme", [profile_id])
    assert isinstance(answer, LiveProfile)
    assert {k: answer.view[k] for k in traits} == traits
    assert recipient_address(Channel.EMAIL, answer.view) == "new@example.com"
    reply = await identity.events.BatchGetProfiles(pb.BatchGetProfilesRequest(
        names=[f"profiles/{profile_id}"]), metadata=acme)
    [answered] = reply.results
    assert answered.profile_trimmed
    assert answered.profile.ByteSize() <= MAX_FORWARDED_PROFILE_BYTES
    kept = [(i.type, i.value) for i in answered.profile.identifiers]
    assert ("user_id", "u") in kept
    assert [v for t, v in kept if t == "email"][-1] == "new@example.com"
    assert 3000 < len(kept) < 4000  # the oldest anonymous ids left out, as few as fit

    await eventually(lambda: any(e.event.message_id == "u1" for e in recorder.events),
                     timeout=60)
    forwarded = next(e for e in recorder.events if e.event.message_id == "u1")
    assert forwarded.profile_trimmed
    assert forwarded.ByteSize() <= MAX_FORWARDED_PROFILE_BYTES
    assert {k: forwarded.profile_traits[k] for k in traits} == traits
    view = profile_view(struct_to_dict(forwarded.profile_traits),
                        identifiers=[(i.type, i.value) for i in forwarded.identifiers])
    assert recipient_address(Channel.EMAIL, view) == "new@example.com"
    assert identifier_values(view, "user_id") == ["u"]


async def test_people_of_many_small_traits_merged_keep_their_merges_and_consent(
        identity: Identity, recorder: Recorder, backend: Backend) -> None:
    # Four people of ~200 KB of small traits each (400 of 500 characters), joined by one
    # identify call: the copies are past the bound by their small traits. They left out every
    # merge (orchestration's merge wait reads them: the person was mailed twice), every consent
    # (an unsubscribe read as "unknown") and the older identifiers, and then traits anyway. Now
    # only the largest of the small traits go; the lists stay whole.
    acme = await identity.new_workspace("acme")
    for p in range(4):
        await ingest(identity, acme, [event(
            f"id-{p}", ("anonymous_id", f"g{p}"), ("email", f"p{p}@example.com"),
            identify=True, traits={f"p{p}_t{i:03d}": chr(97 + p) * 500 for i in range(400)})])
    unsubscribed = event("unsub", ("anonymous_id", "g0"), name="unsubscribed")
    unsubscribed.properties.update({"channel": "email"})
    await ingest(identity, acme, [unsubscribed])
    identity.clock.advance(timedelta(seconds=1))
    [joined] = await ingest(identity, acme, [event(
        "join", *(("anonymous_id", f"g{p}") for p in range(4)), identify=True)])
    whole = (await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{joined.profile_id}"), metadata=acme)).profile
    assert len(whole.merged_from) == 3 and whole.ByteSize() > MAX_FORWARDED_PROFILE_BYTES

    reply = await identity.events.BatchGetProfiles(pb.BatchGetProfilesRequest(
        names=[f"profiles/{joined.profile_id}"]), metadata=acme)
    [answered] = reply.results
    copy = answered.profile
    assert answered.profile_trimmed and copy.ByteSize() <= MAX_FORWARDED_PROFILE_BYTES
    assert list(copy.merged_from) == list(whole.merged_from)
    assert list(copy.consents) == list(whole.consents)
    assert list(copy.identifiers) == list(whole.identifiers)
    assert copy.ByteSize() > MAX_FORWARDED_PROFILE_BYTES - 1024  # as few traits left out as fit
    # What orchestration's merge wait and conditions read of it.
    peers = Peers(settings_for("orchestration", backend, CJO_IDENTITY_TARGET=identity.address),
                  timeout=30)
    [answer] = await peers.profiles("acme", [joined.profile_id])
    assert isinstance(answer, LiveProfile)
    assert sorted(merged for merged, _ in answer.merged_from) == sorted(
        m.merged_profile_id for m in whole.merged_from)
    assert answer.view["consent"]["email"] == "unsubscribed"

    await eventually(lambda: any(e.event.message_id == "join" for e in recorder.events),
                     timeout=60)
    forwarded = next(e for e in recorder.events if e.event.message_id == "join")
    assert forwarded.profile_trimmed and forwarded.ByteSize() <= MAX_FORWARDED_PROFILE_BYTES
    assert list(forwarded.consents) == list(whole.consents)
    assert list(forwarded.identifiers) == list(whole.identifiers)


CART = [{"sku": f"SKU-{i:04d}", "name": "Running shoe, size 42, blue", "qty": 1,
         "price": 89.9} for i in range(40)]


async def test_a_template_s_cart_stays_while_old_identifiers_make_the_size(
        identity: Identity, backend: Backend) -> None:
    """Review rbigrow3 MEDIUM: a 4 KB cart trait went first though ~20 of the ~4,000 old
    anonymous ids would have covered it: an abandoned-cart condition saw no cart."""
    acme = await identity.new_workspace("acme")
    [first] = await ingest(identity, acme, [event(
        "u0", ("user_id", "u"), ("email", "ada@example.com"), identify=True,
        traits={"email": "ada@example.com", "first_name": "Ada", "cart": CART})])
    for start in range(0, 210, 70):
        identity.clock.advance(timedelta(seconds=1))
        await ingest(identity, acme, [event(f"s{i}", ("user_id", "u"), *(
            ("anonymous_id", f"{i:03d}-{j:02d}-" + "a" * 193) for j in range(19)),
            identify=True) for i in range(start, start + 70)])
    pid = first.profile_id
    peers = Peers(settings_for("orchestration", backend, CJO_IDENTITY_TARGET=identity.address),
                  timeout=30)
    [answer] = await peers.profiles("acme", [pid])
    assert isinstance(answer, LiveProfile) and answer.view.get("cart") == CART


async def test_many_small_traits_keep_the_address_trait_and_the_send_its_address(
        identity: Identity, backend: Backend) -> None:
    """Review rbigrow3 HIGH: six people of 3,000 flag traits each joined; small traits went
    largest first, the email trait among the first, and the send fell back to the newest email
    identifier: another person's address."""
    acme = await identity.new_workspace("acme")
    people, flags = 6, 3000
    for p in range(people):
        await ingest(identity, acme, [event(
            f"id-{p}", ("anonymous_id", f"g{p}"), ("email", f"person.{p}@example.com"),
            identify=True, traits={"email": f"person.{p}@example.com", "first_name": f"P{p}",
                                   **{f"f{p}_{i:04d}": True for i in range(flags)}})])
        identity.clock.advance(timedelta(seconds=1))
    identity.clock.advance(timedelta(seconds=1))
    # person 0 logs in again: the login's identify repeats the email trait (newest trait value)
    await ingest(identity, acme, [event("login-0", ("anonymous_id", "g0"), identify=True,
                                        traits={"email": "person.0@example.com"})])
    identity.clock.advance(timedelta(seconds=1))
    [joined] = await ingest(identity, acme, [event(
        "join", *(("anonymous_id", f"g{p}") for p in range(people)), identify=True)])
    pid = joined.profile_id
    whole = (await identity.events.GetProfile(pb.GetProfileRequest(name=f"profiles/{pid}"),
                                              metadata=acme)).profile
    reply = await identity.events.BatchGetProfiles(pb.BatchGetProfilesRequest(
        names=[f"profiles/{pid}"]), metadata=acme)
    [answered] = reply.results
    assert answered.profile_trimmed
    copy = answered.profile
    assert (copy.traits["email"], copy.traits["first_name"]) == (
        whole.traits["email"], whole.traits["first_name"])
    peers = Peers(settings_for("orchestration", backend, CJO_IDENTITY_TARGET=identity.address),
                  timeout=30)
    [answer] = await peers.profiles("acme", [pid])
    assert isinstance(answer, LiveProfile)
    assert recipient_address(Channel.EMAIL, answer.view) == recipient_address(
        Channel.EMAIL, profile_view_from_proto(whole)) == "person.0@example.com"

