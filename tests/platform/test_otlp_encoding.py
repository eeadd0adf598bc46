"""cjo_platform.otlp's span encoder writes the bytes the OpenTelemetry exporter's encoder does
(``encode_spans(...).SerializeToString()``), for spans of every shape, and its exporter sends
them to an OTLP receiver that reads every field."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as library_encode
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from cjo_platform import otlp
from cjo_platform.otlp import FastOTLPSpanExporter, encode_spans

REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x1")]))
LOCAL = SpanContext(0x1, 0x2, is_remote=False)


def recorded(resource: Resource | None = None, limits: SpanLimits | None = None,
             ) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(resource=resource or Resource.create({"service.name": "cjo-x"}),
                              span_limits=limits)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def assert_same_bytes(spans: Any) -> None:
    expected = library_encode(spans).SerializeToString()
    assert encode_spans(spans) == expected
    # And it reads back as the same message (what a collector sees).
    assert trace_service_pb2.ExportTraceServiceRequest.FromString(encode_spans(spans)) == \
        library_encode(spans)


def test_every_shape_of_span_encodes_as_the_library_does() -> None:
    provider, exporter = recorded()
    rpc = provider.get_tracer("cjo.rpc")
    cjo = provider.get_tracer("cjo", "1.2", schema_url="https://example.com/schema")
    from opentelemetry.trace import NonRecordingSpan, set_span_in_context

    remote = set_span_in_context(NonRecordingSpan(REMOTE))
    with rpc.start_as_current_span("/cjo.identity.v1.IdentityService/IngestEvents",
                                   context=remote, kind=SpanKind.SERVER,
                                   attributes={"rpc.system": "grpc", "rpc.method": "Ingest"}
                                   ) as server:
        server.set_attribute("rpc.grpc.status_code", 0)
        for kind in SpanKind:
            with cjo.start_as_current_span(f"child {kind.name} é✓", kind=kind) as child:
                child.set_attributes({"s": "", "t": True, "f": False, "zero": 0, "neg": -5,
                                      "big": 2**63 - 1, "small": -(2**63), "pi": 3.25,
                                      "nan": float("nan"), "ints": [1, 2, -3],
                                      "strs": ("a", ""), "bools": [True], "floats": [0.5],
                                      "empty": []})
                child.add_event("event", {"n": 1})
                child.add_event("", timestamp=0)
                child.set_status(Status(StatusCode.ERROR, "boom"))
        with cjo.start_as_current_span("ok") as ok:
            ok.set_status(Status(StatusCode.OK))
        with cjo.start_as_current_span("linked", links=[
                Link(REMOTE, {"why": "batch"}), Link(LOCAL)]):
            pass
        try:
            with cjo.start_as_current_span("failed"):
                raise ValueError("with a traceback")
        except ValueError:
            pass
    with cjo.start_as_current_span("a root", attributes={"": "empty key"}):
        pass
    spans = exporter.get_finished_spans()
    assert len(spans) >= 9
    assert_same_bytes(spans)
    for span in spans:
        assert_same_bytes([span])
    assert encode_spans([]) == library_encode([]).SerializeToString() == b""


def test_dropped_counts_and_groups_of_resources_and_scopes() -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1,
                        max_event_attributes=1, max_link_attributes=1)
    a, exporter_a = recorded(Resource.create({"service.name": "a"}), limits)
    b, exporter_b = recorded(Resource({"service.name": "b", "n": 3}, "https://r/schema"))
    for provider in (a, b):
        for scope in ("one", "two"):
            with provider.get_tracer(scope).start_as_current_span(
                    "s", attributes={"a": 1, "b": 2, "c": 3},
                    links=[Link(REMOTE, {"x": 1, "y": 2}), Link(LOCAL)]) as span:
                span.add_event("e1", {"x": 1, "y": 2})
                span.add_event("e2")
    # Interleaved: each group is written where its first span comes, as the library's dicts.
    spans = [s for pair in zip(exporter_a.get_finished_spans(), exporter_b.get_finished_spans(),
                               strict=True) for s in pair]
    assert spans[0].dropped_attributes and spans[0].dropped_events and spans[0].dropped_links
    assert_same_bytes(spans)
    # Equal resources held by distinct objects are one group, as the library hashes them.
    twin = ReadableSpan("twin", LOCAL, resource=Resource.create({"service.name": "a"}),
                        instrumentation_scope=spans[0].instrumentation_scope,
                        start_time=1, end_time=2)
    assert_same_bytes([spans[0], spans[1], twin])


def test_hand_made_spans_without_scope_times_or_state() -> None:
    bare = ReadableSpan("", SpanContext(0, 0, is_remote=False), resource=Resource({}))
    scoped = ReadableSpan("x", REMOTE, parent=REMOTE, resource=Resource({}),
                          instrumentation_scope=InstrumentationScope("s", None, None, {"k": "v"}),
                          kind=SpanKind.CONSUMER, start_time=5, end_time=2**64 - 1,
                          status=Status(StatusCode.UNSET))
    assert_same_bytes([bare, scoped])
    assert_same_bytes([bare])


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=20) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(attributes=st.dictionaries(st.text(max_size=10), values, max_size=6),
       name=st.text(max_size=30))
def test_any_attributes_encode_as_the_library_does(attributes: dict[str, Any], name: str
                                                   ) -> None:
    span = ReadableSpan(name, LOCAL, parent=LOCAL, resource=Resource({}),
                        attributes=attributes, start_time=10, end_time=20)
    assert_same_bytes([span])


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture()
def receiver() -> Any:
    from concurrent.futures import ThreadPoolExecutor

    received = Receiver()
    server = grpc.server(ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield received, port
    server.stop(None)


async def test_the_exporter_sends_what_the_library_would(receiver: Any) -> None:
    received, port = receiver
    provider, exporter = recorded()
    with provider.get_tracer("cjo").start_as_current_span("sent", attributes={"k": "v"}):
        pass
    spans = exporter.get_finished_spans()
    fast = FastOTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    result = await asyncio.to_thread(fast.export, spans)
    fast.shutdown()
    assert result is SpanExportResult.SUCCESS
    assert received.requests == [library_encode(spans)]


def test_ints_outside_int64_are_left_out_as_the_library_leaves_them() -> None:
    """Written as varints they would be wrong values (2**63 as -2**63) or, from 2**70, bytes the
    receiver cannot parse, failing a whole export request of every trace and tenant."""
    for value in (2**63, 2**64 - 1, 2**64, 2**70, -(2**63) - 1, 2**63 - 1, -(2**63)):
        span = ReadableSpan("big", LOCAL, resource=Resource({}),
                            attributes={"n": value, "ok": 1}, start_time=1, end_time=2)
        assert_same_bytes([span])
        parsed = trace_service_pb2.ExportTraceServiceRequest.FromString(encode_spans([span]))
        kept = {kv.key for kv in parsed.resource_spans[0].scope_spans[0].spans[0].attributes}
        assert kept == ({"n", "ok"} if -(2**63) <= value < 2**63 else {"ok"})


def test_long_strings_are_not_cached() -> None:
    """Only short values stay cached: a stack trace per failed span would otherwise hold its
    bytes until the cache fills (8,192 entries of any size)."""
    otlp._pairs.clear()
    spans = [ReadableSpan("s", LOCAL, resource=Resource({}), start_time=1, end_time=2,
                          attributes={"exception.stacktrace": f"{i}" + "x" * 2000,
                                      "rpc.method": "M"})
             for i in range(50)]
    assert_same_bytes(spans)
    assert {key[1] for key in otlp._pairs} == {"rpc.method"}
