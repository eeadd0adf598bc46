"""Helpers of the outcome, learning and send-time tests: a running decisioning service, its
decision log seeded the way Decide leaves it, and the facts and events its peers forward."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from sqlalchemy import insert, select

from cjo.analytics.v1 import fact_pb2
from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import action_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as pb_grpc
from cjo.identity.v1 import event_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_decisioning.adapters.tables import PENDING, decisions, models
from cjo_decisioning.bootstrap import build
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.protobuf import dict_to_struct, from_timestamp, to_timestamp
from cjo_platform.rpc.server import ServiceApp
from support import Backend, as_service, serving, settings_for

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
WS = as_service("ws-a")
EMAIL = common_pb2.CHANNEL_EMAIL


@dataclass
class Decisioning:
    app: ServiceApp
    clock: ManualClock
    stub: pb_grpc.DecisioningServiceStub

    async def rows(self, table: Any, *where: Any) -> list[Any]:
        def read() -> list[Any]:
            with self.app.db.transaction() as session:
                return list(session.execute(select(table).where(*where)).all())
        return await self.app.db.run(read)

    async def decision(self, decision_id: str, workspace_id: str = "ws-a") -> Any:
        [row] = await self.rows(decisions, decisions.c.workspace_id == workspace_id,
                                decisions.c.decision_id == decision_id)
        return row

    async def model(self, point: str, action: str, workspace_id: str = "ws-a") -> Any:
        found = await self.rows(models, models.c.workspace_id == workspace_id,
                                models.c.decision_point == point, models.c.action == action)
        return found[0] if found else None

    async def insert(self, table: Any, rows: Sequence[dict[str, Any]]) -> None:
        def write() -> None:
            with self.app.db.transaction() as session:
                session.execute(insert(table), list(rows))
        await self.app.db.run(write)

    async def point(self, key: str, event_name: str, *, filter: str = "",
                    window: timedelta = timedelta(days=7), actions_: Sequence[str] = ("a", "b"),
                    workspace_id: str = "ws-a") -> None:
        """A decision point and its actions, through the catalogue's RPCs."""
        metadata = as_service(workspace_id)
        for a in actions_:
            with contextlib.suppress(grpc.aio.AioRpcError):  # ALREADY_EXISTS: shared
                await self.stub.CreateAction(pb.CreateActionRequest(
                    action=action_pb2.Action(key=a)), metadata=metadata)
        reward = decision_point_pb2.Reward(event_name=event_name, filter=filter)
        reward.window.FromTimedelta(window)
        await self.stub.CreateDecisionPoint(pb.CreateDecisionPointRequest(
            decision_point=decision_point_pb2.DecisionPoint(
                key=key, actions=list(actions_), reward=reward)), metadata=metadata)

    async def decided(self, decision_id: str, point: str, profile_id: str, action: str = "a",
                      *, workspace_id: str = "ws-a", features: dict[str, list[Any]] | None = None,
                      **values: Any) -> None:
        """A decision as Decide logs it (PENDING until exposed)."""
        await self.insert(decisions, [decision_row(decision_id, point, profile_id, action,
                                                   workspace_id=workspace_id,
                                                   features=features, **values)])

    async def facts(self, *facts: fact_pb2.Fact, workspace: Any = WS
                    ) -> pb.RecordMessageFactsResponse:
        return await self.stub.RecordMessageFacts(
            pb.RecordMessageFactsRequest(facts=list(facts)), metadata=workspace)

    async def events(self, *events: orch_pb.ForwardedEvent, workspace: Any = WS
                     ) -> pb.RecordEventsResponse:
        return await self.stub.RecordEvents(pb.RecordEventsRequest(events=list(events)),
                                            metadata=workspace)


def decision_row(decision_id: str, point: str, profile_id: str, action: str = "a", *,
                 workspace_id: str = "ws-a", features: dict[str, list[Any]] | None = None,
                 **values: Any) -> dict[str, Any]:
    return {"workspace_id": workspace_id, "decision_id": decision_id, "decision_point": point,
            "profile_id": profile_id, "action": action, "pick_probability": 0.5,
            "decide_time": START, "decide_hour": int(START.timestamp()) // 3600,
            "candidates": [], "ineligible": [], "context": {},
            "features": features or {"i": [0], "v": [1.0]}, "outcome": PENDING, **values}


async def shown(d: Decisioning, workspace_id: str, point: str = "home") -> datetime | None:
    """The workspace's rewards' watermark as GetDecisionReport shows it (None: none held)."""
    reply = await d.stub.GetDecisionReport(pb.GetDecisionReportRequest(
        decision_point=f"decisionPoints/{point}"), metadata=as_service(workspace_id))
    return (from_timestamp(reply.rewards_delivered_before)
            if reply.HasField("rewards_delivered_before") else None)


async def learned(d: Decisioning, decision_id: str, workspace_id: str = "ws-a") -> bool:
    return bool((await d.decision(decision_id, workspace_id)).learned)


@asynccontextmanager
async def running(backend: Backend, clock: ManualClock | None = None, **env: str
                  ) -> AsyncIterator[Decisioning]:
    clock = clock or ManualClock(START)
    config = Env({"CJO_DECISIONING_LEARN_POLL_SECONDS": "0.05", **env})
    app = build(settings_for("decisioning", backend), config, clock)
    config.check()
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        yield Decisioning(app, clock, pb_grpc.DecisioningServiceStub(channel))


def sent(message_id: str, decision_id: str, at: datetime, profile_id: str = "p1",
         kind: int = fact_pb2.FACT_TYPE_MESSAGE_SENT) -> fact_pb2.Fact:
    """A message fact as delivery forwards it."""
    prefix = {fact_pb2.FACT_TYPE_MESSAGE_SENT: "message_sent",
              fact_pb2.FACT_TYPE_MESSAGE_OPENED: "message_opened",
              fact_pb2.FACT_TYPE_MESSAGE_CLICKED: "message_clicked",
              fact_pb2.FACT_TYPE_MESSAGE_FAILED: "message_failed"}[kind]
    return fact_pb2.Fact(fact_id=f"{prefix}:{message_id}", type=kind, profile_id=profile_id,
                         message_id=message_id, decision_id=decision_id, channel=EMAIL,
                         occur_time=to_timestamp(at))


def opened(message_id: str, at: datetime, profile_id: str = "p1",
           channel: int = EMAIL) -> fact_pb2.Fact:
    fact = sent(message_id, "", at, profile_id, fact_pb2.FACT_TYPE_MESSAGE_OPENED)
    fact.channel = channel  # type: ignore[assignment]
    return fact


def track(event_id: str, profile_id: str, name: str, at: datetime,
          properties: dict[str, Any] | None = None,
          traits: dict[str, Any] | None = None) -> orch_pb.ForwardedEvent:
    """A track event as identity forwards it (with the profile as of the event)."""
    return orch_pb.ForwardedEvent(
        event_id=event_id, profile_id=profile_id,
        event=event_pb2.Event(message_id=f"m-{event_id}", type=event_pb2.EVENT_TYPE_TRACK,
                              name=name, properties=dict_to_struct(properties or {}),
                              timestamp=to_timestamp(at), source="web"),
        profile_traits=dict_to_struct(traits or {}))


def merged(merged_profile_id: str, survivor_profile_id: str, at: datetime
           ) -> orch_pb.ForwardedEvent:
    key = f"profile_merged:{merged_profile_id}:{survivor_profile_id}"
    return orch_pb.ForwardedEvent(
        event_id=key, profile_id=survivor_profile_id,
        event=event_pb2.Event(message_id=key, type=event_pb2.EVENT_TYPE_TRACK,
                              name="profile_merged",
                              properties=dict_to_struct({"merged_profile_id": merged_profile_id}),
                              timestamp=to_timestamp(at), source="identity"))
