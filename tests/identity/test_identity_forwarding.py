"""Accepted events travel to orchestration through the transactional outbox: each exactly once,
with the profile's traits and the caller's trace, and none lost while orchestration is down.

Orchestration is played by the recorder in identity_support (a real gRPC server); the real
orchestration service is exercised by the lead's end-to-end test.
"""

from __future__ import annotations

from collections import Counter

import pytest
from identity_support import START, DecisioningRecorder, Identity, Recorder, event, serve_identity

from cjo.identity.v1 import identity_service_pb2 as pb
from cjo_identity.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import ConfigError, Env
from support import SERVICE_TOKEN, Backend, eventually, settings_for

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1] if traceparent else ""


async def drained(identity: Identity) -> bool:
    return await identity.outbox_rows() == 0


async def test_each_accepted_event_reaches_orchestration_once_with_traits_and_trace(
        identity: Identity, recorder: Recorder) -> None:
    acme = await identity.new_workspace("acme")
    batch = pb.IngestEventsRequest(events=[
        event("m1", ("anonymous_id", "a1"), traits={"plan": "free"}, identify=True),
        event("m2", ("user_id", "u1"), ("anonymous_id", "a1"), traits={"city": "Oslo"},
              identify=True),
        event("m1", ("anonymous_id", "a1")),
        event("m3", ("email", "Bo@Example.com"), name="order_completed"),
        event("m4", ("cookie", "c1")),
    ])
    reply = await identity.events.IngestEvents(
        batch, metadata=(*acme, ("traceparent", TRACEPARENT)))
    accepted = {r.event_id: r for r in reply.results if r.status.code == 0 and not r.duplicate}
    assert len(accepted) == 3

    await eventually(lambda: len(recorder.events) >= 3)
    await eventually(lambda: drained(identity))
    assert Counter(e.event_id for e in recorder.events) == {event_id: 1 for event_id in accepted}
    forwarded = {e.event.message_id: e for e in recorder.events}
    assert dict(forwarded["m1"].profile_traits) == {"plan": "free"}
    assert dict(forwarded["m2"].profile_traits) == {"plan": "free", "city": "Oslo"}
    assert forwarded["m3"].event.identifiers[0].value == "bo@example.com"
    assert forwarded["m3"].event.name == "order_completed"
    for item in recorder.events:
        assert item.profile_id == accepted[item.event_id].profile_id
        assert trace_id(item.traceparent) == TRACE_ID
    for delivery in recorder.deliveries:
        assert delivery.workspace_id == "acme"
        assert delivery.authorization == f"Bearer {SERVICE_TOKEN}"
        assert trace_id(delivery.traceparent) == TRACE_ID  # the same trace continues

    # Retrying the batch applies nothing, so nothing new is queued for orchestration.
    again = await identity.events.IngestEvents(batch, metadata=acme)
    assert [r.duplicate for r in again.results] == [True, True, True, True, False]
    assert await identity.outbox_rows() == 0
    assert len(recorder.events) == 3


async def test_events_wait_out_an_orchestration_outage(identity: Identity,
                                                       recorder: Recorder) -> None:
    acme = await identity.new_workspace("acme")
    recorder.failing = True
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event(f"m{i}", ("user_id", f"u{i % 2}")) for i in range(5)]), metadata=acme)
    sent = [r.event_id for r in reply.results]

    # More refusals than one call's channel-level retries (4 attempts): the forwarder itself
    # has failed at least once and must come back for the rows.
    await eventually(lambda: recorder.refused > 4, timeout=20)
    assert recorder.events == []
    assert await identity.outbox_rows() == 5  # kept until orchestration acknowledges

    recorder.failing = False
    await eventually(lambda: len(recorder.events) >= 5, timeout=30)
    await eventually(lambda: drained(identity))
    assert sorted(e.event_id for e in recorder.events) == sorted(sent)  # none lost, none doubled
    assert [e.event.message_id for e in recorder.events] == [f"m{i}" for i in range(5)]


async def test_track_events_and_merges_reach_decisioning_identify_calls_do_not(
        identity: Identity, recorder: Recorder, decisioning: DecisioningRecorder) -> None:
    """Decisioning gets the bytes orchestration gets, for track events (its rewards) and merges
    (a survivor's reward finds the merged profile's decisions); an identify call rewards
    nothing and is not sent. Another workspace's events go on its own behalf."""
    acme = await identity.new_workspace("acme")
    other = await identity.new_workspace("other")
    for batch in ([event("i1", ("user_id", "u1"), traits={"plan": "pro"}, identify=True),
                   event("t1", ("user_id", "u1"), name="order_completed"),
                   event("t2", ("anonymous_id", "a9"), name="page_viewed")],
                  # Links a9 to u1: two profiles become one (a merge).
                  [event("t3", ("user_id", "u1"), ("anonymous_id", "a9"), name="cart_viewed")]):
        await identity.events.IngestEvents(pb.IngestEventsRequest(events=batch), metadata=acme)
    await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event("t1", ("user_id", "u1"), name="order_completed")]), metadata=other)
    # (The merge's fact for analytics waits in the outbox: no analytics here.)
    await eventually(lambda: len(decisioning.events) >= 5 and len(recorder.events) >= 6)
    by_workspace = Counter(d.workspace_id for d in decisioning.deliveries for _ in d.events)
    assert by_workspace == {"acme": 4, "other": 1}
    names = [e.event.name for d in decisioning.deliveries if d.workspace_id == "acme"
             for e in d.events]
    assert sorted(names) == ["cart_viewed", "order_completed", "page_viewed", "profile_merged"]
    # The same bytes as orchestration's (an identify call goes there only).
    to_orchestration = {e.event_id: e for e in recorder.events}
    for e in decisioning.events:
        assert e == to_orchestration[e.event_id]
    assert "i1" in {e.event.message_id for e in recorder.events}
    assert all(d.authorization == f"Bearer {SERVICE_TOKEN}" for d in decisioning.deliveries)


async def test_forwarding_to_decisioning_can_be_switched_off(
        backend: Backend, recorder: Recorder, decisioning: DecisioningRecorder) -> None:
    async with serve_identity(backend, recorder, ManualClock(START),
                              CJO_IDENTITY_FORWARD_TO_DECISIONING="false") as identity:
        acme = await identity.new_workspace("acme")
        await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
            event("t1", ("user_id", "u1"), name="order_completed")]), metadata=acme)
        await eventually(lambda: drained(identity))
        assert [e.event.name for e in recorder.events] == ["order_completed"]
        assert decisioning.events == []  # and no row waits for it: the outbox drained


def test_the_off_switch_is_validated_at_start_up(backend: Backend) -> None:
    env = Env({"CJO_IDENTITY_FORWARD_TO_DECISIONING": "perhaps"})
    build(settings_for("identity", backend), env).db.dispose()
    with pytest.raises(ConfigError, match="CJO_IDENTITY_FORWARD_TO_DECISIONING"):
        env.check()
