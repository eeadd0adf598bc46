"""A send round's reservations of rate-limited providers (domain/ratelimit.py holds the
arithmetic, adapters/rate_store.py the shared state every sender replica reserves from).

The round reserves, in one transaction, as many sends per provider as it has messages that
will try that provider first; each message takes one from its provider's grant; a grant used up
is topped up on the spot (for the messages of the round that may still want it, so failovers
are not held to one a round); once a reservation comes back short, or after two top-ups, the
provider is done for the round. The round gives back what it did not use (a failover, a send
the provider never saw, a shutdown) and records the turns it handed out, in at most one more
transaction. When reserving fails (the database), only that provider's messages wait.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from cjo_delivery.adapters import rate_store
from cjo_delivery.domain.ratelimit import Grant, RateLimit
from cjo_platform.clock import Clock
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.logging import get_logger

log = get_logger(__name__)

ProviderKey = tuple[str, str]  # (workspace id, provider id)

RESERVE_RETRY = timedelta(seconds=5)  # after reserving sends of a rate-limited provider failed
_MAX_TOP_UPS = 2  # reservations on the spot per rate-limited provider and round


class RoundGrants:
    """The grants of one round, by (workspace, provider id)."""

    def __init__(self, transactions: Transactions, clock: Clock) -> None:
        self.transactions = transactions
        self.clock = clock
        self.grants: dict[ProviderKey, Grant] = {}
        # How many of the round's messages list each rate-limited provider: what a top-up asks.
        self.candidates: dict[ProviderKey, int] = {}
        # One reservation at a time for messages that fail over to a rate-limited provider.
        self._reserving = asyncio.Lock()

    async def _reserve_now(self, wants: dict[ProviderKey, tuple[RateLimit, int]]
                           ) -> dict[ProviderKey, Grant]:
        # Now, not when the round began: a back-dated reservation lets too much through.
        now = self.clock.now()
        return await self.transactions.run(
            lambda uow: rate_store.reserve(uow.session, wants, now))

    async def reserve(self, wants: dict[ProviderKey, tuple[RateLimit, int]]) -> None:
        """Reserve the round's first sends of each provider in one transaction."""
        if not wants:
            return
        now = self.clock.now()
        grants: dict[ProviderKey, Grant] = {}
        try:
            grants = await self._reserve_now(wants)
        except Exception as exc:  # only these providers' messages wait; the round goes on
            log.warning("reserving rate-limited sends failed", error=str(exc))
        for key, (limit, _) in wants.items():
            # A provider deleted meanwhile has no row: its messages wait like on a failure.
            self.grants[key] = grants.get(key) or _failed_grant(limit, now)

    async def take(self, key: ProviderKey, limit: RateLimit) -> tuple[Grant, bool]:
        """The provider's grant, and whether a send was taken from it; a grant used up (or
        missing: a failover) is topped up on the spot, one at a time."""
        grant = self.grants.get(key)
        if grant is None or not (grant.unused or grant.exhausted):
            async with self._reserving:
                grant = self.grants.get(key)
                if grant is None or not (grant.unused or grant.exhausted):
                    grant = await self._top_up(key, limit, grant)
        return grant, grant.take()  # no await since the check: the send is still there

    def turn(self, grant: Grant, now: datetime) -> datetime:
        """When a message that found no send left in ``grant`` should come back."""
        return now + RESERVE_RETRY if grant.failed else grant.next_turn(now)

    async def _top_up(self, key: ProviderKey, limit: RateLimit, grant: Grant | None) -> Grant:
        """Reserve for the messages of the round that may still want this provider."""
        served = 0 if grant is None else grant.used + grant.refused
        want = max(1, self.candidates.get(key, 0) - served)
        now = self.clock.now()
        more = None
        try:
            more = (await self._reserve_now({key: (limit, want)})).get(key)
        except Exception as exc:  # only this provider's messages wait; the round goes on
            log.warning("reserving rate-limited sends failed", provider=key[1], error=str(exc))
        if grant is None:
            grant = self.grants[key] = more or _failed_grant(limit, now)
        elif more is None:
            grant.exhausted = True
        else:
            grant.add(more)
        grant.top_ups += 1
        grant.exhausted = grant.exhausted or grant.top_ups >= _MAX_TOP_UPS
        return grant

    async def give_back(self) -> None:
        """Return the sends the round reserved and did not use, so a failover or a message
        the provider never saw does not burn budget, and record the turns handed out."""
        grants = self.grants
        if not any(grant.unused or grant.last_turn is not None for grant in grants.values()):
            return
        now = self.clock.now()
        try:
            await self.transactions.run(lambda uow: rate_store.settle(uow.session, grants, now))
        except Exception as exc:  # the budget is lost until the rate refills it: still safe
            log.warning("giving back unused rate-limited sends failed", error=str(exc))


def _failed_grant(limit: RateLimit, now: datetime) -> Grant:
    """A grant of nothing, for a provider whose sends could not be reserved this round."""
    return Grant(limit, 0, now, None, exhausted=True, failed=True)
