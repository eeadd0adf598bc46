"""Tracing helpers: what a span per item costs, that it still follows the provider, and that
spans are recorded only where they go somewhere while their context flows everywhere."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    span_context_from_traceparent,
    traceparent_of,
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


# What a traceparent may look like on the wire: cjo's own form, and every way of being another.
TRACEPARENTS = [
    TRACEPARENT, TRACEPARENT[:-2] + "00", "", "not-a-traceparent",
    TRACEPARENT.upper(), " " + TRACEPARENT, TRACEPARENT + " ", TRACEPARENT + "-extra",
    "01" + TRACEPARENT[2:], "01" + TRACEPARENT[2:] + "-future-fields", "ff" + TRACEPARENT[2:],
    f"00-{'0' * 32}-b7ad6b7169203331-01", f"00-0af7651916cd43dd8448eb211c80319c-{'0' * 16}-01",
    TRACEPARENT[:-1], TRACEPARENT + "1", TRACEPARENT.replace("-", "_"),
    "00-0af7651916cd43dd_8448eb211c80319c-b7ad6b716920333-01",  # int() would take the '_'
    "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
]


def _as_the_propagator_reads_it(traceparent: str) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    return context, trace.get_current_span(context).get_span_context()


def _same_as_the_propagator(traceparent: str) -> None:
    expected_context, expected = _as_the_propagator_reads_it(traceparent)
    found = span_context_from_traceparent(traceparent)
    assert (found if found is not None else trace.INVALID_SPAN_CONTEXT) == expected
    if found is not None:  # spelled out, for a readable failure
        assert (found.trace_flags, found.is_remote, found.trace_state) == (
            expected.trace_flags, expected.is_remote, expected.trace_state)
    context = context_from_traceparent(traceparent)
    assert dict(context).keys() == dict(expected_context).keys()
    got = trace.get_current_span(context).get_span_context()
    assert (got, got.trace_flags, got.is_remote) == (
        expected, expected.trace_flags, expected.is_remote)


@pytest.mark.parametrize("traceparent", TRACEPARENTS)
def test_a_traceparent_reads_as_the_w3c_propagator_reads_it(traceparent: str) -> None:
    # cjo's own form is parsed without the propagator (every receiver reads one per item,
    # every batch span one per link); whatever else arrives must read exactly as before.
    _same_as_the_propagator(traceparent)


@given(st.text(alphabet="0123456789abcdefABCDEF-_ +x", max_size=60)
       | st.builds(lambda a, b, c, d: f"{a}-{b}-{c}-{d}",
                   st.text("0123456789abcdef", min_size=2, max_size=2),
                   st.text("0123456789abcdef0", min_size=32, max_size=32),
                   st.text("0123456789abcdef0", min_size=16, max_size=16),
                   st.text("0123456789abcdef", min_size=2, max_size=2)))
@settings(max_examples=300, deadline=None)
def test_any_traceparent_reads_as_the_w3c_propagator_reads_it(traceparent: str) -> None:
    _same_as_the_propagator(traceparent)


def test_a_server_span_continues_the_callers_trace_with_or_without_tracestate() -> None:
    plain = trace.get_current_span(remote_context([("traceparent", TRACEPARENT)]))
    assert traceparent_of(plain.get_span_context()) == TRACEPARENT
    stated = trace.get_current_span(remote_context(
        [("traceparent", TRACEPARENT), ("tracestate", "vendor=value")])).get_span_context()
    assert traceparent_of(stated) == TRACEPARENT and stated.trace_state.get("vendor") == "value"
    assert remote_context([("other", "x")]) is None


def test_the_current_traceparent_is_written_whatever_the_global_propagators() -> None:
    # cjo's rows and items carry a W3C traceparent (the channels write the calls' directly):
    # the global propagators (OTEL_PROPAGATORS) are not asked, so one without tracecontext
    # (b3 alone, none) no longer leaves every outbox row and batch item without its trace.
    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator

    span = trace.NonRecordingSpan(trace.get_current_span(
        context_from_traceparent(TRACEPARENT)).get_span_context())
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([]))
    try:
        with trace.use_span(span):
            assert current_traceparent() == TRACEPARENT
    finally:
        propagate.set_global_textmap(before)
