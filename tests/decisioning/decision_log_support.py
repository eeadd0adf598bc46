"""A decisioning server whose catalogue and decision log a test writes directly: reports and
off-policy evaluation read logged decisions, so their tests state exactly which ones exist."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc

from cjo.decisioning.v1 import decisioning_service_pb2_grpc as pb_grpc
from cjo_decisioning.adapters import catalogue
from cjo_decisioning.adapters.tables import EXPOSED, NO_ACTION, NOT_REWARDED, REWARDED, decisions
from cjo_decisioning.bootstrap import build
from cjo_decisioning.domain.catalogue import Action, Arbitration, DecisionPoint, Reward
from cjo_platform.config import Env
from cjo_platform.db import Database
from support import Backend, serving, settings_for

_ids = itertools.count()


@dataclass
class LogServer:
    stub: pb_grpc.DecisioningServiceStub
    db: Database

    def catalogue(self, workspace_id: str, point: DecisionPoint, actions: Sequence[Action],
                  now: datetime) -> None:
        with self.db.transaction() as session:
            for action in actions:
                catalogue.insert_action(session, workspace_id, action, now)
            catalogue.insert_point(session, workspace_id, point, now)

    def log(self, rows: Sequence[dict[str, Any]]) -> None:
        with self.db.transaction() as session:
            for offset in range(0, len(rows), 1000):
                session.execute(decisions.insert(), list(rows[offset:offset + 1000]))


@asynccontextmanager
async def log_server(backend: Backend) -> AsyncIterator[LogServer]:
    # The log's decisions are months old (fixed times): retention must not delete them, and
    # learning must not settle their open windows (EXPOSED whose deadline passed months ago
    # would become NOT_REWARDED whenever its poll happened to run first), while a test reads
    # them.
    app = build(settings_for("decisioning", backend),
                Env({"CJO_DECISIONING_RETENTION_DECISIONS_DAYS": "0",
                     "CJO_DECISIONING_REWARD_GRACE_SECONDS": str(100 * 365 * 86400)}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        yield LogServer(pb_grpc.DecisioningServiceStub(channel), app.db)


def point(key: str, actions: Sequence[str], formula: str = "") -> DecisionPoint:
    return DecisionPoint(key=key, actions=tuple(actions), arbitration=Arbitration(formula),
                         reward=Reward(event_name="order_completed"))


def candidate(action: str, propensity: float, pick_probability: float, value: float = 1.0,
              lever: float = 1.0, context_weight: float = 1.0) -> dict[str, Any]:
    """One logged candidate, as a decision logs it."""
    return {"action": action, "propensity": propensity,
            "score": propensity * value * lever * context_weight,
            "pick_probability": pick_probability, "value": value, "lever": lever,
            "context_weight": context_weight}


def logged(workspace_id: str, decision_point: str, at: datetime, outcome: int,
           candidates: Sequence[dict[str, Any]], *, chosen: str | None = None,
           exposed: bool | None = None) -> dict[str, Any]:
    """A decision log row: the first candidate won (none for NO_ACTION)."""
    winner = "" if outcome == NO_ACTION else (chosen or candidates[0]["action"])
    pick = next((c["pick_probability"] for c in candidates if c["action"] == winner), 0.0)
    if exposed is None:
        exposed = outcome in (EXPOSED, REWARDED, NOT_REWARDED)
    return {
        "workspace_id": workspace_id, "decision_id": f"d{next(_ids)}",
        "decision_point": decision_point, "profile_id": f"p{next(_ids)}", "action": winner,
        "pick_probability": pick, "control": False, "request_id": "", "decide_time": at,
        "decide_hour": int(at.timestamp()) // 3600,
        "candidates": sorted(candidates, key=lambda c: c["action"] != winner),
        "ineligible": [], "features": {"i": [0], "v": [1.0]}, "context": {},
        "outcome": outcome, "expose_time": at if exposed else None,
        "reward_deadline": at + timedelta(days=7) if exposed else None,
        "reward_time": at + timedelta(hours=1) if outcome == REWARDED else None,
        "reward_event_id": "", "learned": outcome in (REWARDED, NOT_REWARDED),
        "lease_owner": "", "lease_until": None,
    }
