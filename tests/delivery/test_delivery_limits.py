"""Per-provider rate limits (GCRA on the injected clock, shared by replicas through the
database) and SMTP with STARTTLS and AUTH against a real aiosmtpd server on loopback with a
throwaway certificate."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from delivery_support import (
    SmtpSink,
    a_send_round_passed,
    delivery_app,
    rendered_email,
    self_signed,
)
from grpc_status import rpc_status
from http_sink import HttpSink, http_sink

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo_delivery.domain.ratelimit import Grant, RateLimit
from cjo_platform.clock import ManualClock
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
SENT = message_pb2.MESSAGE_STATUS_SENT
QUEUED = message_pb2.MESSAGE_STATUS_QUEUED
FAILED = message_pb2.MESSAGE_STATUS_FAILED


def sms(key: str) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        idempotency_key=key, recipient=message_pb2.Recipient(profile_id=key,
                                                             address="+14155550100"),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_SMS,
                                           sms=common_pb2.RenderedSms(text="Your code")))


async def settled(stub: pb_grpc.DeliveryServiceStub, sink: HttpSink, count: int) -> None:
    """Wait until ``sink`` got ``count`` requests, then for a send round that began after, so a
    send beyond the limit would have shown up."""
    assert await eventually(lambda: sink.count() >= count)
    await a_send_round_passed(stub)
    assert sink.count() == count


def test_a_limit_grants_its_burst_then_its_rate() -> None:
    limit = RateLimit(rate=3.0, burst=2)
    now = ManualClock().now()
    granted, tat = limit.reserve(now, now, want=5)  # a fresh row's arrival time is now
    assert granted == 2 and tat == now + timedelta(microseconds=666667)
    assert limit.reserve(tat, now, want=5) == (0, tat)  # nothing left, never a negative grant
    one = now + limit.span(1)  # one send's time later, exactly one more
    assert limit.span(1) == timedelta(microseconds=333334)
    granted, tat = limit.reserve(tat, one, want=5)
    assert granted == 1 and limit.reserve(tat, one, want=5)[0] == 0
    later = now + timedelta(hours=1)  # a long idle time frees the burst, no more
    assert limit.reserve(tat, later, want=5)[0] == 2
    # Many small reservations at the rate add up to the rate, not more.
    tat, sent = now, 0
    for step in range(1, 301):
        got, tat = limit.reserve(tat, now + timedelta(milliseconds=10 * step), want=1)
        sent += got
    assert sent == 2 + 8  # the burst, then 3/s over the 2.99 s that followed


def test_giving_back_returns_unused_sends_but_never_banks_past_the_burst() -> None:
    limit = RateLimit(rate=10.0, burst=5)
    now = ManualClock().now()
    granted, tat = limit.reserve(now, now, want=5)
    assert granted == 5
    back = limit.give_back(tat, now, unused=2)  # two were never sent
    assert limit.reserve(back, now, want=5)[0] == 2
    assert limit.give_back(tat, now, unused=50) == now  # no more than a full burst
    assert limit.reserve(limit.give_back(tat, now, unused=50), now, want=9)[0] == 5
    # Returned late, the time that passed counts once, not twice.
    late = now + timedelta(seconds=0.3)
    assert limit.reserve(limit.give_back(tat, late, unused=5), late, want=9)[0] == 5


def test_a_grant_hands_out_its_sends_and_spreads_the_turns_of_refused_messages() -> None:
    limit = RateLimit(rate=2.0, burst=2)
    now = ManualClock().now()
    granted, tat = limit.reserve(now, now, want=4)
    grant = Grant(limit, granted, tat, promised=None)
    assert grant.take() and grant.take() and not grant.take()
    # Refused messages come back as sends free up, one after the other: 0.5 s apart.
    turns = []
    for _ in range(3):
        turns.append(grant.next_turn(now))
        grant.promise(turns[-1])
    assert [t - now for t in turns] == [timedelta(seconds=0.5 * k) for k in (1, 2, 3)]
    assert grant.last_turn == turns[-1] and grant.unused == 0
    # The next round (on any replica) queues behind the turns already handed out.
    nxt = Grant(limit, 0, tat, promised=grant.last_turn)
    assert nxt.next_turn(now) == turns[-1] + timedelta(seconds=0.5)
    # A taken send that was not made goes back to the round's grant.
    fresh = Grant(limit, 1, tat, promised=None)
    assert fresh.take()
    fresh.put_back()
    assert fresh.unused == 1


async def test_rate_limit_holds_excess_in_the_queue_until_tokens_come(backend: Backend) -> None:
    clock = ManualClock()
    with http_sink(HttpSink()) as sink:
        app = delivery_app(backend, free_port(), clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
                channel=common_pb2.CHANNEL_SMS, kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                config={"url": sink.url, "rate_per_second": "2", "burst": "2"},
                secrets={"api_key": "k"})), metadata=WS)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(
                requests=[sms(f"k{i}") for i in range(9)]), metadata=WS)
            names = [r.message.name for r in reply.results]
            start = clock.now()

            await settled(stub, sink, 2)  # the burst
            waiting = [m for m in [(await stub.GetMessage(pb.GetMessageRequest(name=n),
                                                          metadata=WS)).message for n in names]
                       if m.status != SENT]
            assert len(waiting) == 7
            # In the durable queue, not counted as attempts, due one after the other as the
            # tokens come: every half second.
            assert all(m.status == QUEUED and m.attempts == 0 for m in waiting)
            dues = sorted(m.next_attempt_time.ToDatetime() - start.replace(tzinfo=None)
                          for m in waiting)
            assert dues == [timedelta(seconds=0.5 * k) for k in range(1, 8)]

            clock.advance(timedelta(seconds=0.5))  # one token
            await settled(stub, sink, 3)
            clock.advance(timedelta(seconds=1))  # two more
            await settled(stub, sink, 5)
            clock.advance(timedelta(seconds=60))  # idle for long: still only the burst of 2
            await settled(stub, sink, 7)
            clock.advance(timedelta(seconds=1))
            await settled(stub, sink, 9)

            keys = [r.headers["idempotency-key"] for r in sink.requests]
            assert len(set(keys)) == 9  # each message once, none twice
            for name in names:
                m = (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message
                assert m.status == SENT and m.attempts == 1


async def test_rate_limit_settings_are_validated(backend: Backend) -> None:
    app = delivery_app(backend, free_port())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
                channel=common_pb2.CHANNEL_SMS, kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                config={"url": "http://127.0.0.1:1", "rate_per_second": "-1", "burst": "0.5"},
                secrets={"api_key": "k"})), metadata=WS)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(caught.value)
        assert status is not None
        assert set(field_violations(status)) >= {"provider.config[rate_per_second]",
                                                 "provider.config[burst]"}
        # So slow a burst would take longer than a datetime reaches: refused, not stored.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
                channel=common_pb2.CHANNEL_SMS, kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                config={"url": "http://127.0.0.1:1", "rate_per_second": "1e-12"},
                secrets={"api_key": "k"})), metadata=WS)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(caught.value)
        assert status is not None
        assert set(field_violations(status)) == {"provider.config[rate_per_second]"}


# --- SMTP with STARTTLS and AUTH ----------------------------------------------------------


USER, PASSWORD = "cjo-relay", "s3cret-relay-pw"


class Logins:
    """An aiosmtpd authenticator accepting one username and password; counts the tries."""

    def __init__(self) -> None:
        self.tries = 0
        self.lock = threading.Lock()

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
        with self.lock:
            self.tries += 1
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
              and auth_data.password == PASSWORD.encode())
        return AuthResult(success=ok, handled=False)  # unhandled failure: the server says 535


@contextmanager
def tls_smtp_server(sink: SmtpSink, logins: Logins, cert: Path, key: Path,
                    port: int) -> Iterator[None]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(sink, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, auth_require_tls=True,
                            authenticator=logins)
    controller.start()
    try:
        yield
    finally:
        controller.stop()


def smtp_provider(port: int, ca_file: Path, password: str) -> provider_pb2.Provider:
    return provider_pb2.Provider(
        channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_SMTP,
        config={"host": "127.0.0.1", "port": str(port), "from": "cjo <news@cjo.test>",
                "starttls": "true", "ca_file": str(ca_file)},
        secrets={"username": USER, "password": password})


def email(key: str, to: str) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(idempotency_key=key,
                                 recipient=message_pb2.Recipient(address=to),
                                 content=rendered_email(subject=f"Hello {key}"))


async def final(stub: pb_grpc.DeliveryServiceStub, name: str,
                *statuses: int) -> message_pb2.Message:
    async def check() -> message_pb2.Message | None:
        m = (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message
        return m if m.status in statuses else None

    found = await eventually(check)
    assert isinstance(found, message_pb2.Message)
    return found


async def test_smtp_starttls_and_auth_against_a_real_server(backend: Backend,
                                                            tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sink, logins, port = SmtpSink(), Logins(), free_port()
    with tls_smtp_server(sink, logins, cert, key, port):
        # The deployment's own SMTP port has nothing listening: only the workspace's counts.
        app = delivery_app(backend, free_port(), ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(
                provider=smtp_provider(port, cert, PASSWORD)), metadata=WS)
            name = (await stub.SendMessage(email("k1", "ada@example.com"),
                                           metadata=WS)).message.name
            sent = await final(stub, name, SENT, FAILED)
            assert sent.status == SENT, sent.error
            [received] = sink.to("ada@example.com")
            assert received["Subject"] == "Hello k1"
            assert logins.tries == 1


async def test_smtp_wrong_password_fails_for_good_without_retrying(backend: Backend,
                                                                   tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sink, logins, port = SmtpSink(), Logins(), free_port()
    clock = ManualClock()
    with tls_smtp_server(sink, logins, cert, key, port):
        app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_RETRY_BASE_SECONDS="1")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(
                provider=smtp_provider(port, cert, "wrong-password")), metadata=WS)
            name = (await stub.SendMessage(email("k1", "ada@example.com"),
                                           metadata=WS)).message.name
            failed = await final(stub, name, FAILED, SENT)
            assert failed.status == FAILED and failed.attempts == 1
            assert "535" in failed.error and "wrong-password" not in failed.error
            tries = logins.tries  # smtplib tries each mechanism the server offers, once
            assert 1 <= tries <= 2
            clock.advance(timedelta(hours=2))  # far past any backoff: nothing is retried
            await a_send_round_passed(stub)
            assert logins.tries == tries and not sink.received
            again = (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message
            assert again.status == FAILED and again.attempts == 1
