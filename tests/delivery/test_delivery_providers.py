"""Providers per workspace and channel against real HTTP servers that behave like the
provider: Twilio-shaped SMS, FCM HTTP v1 push, signed webhooks, a generic JSON provider;
failover, the circuit breaker, 429 Retry-After, and secrets that never come back out."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta

import grpc
import pytest
from delivery_support import a_send_round_passed, delivery_app
from grpc_status import rpc_status
from http_sink import (
    Answer,
    HttpSink,
    Request,
    fcm_error,
    http_sink,
    twilio_error,
    twilio_ok,
)
from structlog.testing import capture_logs

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo_platform.clock import ManualClock
from cjo_platform.config import ConfigError
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
OTHER = as_service("ws-b")
SECRET = "tw-auth-token-never-shown-9f3a"
SENT = message_pb2.MESSAGE_STATUS_SENT
QUEUED = message_pb2.MESSAGE_STATUS_QUEUED
BOUNCED = message_pb2.MESSAGE_STATUS_BOUNCED
SUPPRESSED = message_pb2.MESSAGE_STATUS_SUPPRESSED
FAILED = message_pb2.MESSAGE_STATUS_FAILED


def twilio(url: str, priority: int = 0, token: str = SECRET) -> provider_pb2.Provider:
    return provider_pb2.Provider(
        channel=common_pb2.CHANNEL_SMS, kind=provider_pb2.PROVIDER_KIND_TWILIO_SMS,
        priority=priority, display_name="Twilio",
        config={"account_sid": "AC123", "from": "+15005550006", "base_url": url},
        secrets={"auth_token": token})


def json_provider(url: str, channel: int, priority: int = 0) -> provider_pb2.Provider:
    return provider_pb2.Provider(
        channel=channel, kind=provider_pb2.PROVIDER_KIND_HTTP_JSON, priority=priority,
        config={"url": url}, secrets={"api_key": "json-key-1"})


def sms(key: str, to: str = "+14155550100", text: str = "Your code is 1234",
        profile_id: str = "p1") -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        idempotency_key=key, recipient=message_pb2.Recipient(profile_id=profile_id, address=to),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_SMS,
                                           sms=common_pb2.RenderedSms(text=text)))


async def create(stub: pb_grpc.DeliveryServiceStub, provider: provider_pb2.Provider,
                 metadata: tuple[tuple[str, str], ...] = WS) -> provider_pb2.Provider:
    return (await stub.CreateProvider(pb.CreateProviderRequest(provider=provider),
                                      metadata=metadata)).provider


async def final(stub: pb_grpc.DeliveryServiceStub, name: str,
                *statuses: int) -> message_pb2.Message:
    async def check() -> message_pb2.Message | None:
        m = (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message
        return m if m.status in statuses else None

    found = await eventually(check)
    assert isinstance(found, message_pb2.Message)
    return found


async def retrying(stub: pb_grpc.DeliveryServiceStub, name: str) -> message_pb2.Message:
    """Wait until the first attempt failed and a retry is scheduled."""
    async def check() -> message_pb2.Message | None:
        m = (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message
        return m if m.status == QUEUED and m.attempts == 1 and m.error else None

    found = await eventually(check)
    assert isinstance(found, message_pb2.Message)
    return found


async def test_secrets_are_write_only_and_never_logged(backend: Backend) -> None:
    # The provider answers 401 with the auth header echoed back as servers sometimes do.
    with capture_logs() as logs, http_sink(HttpSink(default=lambda r: twilio_error(
            401, 20003, "Authenticate"))) as sink:
        app = delivery_app(backend, free_port(), ManualClock(), CJO_DELIVERY_MAX_ATTEMPTS="1")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            created = await create(stub, twilio(sink.url))
            assert created.secret_keys == ["auth_token"] and not created.secrets
            assert created.config["account_sid"] == "AC123"
            got = (await stub.GetProvider(pb.GetProviderRequest(name=created.name),
                                          metadata=WS)).provider
            listed = (await stub.ListProviders(pb.ListProvidersRequest(),
                                               metadata=WS)).providers
            updated = (await stub.UpdateProvider(pb.UpdateProviderRequest(
                provider=provider_pb2.Provider(name=created.name, display_name="Twilio EU",
                                               secrets={"auth_token": SECRET + "-2"}),
                update_mask={"paths": ["display_name", "secrets"]}), metadata=WS)).provider
            assert updated.display_name == "Twilio EU" and updated.etag != created.etag
            for shown in (created, got, *listed, updated):
                assert SECRET.encode() not in shown.SerializeToString()

            name = (await stub.SendMessage(sms("k1"), metadata=WS)).message.name
            failed = await final(stub, name, FAILED)
            assert "20003" in failed.error and SECRET not in failed.error
            # The provider received the (updated) secret: it is used, just never shown.
            auth = sink.requests[0].headers["authorization"]
            assert auth.startswith("Basic ")
            # Another workspace sees nothing of it.
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await stub.GetProvider(pb.GetProviderRequest(name=created.name), metadata=OTHER)
            assert other.value.code() == grpc.StatusCode.NOT_FOUND
    logged = repr(logs)
    assert SECRET not in logged
    assert "20003" in logged  # the failure itself was logged


async def test_bad_provider_settings_name_each_field(backend: Backend) -> None:
    app = delivery_app(backend, free_port(), ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        bad = provider_pb2.Provider(
            channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_TWILIO_SMS,
            config={"account_sid": "AC1", "base_url": "ftp://x", "color": "red"},
            secrets={"password": "hunter2"})
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await create(stub, bad)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(error.value)
        assert status is not None
        violations = field_violations(status)
        assert violations["provider.channel"] == ("is not a channel a twilio_sms provider sends")
        assert violations["provider.config[base_url]"] == "must be an http(s) URL"
        assert "provider.config[color]" in violations
        assert violations["provider.config[from]"] == "is required for a twilio_sms provider"
        assert violations["provider.secrets[password]"] == (
            "is not a secret of a twilio_sms provider")
        assert violations["provider.secrets[auth_token]"] == (
            "is required for a twilio_sms provider")
        assert "hunter2" not in json.dumps(violations)


async def test_sms_through_a_twilio_shaped_api_and_a_bounce_suppresses(
        backend: Backend) -> None:
    def answer(request: Request) -> Answer:
        if request.form()["To"] == "+14155550199":
            return twilio_error(400, 21211, "The 'To' number +14155550199 is not valid.")
        return twilio_ok(request)

    with http_sink(HttpSink(default=answer)) as sink:
        app = delivery_app(backend, free_port(), ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await create(stub, twilio(sink.url))
            ok = (await stub.SendMessage(sms("k1"), metadata=WS)).message.name
            sent = await final(stub, ok, SENT)
            assert sent.provider_message_id.startswith("SM")
            assert sent.provider.startswith("providers/")
            [first] = sink.requests
            assert first.path == "/2010-04-01/Accounts/AC123/Messages.json"
            assert first.form() == {"To": "+14155550100", "From": "+15005550006",
                                    "Body": "Your code is 1234"}

            bad = (await stub.SendMessage(sms("k2", "+14155550199"), metadata=WS)).message.name
            bounced = await final(stub, bad, BOUNCED, FAILED)
            assert bounced.status == BOUNCED and "21211" in bounced.error
            again = (await stub.SendMessage(sms("k3", "+14155550199"),
                                            metadata=WS)).message.name
            stopped = await final(stub, again, SUPPRESSED)
            assert "suppressed" in stopped.error and "21211" in stopped.error
            assert sink.count() == 2  # the suppressed one never reached the provider


async def test_failover_and_circuit_breaker(backend: Backend) -> None:
    clock = ManualClock()
    with http_sink(HttpSink(default=lambda r: Answer(503, {"error": "down"}))) as broken, \
            http_sink(HttpSink(default=twilio_ok)) as backup:
        app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_BREAKER_FAILURES="2",
                           CJO_DELIVERY_BREAKER_COOL_DOWN_SECONDS="60",
                           CJO_DELIVERY_CONCURRENCY="1")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await create(stub, json_provider(broken.url, common_pb2.CHANNEL_SMS, priority=1))
            second = await create(stub, twilio(backup.url, priority=2))
            names = []
            for i in range(4):
                names.append((await stub.SendMessage(sms(f"k{i}"), metadata=WS)).message.name)
                sent = await final(stub, names[-1], SENT)
                assert sent.provider == second.name and sent.attempts == 1
            # Two failures opened the breaker: the broken provider was then skipped.
            assert broken.count() == 2 and backup.count() == 4

            clock.advance(timedelta(seconds=61))  # half-open: one trial call
            broken.default = lambda r: Answer(200, {"id": "json-1"})
            name = (await stub.SendMessage(sms("k9"), metadata=WS)).message.name
            recovered = await final(stub, name, SENT)
            assert recovered.provider_message_id == "json-1" and broken.count() == 3
            assert broken.requests[-1].headers["idempotency-key"] == recovered.message_id


async def test_429_retry_after_is_honoured(backend: Backend) -> None:
    clock = ManualClock()
    script = [twilio_error(429, 20429, "Too Many Requests")]
    with http_sink(HttpSink(default=twilio_ok, script=script)) as sink:
        sink.script[0] = Answer(429, sink.script[0].body, {"Retry-After": "600"})
        app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_RETRY_BASE_SECONDS="1")
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await create(stub, twilio(sink.url))
            name = (await stub.SendMessage(sms("k1"), metadata=WS)).message.name
            waiting = await retrying(stub, name)
            assert "429" in waiting.error
            wait = waiting.next_attempt_time.ToDatetime() - clock.now().replace(tzinfo=None)
            assert wait >= timedelta(seconds=600)  # not the 1 s backoff
            clock.advance(timedelta(seconds=300))
            await a_send_round_passed(stub)  # the provider asked for 600 s
            assert sink.count() == 1
            clock.advance(timedelta(seconds=301))
            sent = await final(stub, name, SENT)
            assert sent.attempts == 2 and sink.count() == 2


async def test_push_through_an_fcm_shaped_api(backend: Backend) -> None:
    def answer(request: Request) -> Answer:
        if request.json()["message"]["token"] == "gone-token":
            return fcm_error(404, "NOT_FOUND", "UNREGISTERED")
        return Answer(200, {"name": "projects/acme/messages/0:1234"})

    with http_sink(HttpSink(default=answer)) as sink:
        app = delivery_app(backend, free_port(), ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await create(stub, provider_pb2.Provider(
                channel=common_pb2.CHANNEL_PUSH, kind=provider_pb2.PROVIDER_KIND_FCM_PUSH,
                config={"project_id": "acme", "base_url": sink.url},
                secrets={"access_token": "ya29.token"}))
            push = common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_PUSH,
                                              push=common_pb2.RenderedPush(
                                                  title="Cart", body="You left something",
                                                  deep_link="acme://cart",
                                                  data={"cart": "42"}))

            async def send(key: str, token: str) -> message_pb2.Message:
                reply = await stub.SendMessage(pb.SendMessageRequest(
                    idempotency_key=key, recipient=message_pb2.Recipient(
                        profile_id="p1", address=token), content=push), metadata=WS)
                return await final(stub, reply.message.name, SENT, BOUNCED, FAILED)

            sent = await send("k1", "device-token-1")
            assert sent.status == SENT
            assert sent.provider_message_id == "projects/acme/messages/0:1234"
            first = sink.requests[0]
            assert first.path == "/v1/projects/acme/messages:send"
            assert first.headers["authorization"] == "Bearer ya29.token"
            assert first.json() == {"message": {
                "token": "device-token-1",
                "notification": {"title": "Cart", "body": "You left something"},
                "data": {"cart": "42", "deep_link": "acme://cart"}}}
            gone = await send("k2", "gone-token")
            assert gone.status == BOUNCED and "UNREGISTERED" in gone.error


async def test_webhooks_are_signed_and_retried(backend: Backend) -> None:
    clock = ManualClock()
    with http_sink(HttpSink(default=lambda r: Answer(204),
                            script=[Answer(503)])) as sink:
        app = delivery_app(backend, free_port(), clock)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await create(stub, provider_pb2.Provider(
                channel=common_pb2.CHANNEL_WEBHOOK, kind=provider_pb2.PROVIDER_KIND_WEBHOOK,
                config={"url": sink.url + "/hooks/cjo"}, secrets={"signing_secret": "whsec"}))
            body = '{"order": 42, "status": "shipped"}'
            reply = await stub.SendMessage(pb.SendMessageRequest(
                idempotency_key="k1", recipient=message_pb2.Recipient(
                    profile_id="p1", address="crm"),
                content=common_pb2.RenderedMessage(
                    channel=common_pb2.CHANNEL_WEBHOOK,
                    webhook=common_pb2.RenderedWebhook(json_body=body))), metadata=WS)
            failed_once = await retrying(stub, reply.message.name)
            assert "503" in failed_once.error
            clock.advance(timedelta(hours=2))
            await final(stub, reply.message.name, SENT)
    assert sink.count() == 2
    request = sink.requests[1]
    assert request.path == "/hooks/cjo" and request.body == body.encode()
    timestamp = request.headers["x-cjo-timestamp"]
    expected = hmac.new(b"whsec", f"{timestamp}.".encode() + body.encode(),
                        hashlib.sha256).hexdigest()
    assert request.headers["x-cjo-signature"] == f"t={timestamp},v1={expected}"
    assert int(timestamp) == int(clock.now().timestamp())


async def test_a_channel_without_a_provider_fails_with_a_clear_error(backend: Backend) -> None:
    app = delivery_app(backend, free_port(), ManualClock())
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        name = (await stub.SendMessage(sms("k1"), metadata=WS)).message.name
        failed = await final(stub, name, FAILED)
        assert failed.error == "no sms provider is configured in this workspace"


async def test_a_provider_call_never_outlives_the_message_lease(backend: Backend) -> None:
    """A workspace's provider may set a long timeout and hang: the call is cut off at nine
    tenths of the lease and the message retried later, so no other sender claims the message
    (and calls a provider for it) while the call is still under way."""
    release = threading.Event()

    def hang(request: Request) -> Answer:
        release.wait(60)
        return Answer(200, {"id": "late"})

    clock = ManualClock()
    with http_sink(HttpSink(default=hang)) as sink:
        app = delivery_app(backend, free_port(), clock, CJO_DELIVERY_LEASE_SECONDS="3",
                           CJO_SMTP_TIMEOUT_SECONDS="0.1", CJO_SMTP_DATA_TIMEOUT_SECONDS="0.5")
        try:
            async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
                stub = pb_grpc.DeliveryServiceStub(ch)
                slow = json_provider(sink.url, common_pb2.CHANNEL_SMS)
                slow.config["timeout_seconds"] = "300"
                await create(stub, slow)
                name = (await stub.SendMessage(sms("k1"), metadata=WS)).message.name
                waiting = await retrying(stub, name)
                assert "cut off" in waiting.error and "lease" in waiting.error
                clock.advance(timedelta(seconds=5))  # past the lease, not the retry's backoff
                await a_send_round_passed(stub)
                assert sink.count() == 1
        finally:
            release.set()


async def test_the_lease_must_fit_the_smtp_timeouts(backend: Backend) -> None:
    with pytest.raises(ConfigError) as refused:
        delivery_app(backend, free_port(), CJO_DELIVERY_LEASE_SECONDS="60",
                     CJO_SMTP_TIMEOUT_SECONDS="5", CJO_SMTP_DATA_TIMEOUT_SECONDS="30")
    assert "CJO_DELIVERY_LEASE_SECONDS must be at least" in str(refused.value)
    assert "= 108 s" in str(refused.value)  # (8 x 5 + 30) / (0.9 - 0.25), rounded up
