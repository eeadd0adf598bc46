"""A forwarder's call is the hop's only span when its rows come from one trace (the client span,
a child of the rows' origin, no ``outbox.forward`` span of the same duration around it); rows of
several traces still go in an ``outbox.forward`` span of its own trace, linked to each origin."""

from __future__ import annotations

from opentelemetry import trace
from test_outbox_linger import Linger, fact, linger  # noqa: F401 - the fixture

from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.facts import FACTS_TOPIC
from cjo_platform.telemetry import batch_span, tracer
from support import eventually, span_recorder

CALL = "/cjo.analytics.v1.AnalyticsService/RecordFacts"


def traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


async def publish(rig: Linger, facts: list[tuple[str, str]]) -> None:
    def work(uow: UnitOfWork) -> None:
        uow.publish(FACTS_TOPIC, "ws-a", [(fact(fact_id), tp) for fact_id, tp in facts])
    await rig.transactions.run(work)


async def test_a_forward_of_one_trace_is_its_call_alone(linger: Linger) -> None:  # noqa: F811
    spans = span_recorder()
    await linger.start(0)
    one = traceparent(0xA1, 0xB1)
    await publish(linger, [("f1", one), ("f2", one)])
    await eventually(lambda: [s for s in spans.get_finished_spans()
                              if s.name == CALL and s.kind == trace.SpanKind.CLIENT
                              and s.context.trace_id == 0xA1])
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == 0xA1]
    client = next(s for s in in_trace if s.kind == trace.SpanKind.CLIENT)
    assert client.parent is not None and client.parent.span_id == 0xB1
    assert not [s for s in in_trace if s.name.startswith("outbox.forward")]
    # The receiver's server span is the client's child: the hop stays in the event's trace.
    server = await eventually(lambda: next(
        (s for s in spans.get_finished_spans() if s.context.trace_id == 0xA1
         and s.kind == trace.SpanKind.SERVER), None))
    assert server.parent.span_id == client.context.span_id

    # Rows of two traces in one call: a span of the call's own trace, linking both.
    two, three = traceparent(0xA2, 0xB2), traceparent(0xA3, 0xB3)
    await publish(linger, [("f3", two), ("f4", three)])

    def forward() -> object:
        return next((s for s in spans.get_finished_spans()
                     if s.name == f"outbox.forward {FACTS_TOPIC}"), None)

    batch = await eventually(forward)
    assert {link.context.trace_id for link in batch.links} == {0xA2, 0xA3}
    assert batch.context.trace_id not in (0xA2, 0xA3)
    client = await eventually(lambda: next(
        (s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CLIENT
         and s.parent is not None and s.parent.span_id == batch.context.span_id), None))
    assert client.name == CALL


def test_a_batch_span_only_to_link_runs_one_trace_in_its_context() -> None:
    spans = span_recorder()
    one = traceparent(0xC1, 0xD1)
    with batch_span("only.to.link", [one, one, ""], only_to_link=True), \
            tracer().start_as_current_span("the work"):
        pass
    recorded = [s for s in spans.get_finished_spans() if s.context.trace_id == 0xC1]
    assert [s.name for s in recorded] == ["the work"]
    assert recorded[0].parent is not None and recorded[0].parent.span_id == 0xD1
    # Without the flag the batch continues the trace in a span of its own, as before.
    with batch_span("continued", [one]):
        pass
    assert [s.name for s in spans.get_finished_spans()
            if s.context.trace_id == 0xC1] == ["the work", "continued"]


def test_work_failing_outside_its_own_span_leaves_the_error_in_the_trace() -> None:
    """A one-trace forward whose request cannot be built (or whose reply is refused) fails
    outside the call's client span: the trace still shows the hop failed, with the exception."""
    spans = span_recorder()
    one = traceparent(0xE1, 0xF1)
    try:
        with batch_span("outbox.forward facts", [one], only_to_link=True):
            raise ValueError("undecodable row")
    except ValueError:
        pass
    failed = [s for s in spans.get_finished_spans() if s.context.trace_id == 0xE1]
    assert [s.name for s in failed] == ["outbox.forward facts"]
    assert failed[0].parent is not None and failed[0].parent.span_id == 0xF1
    assert failed[0].status.status_code == trace.StatusCode.ERROR
    assert [e.attributes["exception.message"] for e in failed[0].events
            if e.name == "exception"] == ["undecodable row"]
