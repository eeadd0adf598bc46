"""Failover: which of a channel's providers a message tries next, and what its trip through
them comes to. Pure: the send round executes the steps (reserving a rate-limited send, calling
the provider, changing its breaker, giving a send back) and feeds each outcome back in.

The providers are tried in order of priority. One whose circuit breaker is open (or whose
half-open breaker's one trial is under way) is skipped. A rate-limited one needs a send from
the round's grant first; without one, the message notes its turn there and moves on. A
transient failure, or a refusal because this provider can never take the message (no
SMTPUTF8), moves on too; a permanent failure ends the trip. When every provider was passed:
back to the queue at the earliest turn if only rate limits stood in the way, otherwise a
transient failure (retried with backoff) or, when every provider refused it for good, a
permanent one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

from cjo_delivery.domain.sending import ProviderError


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class ProviderState:
    """One provider as the message finds it when it comes to it."""

    provider_id: str
    rate_limited: bool
    breaker: BreakerState
    trial_under_way: bool = False  # a half-open breaker's one trial call is out
    open_until: datetime | None = None

    @property
    def shut(self) -> bool:
        """The breaker lets no call through now."""
        return self.breaker is BreakerState.OPEN or self.trial_under_way


# What the executor reports about the step it was told to take.
@dataclass(frozen=True)
class SendReserved:
    """A send of the rate-limited provider's grant is this message's."""


@dataclass(frozen=True)
class NoSendLeft:
    """The grant has no send left this round; ``turn`` is when the message may come back."""

    turn: datetime


@dataclass(frozen=True)
class Delivered:
    provider_message_id: str


@dataclass(frozen=True)
class CallFailed:
    error: ProviderError


Outcome = SendReserved | NoSendLeft | Delivered | CallFailed


# What the executor does next.
@dataclass(frozen=True)
class TakeSend:
    """Take a send from provider ``index``'s grant (topping the grant up if it ran dry)."""

    index: int


@dataclass(frozen=True)
class Call:
    """Hand the message to provider ``index`` (its breaker lets this call through)."""

    index: int


@dataclass(frozen=True)
class Sent:
    index: int
    provider_message_id: str


@dataclass(frozen=True)
class Failed:
    error: ProviderError


@dataclass(frozen=True)
class WaitForTurn:
    """Only rate limits stood in the way: queue again for ``turn`` at provider ``index``."""

    index: int
    turn: datetime


Action = TakeSend | Call | Sent | Failed | WaitForTurn


class BreakerChange(Enum):
    SUCCEEDED = "succeeded"  # the provider works (it took the message or refused it for good)
    FAILED = "failed"  # a transient failure: counts towards opening the breaker
    HOLD_BACK = "hold_back"  # the provider asked to be left alone until ``hold_until``


@dataclass(frozen=True)
class Trip:
    """Where a message is on its way through the providers, and what it met so far."""

    position: int = 0
    holding_send: bool = False  # a send of providers[position] is reserved for it
    errors: tuple[str, ...] = ()  # of providers that may take the message later
    refusals: tuple[str, ...] = ()  # of providers that can never take it
    retry_after: float | None = None  # seconds until the soonest provider may be asked again
    turns: tuple[tuple[datetime, int], ...] = ()  # (turn, index) at providers at their limit
    called: bool = False  # a provider was called and failed for a while

    def waiting(self, seconds: float) -> Trip:
        soonest = seconds if self.retry_after is None else min(self.retry_after, seconds)
        return replace(self, retry_after=soonest)

    def moved_on(self) -> Trip:
        return replace(self, position=self.position + 1, holding_send=False)


@dataclass(frozen=True)
class Decision:
    trip: Trip
    action: Action
    give_back: int | None = None  # the provider whose reserved send this message did not use
    breaker: tuple[int, BreakerChange] | None = None
    hold_until: datetime | None = None  # with BreakerChange.HOLD_BACK


def decide(trip: Trip, providers: Sequence[ProviderState], last: Outcome | None,
           now: datetime) -> Decision:
    """The next step of ``trip`` through ``providers`` (never empty), given the ``last`` step's
    outcome at ``providers[trip.position]`` (None to start), at ``now``."""
    give_back: int | None = None
    breaker: tuple[int, BreakerChange] | None = None
    hold_until: datetime | None = None
    here = trip.position
    if isinstance(last, SendReserved):
        trip = replace(trip, holding_send=True)
    elif isinstance(last, NoSendLeft):
        trip = replace(trip, turns=(*trip.turns, (last.turn, here))).moved_on()
    elif isinstance(last, Delivered):
        return Decision(trip, Sent(here, last.provider_message_id),
                        breaker=(here, BreakerChange.SUCCEEDED))
    elif isinstance(last, CallFailed):
        error = last.error
        if error.unsupported:
            breaker = (here, BreakerChange.SUCCEEDED)  # it works; it cannot take this one
            if trip.holding_send:  # refused before sending: the provider counted nothing
                give_back = here
            trip = replace(trip, refusals=(*trip.refusals, error.message)).moved_on()
        elif not error.transient:
            # The provider works and refused the message for good; it counted the send.
            return Decision(trip, Failed(error), breaker=(here, BreakerChange.SUCCEEDED))
        else:
            trip = replace(trip, called=True, errors=(*trip.errors, error.message))
            if error.retry_after is not None:
                breaker = (here, BreakerChange.HOLD_BACK)
                hold_until = now + timedelta(seconds=error.retry_after)
                trip = trip.waiting(error.retry_after)
            else:
                breaker = (here, BreakerChange.FAILED)
            trip = trip.moved_on()
    while trip.position < len(providers):
        provider = providers[trip.position]
        if provider.shut:
            if trip.holding_send:  # the breaker shut while the send was being reserved
                give_back = trip.position
            trip = replace(trip, errors=(*trip.errors, f"{provider.provider_id}: circuit open"))
            if provider.open_until is not None:
                trip = trip.waiting(max((provider.open_until - now).total_seconds(), 0.0))
            trip = trip.moved_on()
            continue
        if provider.rate_limited and not trip.holding_send:
            return Decision(trip, TakeSend(trip.position), give_back, breaker, hold_until)
        return Decision(trip, Call(trip.position), give_back, breaker, hold_until)
    return Decision(trip, _verdict(trip), give_back, breaker, hold_until)


def _verdict(trip: Trip) -> Action:
    if trip.turns and not trip.called:
        turn, index = min(trip.turns)
        return WaitForTurn(index, turn)
    if not trip.errors:  # every provider was asked and none can ever take it
        return Failed(ProviderError("; ".join(trip.refusals), transient=False))
    return Failed(ProviderError("; ".join(trip.errors + trip.refusals), transient=True,
                                retry_after=trip.retry_after))
