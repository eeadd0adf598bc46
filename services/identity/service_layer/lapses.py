"""Computed traits that change with time alone: an event leaves a window (or a future-dated one
enters it) with no new event. Each profile stores when that next happens
(``profiles.recompute_due``, set whenever its computed traits are computed); a round claims due
profiles, recomputes their computed traits and memberships and announces who entered or left a
segment, exactly as ingest does.

Claims take the rows with SKIP LOCKED and clear their due time in the same transaction, so two
replicas never recompute one profile for one due time (the second finds it no longer due), and
a profile ingest is writing is left to ingest, which recomputes it anyway. Each workspace is its
own transaction: a workspace whose recompute fails (e.g. settings that can no longer be read)
has its profiles put back with a delay, and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from cjo_identity.adapters import profiles, segments
from cjo_identity.adapters.outbox_payloads import EVENTS_TOPIC, segment_event
from cjo_identity.adapters.settings import load_settings
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class LapseSettings:
    batch: int = 500  # due profiles claimed per round
    retry_seconds: float = 60.0  # how long the profiles of a failing workspace wait


def due(uow: UnitOfWork, limit: int) -> dict[str, list[str]]:
    """Due profiles by workspace, earliest first (not claimed yet)."""
    return profiles.due_profiles(uow.session, uow.now(), limit)


def recompute(uow: UnitOfWork, workspace_id: str, profile_ids: list[str]) -> int:
    """Claim those of the profiles still due, recompute their computed traits (and next due
    time) and memberships, and announce transitions. Returns how many were recomputed."""
    session = uow.session
    now = uow.now()
    settings = load_settings(session, workspace_id)[0]
    held, computed = profiles.claim_due(session, workspace_id, profile_ids, now)
    if not held:
        return 0
    transitions = segments.refresh(session, workspace_id, held, (), settings, now,
                                   before={p: (g, computed[p]) for p, g in held.items()})
    states = segments.states_of(session, workspace_id, transitions)
    uow.publish(EVENTS_TOPIC, workspace_id, [
        (segment_event(t, held[t.profile_id], now, "", state=states.get(t.profile_id)), "")
        for t in transitions])
    return len(held)


def defer(uow: UnitOfWork, workspace_id: str, profile_ids: list[str],
          retry_seconds: float) -> None:
    profiles.defer_due(uow.session, workspace_id, profile_ids,
                       uow.now() + timedelta(seconds=retry_seconds))


class LapseRound:
    def __init__(self, transactions: Transactions, settings: LapseSettings) -> None:
        self.transactions = transactions
        self.settings = settings

    async def run(self) -> bool:
        """One round; returns whether more profiles may be due."""
        found = await self.transactions.run(partial(due, limit=self.settings.batch))
        for workspace_id, profile_ids in sorted(found.items()):
            try:
                await self.transactions.run(partial(
                    recompute, workspace_id=workspace_id, profile_ids=profile_ids))
            except Exception as exc:
                log.warning("recompute of due profiles failed; will retry",
                            workspace_id=workspace_id, profiles=len(profile_ids),
                            error=repr(exc), exc_info=exc)
                await self.transactions.run(partial(
                    defer, workspace_id=workspace_id, profile_ids=profile_ids,
                    retry_seconds=self.settings.retry_seconds))
        return sum(len(ids) for ids in found.values()) >= self.settings.batch
