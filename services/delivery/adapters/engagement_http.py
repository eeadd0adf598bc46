"""The engagement listener: a small HTTP/1.1 server on asyncio streams for the open pixel, the
click redirect, one-click unsubscribe (RFC 8058) and provider status webhooks: cjo's own JSON,
or a real provider's reports (SendGrid, SES via SNS, Mailgun, Postmark, Twilio, bounce
messages) when the provider's ``webhook_format`` says so (service_layer/provider_webhooks.py).

Every URL carries a token signed with the tracking secret; a forged or altered one is answered
403 and changes nothing. A status URL also carries its provider's webhook nonce: one issued
before the provider's latest (UpdateProvider with ``status_webhook_url`` in its mask), or of a
deleted provider, is answered 403. Unsubscribing needs a POST (the one-click form mailbox
providers send): a GET only shows a confirmation button, because link scanners fetch every
link they see.

The listener is public, so what a stranger can make it hold is bounded: the token (and a status
URL's provider) is checked from the request's head, before any of its body is read; a body of
up to 4 MiB is read only for a valid status URL (providers batch their reports), 64 KiB for
the other links, and none for a GET of a pixel, click or unsubscribe link (400 from the head).
A request's head must arrive within ``_HEAD_TIMEOUT`` (else 400), a body of up to 64 KiB within
``_BODY_TIMEOUT`` of it (else 408); of the
connections still waiting for theirs, the oldest is dropped when more than
``_MAX_PENDING_HEADS`` wait, so silent sockets hold nothing for long and a request that sends
its head at once (every real client) is always read. Requests whose head is in: at most
``_MAX_CONNECTIONS`` served at once (more are answered 503), at most ``_MAX_LARGE_BODIES``
bodies over 64 KiB read at once, and at most ``_LARGE_BODIES_PER_PROVIDER`` of them one
provider's (more 503), so one workspace cannot hold the others' reports up. ``/healthz`` is
answered from its head whatever the load. A request still being read or handled
``_READ_TIMEOUT`` after its head (a slow certificate fetch or transaction) is answered 503,
which providers retry (they take a 4xx as final).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cjo_delivery.adapters.webhooks.request import WebhookRequest, same
from cjo_delivery.domain.engagement import Engagement, EngagementKind, rewrite_links
from cjo_delivery.domain.messages import Channel, Claim
from cjo_delivery.domain.provider_events import MessageRef, ProviderEvent
from cjo_delivery.domain.tracking import TrackingToken, sign, verify
from cjo_platform.logging import get_logger

if TYPE_CHECKING:
    from cjo_delivery.domain.providers import ProviderConfig
    from cjo_delivery.service_layer.provider_webhooks import ProviderReports

log = get_logger(__name__)

_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_MAX_BODY = 64 * 1024
# Providers post reports in batches (SendGrid: up to thousands of events per POST).
_MAX_REPORT_BODY = 4 * 1024 * 1024
_MAX_HEAD = 16 * 1024
# Real clients send their head at once; a silent socket is dropped after this.
_HEAD_TIMEOUT = 2.0
# A body of up to _MAX_BODY must follow its head within this (else 408): a valid link's holder
# holds a served slot this long at most, not _READ_TIMEOUT.
_BODY_TIMEOUT = 2.0
# From the head's arrival to the answer.
_READ_TIMEOUT = 10.0
# Connections waiting for their head (each holds at most 16 KiB): the oldest is dropped beyond.
_MAX_PENDING_HEADS = 1024
# Requests whose head is in, being read and handled at once.
_MAX_CONNECTIONS = 512
# Report bodies over _MAX_BODY (a valid status URL's) read and handled at once: 64 MiB at most;
# of them, one provider's at once (its workspace's status URL is known to all its ADMIN keys).
_MAX_LARGE_BODIES = 16
_LARGE_BODIES_PER_PROVIDER = 2
_STATUSES = {"delivered": EngagementKind.DELIVERED, "bounced": EngagementKind.BOUNCED,
             "complained": EngagementKind.COMPLAINED, "opened": EngagementKind.OPENED,
             "clicked": EngagementKind.CLICKED}

Record = Callable[[Engagement], Awaitable[bool]]


@dataclass(frozen=True)
class Tracking:
    """Makes the signed links of a deployment."""

    base_url: str
    secret: bytes

    def url(self, path: str, token: TrackingToken) -> str:
        return f"{self.base_url.rstrip('/')}/{path}/{sign(token, self.secret)}"

    def links(self, claim: Claim) -> tuple[str, Callable[[str], str] | None]:
        """The unsubscribe URL and the HTML rewriter of an email."""
        if claim.channel is not Channel.EMAIL:
            return "", None
        w, mid = claim.workspace_id, claim.message_id
        unsubscribe = self.url("u", TrackingToken("unsubscribe", w, mid))
        opened = self.url("o", TrackingToken("open", w, mid))

        def rewrite(body: str) -> str:
            return rewrite_links(
                body, lambda target: self.url("c", TrackingToken("click", w, mid, target)),
                opened)

        return unsubscribe, rewrite

    def status_url(self, workspace_id: str, provider_id: str, nonce: str = "") -> str:
        """The provider's status webhook URL; ``nonce`` is the provider's current one, so a
        new nonce ends the URLs signed with the old."""
        return self.url("s", TrackingToken("status", workspace_id, provider_id, nonce))


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    location: str = ""


@dataclass(frozen=True)
class _Head:
    """A request's head, read before anything else of it."""

    method: str
    target: str
    path: str
    headers: dict[str, str]
    length: int


async def _read_head(reader: asyncio.StreamReader) -> _Head:
    # The whole head at once: longer than _MAX_HEAD is a LimitOverrunError (400).
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    method, target, _ = head[0].strip().split(" ", 2)
    headers: dict[str, str] = {}
    for line in head[1:]:
        if line.strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length < 0:
        raise ValueError("negative Content-Length")
    return _Head(method, target, urlsplit(target).path, headers, length)


_REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class EngagementListener:
    def __init__(self, tracking: Tracking, record: Record, host: str, port: int,
                 reports: ProviderReports | None = None) -> None:
        self.tracking = tracking
        self.record = record
        self.reports = reports
        self.host = host
        self.port = port
        self.bound_port = 0
        self.connections = 0  # heads in, being served now
        # Connections waiting for their head, oldest first (a dict keeps the order).
        self._pending: dict[asyncio.StreamWriter, None] = {}
        self._large_bodies: asyncio.Semaphore | None = None  # made on the serving loop
        self._large_by_provider: dict[tuple[str, str], int] = {}

    @property
    def pending_heads(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        server = await asyncio.start_server(self._serve, self.host, self.port,
                                            limit=_MAX_HEAD)
        self.bound_port = server.sockets[0].getsockname()[1]
        log.info("engagement listener started", port=self.bound_port)
        async with server:
            await server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._pending[writer] = None
        if len(self._pending) > _MAX_PENDING_HEADS:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.transport.abort()  # its head read ends (400, not sent: it is closed)
        try:
            head: _Head | None = await asyncio.wait_for(_read_head(reader), _HEAD_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, ConnectionError):
            head = None
        finally:
            self._pending.pop(writer, None)
        if head is None:
            await self._answer(writer, _Response(400, b"bad request"))
        elif head.path == "/healthz" and head.method == "GET":
            # For a load balancer or Ingress in front of the listener (deploy/k8s/base):
            # answered whatever the load, so a busy replica is not taken for a dead one.
            await self._answer(writer, _Response(200, b"ok"))
        elif self.connections >= _MAX_CONNECTIONS:
            await self._answer(writer, _Response(503, b"busy, try again later"))
        else:
            self.connections += 1
            try:
                await self._answer(writer, await self._response(reader, head))
            finally:
                self.connections -= 1

    async def _response(self, reader: asyncio.StreamReader, head: _Head) -> _Response:
        try:
            return await asyncio.wait_for(self._handle(reader, head), _READ_TIMEOUT)
        except TimeoutError:
            # The head is in, so the request is one to answer: a provider retries a 503.
            return _Response(503, b"try again later")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                ConnectionError):
            return _Response(400, b"bad request")
        except Exception as exc:  # answer 500 rather than drop the connection
            log.error("engagement request failed", exc_info=exc)
            return _Response(500, b"internal error")

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, response: _Response) -> None:
        head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'OK')}",
                f"Content-Type: {response.content_type}",
                f"Content-Length: {len(response.body)}", "Connection: close",
                "Cache-Control: no-store"]
        if response.location:
            head.append(f"Location: {response.location}")
        if writer.transport.is_closing():  # dropped while waiting for its head
            writer.close()
            return
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + response.body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, head: _Head) -> _Response:
        method, target, headers, length = head.method, head.target, head.headers, head.length
        parts = head.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("o", "c", "u", "s"):
            return _Response(404, b"not found")
        route, signed = parts
        # Checked before any of the body is read: a forged link costs its head only.
        token = verify(signed, self.tracking.secret)
        expected = {"o": "open", "c": "click", "u": "unsubscribe", "s": "status"}[route]
        if token is None or token.action != expected:
            return _Response(403, b"forged or damaged link")
        provider = None
        if route == "s" and self.reports is not None:
            provider = await self.reports.provider(token.workspace_id, token.message_id)
            if provider is None or not same(token.url, provider.webhook_nonce):
                # A deleted provider, or a URL from before UpdateProvider issued a new one.
                return _Response(403, b"status URL no longer valid")
        if method == "GET" and route != "s" and (length or "transfer-encoding" in headers):
            # A pixel, a click or the unsubscribe page has no body: refused from the head.
            return _Response(400, b"a GET has no body")
        if length > (_MAX_REPORT_BODY if route == "s" else _MAX_BODY):
            return _Response(413, b"too large")
        if length <= _MAX_BODY:
            return await self._with_body(reader, length, route, method, target, headers,
                                         token, provider)
        if self._large_bodies is None:
            self._large_bodies = asyncio.Semaphore(_MAX_LARGE_BODIES)
        key = (token.workspace_id, token.message_id)  # a status URL's: its provider
        if self._large_by_provider.get(key, 0) >= _LARGE_BODIES_PER_PROVIDER:
            return _Response(503, b"try again later")
        self._large_by_provider[key] = self._large_by_provider.get(key, 0) + 1
        try:
            async with self._large_bodies:
                return await self._with_body(reader, length, route, method, target, headers,
                                             token, provider)
        finally:
            self._large_by_provider[key] -= 1
            if not self._large_by_provider[key]:
                del self._large_by_provider[key]

    async def _with_body(self, reader: asyncio.StreamReader, length: int, route: str,
                         method: str, target: str, headers: dict[str, str],
                         token: TrackingToken, provider: ProviderConfig | None) -> _Response:
        if length > _MAX_BODY:  # a large report's: under _READ_TIMEOUT and the large-body caps
            body = await reader.readexactly(length)
        elif length:
            try:
                body = await asyncio.wait_for(reader.readexactly(length), _BODY_TIMEOUT)
            except TimeoutError:
                return _Response(408, b"request body too slow")
        else:
            body = b""
        if provider is not None and provider.config.get("webhook_format"):
            assert self.reports is not None
            # The URL as the provider called it: Twilio signs it.
            url = self.tracking.base_url.rstrip("/") + target
            answer = await self.reports.receive(
                provider, WebhookRequest(method, url, headers, body))
            return _Response(answer.status, answer.text.encode())
        return await self._route(route, method, token, body)

    async def _route(self, route: str, method: str, token: TrackingToken,
                     body: bytes) -> _Response:
        w, mid = token.workspace_id, token.message_id
        if route == "o" and method == "GET":
            await self.record(Engagement(EngagementKind.OPENED, w, mid))
            return _Response(200, _PIXEL, "image/gif")
        if route == "c" and method == "GET":
            await self.record(Engagement(EngagementKind.CLICKED, w, mid, url=token.url))
            return _Response(302, location=token.url)
        if route == "u" and method == "GET":
            page = ("<!doctype html><title>Unsubscribe</title><form method=post>"
                    "<button>Unsubscribe</button></form>")
            return _Response(200, page.encode(), "text/html; charset=utf-8")
        if route == "u" and method == "POST":
            if not await self.record(Engagement(EngagementKind.UNSUBSCRIBED, w, mid)):
                return _Response(404, b"no such message")
            return _Response(200, b"You are unsubscribed.")
        if route == "s" and method == "POST":
            return await self._status(w, mid, body)
        return _Response(405, b"method not allowed")

    async def _status(self, workspace_id: str, provider_id: str, body: bytes) -> _Response:
        """A provider's report: {"message_id": cjo's id, "status": delivered | bounced |
        complained | opened | clicked, "reason": "...", "url": "..."} (the provider learnt the
        id from the message). A push provider may name the device instead: "device_token"
        finds the latest push sent to it, and so its profile. Only messages the URL's provider
        sent are found: another provider's message is answered 404, as an unknown one."""
        try:
            report = json.loads(body)
            kind = _STATUSES[str(report["status"])]
            message_id = str(report.get("message_id", ""))
            token = str(report.get("device_token", ""))
            if not (message_id or token):
                raise KeyError("message_id")
            reason = str(report.get("reason", ""))[:500]
            url = str(report.get("url", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            return _Response(400, b"expected {message_id or device_token, status, reason}")
        if self.reports is not None:
            ref = MessageRef(message_id=message_id) if message_id else MessageRef(
                device_token=token)
            answer = await self.reports.record(
                workspace_id, [ProviderEvent(kind, ref, reason, url)],
                {"workspace": workspace_id, "provider_id": provider_id}, provider_id)
            found = answer.recorded == 1
        elif message_id:
            found = await self.record(Engagement(kind, workspace_id, message_id, url=url,
                                                 reason=reason))
        else:
            found = False
        return _Response(200 if found else 404, b"ok" if found else b"no such message")
