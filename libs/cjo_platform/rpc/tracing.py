"""Lean gRPC spans, on the OpenTelemetry API directly: a SERVER span around every call a cjo
server answers (health checks and reflection untraced) and a CLIENT span around every call a cjo
channel makes, the W3C ``traceparent`` (and ``tracestate``) carried in the call's metadata.

They replace opentelemetry-instrumentation-grpc's interceptors, which cost ~175-300 µs of CPU
per call on the server and ~130-220 µs on the client (``make bench-rpc``): a proxy object
around every servicer context, the global propagators' extract and inject, a peer address
parsed on every call, and a generator-based context manager per span. The spans keep the same
names (the full method, ``/cjo.x.v1.XService/Method``), kinds and semantic-convention
attributes (``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``) and the
same error status: on the server for the codes that mean the server failed (UNKNOWN,
DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), on the client for any code
but OK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cjo_platform.telemetry import tracer

Behavior = Callable[..., Any]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# The codes that make a server span an error (the instrumentation's and the semantic
# conventions' choice: the others are the caller's mistake, not the server's failure).
SERVER_ERRORS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})

_W3C = TraceContextTextMapPropagator()


def rpc_attributes(method: str) -> dict[str, str]:
    """The semantic-convention attributes of ``method`` (``/package.Service/Method``)."""
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def remote_context(metadata: Any) -> otel_context.Context | None:
    """The context of the caller's span, from the call's ``traceparent`` (None: there is
    none, the span starts in the current context as the instrumentation's did)."""
    traceparent = tracestate = None
    for key, value in metadata or ():
        if key == TRACEPARENT:
            traceparent = value
        elif key == TRACESTATE:
            tracestate = value
    if traceparent is None:
        return None
    carrier = {TRACEPARENT: traceparent}
    if tracestate is not None:
        carrier[TRACESTATE] = tracestate
    return _W3C.extract(carrier)


def _end_server_span(span: trace.Span, context: grpc.aio.ServicerContext) -> None:
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, f"{code}:{context.details()}"))
    span.end()


def server_spans(behavior: Behavior, method: str, streaming: bool) -> Behavior:
    """``behavior`` in a SERVER span, current while it runs, child of the caller's span."""
    attributes = rpc_attributes(method)
    start = tracer("cjo.rpc").start_span

    if streaming:
        async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            parent = remote_context(context.invocation_metadata())
            span = start(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            try:
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                span.record_exception(exc)
                raise
            finally:
                _end_server_span(span, context)
                otel_context.detach(token)
        return stream_behavior

    async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        parent = remote_context(context.invocation_metadata())
        span = start(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            span.record_exception(exc)
            raise
        finally:
            _end_server_span(span, context)
            otel_context.detach(token)
    return unary_behavior


class _ClientSpans:
    """Starts a call's CLIENT span and puts its ``traceparent`` in the call's metadata."""

    def __init__(self) -> None:
        self._attributes: dict[str, dict[str, str]] = {}

    def begin(self, details: grpc.aio.ClientCallDetails,
              ) -> tuple[trace.Span, grpc.aio.ClientCallDetails]:
        method = details.method
        if isinstance(method, bytes):  # grpc/grpc#31092: sometimes bytes
            method = method.decode()
        attributes = self._attributes.get(method)
        if attributes is None:
            attributes = self._attributes[method] = rpc_attributes(method)
        span = tracer("cjo.rpc").start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return span, details
        # What the W3C propagator writes, without the global propagators' round trip; a
        # traceparent the caller put in the metadata is replaced, as the propagator's was.
        metadata = [(k, v) for k, v in (details.metadata or ())
                    if k not in (TRACEPARENT, TRACESTATE)]
        metadata.append((TRACEPARENT, f"00-{span_context.trace_id:032x}-"
                                      f"{span_context.span_id:016x}-"
                                      f"{span_context.trace_flags:02x}"))
        if span_context.trace_state:
            metadata.append((TRACESTATE, span_context.trace_state.to_header()))
        return span, grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials,
            details.wait_for_ready)


def _end_client_span(span: trace.Span, code: grpc.StatusCode, details: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, details))
    span.end()


# grpcio ships no type information, so its base classes are Any to mypy.
class UnaryUnaryClientSpans(_ClientSpans, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The CLIENT span of a unary call: ends when the call does."""

    async def intercept_unary_unary(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        span, details = self.begin(client_call_details)
        try:
            call = await continuation(details, request)
            code = await call.code()
            _end_client_span(span, code, await call.details() if code != grpc.StatusCode.OK
                             else None)
            return call
        except grpc.aio.AioRpcError as exc:
            _end_client_span(span, exc.code(), exc.details())
            raise
        except BaseException:
            span.end()
            raise


class UnaryStreamClientSpans(_ClientSpans, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The CLIENT span of a server stream: ends when the stream does."""

    async def intercept_unary_stream(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        span, details = self.begin(client_call_details)
        try:
            call = await continuation(details, request)
        except BaseException:
            span.end()
            raise
        return self._items(span, call)

    @staticmethod
    async def _items(span: trace.Span, call: Any) -> AsyncIterator[Any]:
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            _end_client_span(span, exc.code(), exc.details())
            raise
        except BaseException:
            span.end()
            raise
        _end_client_span(span, grpc.StatusCode.OK, None)
