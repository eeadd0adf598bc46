"""The failover decision (domain/failover.py) without any I/O: which provider a message tries
next, what its trip comes to, and what it gives back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cjo_delivery.domain.failover import (
    BreakerChange,
    BreakerState,
    Call,
    CallFailed,
    Delivered,
    Failed,
    NoSendLeft,
    ProviderState,
    SendReserved,
    Sent,
    TakeSend,
    Trip,
    WaitForTurn,
    decide,
)
from cjo_delivery.domain.sending import ProviderError

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CLOSED = BreakerState.CLOSED


def provider(provider_id: str, *, limited: bool = False, breaker: BreakerState = CLOSED,
             trial: bool = False, open_until: datetime | None = None) -> ProviderState:
    return ProviderState(provider_id, limited, breaker, trial, open_until)


def test_the_first_provider_that_takes_the_message_wins() -> None:
    providers = [provider("a"), provider("b")]
    start = decide(Trip(), providers, None, NOW)
    assert start.action == Call(0)
    done = decide(start.trip, providers, Delivered("id-1"), NOW)
    assert done.action == Sent(0, "id-1")
    assert done.breaker == (0, BreakerChange.SUCCEEDED)


def test_a_transient_failure_moves_on_and_counts_against_the_breaker() -> None:
    providers = [provider("a"), provider("b")]
    first = decide(Trip(), providers, None, NOW)
    second = decide(first.trip, providers, CallFailed(ProviderError("451", transient=True)), NOW)
    assert second.action == Call(1)
    assert second.breaker == (0, BreakerChange.FAILED)
    last = decide(second.trip, providers, CallFailed(ProviderError("503", transient=True)), NOW)
    assert isinstance(last.action, Failed)
    assert last.action.error.transient and last.action.error.message == "451; 503"


def test_a_permanent_failure_ends_the_trip_and_spares_the_breaker() -> None:
    providers = [provider("a"), provider("b")]
    refused = decide(Trip(), providers, CallFailed(ProviderError("550", transient=False)), NOW)
    assert isinstance(refused.action, Failed) and not refused.action.error.transient
    assert refused.breaker == (0, BreakerChange.SUCCEEDED)


def test_a_provider_that_can_never_take_it_hands_over_and_gives_its_send_back() -> None:
    providers = [provider("a", limited=True), provider("b")]
    start = decide(Trip(), providers, None, NOW)
    assert start.action == TakeSend(0)
    reserved = decide(start.trip, providers, SendReserved(), NOW)
    assert reserved.action == Call(0)
    unsupported = ProviderError("no SMTPUTF8", transient=False, unsupported=True)
    moved = decide(reserved.trip, providers, CallFailed(unsupported), NOW)
    assert moved.action == Call(1)
    assert moved.give_back == 0 and moved.breaker == (0, BreakerChange.SUCCEEDED)
    # When every provider refuses it for good, it fails for good.
    last = decide(moved.trip, providers, CallFailed(ProviderError("no", transient=False,
                                                                  unsupported=True)), NOW)
    assert isinstance(last.action, Failed) and not last.action.error.transient


def test_open_breakers_are_skipped_and_the_retry_waits_for_the_soonest() -> None:
    providers = [provider("a", breaker=BreakerState.OPEN, open_until=NOW + timedelta(seconds=20)),
                 provider("b", breaker=BreakerState.HALF_OPEN, trial=True,
                          open_until=NOW - timedelta(seconds=1)),
                 provider("c", breaker=BreakerState.OPEN, open_until=NOW + timedelta(seconds=9))]
    verdict = decide(Trip(), providers, None, NOW)
    assert isinstance(verdict.action, Failed)
    error = verdict.action.error
    assert error.transient and error.retry_after == 0.0  # b's trial may be over any moment
    assert "a: circuit open" in error.message and "c: circuit open" in error.message


def test_a_retry_after_holds_the_provider_back() -> None:
    providers = [provider("a")]
    answer = decide(Trip(), providers, CallFailed(ProviderError("429", transient=True,
                                                                retry_after=600)), NOW)
    assert answer.breaker == (0, BreakerChange.HOLD_BACK)
    assert answer.hold_until == NOW + timedelta(seconds=600)
    assert isinstance(answer.action, Failed) and answer.action.error.retry_after == 600


def test_rate_limits_alone_send_the_message_back_at_its_earliest_turn() -> None:
    providers = [provider("a", limited=True), provider("b", limited=True)]
    first = decide(Trip(), providers, None, NOW)
    second = decide(first.trip, providers, NoSendLeft(NOW + timedelta(seconds=9)), NOW)
    assert second.action == TakeSend(1)
    last = decide(second.trip, providers, NoSendLeft(NOW + timedelta(seconds=4)), NOW)
    assert last.action == WaitForTurn(1, NOW + timedelta(seconds=4))


def test_a_failed_call_beats_a_turn_so_the_attempt_counts() -> None:
    providers = [provider("a"), provider("b", limited=True)]
    first = decide(Trip(), providers, CallFailed(ProviderError("451", transient=True)), NOW)
    assert first.action == TakeSend(1)
    last = decide(first.trip, providers, NoSendLeft(NOW + timedelta(seconds=4)), NOW)
    assert isinstance(last.action, Failed) and last.action.error.transient


def test_a_breaker_that_shut_while_reserving_gets_its_send_back() -> None:
    providers = [provider("a", limited=True), provider("b")]
    start = decide(Trip(), providers, None, NOW)
    # Another message's trial call went out meanwhile.
    shut = [provider("a", limited=True, breaker=BreakerState.HALF_OPEN, trial=True,
                     open_until=NOW), provider("b")]
    moved = decide(start.trip, shut, SendReserved(), NOW)
    assert moved.action == Call(1) and moved.give_back == 0
