"""What a stranger can make the public engagement listener do (review hdeliv): a forged link is
answered from its head, before any of its body is read (150 forged 4 MiB POSTs held 600 MB);
requests beyond the cap are answered 503 and silent sockets count toward no cap (review rssrf);
one provider holds at most two large-body slots; a link's holder holds a slot for
_BODY_TIMEOUT at most (review rssrf2); a report whose handling outlives the read
timeout is answered 503, which providers retry (not 400, which they take as final); a bounce
mailbox's report is parsed off the event loop and only its first 256 KiB."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from provider_webhook_support import BOUNCED, fixture, harness, smtp_provider

from cjo_delivery.adapters import engagement_http
from cjo_delivery.adapters.engagement_http import EngagementListener, Tracking
from cjo_delivery.adapters.webhooks import dsn, receiver
from cjo_delivery.domain.tracking import TrackingToken
from cjo_delivery.service_layer.provider_webhooks import Answer
from support import Backend, eventually

KEY = b"k" * 32
BIG = 1024 * 1024


@dataclass
class _Provider:
    webhook_nonce: str = "n"
    config: dict[str, str] = field(default_factory=lambda: {"webhook_format": "ses"})


@dataclass
class _Reports:
    """The listener's reports: a provider for every status URL; ``receive`` records the body
    and answers 200, or waits for ``release`` when it is given."""

    bodies: list[int] = field(default_factory=list)
    release: asyncio.Event | None = None

    async def provider(self, workspace_id: str, provider_id: str) -> _Provider:
        return _Provider()

    async def receive(self, provider: _Provider, request: Any) -> Answer:
        if self.release is not None:
            await self.release.wait()
        self.bodies.append(len(request.body))
        return Answer(200, "ok")


async def _nothing(engagement: Any) -> bool:
    return False


@asynccontextmanager
async def _listening(reports: _Reports) -> AsyncIterator[tuple[EngagementListener, str]]:
    listener = EngagementListener(Tracking("http://127.0.0.1", KEY), _nothing, "127.0.0.1", 0,
                                  reports)  # type: ignore[arg-type]
    task = asyncio.create_task(listener.run())
    try:
        await eventually(lambda: listener.bound_port)
        yield listener, urlsplit(listener.tracking.status_url("w", "p", "n")).path
    finally:
        task.cancel()


async def _ask(port: int, head: bytes, body: bytes = b"") -> bytes:
    """The status line of the answer to ``head`` (and as much of the body as given)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).strip()
    finally:
        writer.close()


def _post(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()


async def test_a_forged_link_is_answered_from_its_head_before_any_body_is_read() -> None:
    reports = _Reports()
    async with _listening(reports) as (listener, status):
        port = listener.bound_port
        # The body is never sent: the answer cannot wait for it.
        assert await _ask(port, _post("/s/forged", 4 * BIG)) == b"HTTP/1.1 403 Forbidden"
        assert await _ask(port, _post("/o/forged", BIG)) == b"HTTP/1.1 403 Forbidden"
        # A valid status URL may post a large batch; another link may not.
        assert await _ask(port, _post(status, BIG), b"x" * BIG) == b"HTTP/1.1 200 OK"
        assert reports.bodies == [BIG]
        assert await _ask(port, _post(status, 4 * BIG + 1)) == b"HTTP/1.1 413 Payload Too Large"


async def test_requests_beyond_the_cap_are_answered_503_and_healthz_is_always_answered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engagement_http, "_MAX_CONNECTIONS", 2)
    monkeypatch.setattr(engagement_http, "_BODY_TIMEOUT", 30.0, raising=False)
    async with _listening(_Reports()) as (listener, status):
        port = listener.bound_port
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        try:
            for _, writer in held:  # heads in, bodies never sent
                writer.write(_post(status, 2))
            await eventually(lambda: listener.connections == 2)
            assert await _ask(port, _post(status, 2), b"{}") == (
                b"HTTP/1.1 503 Service Unavailable")
            assert await _ask(port, b"GET /healthz HTTP/1.1\r\n\r\n") == b"HTTP/1.1 200 OK"
        finally:
            for _, writer in held:
                writer.close()
        await eventually(lambda: listener.connections == 0)
        assert await _ask(port, _post(status, 2), b"{}") == b"HTTP/1.1 200 OK"


async def test_silent_sockets_hold_no_request_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review rssrf MEDIUM: 512 sockets that sent nothing (renewed every 10 s) held every
    connection: clicks, opens, unsubscribes, reports and /healthz all 503, and the load
    balancer took the replica for dead. A socket without a head counts toward no cap, is
    dropped after _HEAD_TIMEOUT, and the oldest is dropped when more than _MAX_PENDING_HEADS
    wait."""
    monkeypatch.setattr(engagement_http, "_MAX_CONNECTIONS", 2)
    monkeypatch.setattr(engagement_http, "_MAX_PENDING_HEADS", 3, raising=False)
    reports = _Reports()
    async with _listening(reports) as (listener, status):
        port = listener.bound_port
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        try:
            assert await _ask(port, b"GET /healthz HTTP/1.1\r\n\r\n") == b"HTTP/1.1 200 OK"
            assert await _ask(port, _post(status, 2), b"{}") == b"HTTP/1.1 200 OK"
            assert reports.bodies == [2]
            # The oldest silent ones were dropped, unanswered; the newest three still wait.
            for reader, _ in silent[:2]:
                assert await asyncio.wait_for(reader.read(), 5) == b""
            assert listener.pending_heads <= 3
        finally:
            for _, writer in silent:
                writer.close()
        # A head that never comes is a bad request after _HEAD_TIMEOUT, not _READ_TIMEOUT.
        monkeypatch.setattr(engagement_http, "_HEAD_TIMEOUT", 0.3, raising=False)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert (await asyncio.wait_for(reader.readline(), 5)).strip() == (
                b"HTTP/1.1 400 Bad Request")
        finally:
            writer.close()


async def test_one_provider_holds_at_most_two_large_body_slots() -> None:
    """Review rssrf LOW: one workspace's status URL (known to all its ADMIN keys) held all 16
    large-body slots with heads announcing 4 MiB, and another's reports waited (503)."""
    reports = _Reports()
    async with _listening(reports) as (listener, status):
        port = listener.bound_port
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        try:
            for _, writer in held:
                writer.write(_post(status, BIG))
            await eventually(lambda: listener._large_by_provider.get(("w", "p")) == 2)
            assert await _ask(port, _post(status, BIG)) == b"HTTP/1.1 503 Service Unavailable"
            other = urlsplit(listener.tracking.status_url("w", "q", "n")).path
            assert await _ask(port, _post(other, BIG), b"x" * BIG) == b"HTTP/1.1 200 OK"
            assert reports.bodies == [BIG]
        finally:
            for _, writer in held:
                writer.close()


async def test_a_report_outliving_the_read_timeout_is_answered_503(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engagement_http, "_READ_TIMEOUT", 0.5)
    reports = _Reports(release=asyncio.Event())  # never set: an SNS fetch that hangs
    async with _listening(reports) as (listener, status):
        answer = await _ask(listener.bound_port, _post(status, 2), b"{}")
        assert answer == b"HTTP/1.1 503 Service Unavailable"
        # A head that never came is still a bad request.
        assert await _ask(listener.bound_port, b"POST /s/") == b"HTTP/1.1 400 Bad Request"


async def test_a_links_holder_holds_a_slot_for_the_body_timeout_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review rssrf2 MEDIUM: anyone with one open link sent `GET /o/<token>` heads announcing
    64 KiB and never the body, each holding a served slot _READ_TIMEOUT (10 s): 512 of them
    and every open, click, unsubscribe and report was 503. A GET of a pixel, click or
    unsubscribe link with a body is refused from its head; a small body must follow its head
    within _BODY_TIMEOUT (408)."""
    monkeypatch.setattr(engagement_http, "_READ_TIMEOUT", 60.0)
    monkeypatch.setattr(engagement_http, "_BODY_TIMEOUT", 0.3, raising=False)
    async with _listening(_Reports()) as (listener, status):
        port = listener.bound_port
        for route, action in (("o", "open"), ("c", "click"), ("u", "unsubscribe")):
            path = urlsplit(listener.tracking.url(route, TrackingToken(action, "w", "m1"))).path
            for extra in ("Content-Length: 65536", "Transfer-Encoding: chunked"):
                head = f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n\r\n".encode()
                assert await _ask(port, head) == b"HTTP/1.1 400 Bad Request"
        unsubscribe = urlsplit(
            listener.tracking.url("u", TrackingToken("unsubscribe", "w", "m1"))).path
        for path in (unsubscribe, status):  # the body never sent
            assert await _ask(port, _post(path, 2)) == b"HTTP/1.1 408 Request Timeout"
        assert listener.connections == 0
        assert await _ask(port, _post(status, 2), b"{}") == b"HTTP/1.1 200 OK"


def test_a_certificate_fetch_times_out_well_within_the_read_timeout() -> None:
    assert receiver.FETCH_TIMEOUT <= engagement_http._READ_TIMEOUT / 2


async def test_a_bounce_report_is_parsed_off_the_loop_and_only_its_head(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[tuple[bool, int]] = []
    parse = dsn.events

    def watched(raw: bytes) -> Any:
        parsed.append((threading.current_thread() is threading.main_thread(), len(raw)))
        return parse(raw)

    monkeypatch.setattr(dsn, "events", watched)
    async with harness(backend) as h:
        provider = await h.create(smtp_provider(h.sink_port, webhook_format="dsn"))
        message_id = await h.send_email("k1")
        [email] = h.sink.received
        report: str = fixture("dsn_permanent.eml", email="ada@example.com", action="failed",
                              status="5.1.1", message_id_header=email["Message-ID"])
        # The original message returned in full after the status: 1 MiB more.
        boundary = "--2B1A83E07D.1764756005/mx.example.net"
        report = report.replace(f"{boundary}--", f"{boundary}\nContent-Type: text/plain\n\n"
                                + "x" * BIG + f"\n{boundary}--")
        answer = await h.web.post(provider.status_webhook_url, content=report.encode(),
                                  headers={"Content-Type": "message/rfc822"})
        assert answer.status_code == 200
        message = await h.message(message_id)
        assert message.status == BOUNCED and "User unknown" in message.error
    assert parsed == [(False, 256 * 1024)]  # receiver.MAX_DSN_BYTES
