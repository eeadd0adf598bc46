"""One event stays one trace: the enrollment, the step, the render, the send and the facts all
continue the traceparent identity forwarded with the event."""

from __future__ import annotations

from opentelemetry import trace
from orchestration_support import (
    create_content,
    enrollments,
    forwarded,
    published,
    running,
    send_then_exit,
)

from cjo.orchestration.v1 import enrollment_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from support import Backend, as_service, eventually, span_recorder

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


async def test_a_journey_step_continues_the_event_trace(sqlite_backend: Backend) -> None:
    spans = span_recorder()
    async with running(sqlite_backend) as cluster:
        await create_content(cluster, "ws-a", "cart", "Hi", "<p>Hi</p>")
        journey = await published(cluster, "ws-a", send_then_exit("cart"))
        event = forwarded("ev-1", "ada")
        event.traceparent = TRACEPARENT
        await cluster.orchestration.HandleEvents(pb.HandleEventsRequest(events=[event]),
                                                 metadata=as_service("ws-a"))

        def in_trace() -> set[str]:
            return {s.name for s in spans.get_finished_spans()
                    if format(s.context.trace_id, "032x") == TRACE_ID
                    and s.kind == trace.SpanKind.SERVER}

        async def completed() -> bool:
            found = await enrollments(cluster, "ws-a", journey)
            return bool(found) and found[0].state == enrollment_pb2.ENROLLMENT_STATE_COMPLETED

        await eventually(completed)
        await eventually(lambda: {
            "/cjo.content.v1.ContentService/BatchRenderContent",
            "/cjo.delivery.v1.DeliveryService/BatchSendMessages",
            "/cjo.analytics.v1.AnalyticsService/RecordFacts"} <= in_trace())
