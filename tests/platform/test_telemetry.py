"""Tracing helpers: what a span per item costs, and that it still follows the provider."""

from __future__ import annotations

from cjo_platform.telemetry import continue_trace, tracer

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
