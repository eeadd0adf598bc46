"""The HTTP client's own connections (adapters/http_wire.py) against raw servers on loopback:
what a server's answer says about its connection (chunked, ``Connection: close``, delimited by
the close, a server that drops an idle connection) and what is never written (a header that
would smuggle another)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from cjo_delivery.adapters.http_client import HttpClient, HttpTransportError
from cjo_platform.event_loop import EVENT_LOOPS

# Each on asyncio's loop and on uvloop's, whose transports are no asyncio.Transport.
pytestmark = pytest.mark.asyncio(loop_factories=list(EVENT_LOOPS))


@dataclass
class Seen:
    port: int = 0
    connections: int = 0
    open_now: int = 0
    requests: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/send?x=1"


Answerer = Callable[[int], tuple[bytes, bool]]  # request number -> (raw answer, then close)


@asynccontextmanager
async def raw_server(answer: Answerer, seen: Seen | None = None) -> AsyncIterator[Seen]:
    seen = seen or Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        seen.open_now += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                seen.requests.append(head + await reader.readexactly(length))
                raw, close = answer(len(seen.requests))
                writer.write(raw)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            seen.open_now -= 1
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen.port = listener.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        listener.close()


async def test_chunked_and_closing_answers_are_read_whole_and_close_their_connection() -> None:
    answers = {
        1: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\n{\"id\"\r\n6\r\n:\"p-1\"\r\n1\r\n}\r\n0\r\n\r\n", False),
        2: (b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 10\r\n\r\n"
            b"{\"id\":\"2\"}", True),
        # No length: the answer ends with the connection.
        3: (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"id\":\"p-3\"}", True),
        4: (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
            False),
    }
    async with raw_server(lambda n: answers[n]) as seen:
        client = HttpClient(allow_private=True)
        try:
            first = await client.post(seen.url, timeout=5, json_body={"a": "é"},
                                      headers={"Authorization": "Bearer k"})
            second = await client.post(seen.url, timeout=5, form={"To": "+1 555"})
            third = await client.post(seen.url, timeout=5, content=b"raw")
            fourth = await client.post(seen.url, timeout=5, content=b"")
        finally:
            await client.close()
    assert first.json() == {"id": "p-1"} and first.status_code == 200
    assert second.status_code == 202 and second.json() == {"id": "2"}
    assert third.json() == {"id": "p-3"}
    assert fourth.status_code == 429 and fourth.headers["retry-after"] == "7"
    # The first answer let its connection be reused; the two that said close did not.
    assert seen.connections == 3
    request = seen.requests[0].decode()
    assert request.startswith("POST /send?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{seen.port}\r\n" in request
    assert "Authorization: Bearer k\r\n" in request
    assert "Content-Type: application/json\r\n" in request
    assert seen.requests[0].endswith('{"a":"é"}'.encode())
    assert "Content-Type: application/x-www-form-urlencoded\r\n" in seen.requests[1].decode()
    assert seen.requests[1].endswith(b"To=%2B1+555")


async def test_a_connection_the_server_dropped_while_idle_is_not_used_again() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_server(lambda n: (ok, n == 1)) as seen:
        client = HttpClient(allow_private=True)
        try:
            await client.post(seen.url, timeout=5, content=b"1")
            # The server closed the connection after answering (without saying so); wait
            # until the client's side has seen it.
            async with asyncio.timeout(5):
                while not all(conn.closed for idle in client._idle.values() for conn in idle):
                    await asyncio.sleep(0.01)
            answer = await client.post(seen.url, timeout=5, content=b"2")
        finally:
            await client.close()
    assert answer.status_code == 200
    assert seen.connections == 2 and len(seen.requests) == 2


async def test_the_pool_bounds_sockets_across_hosts() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    shared = Seen()
    most = 0

    def answer(_: int) -> tuple[bytes, bool]:
        nonlocal most
        most = max(most, shared.open_now)
        return ok, False

    async with raw_server(answer, shared) as first:
        first_url = first.url
        async with raw_server(answer, shared) as second:
            client = HttpClient(connections=2, allow_private=True)
            try:
                for url in (first_url, second.url, first_url, second.url):
                    await asyncio.gather(*(client.post(url, timeout=5, content=b"x")
                                           for _ in range(4)))
            finally:
                await client.close()
    assert len(shared.requests) == 16 and most <= 2


@pytest.mark.parametrize("headers", [{"X-Evil": "a\r\nX-Injected: 1"},
                                     {"X-Evil\r\nX-Injected": "1"}, {"X-Evil": "a\nb"}])
async def test_a_header_that_would_smuggle_another_is_refused_unsent(
        headers: dict[str, str]) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_server(lambda n: (ok, False)) as seen:
        client = HttpClient(allow_private=True)
        try:
            with pytest.raises(HttpTransportError):
                await client.post(seen.url, timeout=5, content=b"x", headers=headers)
        finally:
            await client.close()
    assert seen.requests == []


async def test_an_answer_that_is_not_http_is_a_transport_error() -> None:
    async with raw_server(lambda n: (b"SSH-2.0-OpenSSH\r\n\r\n", True)) as seen:
        client = HttpClient(allow_private=True)
        try:
            with pytest.raises(HttpTransportError):
                await client.post(seen.url, timeout=5, content=b"x")
        finally:
            await client.close()


async def test_interim_answers_are_skipped_for_the_final_one() -> None:
    # A server may send 1xx answers (100 Continue, 103 Early Hints) before the final one, even
    # unasked; the call's answer is the final one, and the connection stays reusable.
    answers = {
        1: (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"id\":\"p1\"}", False),
        2: (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),
    }
    async with raw_server(lambda n: answers[n]) as seen:
        client = HttpClient(allow_private=True)
        try:
            first = await client.post(seen.url, timeout=5, content=b"1")
            second = await client.post(seen.url, timeout=5, content=b"2")
        finally:
            await client.close()
    assert (first.status_code, first.json()) == (201, {"id": "p1"})
    assert "link" not in first.headers
    assert second.status_code == 200
    assert seen.connections == 1
