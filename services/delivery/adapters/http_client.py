"""The one HTTP client of delivery's HTTP providers: HTTP/1.1 over a keep-alive connection pool,
shared by every provider of the process.

POSTs (every provider's send) go over this module's own pool of :class:`~cjo_delivery.adapters.
http_wire.Connection` (answers parsed by httptools): a fourth of aiohttp's CPU per call, which
was ~40% of delivery's CPU per message sent over HTTP (adapters/http_wire.py says why).
aiohttp (its pool and C parser) takes the rest: GETs (rare: a webhook's signing certificate)
and every call when a proxy is configured (HTTP(S)_PROXY / NO_PROXY, which aiohttp speaks).
Why not httpx: at 64 calls in flight httpx (httpcore) spends most of its time in pool
bookkeeping (every request scans every pooled connection and polls its socket), which held
the sender to ~150 sends/s on 2 cores.

What it guarantees, either way: a total timeout per call (connect, send and answer); TLS
verified against the system's (or the given) trust store for https URLs; idle connections kept
per host (scheme, host, port) and reused while the server allows it (not closed by it, no
``Connection: close``) and for at most ``keepalive_seconds``; at most ``connections`` sockets
open in all, so a slow provider cannot open sockets without bound; no redirects followed (a
provider that redirects has answered); no cookies kept (providers of different workspaces
share the pool); answers read up to ``MAX_ANSWER_BYTES``; a call is never repeated (a POST that
broke may have been taken); only public addresses dialled unless ``allow_private``
(adapters/destinations.py; through a proxy, a private IP literal is refused here and a name
is left to the proxy, which resolves it and must refuse private ones itself). Errors come out
as :class:`HttpTimeout` and :class:`HttpTransportError`, so the providers need not know the
library.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode
from urllib.request import getproxies_environment

import aiohttp
import msgspec
import yarl
from aiohttp.helpers import get_env_proxy_for_url
from multidict import CIMultiDictProxy

from cjo_delivery.adapters.destinations import (
    PrivateDestination,
    check_literal,
    connect,
    public_socket,
    refused,
)
from cjo_delivery.adapters.http_wire import Connection, WireError, request_bytes

# Providers answer with a few hundred bytes; more is read no further (the connection is then
# dropped rather than reused).
MAX_ANSWER_BYTES = 256 * 1024
# Shorter than the idle timeout of common servers and load balancers (60 s), so we close idle
# connections before they do.
KEEPALIVE_SECONDS = 30.0
# Compact UTF-8 JSON, as json.dumps(ensure_ascii=False, separators=(",", ":")) writes it, in a
# fraction of the time (msgspec).
_encode_json = msgspec.json.Encoder().encode
# Sent with every POST of the lean path (aiohttp sends its own User-Agent and Accept).
_USER_AGENT = "cjo-delivery"
_Key = tuple[str, str, int]  # scheme, host, port


@dataclass(frozen=True)
class _Target:
    """A URL as the lean path needs it (parsed once per URL: providers post to a few)."""

    key: _Key
    host_header: str
    path: str
    basic_auth: str | None  # user:password in the URL, as aiohttp reads them


@lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    parsed = yarl.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.raw_host
    shown = f"[{host}]" if ":" in host else host
    if not parsed.is_default_port():
        shown = f"{shown}:{port}"
    auth = (aiohttp.BasicAuth(parsed.user or "", parsed.password or "").encode()
            if parsed.user is not None else None)
    return _Target((parsed.scheme, host, port), shown, parsed.raw_path_qs or "/", auth)


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
                 keepalive_seconds: float = KEEPALIVE_SECONDS,
                 allow_private: bool = False) -> None:
        self.connections = connections
        # Private addresses may be dialled (CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS).
        self.allow_private = allow_private
        # The system trust store (SSL_CERT_FILE / SSL_CERT_DIR apply) unless one is given.
        self.tls_context = tls_context or ssl.create_default_context()
        self.keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._proxy_session: aiohttp.ClientSession | None = None
        # The lean path's pool: idle connections per host, and how many are open in all.
        self._idle: dict[_Key, list[Connection]] = {}
        self._open_count = 0
        self._slots: asyncio.Semaphore | None = None  # made on the loop that sends
        self._proxied: bool | None = None

    def _new_session(self, *, proxied: bool) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.connections, limit_per_host=self.connections, ssl=self.tls_context,
            keepalive_timeout=self.keepalive_seconds,
            # Sees the address each connection dials; a proxy's is the operator's own.
            socket_factory=None if self.allow_private or proxied else public_socket)
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
            # Honour HTTP(S)_PROXY / NO_PROXY like the previous client (httpx) did, but only
            # for the calls a proxy makes: aiohttp then reads ~/.netrc on every call.
            trust_env=proxied)

    def _open(self, url: str) -> aiohttp.ClientSession:
        """The session for ``url``: through the proxy the environment names for it, if any
        (a private IP literal refused here; a name is the proxy's to resolve and judge), else
        direct."""
        proxied = False
        if getproxies_environment():
            target = yarl.URL(url)
            try:
                get_env_proxy_for_url(target)
                proxied = True
            except LookupError:
                pass
            if proxied and not self.allow_private and target.raw_host:
                check_literal(target.raw_host)
        if proxied:
            if self._proxy_session is None or self._proxy_session.closed:
                self._proxy_session = self._new_session(proxied=True)
            return self._proxy_session
        if self._session is None or self._session.closed:
            self._session = self._new_session(proxied=False)
        return self._session

    async def post(self, url: str, *, timeout: float, headers: Mapping[str, str] | None = None,
                   json_body: Any = None, form: Mapping[str, str] | None = None,
                   content: bytes | None = None,
                   auth: tuple[str, str] | None = None) -> HttpResponse:
        """POST one of ``json_body`` (sent as compact UTF-8 JSON), ``form`` (URL-encoded) or
        ``content`` (as is) and read the answer, all within ``timeout`` seconds."""
        if self._proxied is None:
            self._proxied = bool(getproxies_environment())
        if not self._proxied:
            return await self._lean_post(url, timeout, headers, json_body, form, content, auth)
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
            async with self._open(url).post(
                    url, data=data, headers=sent_headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                body = await _read_capped(response)
                return HttpResponse(response.status, response.headers, body)
        except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too (checked first)
            raise HttpTimeout(f"no answer within {timeout:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: a URL aiohttp cannot use (validated before, so rare).
            raise HttpTransportError(f"{type(exc).__name__}: {exc}") from None

    async def _lean_post(self, url: str, timeout: float, headers: Mapping[str, str] | None,
                         json_body: Any, form: Mapping[str, str] | None, content: bytes | None,
                         auth: tuple[str, str] | None) -> HttpResponse:
        sent = {"User-Agent": _USER_AGENT, "Accept": "*/*"}
        body = b""
        if json_body is not None:
            body = _encode_json(json_body)
            sent["Content-Type"] = "application/json"
        elif form is not None:
            body = urlencode(dict(form)).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif content is not None:
            body = content
            sent["Content-Type"] = "application/octet-stream"
        if headers:
            for name, value in headers.items():
                # The caller's own spelling wins over the default's (no header twice).
                for default in [d for d in sent if d.lower() == name.lower()]:
                    del sent[default]
                sent[name] = value
        try:
            target = _target(url)
            if auth is not None:
                sent["Authorization"] = aiohttp.encode_basic_auth(*auth)
            elif target.basic_auth is not None and not any(
                    name.lower() == "authorization" for name in sent):
                sent["Authorization"] = target.basic_auth
            request = request_bytes("POST", target.path, target.host_header, sent, body)
        except ValueError as exc:
            raise HttpTransportError(f"{type(exc).__name__}: {exc}") from None
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.connections)
        try:
            async with self._slots, asyncio.timeout(timeout):
                conn = await self._connection(target.key)
                try:
                    answer = await conn.exchange(request)
                finally:
                    self._give_back(target.key, conn)
        except TimeoutError:
            raise HttpTimeout(f"no answer within {timeout:g} s") from None
        except (WireError, OSError) as exc:
            raise HttpTransportError(f"{type(exc).__name__}: {exc}") from None
        return HttpResponse(answer.status_code, answer.headers, answer.content)

    async def _connection(self, key: _Key) -> Connection:
        """An idle connection to ``key`` still fit for use, else a new one (an idle one of
        another host closed first when ``connections`` are open)."""
        now = time.monotonic()
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_seconds:
                return conn
            self._close(conn)
        if self._open_count >= self.connections:
            self._close_oldest_idle()
        scheme, host, port = key
        self._open_count += 1
        try:
            _, conn = await connect(
                lambda: Connection(MAX_ANSWER_BYTES), host, port,
                allow_private=self.allow_private,
                ssl=self.tls_context if scheme == "https" else None,
                server_hostname=host if scheme == "https" else None)
        except BaseException:
            self._open_count -= 1
            raise
        return conn

    def _give_back(self, key: _Key, conn: Connection) -> None:
        if conn.reusable:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(conn)
        else:
            self._close(conn)

    def _close(self, conn: Connection) -> None:
        conn.close()
        self._open_count -= 1

    def _close_oldest_idle(self) -> None:
        oldest: tuple[float, _Key] | None = None
        for key, idle in self._idle.items():
            if idle and (oldest is None or idle[0].idle_since < oldest[0]):
                oldest = (idle[0].idle_since, key)
        if oldest is not None:
            self._close(self._idle[oldest[1]].pop(0))

    async def get(self, url: str, *, timeout: float) -> HttpResponse:
        """GET ``url`` and read the answer (capped like any other), within ``timeout``."""
        try:
            async with self._open(url).get(
                    url, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                return HttpResponse(response.status, response.headers,
                                    await _read_capped(response))
        except TimeoutError:
            raise HttpTimeout(f"no answer within {timeout:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            if not self.allow_private and isinstance(
                    exc.os_error, (socket.gaierror, PrivateDestination)):
                # One text whether the name does not resolve or resolves to private addresses:
                # which names delivery's DNS knows is not told (the lean path's text too).
                raise HttpTransportError(
                    f"PrivateDestination: {refused(f'{exc.host}: ')}") from None
            raise HttpTransportError(f"{type(exc).__name__}: {exc}") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise HttpTransportError(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                self._close(conn)
        self._idle.clear()
        for session in (self._session, self._proxy_session):
            if session is not None:
                await session.close()
        self._session = self._proxy_session = None


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
