"""A lone IngestEvents call's trace: its server span holds the write (no ``identity.ingest``
span of the call's own trace inside it), the forward to orchestration is the forwarder's client
span, a child of the server span, and orchestration gets the event in the same trace."""

from __future__ import annotations

from identity_support import Identity, Recorder, event
from opentelemetry import trace

from cjo.identity.v1 import identity_service_pb2 as pb
from support import eventually, span_recorder

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
TRACEPARENT = f"00-{TRACE_ID:032x}-b7ad6b7169203331-01"
HANDLE = "/cjo.orchestration.v1.OrchestrationService/HandleEvents"


async def test_a_lone_call_is_its_server_span_and_the_forward_call(
        identity: Identity, recorder: Recorder) -> None:
    spans = span_recorder()
    acme = await identity.new_workspace("acme")
    await identity.events.IngestEvents(
        pb.IngestEventsRequest(events=[event("m1", ("user_id", "u1"))]),
        metadata=(*acme, ("traceparent", TRACEPARENT)))
    await eventually(lambda: [e for e in recorder.events if e.event.message_id == "m1"])
    [forwarded] = [e for e in recorder.events if e.event.message_id == "m1"]
    assert forwarded.traceparent.split("-")[1] == f"{TRACE_ID:032x}"

    def in_trace() -> list[object]:
        return [s for s in spans.get_finished_spans() if s.context.trace_id == TRACE_ID]

    client = await eventually(lambda: next(
        (s for s in in_trace() if s.name == HANDLE and s.kind == trace.SpanKind.CLIENT), None))
    server = next(s for s in in_trace() if s.kind == trace.SpanKind.SERVER
                  and s.name.endswith("IdentityService/IngestEvents"))
    assert client.parent.span_id == server.context.span_id
    names = {s.name for s in in_trace()}
    assert "identity.ingest" not in names
    assert not {n for n in names if n.startswith("outbox.forward")}
