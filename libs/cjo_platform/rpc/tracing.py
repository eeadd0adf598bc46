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

from collections.abc import Callable
from functools import partial
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cjo_platform.telemetry import context_from_traceparent, traceparent_of, tracer

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
    if tracestate is None:  # what the propagator extracts, read without it
        return context_from_traceparent(traceparent)
    return _W3C.extract({TRACEPARENT: traceparent, TRACESTATE: tracestate})


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


def _with_traceparent(metadata: Any, span: trace.Span) -> Any:
    """``metadata`` carrying ``span``'s context: what the W3C propagator writes, without the
    global propagators' round trip; a traceparent the caller put in the metadata is replaced,
    as the propagator's was."""
    span_context = span.get_span_context()
    if not span_context.is_valid:
        return metadata
    carried = [(k, v) for k, v in (metadata or ()) if k != TRACEPARENT and k != TRACESTATE]
    carried.append((TRACEPARENT, traceparent_of(span_context)))
    if span_context.trace_state:
        carried.append((TRACESTATE, span_context.trace_state.to_header()))
    return tuple(carried)


def _end_client_span(span: trace.Span, call: Any) -> None:
    """A call's done callback: its span ends with the call's status, however the call ended
    (answered, failed, deadline, cancelled), whether or not anyone awaits it."""
    # The status grpc.aio's own Call.__await__ reads once the call is done: the public
    # accessors (code(), details()) are coroutines, which a done callback cannot await.
    status = call._cython_call._status
    code = status.code()
    span.set_attribute("rpc.grpc.status_code", code)
    if code != 0:  # any code but OK fails the call for its caller
        span.set_status(Status(StatusCode.ERROR, status.details()))
    span.end()


class _ClientSpans:
    """A channel's multicallable whose every call runs in a CLIENT span: the span starts when
    the call is made, its ``traceparent`` (and ``tracestate``) goes in the call's metadata, and
    it ends in the call's done callback. The call is grpc.aio's own, returned as it is (awaited,
    iterated, asked for its code or metadata as any call): unlike a grpc.aio client interceptor,
    which runs every call in an asyncio task of its own (an ``InterceptedUnaryUnaryCall``)
    besides the call's own task."""

    def __init__(self, multicallable: Any, method: str) -> None:
        self._multicallable = multicallable
        self._method = method
        self._attributes = rpc_attributes(method)
        self._tracer = tracer("cjo.rpc")

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None,
                 credentials: grpc.CallCredentials | None = None,
                 wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> Any:
        span = self._tracer.start_span(self._method, kind=SpanKind.CLIENT,
                                       attributes=self._attributes)
        try:
            call = self._multicallable(
                request, timeout=timeout, metadata=_with_traceparent(metadata, span),
                credentials=credentials, wait_for_ready=wait_for_ready, compression=compression)
        except BaseException:
            span.end()
            raise
        call.add_done_callback(partial(_end_client_span, span))
        return call


# grpcio ships no type information, so its base classes are Any to mypy.
class UnaryUnaryClientSpans(_ClientSpans, grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """A unary method in CLIENT spans: each span ends when its call does."""


class UnaryStreamClientSpans(_ClientSpans, grpc.aio.UnaryStreamMultiCallable):  # type: ignore[misc]
    """A server-streaming method in CLIENT spans: each span ends when its stream does."""
