"""OTLP/gRPC span export with a faster encoder: the OpenTelemetry exporter's own transport
(channel, retries, timeouts, headers, compression, TLS, its metrics), sending an
``ExportTraceServiceRequest`` this module writes in the protobuf wire format itself.

The SDK's encoder (``opentelemetry-exporter-otlp-proto-common``'s ``encode_spans``) builds a
protobuf object per span, per attribute, per attribute value, per event, per link and per
status, then serialises the tree, and hashes each span's resource (a JSON dump of its attributes)
to group the spans: ~22 µs of CPU per span, in the process that made the span. This encoder
writes the same bytes directly (~4-6 µs a span): the span's fields in field-number order, as
protobuf serialises them, an attribute's key-value pair kept once encoded (the same method's
``rpc.*`` attributes recur on every call). tests/platform/test_otlp_encoding.py checks it
byte for byte against ``encode_spans(...).SerializeToString()`` over spans of every kind, status,
event, link, trace state and attribute type; what it has no fast path for (an attribute value
that is a sequence, a mapping or bytes) it encodes with the library's own functions.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_attributes,
    _encode_instrumentation_scope,
    _encode_resource,
    _encode_value,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# Span.SpanKind of the OTLP proto for each SDK kind (SPAN_KIND_UNSPECIFIED is 0).
_KIND = {SpanKind.INTERNAL: b"\x30\x01", SpanKind.SERVER: b"\x30\x02",
         SpanKind.CLIENT: b"\x30\x03", SpanKind.PRODUCER: b"\x30\x04",
         SpanKind.CONSUMER: b"\x30\x05"}
# Span.flags (field 16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (0x100), with
# SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK (0x200) when the parent is remote.
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x100)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)
# Span.Link.flags (field 6, fixed32).
_LINK_FLAGS_LOCAL = b"\x35" + struct.pack("<I", 0x100)
_LINK_FLAGS_REMOTE = b"\x35" + struct.pack("<I", 0x300)
_SMALL = [bytes([n]) for n in range(0x80)]
# Span.status (field 15) without a description, by code (UNSET 0, OK 1, ERROR 2).
_STATUS = {0: b"\x7a\x00", 1: b"\x7a\x02\x18\x01", 2: b"\x7a\x02\x18\x02"}
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack

# Encoded pieces that recur (an attribute's key and value, a span's name), kept up to a bound:
# keys and names come from code, values may not (a workspace id), so the cache starts over when
# full rather than growing with every distinct value.
_CACHE_LIMIT = 8192
# Only short strings are cached: a one-off long value (an exception's stack trace) would hold
# its bytes until the cache fills and push the hot attributes out when it is cleared.
_CACHED_STR_LIMIT = 256
# An int attribute outside int64 goes to the library's encoder, which refuses it (the attribute
# is left out, logged): written here it would be a wrong value, or bytes the receiver cannot
# parse, failing the whole export request.
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_pairs: dict[tuple[bytes, str, type, Any], bytes] = {}
_names: dict[str, bytes] = {}


def _varint(n: int) -> bytes:
    if n < 0x80:
        if n >= 0:
            return _SMALL[n]
        n += 1 << 64  # an int64 below zero: ten bytes of its two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag``, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message: the oneof member ``value`` takes (written even when it is the
    type's default, as a oneof member is), the library's encoding for the rarer types."""
    if value.__class__ is str:
        return _field(b"\x0a", value.encode())
    if value.__class__ is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if value.__class__ is int and _INT64_MIN <= value <= _INT64_MAX:
        return b"\x18" + _varint(value)
    if value.__class__ is float:
        return b"\x21" + _pack_d(value)
    return _encode_value(value).SerializeToString()  # type: ignore[no-any-return]


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a ``KeyValue`` field ``tag``. A value of a type the library cannot
    encode is left out, as the library leaves it out (logging it)."""
    if not attributes:
        return b""
    out = []
    for key, value in attributes.items():
        cls = value.__class__
        cacheable = (cls is bool or cls is int
                     or (cls is str and len(value) <= _CACHED_STR_LIMIT))
        pair = _pairs.get((tag, key, cls, value)) if cacheable else None
        if pair is None:
            try:
                pair = _field(tag, (_field(b"\x0a", key.encode()) if key else b"")
                              + _field(b"\x12", _any_value(value)))
            except Exception:  # the library's choice: skip the attribute, logging it
                _encode_attributes({key: value})
                continue
            if cacheable:
                if len(_pairs) >= _CACHE_LIMIT:
                    _pairs.clear()
                _pairs[(tag, key, cls, value)] = pair
        out.append(pair)
    return b"".join(out)


def _name(name: str) -> bytes:
    encoded = _names.get(name)
    if encoded is None:
        encoded = _field(b"\x2a", name.encode()) if name else b""
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        _names[name] = encoded
    return encoded


def _bounded(value: Any) -> tuple[Any, int]:
    """What a span holds in ``value`` (its attributes, events or links) and how many it dropped,
    read from the SDK's bounded containers directly: their public views copy them under a lock
    (``ReadableSpan.events`` is a tuple of a list of the deque), once per span exported."""
    if isinstance(value, BoundedList):
        return value._dq, value.dropped  # type: ignore[attr-defined]
    if isinstance(value, BoundedAttributes):
        return value._dict, value.dropped
    return value or (), 0


def encode_span(span: ReadableSpan) -> bytes:
    """One ``Span`` message, as ``_encode_span(span).SerializeToString()`` writes it."""
    context = span._context
    assert context is not None
    parent = span._parent
    out = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"),
           b"\x12\x08", context.span_id.to_bytes(8, "big")]
    trace_state = context.trace_state
    if trace_state:
        text = ",".join(f"{key}={value}" for key, value in trace_state.items())
        if text:
            out.append(_field(b"\x1a", text.encode()))
    if parent is not None:
        out += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    out += (_name(span._name), _KIND[span._kind])
    if span._start_time:
        out += (b"\x39", _pack_q(span._start_time))
    if span._end_time:
        out += (b"\x41", _pack_q(span._end_time))
    attributes, dropped = _bounded(span._attributes)
    if attributes:
        out.append(_attributes(b"\x4a", attributes))
    if dropped:
        out += (b"\x50", _varint(dropped))
    events, dropped = _bounded(span._events)
    for event in events:
        body = b"\x09" + _pack_q(event.timestamp) if event.timestamp else b""
        if event.name:
            body += _field(b"\x12", event.name.encode())
        body += _attributes(b"\x1a", event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        out.append(_field(b"\x5a", body))
    if dropped:
        out += (b"\x60", _varint(dropped))
    links, dropped = _bounded(span._links)
    for link in links:
        linked = link.context
        body = (b"\x0a\x10" + linked.trace_id.to_bytes(16, "big")
                + b"\x12\x08" + linked.span_id.to_bytes(8, "big")
                + _attributes(b"\x22", link.attributes))
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += _LINK_FLAGS_REMOTE if linked.is_remote else _LINK_FLAGS_LOCAL
        out.append(_field(b"\x6a", body))
    if dropped:
        out += (b"\x70", _varint(dropped))
    status = span._status
    if status is not None:
        code = status.status_code.value
        if status.description:
            body = _field(b"\x12", status.description.encode())
            out.append(_field(b"\x7a", body + b"\x18" + _varint(code) if code else body))
        else:
            out.append(_STATUS[code])
    out.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(out)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ``ExportTraceServiceRequest`` holding ``spans``, the bytes
    ``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(spans)
    .SerializeToString()`` are: grouped by resource, then by instrumentation scope, each group
    in the order its first span comes."""
    # Grouped by equality, as the library's dicts group them, without hashing a resource per
    # span (its hash is a JSON dump of its attributes): each distinct pair of objects is placed
    # once, and the objects live as long as the spans, so their ids stay theirs.
    groups: list[tuple[Any, list[tuple[Any, list[bytes]]]]] = []
    placed: dict[tuple[int, int], list[bytes]] = {}
    for span in spans:
        resource = span._resource
        scope = span._instrumentation_scope or None
        encoded = placed.get((id(resource), id(scope)))
        if encoded is None:
            scopes = next((s for r, s in groups if r == resource), None)
            if scopes is None:
                scopes = []
                groups.append((resource, scopes))
            encoded = next((e for s, e in scopes if s == scope), None)
            if encoded is None:
                encoded = []
                scopes.append((scope, encoded))
            placed[(id(resource), id(scope))] = encoded
        encoded.append(_field(b"\x12", encode_span(span)))
    out = []
    for resource, scopes in groups:
        body = [_field(b"\x0a", _encode_resource(resource).SerializeToString())]
        for scope, encoded in scopes:
            scope_body = (_field(b"\x0a", _encode_instrumentation_scope(scope)
                                 .SerializeToString()) + b"".join(encoded))
            if scope is not None and scope.schema_url:
                scope_body += _field(b"\x1a", scope.schema_url.encode())
            body.append(_field(b"\x12", scope_body))
        if resource.schema_url:
            body.append(_field(b"\x1a", resource.schema_url.encode()))
        out.append(_field(b"\x0a", b"".join(body)))
    return b"".join(out)


class _BytesTraceServiceStub:
    """The trace service's ``Export``, sent a request already serialised."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(
            _EXPORT, request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (configured by the same arguments and OTEL_EXPORTER_OTLP_*
    variables, with the same retries and reconnection) whose requests this module encodes."""

    def _initialize_channel_and_stub(self) -> None:
        self._stub = _BytesTraceServiceStub
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return encode_spans(data)
