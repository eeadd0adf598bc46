"""The sender's circuit breakers, shared by every replica through the database
(adapters/breaker_store.py; the rules in domain/breaker.py).

Each route keeps a copy of its breaker, read afresh when it is older than ``refresh`` (1 s): at
the start of a round (one query for the round's stale routes) and before a call. The messages
of a round in flight together that find a copy stale share one read of it (not one read each:
64 concurrent sends once cost 64 reads a second of the same row). A change is
made in the database under the row's lock and the copy replaced by what was stored, so a
failure counts once whichever replica saw it and the breaker opens for all of them (a replica
whose copy still shows it closed learns it at its next failure, or within the second). A
half-open breaker's one trial is claimed in the database: of all the replicas wanting it,
exactly one calls the provider (a copy cannot miss an opening for longer than the cool-down).
A success of a closed breaker costs no transaction of its own, and usually no statement: only
when a failure may be stored that the success should zero (so that the count is of consecutive
failures across replicas) does the transaction recording the round's outcomes zero it
(:func:`clear_failures`, a conditional update that leaves an open breaker alone). That is
known without asking the database: the copy counts failures (this replica's, or read from the
database), another replica signalled that it stored one (:data:`FAILED_SIGNAL`: LISTEN/NOTIFY
on PostgreSQL, sent only with a failure, the rare case), or the copy is stale (a signal can be
lost; the refresh within the second is the net). A success with a fresh, clean copy and no
such signal (the usual case) writes nothing. When the database cannot
be reached, the copy decides alone: the breaker still protects the provider from this
replica.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cjo_delivery.adapters import breaker_store
from cjo_delivery.adapters.routes import Route
from cjo_delivery.domain.breaker import CircuitBreaker
from cjo_delivery.domain.failover import BreakerChange
from cjo_platform.db.signals import Signals
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger

log = get_logger(__name__)

REFRESH = timedelta(seconds=1)
# Signalled to every replica when a failure is stored in a closed breaker: their next success
# with the provider zeroes it.
FAILED_SIGNAL = "breaker_failed"


def _copy(route: Route, stored: CircuitBreaker, now: datetime) -> None:
    breaker = route.breaker
    breaker.failures, breaker.open_until, breaker.trial_until = (
        stored.failures, stored.open_until, stored.trial_until)
    route.synced_at = now


class SharedBreakers:
    def __init__(self, transactions: Transactions, *, trial_lease: timedelta,
                 refresh: timedelta = REFRESH, signals: Signals | None = None) -> None:
        self.transactions = transactions
        self.trial_lease = trial_lease
        self.refresh_after = refresh
        self.signals = signals
        if signals is not None:
            signals.on(FAILED_SIGNAL, self._heard_failure)
        # Closed breakers a success should zero since the last take_resets().
        self._resets: set[breaker_store.BreakerKey] = set()
        # Breakers in which another replica signalled a stored failure, not zeroed since.
        self._failed_elsewhere: set[breaker_store.BreakerKey] = set()
        # Reads under way, by breaker: a copy found stale meanwhile waits for that read.
        self._reading: dict[breaker_store.BreakerKey, asyncio.Future[None]] = {}

    def stale(self, route: Route, now: datetime) -> bool:
        return route.synced_at is None or now - route.synced_at >= self.refresh_after

    async def refresh(self, routes: Sequence[Route], now: datetime) -> None:
        """Read the stored breakers of the stale ``routes`` into their copies, in one query;
        those another caller is reading already are waited for instead."""
        by_key = {route.key: route for route in routes if self.stale(route, now)}
        if not by_key:
            return
        under_way = {self._reading[key] for key in by_key if key in self._reading}
        mine = {key: route for key, route in by_key.items() if key not in self._reading}
        if mine:
            read = asyncio.get_running_loop().create_future()
            self._reading |= dict.fromkeys(mine, read)
            try:
                stored = await self.transactions.run(lambda uow: breaker_store.read(
                    uow.session, list(mine), lambda key: mine[key].breaker))
                for key, breaker in stored.items():
                    _copy(mine[key], breaker, now)
            except Exception as exc:
                log.warning("reading the shared circuit breakers failed", error=str(exc))
            finally:
                for key in mine:
                    del self._reading[key]
                read.set_result(None)
        if under_way:
            await asyncio.wait(under_way)  # not cancelled with this caller: others wait too

    async def allow(self, route: Route, now: datetime) -> bool:
        """Whether ``route`` may be called now; claims a half-open breaker's one trial (among
        every replica). When it answers False the copy is shut at ``now``."""
        if self.stale(route, now):  # a fresh copy (the usual case) needs no read, no await
            await self.refresh([route], now)
        breaker = route.breaker
        state = breaker.state(now)
        if state == "closed":
            return True
        if state == "open" or breaker.trial_under_way(now):
            return False
        # Half-open: claim the trial here first, so this replica's other messages wait for it.
        breaker.trial_until = now + self.trial_lease
        lease = self.trial_lease
        try:
            done = await self.transactions.run(lambda uow: breaker_store.change(
                uow.session, route.key, breaker, lambda b: b.allow(now, lease)))
        except Exception as exc:
            log.warning("claiming a breaker's trial failed; this replica tries alone",
                        provider=route.provider_id, error=str(exc))
            return True
        if done is None:  # the provider was deleted: its copy decides until it is rebuilt
            return True
        allowed, stored = done
        _copy(route, stored, now)
        if not allowed and not (stored.state(now) == "open" or stored.trial_under_way(now)):
            breaker.trial_until = now + self.trial_lease  # never "no" with the copy open
        return allowed

    def take_resets(self) -> list[breaker_store.BreakerKey]:
        """The closed breakers whose stored failures the successes since the last call should
        zero; for :func:`clear_failures` in the transaction that records the outcomes."""
        keys, self._resets = sorted(self._resets), set()
        return keys

    def give_back_resets(self, keys: Iterable[breaker_store.BreakerKey]) -> None:
        """Resets :meth:`take_resets` gave whose transaction failed: the next record's."""
        self._resets.update(keys)

    def _heard_failure(self, payload: str | None) -> None:
        if payload is None:  # reconnected: whatever was missed, the stale copies cover
            return
        try:
            workspace_id, provider_id = json.loads(payload)
        except ValueError:
            return
        self._failed_elsewhere.add((workspace_id, provider_id))

    def _succeeded_closed(self, route: Route, now: datetime) -> None:
        """A success of a closed copy: zero the stored count with the outcomes when one may be
        stored (see the module docstring), else nothing."""
        key = route.key
        if (route.breaker.failures or key in self._failed_elsewhere
                or self.stale(route, now)):
            self._resets.add(key)
            self._failed_elsewhere.discard(key)
        route.breaker.succeeded()

    async def record(self, route: Route, change: BreakerChange, now: datetime,
                     hold_until: datetime | None) -> None:
        """What a call told of the provider: applied to the copy at once (this replica's
        next messages see it), then to the shared breaker."""
        breaker = route.breaker
        if change is BreakerChange.SUCCEEDED:
            if breaker.open_until is None and breaker.trial_until is None:
                self._succeeded_closed(route, now)
                return
            breaker.succeeded()  # a half-open breaker's trial: closed for every replica
        elif change is BreakerChange.FAILED:
            breaker.failed(now)
        else:
            assert hold_until is not None
            breaker.hold_back(hold_until)

        def apply(stored: CircuitBreaker) -> None:
            if change is BreakerChange.SUCCEEDED:
                stored.succeeded()
            elif change is BreakerChange.FAILED:
                stored.failed(now)
            else:
                assert hold_until is not None
                stored.hold_back(hold_until)

        def store(uow: UnitOfWork) -> tuple[None, CircuitBreaker] | None:
            done = breaker_store.change(uow.session, route.key, breaker, apply)
            if (self.signals is not None and change is BreakerChange.FAILED
                    and done is not None and done[1].open_until is None):
                self.signals.send(uow, FAILED_SIGNAL, json.dumps(list(route.key)))
            return done

        try:
            done = await self.transactions.run(store)
        except Exception as exc:
            log.warning("recording a breaker change failed; kept in this replica",
                        provider=route.provider_id, error=str(exc))
            return
        if done is not None:
            _copy(route, done[1], now)


def clear_failures(uow: UnitOfWork, keys: Sequence[breaker_store.BreakerKey]) -> None:
    """Zero the stored failure counts of closed breakers whose providers just answered, so only
    consecutive failures (across replicas) open a breaker."""
    for key in keys:
        breaker_store.reset_failures(uow.session, key)
