"""The client side of a call between cjo services: a cjo channel makes each unary and
server-streaming call in a CLIENT span that carries its traceparent to the server and ends with
the call's status however the call ends, without a task of its own, and hands the caller
grpc.aio's own call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo_platform.forwarding import StoredItems
from cjo_platform.rpc.client import channel
from cjo_platform.telemetry import continue_trace
from support import free_port, span_recorder

SERVICE = "cjo.test.v1.EchoService"
UNARY = f"/{SERVICE}/Echo"
STREAM = f"/{SERVICE}/Repeat"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Echo:
    """A server that answers ``Echo`` with the request, or fails it as the request says
    (``abort``, ``slow``), and ``Repeat`` with the request three times (``abort`` after the
    first), remembering the traceparents it was sent."""

    def __init__(self) -> None:
        self.traceparents: list[list[str]] = []
        self.release = asyncio.Event()

    def _seen(self, context: grpc.aio.ServicerContext) -> None:
        self.traceparents.append([v for k, v in context.invocation_metadata() or ()
                                  if k == "traceparent"])

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        if request == b"abort":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such thing")
        if request == b"slow":
            await self.release.wait()
        return request

    async def repeat(self, request: bytes, context: grpc.aio.ServicerContext,
                     ) -> AsyncIterator[bytes]:
        self._seen(context)
        for _ in range(3):
            yield request
            if request == b"abort":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stopped")


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, str]]:
    server = grpc.aio.server()
    servicer = Echo()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": grpc.unary_unary_rpc_method_handler(servicer.echo),
        "Repeat": grpc.unary_stream_rpc_method_handler(servicer.repeat)})])
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        servicer.release.set()
        await server.stop(None)


@pytest.fixture
def spans() -> Iterator[Any]:
    recorder = span_recorder()
    yield recorder
    recorder.clear()


def _client_spans(recorder: Any, method: str) -> list[ReadableSpan]:
    return [s for s in recorder.get_finished_spans()
            if s.kind == SpanKind.CLIENT and s.name == method
            and format(s.context.trace_id, "032x") == TRACE_ID]


def _carried(span: ReadableSpan) -> str:
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"


def _assert_ended_with(span: ReadableSpan, method: str, code: int) -> None:
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method.rsplit("/", 1)[1],
        "rpc.grpc.status_code": code}
    assert span.parent is not None and format(span.parent.trace_id, "032x") == TRACE_ID
    assert span.status.status_code == (StatusCode.ERROR if code else StatusCode.UNSET)


@pytest.mark.parametrize(("request_bytes", "code"), [
    (b"hello", 0), (b"abort", grpc.StatusCode.INVALID_ARGUMENT.value[0])])
async def test_a_unary_call_ends_its_span_with_its_status(
        echo: tuple[Echo, str], spans: Any, request_bytes: bytes, code: int) -> None:
    servicer, address = echo
    with continue_trace("test", TRACEPARENT):
        call = channel(address).unary_unary(UNARY)(
            request_bytes, metadata=(("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"),))
        if code:
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        else:
            assert await call == request_bytes
    [span] = _client_spans(spans, UNARY)
    _assert_ended_with(span, UNARY, code)
    if code:
        assert span.status.description == "no such thing"
    # The server got the client span's traceparent, and only it (the caller's was replaced).
    assert servicer.traceparents == [[_carried(span)]]


async def test_a_call_past_its_deadline_or_cancelled_ends_its_span(
        echo: tuple[Echo, str], spans: Any) -> None:
    _, address = echo
    echo_call = channel(address).unary_unary(UNARY)
    with continue_trace("test", TRACEPARENT):
        with pytest.raises(grpc.aio.AioRpcError):
            await echo_call(b"slow", timeout=0.05)
        cancelled = echo_call(b"slow")
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    codes = sorted(s.attributes["rpc.grpc.status_code"]  # type: ignore[index]
                   for s in _client_spans(spans, UNARY))
    assert codes == [grpc.StatusCode.CANCELLED.value[0],
                     grpc.StatusCode.DEADLINE_EXCEEDED.value[0]]
    assert all(s.status.status_code == StatusCode.ERROR for s in _client_spans(spans, UNARY))


async def test_the_caller_gets_grpcs_own_call(echo: tuple[Echo, str], spans: Any) -> None:
    _, address = echo
    with continue_trace("test", TRACEPARENT):
        call = channel(address).unary_unary(UNARY)(b"hello")
        assert isinstance(call, grpc.aio.UnaryUnaryCall)
        # Never awaited itself: the span ends when the call does.
        assert await call.code() == grpc.StatusCode.OK
        assert await call.details() == ""
        assert isinstance(await call.initial_metadata(), grpc.aio.Metadata)
    [span] = _client_spans(spans, UNARY)
    _assert_ended_with(span, UNARY, 0)


@pytest.mark.parametrize(("request_bytes", "items", "code"), [
    (b"hello", 3, 0), (b"abort", 1, grpc.StatusCode.FAILED_PRECONDITION.value[0])])
async def test_a_stream_ends_its_span_when_it_ends(
        echo: tuple[Echo, str], spans: Any, request_bytes: bytes, items: int,
        code: int) -> None:
    servicer, address = echo
    received = []
    with continue_trace("test", TRACEPARENT):
        call = channel(address).unary_stream(STREAM)(request_bytes)
        try:
            async for item in call:
                assert not _client_spans(spans, STREAM)  # open while the stream is
                received.append(item)
        except grpc.aio.AioRpcError as exc:
            assert exc.code().value[0] == code
    assert received == [request_bytes] * items
    [span] = _client_spans(spans, STREAM)
    _assert_ended_with(span, STREAM, code)
    assert servicer.traceparents == [[_carried(span)]]


async def test_a_call_runs_in_no_task_of_its_own(echo: tuple[Echo, str], spans: Any) -> None:
    """grpc.aio's client interceptors ran every call in a task of their own besides the call's
    own: a cjo channel's call is grpc.aio's call alone."""
    _, address = echo
    echo_call = channel(address).unary_unary(UNARY)
    await echo_call(b"warm")  # the channel connects
    loop = asyncio.get_running_loop()
    created: list[str] = []

    def counting(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                 **kwargs: Any) -> asyncio.Task[Any]:
        created.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        with continue_trace("test", TRACEPARENT):
            assert await echo_call(b"hello") == b"hello"
    finally:
        loop.set_task_factory(None)
    # The server (in this loop too) makes tasks of its own; the client's are its calls'.
    assert [name for name in created if "Call." in name] == ["UnaryUnaryCall._invoke"], created
    assert len(_client_spans(spans, UNARY)) == 1


async def test_stubs_built_per_call_share_the_channels_methods(echo: tuple[Echo, str]) -> None:
    _, address = echo
    ch = channel(address)
    first, second = pb_grpc.AnalyticsServiceStub(ch), pb_grpc.AnalyticsServiceStub(ch)
    assert first.RecordFacts is second.RecordFacts
    assert first.GetJourneyReport is not first.RecordFacts
    from cjo.analytics.v1 import analytics_service_pb2 as pb
    stored = StoredItems(pb.DESCRIPTOR.services_by_name["AnalyticsService"], "RecordFacts")
    assert stored.method(ch) is stored.method(ch)
