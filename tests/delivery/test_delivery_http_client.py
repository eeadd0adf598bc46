"""The HTTP providers' client against real servers on loopback: TLS verified against the trust
store it was given, keep-alive connections reused, at most ``connections`` sockets at once, the
timeout, and answers read no further than their cap."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from delivery_support import self_signed
from http_sink import read_request_body

from cjo_delivery.adapters.http_client import (
    MAX_ANSWER_BYTES,
    HttpClient,
    HttpTimeout,
    HttpTransportError,
)
from cjo_delivery.adapters.http_providers import JsonHttpProvider
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.providers import ProviderConfig, ProviderKind
from cjo_delivery.domain.sending import OutgoingMessage, ProviderError
from cjo_platform.clock import ManualClock


@dataclass
class Server:
    """What a keep-alive HTTP/1.1 server saw: connections (all, and most at once) and bodies."""

    port: int = 0
    delay: float = 0.0
    hang: bool = False
    answer_bytes: int = 0  # 0: a small JSON answer
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    bodies: list[bytes] | None = None

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/send"


@asynccontextmanager
async def server(tls: ssl.SSLContext | None = None, **settings: object
                 ) -> AsyncIterator[Server]:
    seen = Server(bodies=[], **settings)  # type: ignore[arg-type]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        seen.open_now += 1
        seen.most_open = max(seen.most_open, seen.open_now)
        try:
            while True:
                assert seen.bodies is not None
                seen.bodies.append(await read_request_body(reader))
                if seen.hang:
                    await asyncio.sleep(3600)
                await asyncio.sleep(seen.delay)
                body = (b"x" * seen.answer_bytes if seen.answer_bytes
                        else json.dumps({"id": f"p-{len(seen.bodies)}"}).encode())
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            seen.open_now -= 1
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    seen.port = listener.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        listener.close()


def provider(url: str, client: HttpClient, timeout: str = "5") -> JsonHttpProvider:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    config = ProviderConfig(
        workspace_id="ws-a", provider_id="json-1", channel=Channel.SMS,
        kind=ProviderKind.HTTP_JSON, priority=0, display_name="", etag="e1",
        config={"url": url, "timeout_seconds": timeout}, secrets={"api_key": "k-1"},
        disabled=False, create_time=now, update_time=now)
    return JsonHttpProvider(config, client, ManualClock())


def sms(i: int) -> OutgoingMessage:
    return OutgoingMessage(message_id=f"m{i}", channel=Channel.SMS, to="+14155550100",
                           sms_text=f"code {i}")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


async def test_https_is_verified_and_its_connection_reused(
        certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with server(tls) as seen:
        trusting = HttpClient(allow_private=True,
                              tls_context=ssl.create_default_context(cafile=str(cert)))
        try:
            sender = provider(seen.url("https"), trusting)
            ids = [await sender.send(sms(i)) for i in range(5)]
        finally:
            await trusting.close()
        assert ids == [f"p-{i}" for i in range(1, 6)]
        assert seen.connections == 1  # one TLS handshake, then keep-alive
        assert json.loads(seen.bodies[0]) == {  # type: ignore[index]
            "message_id": "m0", "channel": "sms", "to": "+14155550100",
            "sms": {"text": "code 0"}}

        # The system's trust store does not know the throwaway CA: refused, and retryable.
        default = HttpClient(allow_private=True)
        try:
            with pytest.raises(ProviderError) as refused:
                await provider(seen.url("https"), default).send(sms(9))
        finally:
            await default.close()
        assert refused.value.transient and "CERTIFICATE_VERIFY_FAILED" in refused.value.message
        assert len(seen.bodies) == 5  # type: ignore[arg-type]


async def test_connections_are_bounded_and_reused_under_load() -> None:
    async with server(delay=0.05) as seen:
        client = HttpClient(connections=4, allow_private=True)
        try:
            sender = provider(seen.url(), client)
            await asyncio.gather(*(sender.send(sms(i)) for i in range(40)))
        finally:
            await client.close()
    assert len(seen.bodies) == 40  # type: ignore[arg-type]
    assert seen.most_open <= 4 and seen.connections <= 4


async def test_a_provider_that_does_not_answer_times_out() -> None:
    async with server(hang=True) as seen:
        client = HttpClient(allow_private=True)
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(ProviderError) as timed_out:
                await provider(seen.url(), client, timeout="0.3").send(sms(1))
            waited = asyncio.get_running_loop().time() - started
            with pytest.raises(HttpTimeout):
                await client.post(seen.url(), timeout=0.2, content=b"{}")
        finally:
            await client.close()
    assert timed_out.value.transient and timed_out.value.message.endswith("timed out")
    # uvloop's clock counts whole milliseconds: a 0.3 s timer can read 0.29999...
    assert 0.299 <= waited < 2.0


async def test_answers_are_read_up_to_the_cap_and_refused_connections_reported() -> None:
    async with server(answer_bytes=MAX_ANSWER_BYTES * 2) as seen:
        client = HttpClient(allow_private=True)
        try:
            answer = await client.post(seen.url(), timeout=5, json_body={"a": 1})
            port = seen.port
        finally:
            await client.close()
    assert answer.status_code == 200 and len(answer.content) == MAX_ANSWER_BYTES
    client = HttpClient(allow_private=True)
    try:
        with pytest.raises(HttpTransportError):  # the server is gone
            await client.post(f"http://127.0.0.1:{port}/send", timeout=5, content=b"{}")
    finally:
        await client.close()
