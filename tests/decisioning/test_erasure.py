"""An erased person (identity's DeleteProfile, forwarded as profile_deleted) leaves nothing in
decisioning: their decisions are anonymised (kept for the reports, without the profile id,
request id, context or features), their engagement hours and merged ids are gone."""

from __future__ import annotations

from datetime import timedelta

import grpc
from outcomes_support import START, WS, merged, opened, running, sent, track
from sqlalchemy import select
from test_decide import profile

from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import action_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as id_pb
from cjo.identity.v1 import identity_service_pb2_grpc as id_grpc
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_decisioning.adapters.tables import decisions, engagement_hours, profile_aliases
from cjo_identity.adapters.tables import outbox
from cjo_identity.bootstrap import build as build_identity
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.decisioning import DECISIONING_EVENTS_TOPIC
from cjo_platform.protobuf import dict_to_struct, to_timestamp
from support import Backend, as_service, serving, settings_for

HOUR = timedelta(hours=1)


def erased(profile_id: str) -> orch_pb.ForwardedEvent:
    """identity's erasure event, as its outbox forwards it (outbox_payloads.erasure_event)."""
    return orch_pb.ForwardedEvent(
        event_id=f"erase-{profile_id}", profile_id=profile_id,
        event=event_pb2.Event(message_id=f"profile_deleted:{profile_id}",
                              type=event_pb2.EVENT_TYPE_TRACK, name="profile_deleted",
                              timestamp=to_timestamp(START + HOUR), source="identity"))


async def test_an_erased_person_leaves_nothing_in_decisioning(backend: Backend) -> None:
    async with running(backend) as d:
        await d.stub.CreateAction(pb.CreateActionRequest(action=action_pb2.Action(key="a")),
                                  metadata=WS)
        reward = decision_point_pb2.Reward(event_name="order_completed")
        reward.window.FromTimedelta(timedelta(days=1))
        await d.stub.CreateDecisionPoint(pb.CreateDecisionPointRequest(
            decision_point=decision_point_pb2.DecisionPoint(
                key="home", actions=["a"], reward=reward)), metadata=WS)
        context = {"attributes": dict_to_struct({"basket": "red shoes"})}

        async def decide(profile_id: str) -> pb.DecideResponse:
            return await d.stub.Decide(pb.DecideRequest(
                decision_point="decisionPoints/home", profile_id=profile_id,
                profile=profile(city="Paris"), request_id=f"r-{profile_id}",
                context=context), metadata=WS)

        ada, bob = (await decide("ada")).decision, (await decide("bob")).decision
        await d.facts(sent("m1", ada.decision_id, START, "ada"),
                      sent("m2", bob.decision_id, START, "bob"),
                      opened("m1", START + HOUR, "ada"), opened("m2", START + HOUR, "bob"))
        await d.events(merged("ada-anon", "ada", START),
                       track("e1", "ada", "order_completed", START + HOUR))
        await d.events(erased("ada"))

        got = (await d.stub.GetDecision(pb.GetDecisionRequest(
            name=f"decisions/{ada.decision_id}"), metadata=WS)).decision
        assert got.profile_id == "" and not got.context.attributes.fields
        assert got.actions[0].action == "a"  # what reports and evaluation count stays
        [row] = await d.rows(decisions, decisions.c.decision_id == ada.decision_id)
        assert (row.request_id, row.features["i"]) == ("", [0])
        assert "ada" not in str(row._mapping)
        # A replay of Ada's request id finds nothing of hers: a new decision.
        again = (await decide("ada")).decision
        assert again.decision_id != ada.decision_id
        times = (await d.stub.GetSendTimes(pb.GetSendTimesRequest(
            profile_ids=["ada", "bob"], channel=common_pb2.CHANNEL_EMAIL),
            metadata=WS)).send_times
        assert [(t.source, t.observations) for t in times] == [
            (pb.SEND_TIME_SOURCE_POPULATION, 0), (pb.SEND_TIME_SOURCE_PROFILE, 1)]
        assert await d.rows(engagement_hours, engagement_hours.c.profile_id == "ada") == []
        # Her ids are left pointing at nothing (so what comes late for them is ignored).
        assert sorted((r.profile_id, r.survivor_profile_id)
                      for r in await d.rows(profile_aliases)) == [("ada", ""), ("ada-anon", "")]
        # Bob is untouched.
        bob_row = await d.decision(bob.decision_id)
        assert (bob_row.profile_id, bob_row.request_id) == ("bob", "r-bob")


async def test_identity_sends_its_erasures_to_decisioning(backend: Backend) -> None:
    """DeleteProfile puts the erasure on decisioning's outbox topic too, with forwarding of
    track events switched off (decisions from before still hold the person)."""
    env = Env({"CJO_IDENTITY_FORWARD_TO_DECISIONING": "false"})
    app = build_identity(settings_for("identity", backend), env, ManualClock(START))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = id_grpc.IdentityServiceStub(channel)
        metadata = as_service("ws-a")
        reply = await stub.IngestEvents(id_pb.IngestEventsRequest(events=[event_pb2.Event(
            message_id="m1", type=event_pb2.EVENT_TYPE_IDENTIFY, source="web",
            identifiers=[event_pb2.Identifier(type="email", value="a@x.io")],
            timestamp=to_timestamp(START))]), metadata=metadata)
        profile_id = reply.results[0].profile_id
        await stub.DeleteProfile(id_pb.DeleteProfileRequest(name=f"profiles/{profile_id}"),
                                 metadata=metadata)

        def waiting() -> list[bytes]:
            with app.db.transaction() as session:
                return list(session.execute(select(outbox.c.payload).where(
                    outbox.c.topic == DECISIONING_EVENTS_TOPIC)).scalars())
        payloads = await app.db.run(waiting)
        events = [orch_pb.ForwardedEvent.FromString(p) for p in payloads]
        assert [(e.profile_id, e.event.name) for e in events] == [
            (profile_id, "profile_deleted")]
