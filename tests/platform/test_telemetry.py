"""Tracing helpers: what a span per item costs, that it still follows the provider, and that
spans are recorded only where they go somewhere while their context flows everywhere."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_rpc_layers import span_recorder

from cjo_platform.logging import _add_trace_ids
from cjo_platform.rpc.tracing import _with_traceparent, remote_context
from cjo_platform.telemetry import (
    context_from_traceparent,
    continue_trace,
    current_traceparent,
    tracer,
    tracer_provider,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_tracer_is_made_once_per_name() -> None:
    # The SDK builds a new tracer on every get_tracer call: a span per message paid for it.
    assert tracer() is tracer()
    assert tracer("other") is tracer("other") and tracer("other") is not tracer()


def test_a_span_continues_the_trace_it_is_given() -> None:
    with continue_trace("work", TRACEPARENT) as span:
        context = span.get_span_context()
    # A no-op or SDK span alike: the trace id is the parent's whenever spans are recorded.
    assert not context.is_valid or format(context.trace_id, "032x") == TRACEPARENT[3:35]


def test_a_continued_span_is_current_ended_and_records_what_escapes_it() -> None:
    recorded = span_recorder()
    with continue_trace("work", TRACEPARENT, attributes={"k": "v"}) as span:
        assert trace.get_current_span() is span
        inner = current_traceparent()
    with pytest.raises(ValueError), continue_trace("failing", TRACEPARENT):
        raise ValueError("boom")
    with continue_trace("fresh", "not-a-traceparent") as fresh:
        pass
    spans = {s.name: s for s in recorded.get_finished_spans()}
    work, failing = spans["work"], spans["failing"]
    assert format(work.context.trace_id, "032x") == TRACEPARENT[3:35]
    assert work.parent is not None and format(work.parent.span_id, "016x") == TRACEPARENT[36:52]
    assert inner == f"00-{TRACEPARENT[3:35]}-{work.context.span_id:016x}-01"
    assert work.attributes == {"k": "v"} and work.end_time is not None
    assert failing.status.status_code is StatusCode.ERROR
    assert [e.name for e in failing.events] == ["exception"]
    # An unreadable traceparent starts a trace of its own.
    assert spans["fresh"].parent is None
    assert fresh.get_span_context().trace_id != work.context.trace_id
    assert trace.get_current_span() is trace.INVALID_SPAN


# A process that exports no spans does not record them, but their context flows as before.

def _recorded_by(provider: TracerProvider) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_spans_are_recorded_only_once_a_processor_takes_them() -> None:
    provider = tracer_provider("test")
    spans = provider.get_tracer("test")
    with spans.start_as_current_span("unexported") as root, \
            spans.start_as_current_span("child") as child:
        carried = current_traceparent()
        assert not root.is_recording() and not child.is_recording()
    # A valid context all the same: a trace of its own, the child in it, sampled out.
    context = child.get_span_context()
    assert context.is_valid and context.trace_id == root.get_span_context().trace_id
    assert not context.trace_flags.sampled
    assert carried == f"00-{context.trace_id:032x}-{context.span_id:016x}-02"

    recorded = _recorded_by(provider)  # as the OTLP exporter or a test's recorder is added
    with spans.start_as_current_span("exported") as exported:
        assert exported.is_recording() and exported.get_span_context().trace_flags.sampled
        with continue_trace_of(spans, "continued", TRACEPARENT) as continued:
            pass
    assert [s.name for s in recorded.get_finished_spans()] == ["continued", "exported"]
    assert format(continued.get_span_context().trace_id, "032x") == TRACEPARENT[3:35]


def continue_trace_of(spans: trace.Tracer, name: str, traceparent: str) -> Any:
    return spans.start_as_current_span(name, context=context_from_traceparent(traceparent))


def test_an_unrecorded_span_s_context_reaches_logs_and_grpc_calls() -> None:
    spans = tracer_provider("test").get_tracer("test")
    unsampled = TRACEPARENT[:-2] + "00"  # a caller that keeps no record of this trace
    with continue_trace_of(spans, "work", unsampled) as span:
        assert not span.is_recording()
        line = _add_trace_ids(None, "info", {})
        metadata = _with_traceparent((("k", "v"),), span)
    context = span.get_span_context()
    assert line == {"trace_id": TRACEPARENT[3:35], "span_id": f"{context.span_id:016x}"}
    # The call carries the caller's trace, and the server's span continues it.
    assert metadata == (("k", "v"), ("traceparent",
                                     f"00-{TRACEPARENT[3:35]}-{context.span_id:016x}-00"))
    parent = remote_context(metadata)
    with spans.start_as_current_span("server", context=parent) as server:
        assert format(server.get_span_context().trace_id, "032x") == TRACEPARENT[3:35]


def test_a_trace_the_caller_sampled_keeps_its_flag_without_an_exporter() -> None:
    # The caller keeps this trace: the services after this one must see it sampled, or an
    # exporting service downstream would drop its part of the caller's trace.
    spans = tracer_provider("test").get_tracer("test")
    with continue_trace_of(spans, "work", TRACEPARENT) as span:
        carried = current_traceparent()
    assert span.get_span_context().trace_flags.sampled
    assert carried == f"00-{TRACEPARENT[3:35]}-{span.get_span_context().span_id:016x}-01"


def test_exported_spans_are_sampled_as_otel_traces_sampler_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Production's choice at high volume: a ratio of the traces, decided at each trace's root
    # and followed by every span of it (in this process and, through the traceparent's
    # sampled flag, in every service it reaches): whole traces are kept or dropped.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    provider = tracer_provider("test")
    recorded = _recorded_by(provider)
    spans = provider.get_tracer("test")
    with spans.start_as_current_span("root") as root, spans.start_as_current_span("child"):
        assert not root.is_recording()  # the ratio keeps none
        carried = current_traceparent()
    assert carried.endswith("-02")
    with continue_trace_of(spans, "sampled upstream", TRACEPARENT), \
            spans.start_as_current_span("child"):  # its root kept it
        pass
    with continue_trace_of(spans, "dropped upstream", carried):
        pass
    assert [s.name for s in recorded.get_finished_spans()] == ["child", "sampled upstream"]
