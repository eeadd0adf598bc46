"""Computed traits that change with time alone: an event leaves a window (or a future-dated one
enters it) with no new event. Each profile stores when that next happens
(``profiles.recompute_due``, set whenever its computed traits are computed); a round claims due
profiles, recomputes their computed traits and memberships and announces who entered or left a
segment, exactly as ingest does.

A round claims while it lists (one statement, SKIP LOCKED): the due profiles it takes are leased
by moving their due time ``lease_seconds`` ahead, so a second replica claims the next ones, not
the same ones, and a replica that finds nothing due reports no more work (it never spins against
the database while another one works). Each workspace is then its own transaction, which
recomputes those of its profiles still under the lease (one that ingest recomputed meanwhile is
left as ingest set it) and clears or resets their due time; a workspace whose recompute fails
(e.g. settings that can no longer be read) has its profiles put back with a delay, and the
others go on. A replica that dies after its claim leaves its profiles due again when the lease
runs out.

Each round is one span (cjo_platform.telemetry); the segment events it writes carry its
traceparent, so a journey started by a lapse has a trace that starts at this worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from cjo_identity.adapters import profiles, segments
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC, segment_event
from cjo_identity.adapters.settings import load_rules
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.telemetry import current_traceparent, tracer

log = get_logger(__name__)


@dataclass(frozen=True)
class LapseSettings:
    batch: int = 500  # due profiles claimed per round
    retry_seconds: float = 60.0  # how long the profiles of a failing workspace wait
    lease_seconds: float = 60.0  # how long claimed profiles are reserved for their replica


@dataclass(frozen=True)
class Claimed:
    """Due profiles by workspace, leased until ``lease``."""

    profiles: dict[str, list[str]]
    lease: datetime

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.profiles.values())


def claim(uow: UnitOfWork, limit: int, lease_seconds: float) -> Claimed:
    """Claim up to ``limit`` due profiles, earliest first (see the module's docstring)."""
    lease = uow.now() + timedelta(seconds=lease_seconds)
    return Claimed(profiles.claim_due(uow.session, uow.now(), limit, lease), lease)


def recompute(uow: UnitOfWork, workspace_id: str, profile_ids: list[str], lease: datetime,
              traceparent: str) -> int:
    """Recompute those of the claimed profiles still under ``lease``: their computed traits
    (and next due time) and memberships, and announce transitions (carrying
    ``traceparent``). Returns how many were recomputed."""
    session = uow.session
    now = uow.now()
    settings = load_rules(session, workspace_id)
    held, computed = profiles.take_claimed(session, workspace_id, profile_ids, lease)
    if not held:
        return 0
    transitions = segments.refresh(session, workspace_id, held, (), settings, now,
                                   before={p: (g, computed[p]) for p, g in held.items()})
    states = segments.states_of(session, workspace_id, transitions)
    uow.publish(EVENTS_TOPIC, workspace_id, [
        (segment_event(t, held[t.profile_id], now, traceparent,
                       state=states.get(t.profile_id)), traceparent)
        for t in transitions])
    return len(held)


def defer(uow: UnitOfWork, workspace_id: str, profile_ids: list[str], lease: datetime,
          retry_seconds: float) -> None:
    profiles.defer_due(uow.session, workspace_id, profile_ids, lease,
                       uow.now() + timedelta(seconds=retry_seconds))


class LapseRound:
    def __init__(self, transactions: Transactions, settings: LapseSettings) -> None:
        self.transactions = transactions
        self.settings = settings

    async def run(self) -> bool:
        """One round; returns whether more profiles may be due: only when it claimed a full
        batch. Every profile claimed leaves the due set (recomputed, or put back for
        ``retry_seconds``), so each round that reports more made progress, and a replica
        whose claim found nothing (another one holds the rows) waits for its next poll."""
        with tracer().start_as_current_span("identity.time.lapses") as span:
            claimed = await self.transactions.run(partial(
                claim, limit=self.settings.batch, lease_seconds=self.settings.lease_seconds))
            span.set_attribute("cjo.identity.profiles_claimed", claimed.count)
            if not claimed.count:
                return False
            traceparent = current_traceparent()
            recomputed = 0
            for workspace_id, profile_ids in sorted(claimed.profiles.items()):
                try:
                    recomputed += await self.transactions.run(partial(
                        recompute, workspace_id=workspace_id, profile_ids=profile_ids,
                        lease=claimed.lease, traceparent=traceparent))
                except Exception as exc:
                    log.warning("recompute of due profiles failed; will retry",
                                workspace_id=workspace_id, profiles=len(profile_ids),
                                error=repr(exc), exc_info=exc)
                    await self.transactions.run(partial(
                        defer, workspace_id=workspace_id, profile_ids=profile_ids,
                        lease=claimed.lease, retry_seconds=self.settings.retry_seconds))
            span.set_attribute("cjo.identity.profiles_recomputed", recomputed)
            return claimed.count >= self.settings.batch
