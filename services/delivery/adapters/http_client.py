"""The one HTTP client of delivery's HTTP providers: HTTP/1.1 over a keep-alive connection pool
(aiohttp), shared by every provider of the process.

Why aiohttp and not httpx: at 64 calls in flight httpx (httpcore) spends most of its time in
pool bookkeeping (every request scans every pooled connection and polls its socket), which held
the sender to ~150 sends/s on 2 cores; aiohttp's pool and C parser do the same work roughly ten
times faster (tests/benchmarks/delivery.py).

What it guarantees: a total timeout per call (connect, send and answer); TLS verified against
the system's (or the given) trust store for https URLs; idle connections kept per host (scheme,
host, port) and reused; at most ``connections`` connections in all, so a slow provider cannot
open sockets without bound; no redirects followed (a provider that redirects has answered); no
cookies kept (providers of different workspaces share the pool); answers read up to
``MAX_ANSWER_BYTES``. Errors come out as :class:`HttpTimeout` and :class:`HttpTransportError`,
so the providers need not know the library.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.request import getproxies_environment

import aiohttp
import msgspec
from multidict import CIMultiDictProxy

# Providers answer with a few hundred bytes; more is read no further (the connection is then
# dropped rather than reused).
MAX_ANSWER_BYTES = 256 * 1024
# Shorter than the idle timeout of common servers and load balancers (60 s), so we close idle
# connections before they do.
KEEPALIVE_SECONDS = 30.0
# Compact UTF-8 JSON, as json.dumps(ensure_ascii=False, separators=(",", ":")) writes it, in a
# fraction of the time (msgspec).
_encode_json = msgspec.json.Encoder().encode


class HttpTimeout(Exception):
    """The call did not finish within its timeout."""


class HttpTransportError(Exception):
    """No answer: the connection could not be made or broke (DNS, refused, reset, TLS)."""


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not (msgspec.DecodeError is one)."""
        return msgspec.json.decode(self.content)


class HttpClient:
    """A pooled HTTP/1.1 client; create it in the process, use it from the running loop (the
    pool is opened on first use) and :meth:`close` it at shutdown."""

    def __init__(self, *, connections: int = 64, tls_context: ssl.SSLContext | None = None,
                 keepalive_seconds: float = KEEPALIVE_SECONDS) -> None:
        self.connections = connections
        # The system trust store (SSL_CERT_FILE / SSL_CERT_DIR apply) unless one is given.
        self.tls_context = tls_context or ssl.create_default_context()
        self.keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.connections, limit_per_host=self.connections,
                ssl=self.tls_context, keepalive_timeout=self.keepalive_seconds)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                # Honour HTTP(S)_PROXY / NO_PROXY like the previous client (httpx) did, but
                # only when one is set: aiohttp then reads ~/.netrc on every call.
                trust_env=bool(getproxies_environment()))
        return self._session

    async def post(self, url: str, *, timeout: float, headers: Mapping[str, str] | None = None,
                   json_body: Any = None, form: Mapping[str, str] | None = None,
                   content: bytes | None = None,
                   auth: tuple[str, str] | None = None) -> HttpResponse:
        """POST one of ``json_body`` (sent as compact UTF-8 JSON), ``form`` (URL-encoded) or
        ``content`` (as is) and read the answer, all within ``timeout`` seconds."""
        sent_headers = dict(headers or {})
        if auth is not None:
            sent_headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        data: Any = None
        if json_body is not None:
            data = _encode_json(json_body)
            sent_headers.setdefault("Content-Type", "application/json")
        elif form is not None:
            data = dict(form)
        elif content is not None:
            data = content
        try:
            async with self._open().post(
                    url, data=data, headers=sent_headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                body = await _read_capped(response)
                return HttpResponse(response.status, response.headers, body)
        except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too (checked first)
            raise HttpTimeout(f"no answer within {timeout:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: a URL aiohttp cannot use (validated before, so rare).
            raise HttpTransportError(f"{type(exc).__name__}: {exc}") from None

    async def get(self, url: str, *, timeout: float) -> HttpResponse:
        """GET ``url`` and read the answer (capped like any other), within ``timeout``."""
        try:
            async with self._open().get(
                    url, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                return HttpResponse(response.status, response.headers,
                                    await _read_capped(response))
        except TimeoutError:
            raise HttpTimeout(f"no answer within {timeout:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise HttpTransportError(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    if response.content_length is not None and response.content_length <= MAX_ANSWER_BYTES:
        return await response.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ANSWER_BYTES:
            response.close()  # unread rest: the connection cannot be reused
            break
    return b"".join(chunks)[:MAX_ANSWER_BYTES]
