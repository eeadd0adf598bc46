"""A message's provider calls end by CALLS_END of its lease (send_round): what the failover trip
does once that time has come, and when a message is still handed over (review rlease: the trip
went on to the next provider after a cut-off, claiming its half-open breaker's one trial for
every replica or taking a rate-limited send it never used, and dropped the errors and
Retry-After met so far; a message handed over late had too little lease left for a send that
waits for the relay's answer to its content, was cut off after the relay took it, and retried)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from delivery_support import SmtpSink
from test_delivery_smtp import relay

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters import breaker_store
from cjo_delivery.adapters.routes import Route, Routes
from cjo_delivery.adapters.smtp import SmtpProvider, SmtpSettings
from cjo_delivery.adapters.tables import metadata
from cjo_delivery.bootstrap import _HAND_OVER_AT_LEAST, MIGRATIONS
from cjo_delivery.domain.breaker import CircuitBreaker
from cjo_delivery.domain.messages import Channel, Claim
from cjo_delivery.domain.ratelimit import Grant, RateLimit
from cjo_delivery.domain.sending import ProviderError
from cjo_delivery.service_layer.rate_grants import RoundGrants
from cjo_delivery.service_layer.send_round import (
    CALLS_END,
    SenderSettings,
    SendRound,
    hand_over_share,
)
from cjo_platform.clock import ManualClock
from cjo_platform.service import open_storage
from support import new_backend, settings_for

COOL = timedelta(seconds=30)


class Hangs:
    async def send(self, message: Any) -> str:
        await asyncio.sleep(3600)
        return "never"

    async def close(self) -> None:
        pass


class Takes:
    def __init__(self) -> None:
        self.calls = 0

    async def send(self, message: Any) -> str:
        self.calls += 1
        return "id-b"

    async def close(self) -> None:
        pass


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Any, ManualClock]]:
    clock = ManualClock()
    backend = new_backend("sqlite", tmp_path)
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    opened = open_storage(settings_for("delivery", backend), metadata, MIGRATIONS, clock)
    opened.migrate()
    yield opened.transactions, clock
    opened.db.dispose()


def _round(transactions: Any, clock: ManualClock) -> SendRound:
    settings = SenderSettings(lease=timedelta(seconds=300))
    routes = Routes(Takes(), breaker_failures=5, breaker_cool_down=COOL)
    return SendRound(transactions, routes, clock, settings)


async def test_a_cut_off_does_not_claim_the_next_providers_half_open_trial(parts: Any) -> None:
    transactions, clock = parts
    sender = _round(transactions, clock)
    now: datetime = clock.now()

    def half_open(stored: CircuitBreaker) -> None:
        stored.failures, stored.open_until = 5, now - timedelta(seconds=1)

    b_breaker = CircuitBreaker(5, COOL)
    await transactions.run(lambda uow: breaker_store.change(uow.session, ("", "b"), b_breaker,
                                                            half_open))
    takes = Takes()
    a = Route("a", Hangs(), CircuitBreaker(5, COOL))
    b = Route("b", takes, CircuitBreaker(5, COOL, 5, now - timedelta(seconds=1)))
    claim = SimpleNamespace(workspace_id="", message_id="m1", attempts=1)
    calls_end = asyncio.get_running_loop().time() + 0.2
    outcome = await sender._through_providers(claim, None, [a, b],  # type: ignore[arg-type]
                                              RoundGrants(transactions, clock), calls_end)
    assert outcome.error is not None and "cut off" in outcome.error.message
    assert takes.calls == 0  # b was never called...
    stored = await transactions.run(lambda uow: breaker_store.change(
        uow.session, ("", "b"), b_breaker, lambda s: s.trial_until))
    assert stored is not None
    # ...and its one trial is not taken (for every replica, for a whole lease) without a call.
    assert stored[0] is None, f"b's trial claimed until {stored[0]} without a call"


async def test_a_cut_off_gives_back_the_next_providers_rate_limited_send(parts: Any) -> None:
    transactions, clock = parts
    sender = _round(transactions, clock)
    now: datetime = clock.now()
    limit = RateLimit(1.0, 1)
    takes = Takes()
    a = Route("a", Hangs(), CircuitBreaker(5, COOL))
    b = Route("b", takes, CircuitBreaker(5, COOL), limit=limit)
    grants = RoundGrants(transactions, clock)
    grant = grants.grants[("", "b")] = Grant(limit, 1, now, None)
    claim = SimpleNamespace(workspace_id="", message_id="m1", attempts=1)
    calls_end = asyncio.get_running_loop().time() + 0.2
    outcome = await sender._through_providers(claim, None, [a, b],  # type: ignore[arg-type]
                                              grants, calls_end)
    assert outcome.error is not None and "cut off" in outcome.error.message
    assert takes.calls == 0
    # No send of b's budget is used up by a message that never reached it.
    assert grant.used == 0, f"used={grant.used} of granted={grant.granted}"


async def test_a_failure_at_calls_end_keeps_its_errors_and_retry_after(parts: Any) -> None:
    """Provider a answers 429 Retry-After 600 as the calls' time ends: the outcome keeps both,
    and b is not called."""
    class Throttled:
        async def send(self, message: Any) -> str:
            time.sleep(0.05)  # holds the loop past calls_end: the cut-off timer cannot fire
            raise ProviderError("429 slow down", transient=True, retry_after=600)

        async def close(self) -> None:
            pass

    transactions, clock = parts
    sender = _round(transactions, clock)
    takes = Takes()
    a = Route("a", Throttled(), CircuitBreaker(5, COOL))
    b = Route("b", takes, CircuitBreaker(5, COOL))
    claim = SimpleNamespace(workspace_id="", message_id="m1", attempts=1)
    calls_end = asyncio.get_running_loop().time() + 0.02
    outcome = await sender._through_providers(claim, None, [a, b],  # type: ignore[arg-type]
                                              RoundGrants(transactions, clock), calls_end)
    assert outcome.error is not None and outcome.error.transient
    assert "429 slow down" in outcome.error.message
    assert "no time was left" in outcome.error.message
    assert outcome.error.retry_after == 600 and takes.calls == 0


class TakesThenScans(SmtpSink):
    """Takes the email, then scans it for 0.9 s before it answers."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)  # has the email
        await asyncio.sleep(0.9)
        return answer


@pytest.mark.parametrize("waited", [4.9, 5.1])
async def test_a_message_is_handed_over_only_while_its_lease_fits_the_longest_send(
        parts: Any, waited: float) -> None:
    """Lease 20 s, SMTP timeouts 1 s and 5 s: the longest send (8 x 1 + 5 = 13 s) fits before
    0.9 x 20 = 18 s only if it starts by 5 s. Started at 4.9 s (the service clock; the relay
    answers at once but for its 0.9-s scan) it is delivered, not cut off while the relay scans;
    waiting 5.1 s for a send slot, it goes back unsent."""
    transactions, clock = parts
    timeout, data_timeout = 1.0, 5.0
    sink = TakesThenScans()
    with relay(sink) as port:
        smtp = SmtpProvider(SmtpSettings(port=port, connections=1, timeout_seconds=timeout,
                                         data_timeout_seconds=data_timeout,
                                         allow_private=True), clock)
        settings = SenderSettings(lease=timedelta(seconds=20),
                                  longest_send=timedelta(seconds=8 * timeout + data_timeout))
        sender = SendRound(transactions, Routes(smtp, breaker_failures=5,
                                                breaker_cool_down=COOL), clock, settings)
        content = common_pb2.RenderedMessage(
            channel=common_pb2.CHANNEL_EMAIL, content_key="k",
            email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"))
        claim = Claim("ws", "m1", "p1", "ada@example.com", Channel.EMAIL,
                      content.SerializeToString(), "j1", "e1", 1, "")
        claimed_at = clock.now()
        clock.advance(timedelta(seconds=waited))  # waited for a send slot
        context = SimpleNamespace(providers_of=lambda c: [])
        outcome = await sender._attempt(claim, context,  # type: ignore[arg-type]
                                        RoundGrants(transactions, clock), claimed_at)
        await smtp.close()
    if waited < 5:
        assert outcome.error is None and outcome.provider_message_id == "<m1@cjo>"
        assert len(sink.received) == 1
    else:
        assert outcome.released and outcome.error is None and sink.received == []


@pytest.mark.parametrize("left", [5.0, 20.0])
async def test_a_failover_calls_the_next_provider_only_while_the_longest_send_fits(
        parts: Any, left: float) -> None:
    """Review rtrace: after a provider failed, the next one was called with whatever was left
    before the cut-off, and cut off after its relay took the content (retried: sent twice).
    It is called only while the longest send (10 s here) still fits."""
    class Fails:
        async def send(self, message: Any) -> str:
            raise ProviderError("503 down", transient=True)

        async def close(self) -> None:
            pass

    transactions, clock = parts
    settings = SenderSettings(lease=timedelta(seconds=300), longest_send=timedelta(seconds=10))
    sender = SendRound(transactions, Routes(Takes(), breaker_failures=5, breaker_cool_down=COOL),
                       clock, settings)
    takes = Takes()
    a = Route("a", Fails(), CircuitBreaker(5, COOL))
    b = Route("b", takes, CircuitBreaker(5, COOL))
    claim = SimpleNamespace(workspace_id="", message_id="m1", attempts=1)
    calls_end = asyncio.get_running_loop().time() + left
    outcome = await sender._through_providers(claim, None, [a, b],  # type: ignore[arg-type]
                                              RoundGrants(transactions, clock), calls_end)
    if left < 10:
        assert takes.calls == 0 and outcome.error is not None
        assert "503 down" in outcome.error.message
        assert "no time was left" in outcome.error.message
    else:
        assert takes.calls == 1 and outcome.error is None


def test_the_hand_over_window_fits_the_longest_send_whenever_the_start_check_passes() -> None:
    """Review rtrace: the window is max(lease/4, min(lease/2, 0.9 lease - longest)); the floor
    binds only where the start check refuses the settings."""
    for lease_s in range(1, 3601, 7):
        for longest_s in (0, 1, 13, 90, 140, 216, 600, 5000):
            s = SenderSettings(lease=timedelta(seconds=lease_s),
                               longest_send=timedelta(seconds=longest_s))
            window, lease, longest = hand_over_share(s), s.lease, s.longest_send
            assert lease / 4 <= window <= lease / 2
            if lease_s >= longest_s / (CALLS_END - _HAND_OVER_AT_LEAST):  # the start check
                assert window + longest <= lease * CALLS_END + timedelta(microseconds=1)
                assert window == min(lease / 2, lease * CALLS_END - longest)
    assert hand_over_share(SenderSettings(lease=timedelta(seconds=4))) == timedelta(seconds=1)
