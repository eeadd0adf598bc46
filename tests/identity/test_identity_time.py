"""Time alone changes membership: a windowed computed trait lapses with no new event and the
profile leaves the segments that read it (orchestration hears segment_exited), on a manual
clock; new or changed segments and computed traits are backfilled in the background, resuming
after a restart; two replicas announce one lapse once; a workspace whose settings cannot be read
holds up no other. Real gRPC processes on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from identity_support import START, Identity, Recorder, event, serve_identity
from sqlalchemy import select, update

from cjo.identity.v1 import backfill_pb2, event_pb2, identity_settings_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.adapters.tables import identity_settings, profiles
from cjo_identity.domain.computed import (
    TICK,
    Aggregation,
    ComputedTrait,
    EventFact,
    compute,
    next_change,
)
from cjo_identity.service_layer import backfills as backfill_use_cases
from cjo_identity.service_layer import lapses as lapse_use_cases
from cjo_identity.service_layer.backfills import BackfillRound
from cjo_identity.service_layer.lapses import LapseRound
from cjo_platform.clock import ManualClock
from cjo_platform.telemetry import configure_tracing
from support import Backend, eventually

Metadata = tuple[tuple[str, str], ...]
DAY = timedelta(days=1)
ORDERS_30D = identity_settings_pb2.ComputedTrait(
    name="orders_30d", aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_COUNT,
    event_name="order_completed", window=duration_pb2.Duration(seconds=30 * 86400))
RECENT = "computed.orders_30d > 0"


def order(message_id: str, user: str, at: datetime) -> event_pb2.Event:
    return event(message_id, ("user_id", user), name="order_completed", at=at)


async def ingest(identity: Identity, metadata: Metadata,
                 *events: event_pb2.Event) -> pb.IngestEventsResponse:
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                               metadata=metadata)
    assert {r.status.code for r in reply.results} == {0}, reply
    return reply


async def with_orders_30d(identity: Identity, metadata: Metadata) -> None:
    await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(computed_traits=[ORDERS_30D])),
        metadata=metadata)


async def create_segment(identity: Identity, metadata: Metadata, segment_id: str,
                         condition: str) -> pb.CreateSegmentResponse:
    return await identity.events.CreateSegment(pb.CreateSegmentRequest(
        segment=segment_pb2.Segment(segment_id=segment_id, display_name=segment_id.title(),
                                    condition=condition)), metadata=metadata)


async def profile(identity: Identity, metadata: Metadata, profile_id: str) -> Any:
    return (await identity.events.GetProfile(pb.GetProfileRequest(
        name=f"profiles/{profile_id}"), metadata=metadata)).profile


async def members(identity: Identity, metadata: Metadata, segment_id: str) -> list[str]:
    return list((await identity.events.ListSegmentMembers(pb.ListSegmentMembersRequest(
        parent=f"segments/{segment_id}", page_size=1000), metadata=metadata)).profile_ids)


TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def valid_traceparent(traceparent: str) -> bool:
    """A W3C traceparent with a non-zero trace id and span id."""
    return TRACEPARENT.fullmatch(traceparent) is not None


def trace_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


def transitions(recorder: Recorder, name: str) -> list[str]:
    return [e.profile_id for e in recorder.events if e.event.name == name]


def distinct(recorder: Recorder, name: str) -> list[str]:
    """Profiles of the distinct events named ``name`` (by event id) orchestration received."""
    return list({e.event_id: e.profile_id for e in recorder.events
                 if e.event.name == name}.values())


async def drained(identity: Identity) -> bool:
    return await identity.outbox_rows() == 0


async def due_of(identity: Identity, profile_id: str) -> datetime | None:
    def read() -> datetime | None:
        with identity.app.db.transaction() as session:
            return session.execute(select(profiles.c.recompute_due).where(
                profiles.c.profile_id == profile_id)).scalar_one()
    return await identity.app.db.run(read)


def test_the_next_change_is_when_the_first_counted_event_leaves_or_a_future_one_enters() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    count = ComputedTrait("orders_30d", Aggregation.COUNT, "order", window=30 * DAY)
    total = ComputedTrait("ltv", Aggregation.SUM, "order", property="v")  # no window
    facts = [EventFact("order", {}, now - 10 * DAY), EventFact("order", {}, now - 2 * DAY),
             EventFact("order", {}, now - 40 * DAY), EventFact("visit", {}, now - DAY)]
    # The event of 10 days ago leaves first: 20 days from now, just after its 30th day.
    assert next_change([count, total], facts, now) == now + 20 * DAY + TICK
    assert compute([count], facts, now + 20 * DAY)["orders_30d"] == 2  # still counted
    assert compute([count], facts, now + 20 * DAY + TICK)["orders_30d"] == 1
    # A future-dated order enters at its time, if that comes first.
    ahead = [*facts, EventFact("order", {}, now + 5 * DAY)]
    assert next_change([count, total], ahead, now) == now + 5 * DAY
    assert next_change([total], facts, now) is None  # the whole history: time changes nothing
    assert next_change([count], [EventFact("order", {}, now - 31 * DAY)], now) is None


async def test_a_profile_leaves_a_segment_when_its_window_lapses_with_no_new_event(
        identity: Identity, recorder: Recorder) -> None:
    configure_tracing("identity")  # as the service's main does: a trace context in every span
    acme = await identity.new_workspace("acme")
    await with_orders_30d(identity, acme)
    bought = (await ingest(identity, acme, order("o1", "u1", START))).results[0].profile_id
    await create_segment(identity, acme, "recent-buyers", RECENT)
    assert (await identity.backfilled(acme, "recent-buyers")).member_count == 1
    assert (await profile(identity, acme, bought)).computed_traits["orders_30d"] == 1
    await eventually(lambda: transitions(recorder, "segment_entered") == [bought])
    # Due just after the order's 30th day, and not before.
    assert await due_of(identity, bought) == START + 30 * DAY + TICK

    identity.clock.advance(31 * DAY)  # no new event
    await eventually(lambda: transitions(recorder, "segment_exited") == [bought])
    assert (await profile(identity, acme, bought)).computed_traits["orders_30d"] == 0
    assert await members(identity, acme, "recent-buyers") == []
    exited = next(e for e in recorder.events if e.event.name == "segment_exited")
    assert dict(exited.event.properties) == {"segment_id": "recent-buyers",
                                             "segment_name": "Recent-Buyers"}
    assert exited.event.timestamp.ToDatetime(UTC) == START + 31 * DAY
    assert await due_of(identity, bought) is None  # nothing left to lapse
    # Each worker round is a span of its own: the backfill's entry and the lapse's exit start
    # their traces at the time worker.
    entered = next(e for e in recorder.events if e.event.name == "segment_entered")
    assert valid_traceparent(entered.traceparent) and valid_traceparent(exited.traceparent)
    assert trace_of(entered.traceparent) != trace_of(exited.traceparent)

    # A new order brings the person back in at once, and sets the next lapse.
    later = START + 31 * DAY
    await ingest(identity, acme, order("o2", "u1", later))
    assert await members(identity, acme, "recent-buyers") == [bought]
    assert await due_of(identity, bought) == later + 30 * DAY + TICK


async def test_changed_computed_traits_are_backfilled_in_the_background(
        identity: Identity, recorder: Recorder) -> None:
    acme = await identity.new_workspace("acme")
    people = await ingest(identity, acme, *(order(f"o{n}", f"u{n}", START - n * 20 * DAY)
                                            for n in range(3)))
    ids = [r.profile_id for r in people.results]
    await create_segment(identity, acme, "recent-buyers", RECENT)
    await identity.backfilled(acme, "recent-buyers")
    assert await members(identity, acme, "recent-buyers") == []  # no such trait yet
    changed = await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(computed_traits=[ORDERS_30D])),
        metadata=acme)
    assert changed.settings.computed_traits_backfill.state in (
        backfill_pb2.BACKFILL_STATE_PENDING, backfill_pb2.BACKFILL_STATE_RUNNING)

    async def done() -> Any:
        got = (await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                         metadata=acme)).settings
        return got if got.computed_traits_backfill.state == backfill_pb2.BACKFILL_STATE_DONE \
            else None

    settled = await eventually(done)
    assert (settled.computed_traits_backfill.profiles_scanned,
            settled.computed_traits_backfill.profiles_total) == (3, 3)
    # Orders 0 and 20 days ago count; 40 days ago does not.
    assert [(await profile(identity, acme, p)).computed_traits["orders_30d"] for p in ids] == [
        1, 1, 0]
    assert sorted(await members(identity, acme, "recent-buyers")) == sorted(ids[:2])
    await eventually(lambda: sorted(transitions(recorder, "segment_entered")) == sorted(ids[:2]))
    # The order of 20 days ago lapses 10 days on.
    assert await due_of(identity, ids[1]) == START - 20 * DAY + 30 * DAY + TICK
    identity.clock.advance(11 * DAY)
    await eventually(lambda: transitions(recorder, "segment_exited") == [ids[1]])
    # Settings saved again unchanged: nothing to backfill.
    again = await identity.events.UpdateIdentitySettings(pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(computed_traits=[ORDERS_30D])),
        metadata=acme)
    assert again.settings.computed_traits_backfill.state == backfill_pb2.BACKFILL_STATE_DONE


async def test_create_segment_answers_at_once_and_a_restart_resumes_the_backfill(
        backend: Backend, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateSegment answers with the backfill PENDING; the time worker scans a chunk per
    transaction, showing progress; a worker killed after one chunk leaves its cursor and lease,
    and the next process takes over once the lease ran out, from the cursor on: every
    matching profile enters once."""
    monkeypatch.setattr(backfill_use_cases, "SCAN_CHUNK", 3)
    clock = ManualClock(START)
    scanned_from: list[tuple[str, str]] = []  # (worker token, cursor) of each chunk
    chunk = backfill_use_cases.chunk

    def recorded(uow: Any, job: Any, token: str, lease_seconds: float, **kw: Any) -> Any:
        scanned_from.append((token, job.cursor))
        return chunk(uow, job, token, lease_seconds, **kw)

    monkeypatch.setattr(backfill_use_cases, "chunk", recorded)
    run = BackfillRound.run
    killed = asyncio.Event()

    async def killed_after_one_chunk(self: BackfillRound) -> bool:
        if killed.is_set():
            await asyncio.Event().wait()  # the process is gone: until it is stopped
        more = await run(self)
        if scanned_from and not killed.is_set():
            killed.set()
        return more

    monkeypatch.setattr(BackfillRound, "run", killed_after_one_chunk)
    async with serve_identity(backend, recorder, clock) as first:
        acme = await first.new_workspace("acme")
        people = await ingest(first, acme, *(
            event(f"m{n}", ("user_id", f"u{n}"), identify=True,
                  traits={"plan": "pro" if n % 3 else "free"}) for n in range(10)))
        pros = sorted(r.profile_id for n, r in enumerate(people.results) if n % 3)
        created = (await create_segment(first, acme, "pros", 'traits.plan == "pro"')).segment
        assert created.backfill.state == backfill_pb2.BACKFILL_STATE_PENDING
        assert created.member_count == 0
        await killed.wait()
        partial = (await first.events.GetSegment(pb.GetSegmentRequest(name="segments/pros"),
                                                 metadata=acme)).segment
        assert partial.backfill.state == backfill_pb2.BACKFILL_STATE_RUNNING
        assert (partial.backfill.profiles_scanned, partial.backfill.profiles_total) == (3, 10)
        # Partial: the members among the 3 profiles scanned (by id), none of the others yet.
        first_chunk = sorted(r.profile_id for r in people.results)[:3]
        assert partial.member_count == len(set(pros) & set(first_chunk))
    monkeypatch.setattr(BackfillRound, "run", run)
    first_token = scanned_from[0][0]
    assert [c for t, c in scanned_from if t == first_token] == [""]
    async with serve_identity(backend, recorder, clock) as second:
        # The dead worker's lease holds the backfill until it runs out.
        clock.advance(timedelta(seconds=61))
        second.clock = clock
        done = await second.backfilled(acme, "pros")
        assert done.member_count == len(pros)
        assert (done.backfill.profiles_scanned, done.backfill.profiles_total) == (10, 10)
        assert sorted(await members(second, acme, "pros")) == pros
        # Each entry made once; the outbox may deliver one twice across the restart (at least
        # once), with the same event id, which orchestration dedupes.
        await eventually(lambda: sorted(distinct(recorder, "segment_entered")) == pros)
    resumed = [c for t, c in scanned_from if t != first_token]
    assert resumed[0] != "" and resumed[0] == sorted(r.profile_id for r in people.results)[2]
    assert len(resumed) == 3  # 7 profiles left, 3 a chunk


async def test_two_replicas_share_the_due_profiles_and_neither_spins(
        backend: Backend, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas, more due profiles than a batch: each profile is recomputed once, a round
    that reports more work recomputed some (the replica whose claim found rows held by the
    other does not loop against the database), and the rounds that report more are bounded by
    the number of full batches."""
    if backend.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database (SQLite has one writer)")
    clock = ManualClock(START)
    people_count, batch = 40, 3
    async with serve_identity(backend, recorder, clock, CJO_IDENTITY_TIME_BATCH=str(batch)) \
            as one, serve_identity(backend, recorder, clock,
                                   CJO_IDENTITY_TIME_BATCH=str(batch)) as two:
        acme = await one.new_workspace("acme")
        await with_orders_30d(one, acme)
        people = await ingest(one, acme, *(order(f"o{n}", f"u{n}", START)
                                           for n in range(people_count)))
        ids = sorted(r.profile_id for r in people.results)
        await create_segment(one, acme, "recent-buyers", RECENT)
        await one.backfilled(acme, "recent-buyers")
        await eventually(lambda: sorted(transitions(recorder, "segment_entered")) == ids)
        # Each round's recomputes, gathered through a context variable (the database thread
        # runs in a copy of the round's context).
        this_round: contextvars.ContextVar[list[int]] = contextvars.ContextVar("this_round")
        rounds: list[tuple[int, bool, int]] = []  # (replica, reported more, recomputed)
        # Recomputes of a round that began before ``run`` was patched (no round context).
        unattributed: list[int] = []
        recompute, run = lapse_use_cases.recompute, LapseRound.run

        def counted(*args: Any, **kwargs: Any) -> int:
            done = recompute(*args, **kwargs)
            this_round.get(unattributed).append(done)
            return done

        async def round_counted(self: LapseRound) -> bool:
            this_round.set([])
            more = await run(self)
            rounds.append((id(self), more, sum(this_round.get())))
            return more

        monkeypatch.setattr(LapseRound, "run", round_counted)
        monkeypatch.setattr(lapse_use_cases, "recompute", counted)
        clock.advance(31 * DAY)
        await eventually(lambda: sorted(transitions(recorder, "segment_exited")) == ids)
        await eventually(lambda: drained(one))
        assert await members(two, acme, "recent-buyers") == []
        monkeypatch.setattr(LapseRound, "run", run)
    # Each profile recomputed once (a round already under way when the patches went in counts
    # its recomputes without a round).
    assert sum(r for _, _, r in rounds) + sum(unattributed) == people_count
    busy = [(replica, r) for replica, more, r in rounds if more]
    shares = {replica: sum(r for rep, _, r in rounds if rep == replica)
              for replica, _, _ in rounds}
    print(f"profiles recomputed by each replica: {sorted(shares.values())}; rounds "
          f"{len(rounds)}, reporting more {len(busy)}")
    assert all(r > 0 for _, r in busy), busy  # no round reported more and did nothing
    assert len(busy) <= people_count // batch
    assert sorted(transitions(recorder, "segment_exited")) == ids


async def test_a_workspace_whose_settings_cannot_be_read_holds_up_no_other(
        identity: Identity, recorder: Recorder) -> None:
    broken = await identity.new_workspace("broken")
    fine = await identity.new_workspace("fine")
    for metadata in (broken, fine):
        await with_orders_30d(identity, metadata)
    # The broken workspace's order is older: its profile is due first.
    theirs = (await ingest(identity, broken, order("b1", "u1", START - DAY))).results[0]
    ours = (await ingest(identity, fine, order("f1", "u1", START))).results[0]
    for metadata in (broken, fine):
        await create_segment(identity, metadata, "recent-buyers", RECENT)
        await identity.backfilled(metadata, "recent-buyers")
    await eventually(lambda: len(transitions(recorder, "segment_entered")) == 2)

    def corrupt() -> None:  # a definition stored by an older version, unreadable now
        with identity.app.db.transaction() as session:
            document = session.execute(select(identity_settings.c.settings).where(
                identity_settings.c.workspace_id == "broken")).scalar_one()
            document["computed_traits"][0]["aggregation"] = "median"
            session.execute(update(identity_settings).where(
                identity_settings.c.workspace_id == "broken").values(settings=document))

    await identity.app.db.run(corrupt)
    await create_segment(identity, broken, "everyone", "true")
    await create_segment(identity, fine, "everyone", "true")
    identity.clock.advance(31 * DAY)
    await eventually(lambda: transitions(recorder, "segment_exited") == [ours.profile_id])
    assert await members(identity, fine, "recent-buyers") == []
    assert await members(identity, broken, "recent-buyers") == [theirs.profile_id]
    # Put back for a while (CJO_IDENTITY_TIME_RETRY_SECONDS), not first in line for ever.
    assert await due_of(identity, theirs.profile_id) == START + 31 * DAY + timedelta(
        seconds=60)
    assert (await identity.backfilled(fine, "everyone")).member_count == 1
    stuck = (await identity.events.GetSegment(pb.GetSegmentRequest(name="segments/everyone"),
                                              metadata=broken)).segment
    assert stuck.backfill.state != backfill_pb2.BACKFILL_STATE_DONE
    await eventually(lambda: _last_error(identity, broken))


async def _last_error(identity: Identity, metadata: Metadata) -> bool:
    got = (await identity.events.GetSegment(pb.GetSegmentRequest(name="segments/everyone"),
                                            metadata=metadata)).segment
    return "median" in got.backfill.last_error


async def test_events_ingested_during_a_backfill_are_announced_once(
        identity: Identity, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a segment's backfill is between chunks, ingest changes a profile the cursor
    already passed and one it has not reached: each enters at once (ingest evaluates every
    active segment) and the backfill neither announces them again nor undoes them."""
    acme = await identity.new_workspace("acme")
    people = await ingest(identity, acme, *(
        event(f"m{n}", ("user_id", f"u{n}"), identify=True, traits={"plan": "free"})
        for n in range(6)))
    ids = sorted(r.profile_id for r in people.results)
    user_of = {r.profile_id: f"u{n}" for n, r in enumerate(people.results)}
    monkeypatch.setattr(backfill_use_cases, "SCAN_CHUNK", 2)
    run = BackfillRound.run
    paused, resume = asyncio.Event(), asyncio.Event()

    async def pausing(self: BackfillRound) -> bool:
        more = await run(self)
        if more and not resume.is_set():
            paused.set()
            await resume.wait()
        return more

    monkeypatch.setattr(BackfillRound, "run", pausing)
    await create_segment(identity, acme, "pros", 'traits.plan == "pro"')
    await paused.wait()  # the first chunk (ids[0], ids[1]) is done
    behind, ahead = ids[0], ids[4]
    await ingest(identity, acme, *(
        event(f"p{n}", ("user_id", user_of[p]), identify=True, traits={"plan": "pro"})
        for n, p in enumerate((behind, ahead))))
    assert sorted(await members(identity, acme, "pros")) == sorted([behind, ahead])
    resume.set()
    done = await identity.backfilled(acme, "pros")
    assert (done.member_count, done.backfill.profiles_scanned) == (2, 6)
    await eventually(lambda: drained(identity))
    assert sorted(transitions(recorder, "segment_entered")) == sorted([behind, ahead])
    assert transitions(recorder, "segment_exited") == []


async def test_a_backfill_failing_again_and_again_is_given_up_until_its_definition_is_set(
        backend: Backend, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """After CJO_IDENTITY_BACKFILL_MAX_ATTEMPTS chunks fail in a row the backfill is FAILED
    (state and last error in the API) and no worker tries it again; setting the segment's
    condition again starts a new scan."""
    clock = ManualClock(START)
    tried: list[tuple[str, str]] = []  # (workspace, target) of each chunk run
    chunk = backfill_use_cases.chunk

    def recorded(uow: Any, job: Any, *args: Any, **kwargs: Any) -> Any:
        tried.append((job.workspace_id, job.target))
        return chunk(uow, job, *args, **kwargs)

    monkeypatch.setattr(backfill_use_cases, "chunk", recorded)
    async with serve_identity(backend, recorder, clock, CJO_IDENTITY_BACKFILL_MAX_ATTEMPTS="3",
                              CJO_IDENTITY_TIME_RETRY_SECONDS="0") as identity:
        broken = await identity.new_workspace("broken")
        fine = await identity.new_workspace("fine")
        await with_orders_30d(identity, broken)
        theirs = (await ingest(identity, broken, order("b1", "u1", START))).results[0]
        await eventually(lambda: ("broken", "computed_traits") in tried)

        def set_aggregation(aggregation: str) -> None:
            with identity.app.db.transaction() as session:
                document = session.execute(select(identity_settings.c.settings).where(
                    identity_settings.c.workspace_id == "broken")).scalar_one()
                document["computed_traits"][0]["aggregation"] = aggregation
                session.execute(update(identity_settings).where(
                    identity_settings.c.workspace_id == "broken").values(settings=document))

        original = await identity.app.db.run(_aggregation_of, identity)
        await identity.app.db.run(set_aggregation, "median")  # unreadable now

        async def given_up() -> Any:
            got = (await identity.events.GetSegment(pb.GetSegmentRequest(
                name="segments/everyone"), metadata=broken)).segment
            return got if got.backfill.state == backfill_pb2.BACKFILL_STATE_FAILED else None

        await create_segment(identity, broken, "everyone", "true")
        stuck = await eventually(given_up)
        assert "median" in stuck.backfill.last_error
        assert stuck.backfill.consecutive_failures == 3
        assert stuck.member_count == 0
        # No worker tries it again: later rounds advance another workspace's backfill only.
        await create_segment(identity, fine, "everyone", "true")
        assert (await identity.backfilled(fine, "everyone")).member_count == 0
        assert tried.count(("broken", "segments/everyone")) == 3
        assert (await given_up()).backfill.consecutive_failures == 3

        # Repaired, and the condition set again: a new scan, which completes.
        await identity.app.db.run(set_aggregation, original)
        restarted = (await identity.events.UpdateSegment(pb.UpdateSegmentRequest(
            segment=segment_pb2.Segment(name="segments/everyone", condition="true"),
            update_mask=field_mask_pb2.FieldMask(paths=["condition"])),
            metadata=broken)).segment
        assert restarted.backfill.state in (backfill_pb2.BACKFILL_STATE_PENDING,
                                            backfill_pb2.BACKFILL_STATE_RUNNING,
                                            backfill_pb2.BACKFILL_STATE_DONE)
        done = await identity.backfilled(broken, "everyone")
        assert done.member_count == 1
        assert (done.backfill.last_error, done.backfill.consecutive_failures) == ("", 0)
        assert await members(identity, broken, "everyone") == [theirs.profile_id]


def _aggregation_of(identity: Identity) -> str:
    with identity.app.db.transaction() as session:
        document = session.execute(select(identity_settings.c.settings).where(
            identity_settings.c.workspace_id == "broken")).scalar_one()
        return str(document["computed_traits"][0]["aggregation"])


async def test_a_failed_computed_traits_backfill_restarts_when_the_settings_are_saved_again(
        backend: Backend, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saving the computed traits unchanged records no backfill, except when their last one
    FAILED: then it is how the scan is restarted."""
    failing = True
    chunk = backfill_use_cases.chunk

    def flaky(uow: Any, job: Any, *args: Any, **kwargs: Any) -> Any:
        if failing and job.target == "computed_traits":
            raise RuntimeError("the scan broke")
        return chunk(uow, job, *args, **kwargs)

    monkeypatch.setattr(backfill_use_cases, "chunk", flaky)
    async with serve_identity(backend, recorder, ManualClock(START),
                              CJO_IDENTITY_BACKFILL_MAX_ATTEMPTS="2",
                              CJO_IDENTITY_TIME_RETRY_SECONDS="0") as identity:
        acme = await identity.new_workspace("acme")
        bought = (await ingest(identity, acme, order("o1", "u1", START))).results[0]

        async def computed_backfill(state: int) -> Any:
            got = (await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                             metadata=acme)).settings
            return got.computed_traits_backfill \
                if got.computed_traits_backfill.state == state else None

        await with_orders_30d(identity, acme)
        stuck = await eventually(lambda: computed_backfill(backfill_pb2.BACKFILL_STATE_FAILED))
        assert (stuck.last_error, stuck.consecutive_failures) == ("the scan broke", 2)
        assert "orders_30d" not in (await profile(identity, acme,
                                                  bought.profile_id)).computed_traits
        failing = False
        await with_orders_30d(identity, acme)  # the same definitions, saved again
        done = await eventually(lambda: computed_backfill(backfill_pb2.BACKFILL_STATE_DONE))
        assert (done.last_error, done.consecutive_failures, done.profiles_scanned) == ("", 0, 1)
        assert (await profile(identity, acme, bought.profile_id)).computed_traits[
            "orders_30d"] == 1
