"""A service whose database is down answers UNAVAILABLE (callers and forwarders retry; no
request and no forwarded row is blamed), not INTERNAL; a real bug is still INTERNAL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from cjo.content.v1 import content_service_pb2 as ct_pb
from cjo.content.v1 import content_service_pb2_grpc as ct_grpc
from cjo_platform.db.outbox import Later, OutboxRow, Undeliverable
from cjo_platform.forwarding import peer_sender
from cjo_platform.rpc.client import close_channels
from cjo_platform.rpc.interceptors import ErrorInterceptor
from support import Backend, settings_for


class Down(Exception):
    """What the driver raised."""


class Failing(ct_grpc.ContentServiceServicer):
    def __init__(self, error: Callable[[], Exception]) -> None:
        self.error = error

    async def GetSnippet(self, request: Any, context: Any) -> Any:
        raise self.error()


def wrapped(error: Exception) -> Exception:
    """A database error re-raised by the code that met it (the cause chain keeps it)."""
    try:
        raise error
    except Exception as exc:
        try:
            raise RuntimeError("storing failed") from exc
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize(("error", "code"), [
    (lambda: OperationalError("SELECT 1", {}, Down("connection refused")),
     grpc.StatusCode.UNAVAILABLE),
    (lambda: InterfaceError("SELECT 1", {}, Down("connection already closed")),
     grpc.StatusCode.UNAVAILABLE),
    (lambda: PoolTimeoutError("QueuePool limit of size 5 overflow 10 reached"),
     grpc.StatusCode.UNAVAILABLE),
    (lambda: wrapped(OperationalError("SELECT 1", {}, Down("server closed the connection"))),
     grpc.StatusCode.UNAVAILABLE),
    (lambda: KeyError("a bug"), grpc.StatusCode.INTERNAL),
])
async def test_a_database_outage_is_unavailable_and_a_bug_internal(
        error: Callable[[], Exception], code: grpc.StatusCode) -> None:
    server = grpc.aio.server(interceptors=[ErrorInterceptor("test.cjo")])
    ct_grpc.add_ContentServiceServicer_to_server(Failing(error), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await ct_grpc.ContentServiceStub(channel).GetSnippet(
                    ct_pb.GetSnippetRequest(name="snippets/footer"))
    finally:
        await server.stop(None)
    assert raised.value.code() == code
    assert "connection" not in (raised.value.details() or "")  # no internals leak


class Answering(ct_grpc.ContentServiceServicer):
    """A peer that answers every call with one status code."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK

    async def GetSnippet(self, request: Any, context: Any) -> Any:
        await context.abort(self.code, "peer says no")


async def test_a_forwarders_peer_answer_decides_who_waits(backend: Backend) -> None:
    """Through a real channel: only an unreachable peer stops a forwarder's round; "later"
    answers hold one workspace (a call too large or slow is split first); INTERNAL blames a row
    only tentatively, INVALID_ARGUMENT for certain."""
    peer = Answering()
    server = grpc.aio.server(interceptors=[ErrorInterceptor("test.cjo")])
    ct_grpc.add_ContentServiceServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = settings_for("orchestration", backend, CJO_ANALYTICS_TARGET=f"127.0.0.1:{port}")
    send = peer_sender(settings, "analytics",
                       method=lambda ch: ct_grpc.ContentServiceStub(ch).GetSnippet,
                       request=lambda rows: ct_pb.GetSnippetRequest(name="snippets/x"),
                       what="snippets", check_reply=lambda *_: None)
    rows = [OutboxRow(1, "t", "ws-a", b"p", "", datetime(2026, 1, 1, tzinfo=UTC))]
    try:
        for code, expected in [
            (grpc.StatusCode.RESOURCE_EXHAUSTED, (Later, True)),
            (grpc.StatusCode.DEADLINE_EXCEEDED, (Later, True)),
            (grpc.StatusCode.PERMISSION_DENIED, (Later, False)),
            (grpc.StatusCode.NOT_FOUND, (Later, False)),
            (grpc.StatusCode.INTERNAL, (Undeliverable, False)),
            (grpc.StatusCode.INVALID_ARGUMENT, (Undeliverable, True)),
            (grpc.StatusCode.UNAVAILABLE, (grpc.aio.AioRpcError, None)),
        ]:
            peer.code = code
            with pytest.raises(Exception) as raised:
                await send("ws-a", rows)
            kind, flag = expected
            assert type(raised.value) is kind, code
            if kind is Later:
                assert raised.value.split is flag, code  # type: ignore[attr-defined]
            if kind is Undeliverable:
                assert raised.value.certain is flag, code  # type: ignore[attr-defined]
    finally:
        await close_channels()
        await server.stop(None)
