"""OpenTelemetry tracing: one provider per process, OTLP export when configured, and helpers to
carry a W3C ``traceparent`` through an outbox row or a batch item.

A process that exports no spans does not record the traces it starts: the SDK's span (~14-22
us each: attributes, events, the processors' start and end) would be built only to be dropped,
on every gRPC call, outbox forward, step, render and send. Its spans are the SDK's
non-recording ones, sampled out (``ParentBased(ALWAYS_OFF)``); each still has a valid context
(the parent's trace id or a new one, a span id of its own), so logs carry trace and span ids and
outbox rows, batch items and gRPC calls carry a ``traceparent`` as before, with the W3C sampled
flag unset. A trace a caller sampled (its ``traceparent``'s flag set) is still recorded, so the
flag reaches the services after this one unchanged. Once a span processor is attached (the OTLP
exporter at start-up, or a test's recorder), spans are sampled by the sampler
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` name, as the SDK reads them (default
``parentbased_always_on``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_provider: TracerProvider | None = None


class _OnceProcessed(Sampler):
    """``configured`` once :meth:`processed` is called; until then only what a caller sampled
    (its traceparent's flag: the caller keeps that trace, and the services after this one
    must see the flag), the traces this process starts never."""

    def __init__(self, configured: Sampler) -> None:
        self.configured = configured
        self._current: Sampler = ParentBased(ALWAYS_OFF)

    def processed(self) -> None:
        self._current = self.configured

    def should_sample(self, parent_context: otel_context.Context | None, trace_id: int,
                      name: str, kind: SpanKind | None = None,
                      attributes: Attributes = None, links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        return self._current.should_sample(parent_context, trace_id, name, kind, attributes,
                                           links, trace_state)

    def get_description(self) -> str:
        return f"OnceProcessed{{{self.configured.get_description()}}}"


class _RecordingOnceProcessed(TracerProvider):
    """The SDK's provider, whose spans are recorded only once a span processor takes them."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource=resource)  # the sampler the OTEL_TRACES_SAMPLER* variables name
        self._gate = _OnceProcessed(self.sampler)
        self.sampler = self._gate  # every tracer of this provider samples through the gate

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self._gate.processed()


def tracer_provider(service: str) -> TracerProvider:
    """A tracer provider for ``service``: spans recorded (and sampled as OTEL_TRACES_SAMPLER
    says) once a span processor is added, non-recording with a valid context until then."""
    resource = Resource.create({"service.name": f"cjo-{service}", "service.namespace": "cjo"})
    return _RecordingOnceProcessed(resource)


def configure_tracing(service: str) -> TracerProvider:
    """Install the global tracer provider for ``service`` (idempotent per process), exporting
    over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set."""
    global _provider
    if _provider is not None:
        return _provider
    provider = tracer_provider(service)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from cjo_platform.otlp import FastOTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(FastOTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()


@cache
def tracer(name: str = "cjo") -> trace.Tracer:
    """The tracer ``name``, made once: the SDK's ``get_tracer`` builds a new one on every call
    (a cost per span). One got before :func:`configure_tracing` is a proxy that follows the
    provider installed later."""
    return trace.get_tracer(name)


def traceparent_of(span_context: SpanContext) -> str:
    """The W3C traceparent naming ``span_context`` ("" for an invalid one): what the W3C
    propagator's ``inject`` writes."""
    if not span_context.is_valid:
        return ""
    return (f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
            f"{span_context.trace_flags:02x}")


def current_traceparent() -> str:
    """The W3C traceparent of the current span, or "" outside any trace. Written directly, as
    the channels write the calls' (``cjo_platform.rpc.tracing``): cjo's rows and items carry a
    W3C traceparent whatever ``OTEL_PROPAGATORS`` says, and the global propagators' round trip
    (a carrier, the composite, baggage) cost more than the formatting, on every call stamped."""
    return traceparent_of(trace.get_current_span().get_span_context())


# The W3C propagator alone: a carrier holding only a traceparent has nothing for the global
# composite's other propagators (baggage) to read, and skipping them saves ~1-4 us a call.
_W3C = TraceContextTextMapPropagator()
# The form cjo writes (version 00, nothing around it), read without the propagator.
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def span_context_from_traceparent(traceparent: str) -> SpanContext | None:
    """The remote span context ``traceparent`` names, or None when it names none (empty,
    malformed, an all-zero id, version ff): what the W3C propagator extracts. The form cjo
    writes is parsed directly (~0.8 us against the propagator's ~4 us with its context: every
    receiver reads one per item, every batch span one per link); any other by the propagator."""
    match = _TRACEPARENT_00.fullmatch(traceparent)
    if match is not None:
        trace_id, span_id = int(match[1], 16), int(match[2], 16)
        if not trace_id or not span_id:
            return None
        return SpanContext(trace_id, span_id, is_remote=True,
                           trace_flags=TraceFlags(int(match[3], 16)))
    if not traceparent:
        return None
    found = trace.get_current_span(_W3C.extract({"traceparent": traceparent}))
    span_context = found.get_span_context()
    return span_context if span_context.is_valid else None


def context_from_traceparent(traceparent: str) -> otel_context.Context:
    """A context holding only the remote span ``traceparent`` names (an empty one when it
    names none), as the W3C propagator's ``extract`` makes it."""
    span_context = span_context_from_traceparent(traceparent)
    if span_context is None:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(span_context), otel_context.Context())


@contextmanager
def continue_trace(name: str, traceparent: str, *, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: dict[str, str] | None = None) -> Iterator[trace.Span]:
    """Run a unit of work as a child of ``traceparent`` (e.g. an outbox row's origin): the
    span is current inside, ended on exit, and an exception escaping it is recorded and sets
    its status to ERROR. ``start_span`` + ``use_span`` is what ``start_as_current_span`` does,
    without its two context-manager layers (~5 us of the ~39 us of an SDK span: delivery
    makes one per message sent)."""
    span = tracer().start_span(name, context=context_from_traceparent(traceparent), kind=kind,
                               attributes=attributes)
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextmanager
def batch_span(name: str, traceparents: Sequence[str], *,
               only_to_link: bool = False) -> Iterator[trace.Span]:
    """Span for work on a batch of items that each carry their own trace.

    When every item comes from one trace, the batch continues it (a single event stays one trace
    end to end); otherwise the batch starts its own trace and links to each distinct origin, as
    the OpenTelemetry messaging conventions describe for batch publishing.

    ``only_to_link``: the span is there only to link several traces, because the work makes a
    span of its own (an outbox forwarder's call: its client span) or already is a span's (a
    call's own events, in its server span). With one origin the work then runs in the origin's
    context without a span of ``name`` (yielded: the origin's span, not recording): its spans
    are the origin's children, and the trace holds one span fewer per hop, of the same
    duration as the one it wrapped and telling nothing more (~25-30 µs of CPU each, recorded
    and exported). Work that fails there still leaves a span of ``name`` holding the error.
    """
    distinct = sorted({tp for tp in traceparents if tp})
    if len(distinct) == 1:
        if only_to_link:
            origin = trace.get_current_span(context_from_traceparent(distinct[0]))
            try:
                with trace.use_span(origin):
                    yield origin
            except Exception:
                # Failed outside its own span (a request that cannot be built, a reply
                # refused): the trace keeps the error in a span of ``name`` (recorded, ERROR),
                # as without ``only_to_link``.
                with continue_trace(name, distinct[0], kind=SpanKind.PRODUCER):
                    raise
            return
        with continue_trace(name, distinct[0], kind=SpanKind.PRODUCER) as span:
            yield span
        return
    links = []
    for tp in distinct[:128]:
        span_context = span_context_from_traceparent(tp)
        if span_context is not None:
            links.append(Link(span_context))
    with tracer().start_as_current_span(
        name, context=otel_context.Context(), kind=SpanKind.PRODUCER, links=links
    ) as span:
        yield span
