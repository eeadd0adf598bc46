"""A workspace's providers reach only public addresses (review hdeliv HIGH, SSRF): an ADMIN key
could point a provider at loopback, the cloud's metadata address or an internal service, and
read its answer back in GetMessage.error. Literal private addresses are refused at
CreateProvider / UpdateProvider; names are checked on the address actually dialled (every
path: the lean HTTP client, aiohttp, SMTP); the error never quotes the answer's body.
CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS lets them through (the rest of the suite sets it)."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from delivery_support import SmtpSink, delivery_app, send_request, smtp_server
from http_sink import Answer, HttpSink, http_sink
from structlog.testing import capture_logs

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo_delivery.adapters.http_client import HttpClient, HttpTransportError
from cjo_delivery.adapters.http_providers import JsonHttpProvider
from cjo_delivery.adapters.smtp import SmtpProvider, SmtpSettings
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.providers import ProviderConfig, ProviderKind, validate_provider
from cjo_delivery.domain.sending import OutgoingEmail, OutgoingMessage, ProviderError
from cjo_platform.clock import ManualClock
from support import Backend, as_service, eventually, free_port, serving

WS = as_service("ws-a")
STRICT = {"CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS": "false"}
SECRET = "AKIA-INTERNAL-SECRET-42"


def _webhook(url: str) -> provider_pb2.Provider:
    return provider_pb2.Provider(channel=common_pb2.CHANNEL_WEBHOOK,
                                 kind=provider_pb2.PROVIDER_KIND_WEBHOOK, config={"url": url},
                                 secrets={"signing_secret": "s"})


def _webhook_message(key: str) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        idempotency_key=key, recipient=message_pb2.Recipient(profile_id="p1", address="x"),
        content=common_pb2.RenderedMessage(channel=common_pb2.CHANNEL_WEBHOOK,
                                           webhook=common_pb2.RenderedWebhook(json_body="{}")))


async def _error_of(stub: pb_grpc.DeliveryServiceStub, name: str) -> str:
    async def failed() -> str:
        m = (await stub.GetMessage(pb.GetMessageRequest(name=name), metadata=WS)).message
        return m.error
    return str(await eventually(failed))


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::127.0.0.1", "224.0.0.1",
    # is_global (Python 3.11.7) takes these for public (review rssrf LOW): NAT64 local-use,
    # IPv4-translated, Azure's host endpoint.
    "64:ff9b:1::a9fe:a9fe", "::ffff:0:a9fe:a9fe", "::ffff:0:808:808", "168.63.129.16"])
def test_private_loopback_link_local_and_mapped_addresses_are_not_public(address: str) -> None:
    from cjo_delivery.domain.providers import is_public_address  # new with the fix
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_global_addresses_are_public(address: str) -> None:
    from cjo_delivery.domain.providers import is_public_address  # new with the fix
    assert is_public_address(address)


async def test_literal_private_addresses_are_refused_naming_the_field(backend: Backend) -> None:
    app = delivery_app(backend, free_port(), ManualClock(), **STRICT)
    async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DeliveryServiceStub(ch)
        refused = [
            (_webhook("http://169.254.169.254/latest/meta-data/"), "provider.config[url]"),
            (_webhook("http://[::1]:8080/x"), "provider.config[url]"),
            (_webhook("https://127.1/x"), "provider.config[url]"),
            (provider_pb2.Provider(channel=common_pb2.CHANNEL_SMS,
                                   kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
                                   config={"url": "http://10.0.0.8/send"}),
             "provider.config[url]"),
            (provider_pb2.Provider(channel=common_pb2.CHANNEL_SMS,
                                   kind=provider_pb2.PROVIDER_KIND_TWILIO_SMS,
                                   config={"account_sid": "AC1", "from": "+15550000000",
                                           "base_url": "http://[::ffff:127.0.0.1]"},
                                   secrets={"auth_token": "t"}), "provider.config[base_url]"),
            (provider_pb2.Provider(channel=common_pb2.CHANNEL_EMAIL,
                                   kind=provider_pb2.PROVIDER_KIND_SMTP,
                                   config={"host": "127.0.0.1", "port": "25",
                                           "from": "Acme <news@acme.example>"}),
             "provider.config[host]"),
        ]
        for provider, field in refused:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.CreateProvider(pb.CreateProviderRequest(provider=provider),
                                          metadata=WS)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in str(error.value.details()), field
        assert not (await stub.ListProviders(pb.ListProvidersRequest(), metadata=WS)).providers

        made = (await stub.CreateProvider(pb.CreateProviderRequest(
            provider=_webhook("https://hooks.example.com/x")), metadata=WS)).provider
        made.config["url"] = "http://192.168.0.10/x"
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.UpdateProvider(pb.UpdateProviderRequest(
                provider=made, update_mask={"paths": ["config"]}), metadata=WS)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "provider.config[url]" in str(error.value.details())


async def test_a_name_of_a_private_address_is_refused_when_dialled(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name passes validation, but the address it resolves to is dialled by no path: the
    internal service is never reached and its answer never read back."""
    real = socket.getaddrinfo

    def resolving(host: Any, *args: Any, **kwargs: Any) -> Any:  # an internal DNS name
        return real("127.0.0.1" if host == "internal.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolving)
    internal = HttpSink(default=lambda r: Answer(403, {"internal": SECRET}))
    mail_port = free_port()
    with http_sink(internal) as sink, smtp_server(SmtpSink(), mail_port) as mail:
        app = delivery_app(backend, free_port(), ManualClock(), **STRICT)
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(
                provider=_webhook(f"http://internal.example:{sink.port}/admin/keys")),
                metadata=WS)
            await stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
                channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_SMTP,
                config={"host": "internal.example", "port": str(mail_port),
                        "from": "Acme <news@acme.example>"})), metadata=WS)
            hook = (await stub.SendMessage(_webhook_message("k1"), metadata=WS)).message
            email = (await stub.SendMessage(send_request("k2"), metadata=WS)).message
            hook_error = await _error_of(stub, hook.name)
            email_error = await _error_of(stub, email.name)
    assert "not a public address" in hook_error and SECRET not in hook_error
    assert "not a public address" in email_error
    assert internal.requests == [] and mail.received == []


async def test_the_error_quotes_the_status_never_the_answer_s_body(backend: Backend) -> None:
    """Even where private destinations are allowed, what answered cannot pass its text through
    GetMessage.error: the status and its standard phrase only."""
    internal = HttpSink(default=lambda r: Answer(403, {"internal": SECRET}))
    with http_sink(internal) as sink:
        app = delivery_app(backend, free_port(), ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            await stub.CreateProvider(pb.CreateProviderRequest(
                provider=_webhook(f"{sink.url}/admin/keys")), metadata=WS)
            hook = (await stub.SendMessage(_webhook_message("k1"), metadata=WS)).message
            error = await _error_of(stub, hook.name)
    assert internal.requests and "403 Forbidden" in error and SECRET not in error


@pytest.mark.parametrize("host", ["localhost", "LocalHost", "localhost.", "api.localhost",
                                  "127.0.0.1.", "169.254.169.254."])
def test_localhost_names_and_a_literal_s_trailing_dot_are_private(host: str) -> None:
    """Review rssrf2 LOW: ``localhost``, the names under it (RFC 6761: always this host) and
    a literal with the root's dot passed CreateProvider and, through a proxy, went to it."""
    from cjo_delivery.adapters.destinations import PrivateDestination, check_literal
    with pytest.raises(PrivateDestination):
        check_literal(host)
    problems = validate_provider(channel=Channel.WEBHOOK, kind=ProviderKind.WEBHOOK,
                                 display_name="", config={"url": f"http://{host}:8080/x"},
                                 secrets={"signing_secret": "s"})
    assert [v.field for v in problems.items] == ["provider.config[url]"]


async def test_every_http_path_checks_the_address_it_dials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is checked on the address it resolves to when dialled, whatever it resolved to
    before (DNS rebinding): ``localhost`` stands for a name that now resolves to loopback."""
    with http_sink(HttpSink()) as sink:
        client = HttpClient()
        url = f"http://localhost:{sink.port}/x"
        try:
            for call in (lambda: client.post(url, timeout=5, json_body={}),
                         lambda: client.get(url, timeout=5),
                         lambda: client.post(f"http://127.0.0.1:{sink.port}/x", timeout=5)):
                with pytest.raises(HttpTransportError, match="not a public address"):
                    await call()
            # Through a proxy (the operator's, on a private address: allowed), a private IP
            # literal is refused before the proxy is asked to dial it.
            monkeypatch.setenv("HTTP_PROXY", sink.url)
            proxied = HttpClient()
            try:
                for host in ("127.0.0.1", "localhost", "127.0.0.1."):  # rssrf2: the last two
                    with pytest.raises(HttpTransportError, match="not a public address"):
                        await proxied.post(f"http://{host}:{sink.port}/x", timeout=5,
                                           json_body={})
            finally:
                await proxied.close()
        finally:
            await client.close()
    assert sink.requests == []


async def test_a_workspace_smtp_server_is_dialled_only_at_a_public_address() -> None:
    connected: list[int] = []
    server = await asyncio.start_server(lambda r, w: connected.append(1), "127.0.0.1", 0)
    async with server:
        smtp = SmtpProvider(SmtpSettings(host="localhost",
                                         port=server.sockets[0].getsockname()[1],
                                         timeout_seconds=5), ManualClock())
        mail = OutgoingEmail(message_id="m1", to="a@example.com", subject="s", preheader="",
                             html="<p>x</p>", text="x")
        with pytest.raises(ProviderError, match="not a public address"):
            await smtp.send_email(mail)
        await smtp.close()
    assert connected == []


async def test_through_a_proxy_a_name_is_the_proxy_s_to_resolve(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review rssrf MEDIUM: behind HTTP(S)_PROXY every send first resolved the provider's name
    in delivery's own DNS: where only the proxy resolves outside names, every send failed
    (gaierror), and each cost a look-up. The name now goes to the proxy unresolved."""
    asked: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append((await reader.readline()).decode().strip())
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    looked_up: list[str] = []
    real = socket.getaddrinfo

    def counting(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(str(host))
        return real(host, *args, **kwargs)

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    async with server:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        monkeypatch.setattr(socket, "getaddrinfo", counting)
        client = HttpClient()
        try:
            answer = await client.post("http://api.sms-provider.invalid/send", timeout=5,
                                       json_body={})
        finally:
            await client.close()
    assert answer.status_code == 200
    assert asked == ["POST http://api.sms-provider.invalid/send HTTP/1.1"]
    assert "api.sms-provider.invalid" not in looked_up


async def test_a_name_that_does_not_resolve_fails_as_a_private_one_does() -> None:
    """Review rssrf LOW: which names delivery's DNS knows (internal ones) is not told: an
    unresolvable name's error is the private name's, on every path."""
    client = HttpClient()
    try:
        errors = []
        for host in ("localhost", "no-such-host.invalid"):
            url = f"http://{host}:9/x"
            for call in (client.post(url, timeout=5, json_body={}), client.get(url, timeout=5)):
                with pytest.raises(HttpTransportError) as failed:
                    await call
                errors.append(str(failed.value).replace(host, "HOST"))
    finally:
        await client.close()
    assert "not a public address" in errors[0]
    assert errors[2:] == errors[:2]


def _json_provider(provider_id: str, url: str, client: HttpClient) -> JsonHttpProvider:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return JsonHttpProvider(ProviderConfig(
        workspace_id="ws-a", provider_id=provider_id, channel=Channel.SMS,
        kind=ProviderKind.HTTP_JSON, priority=0, display_name="", etag="e1",
        config={"url": f"{url}/send"}, secrets={"api_key": "k"}, disabled=False,
        create_time=now, update_time=now), client, ManualClock())


async def test_a_failed_answer_s_body_goes_to_the_operator_s_log_only() -> None:
    """Review rssrf LOW: the body kept out of GetMessage.error is what tells the operator why a
    provider refused; its first 300 characters are logged."""
    internal = HttpSink(default=lambda r: Answer(400, {"why": SECRET, "pad": "x" * 1000}))
    with http_sink(internal) as sink:
        client = HttpClient(allow_private=True)
        sender = _json_provider("json-1", sink.url, client)
        try:
            with capture_logs() as logs, pytest.raises(ProviderError) as failed:
                await sender.send(OutgoingMessage(message_id="m1", channel=Channel.SMS,
                                                  to="+14155550100", sms_text="x"))
        finally:
            await client.close()
    assert SECRET not in str(failed.value)
    logged = [e for e in logs if e["event"] == "provider answered an error"]
    assert len(logged) == 1 and SECRET in logged[0]["body"]
    assert len(logged[0]["body"]) <= 300 and logged[0]["provider_id"] == "json-1"


async def test_a_failed_answer_is_logged_once_a_period_without_personal_data() -> None:
    """Review rssrf2 LOW: every failed answer was logged, quoting what the provider quoted of
    the recipient (Twilio: the phone number), control characters included. Now once per
    provider per period, with e-mail addresses, digit runs and control characters masked."""
    why = ("The 'To' number +14155550100 is not valid\r\n\x1b[31mforged line, "
           f"bob.smith@example.com, (415) 555-0100, {SECRET}")
    internal = HttpSink(default=lambda r: Answer(400, {"why": why}))
    with http_sink(internal) as sink:
        client = HttpClient(allow_private=True)
        sender = _json_provider("json-pii", sink.url, client)
        try:
            with capture_logs() as logs:
                for n in range(3):
                    with pytest.raises(ProviderError):
                        await sender.send(OutgoingMessage(message_id=f"m{n}", channel=Channel.SMS,
                                                          to="+14155550100", sms_text="x"))
        finally:
            await client.close()
    logged = [e for e in logs if e["event"] == "provider answered an error"]
    assert len(logged) == 1 and len(internal.requests) == 3
    body = logged[0]["body"]
    assert SECRET in body and "forged line" in body
    for personal in ("4155550100", "555-0100", "bob.smith", "example.com"):
        assert personal not in body, personal
    # A body that is not JSON brings its control characters as they are.
    from cjo_delivery.adapters.http_providers import logged_body
    assert logged_body("a\x1b[31m\x00b\r\nc\x85d") == "a [31m b c d"
