"""One HTTP/1.1 client connection on an asyncio protocol, its answers parsed by httptools
(llhttp, the C parser of Node.js and of aiohttp's own C extension).

Why not aiohttp's ``ClientSession`` for every call: a POST through it costs ~190-230 us of CPU
(building a ``ClientRequest`` and its payload, a writer task, a timer, a ``ClientResponse`` and
its stream reader, per call), ~40% of what delivery spends per message sent over HTTP; this
connection writes the request as one buffer and feeds the socket's bytes straight to the
parser, ~55-60 us (tests/benchmarks/http_client.py). h11 (pure Python) costs as much as
aiohttp. What is left to this module is what no parser does: writing the request line and
headers (names and values checked, so no header can be smuggled), the answer's cap, and the
connection's life (reused only when the answer said it may be).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

_FORBIDDEN = frozenset("\r\n\0")


class WireError(Exception):
    """The connection broke or the answer was not HTTP; nothing more is known of the call."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes


def request_bytes(method: str, target: str, host: str, headers: dict[str, str],
                  body: bytes) -> bytes:
    """The request as one buffer. A CR, LF or NUL in a header name or value is refused
    (ValueError), as aiohttp refuses them: it would end the header early and smuggle another."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if not _FORBIDDEN.isdisjoint(name) or not _FORBIDDEN.isdisjoint(value) or ":" in name:
            raise ValueError(f"header {name!r} holds a forbidden character")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "\r\n".join(lines).encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection: :meth:`exchange` one request at a time."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = False
        self._parser: Any = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._body: list[bytes] = []
        self._size = 0
        self._complete = False
        self._capped = False
        self._headers_done = False
        self._keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, from asyncio or uvloop alike; uvloop's (TCPTransport) does not
        # subclass asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(WireError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(WireError(f"not an HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            if (self._headers_done and "Content-Length" not in self._headers
                    and "chunked" not in self._headers.get("Transfer-Encoding", "").lower()):
                self._finish()  # an answer delimited by the end of the connection
            else:
                self._fail(WireError(f"connection closed: {exc}" if exc
                                     else "connection closed before the answer ended"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        # Asked now: once the message is complete the parser has moved on to the next one.
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self._capped:
            return
        room = self.cap - self._size
        if len(body) >= room:
            # Read no further: the rest is dropped with the connection.
            self._body.append(body[:room])
            self._size = self.cap
            self._capped = True
            self._finish()
            return
        self._body.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            # An interim answer (100 Continue, 103 Early Hints; 101 is refused as an upgrade)
            # precedes the final one, which is what the call waits for (RFC 9110, 15.2).
            self._headers = CIMultiDict()
            self._headers_done = False
            return
        self._complete = True
        if not self._capped:
            self._finish()

    # the call
    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def exchange(self, request: bytes) -> Answer:
        """Write ``request`` and wait for its whole answer (the caller bounds the wait)."""
        assert self.transport is not None
        self.reusable = False
        self._answer = asyncio.get_running_loop().create_future()
        self._headers = CIMultiDict()
        self._body = []
        self._size = 0
        self._complete = False
        self._capped = False
        self._headers_done = False
        self._keep_alive = False
        self.transport.write(request)
        answer = await self._answer
        self.reusable = (self._complete and not self._capped and not self.closed
                         and self._keep_alive)
        return answer

    def _finish(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(Answer(self._parser.get_status_code(),
                                           CIMultiDictProxy(self._headers),
                                           b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()
