"""Tracing helpers: what a span per item costs, and that it still follows the provider."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from test_rpc_layers import span_recorder

from cjo_platform.telemetry import continue_trace, current_traceparent, tracer

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
