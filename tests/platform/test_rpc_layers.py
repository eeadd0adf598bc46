"""The lean call path: the server's layers as one interceptor, a log line only for failed or slow
calls, and the client and server spans cjo makes itself (names, kinds, attributes, status, and
the traceparent carried from the client span to the server span)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry.trace import SpanKind, StatusCode
from structlog.testing import LogCapture

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import reports_pb2 as rpb
from cjo_analytics.bootstrap import build
from cjo_platform.config import Env
from cjo_platform.rpc import interceptors
from cjo_platform.rpc.client import channel, close_channels
from cjo_platform.rpc.interceptors import Layered
from cjo_platform.telemetry import continue_trace
from support import Backend, as_service, serving, settings_for, span_recorder

LIST = "/cjo.analytics.v1.AnalyticsService/ListExperiments"
REPORT = "/cjo.analytics.v1.AnalyticsService/GetJourneyReport"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def _list_and_fail(address: str, **metadata: Any) -> None:
    """One call that succeeds and one that fails (INVALID_ARGUMENT), as a service."""
    stub = pb_grpc.AnalyticsServiceStub(channel(address))
    await stub.ListExperiments(rpb.ListExperimentsRequest(), metadata=as_service("ws"))
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="x"),
                                    metadata=as_service("ws"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_call_passes_one_interceptor(sqlite_backend: Backend,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    passes = 0
    intercept = Layered.intercept_service

    async def counting(self: Layered, continuation: Any, details: Any) -> Any:
        nonlocal passes
        passes += 1
        return await intercept(self, continuation, details)

    monkeypatch.setattr(Layered, "intercept_service", counting)
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    try:
        async with serving(app) as address:
            await _list_and_fail(address)
    finally:
        await close_channels()
    assert passes == 2


@pytest.mark.parametrize(("level", "slow_ms"), [("info", "1000"), ("info", "0"),
                                                 ("debug", "1000")])
async def test_an_ok_call_is_logged_only_when_slow_or_at_debug(
        sqlite_backend: Backend, monkeypatch: pytest.MonkeyPatch, level: str,
        slow_ms: str) -> None:
    # The service's log lines, at the service's level, into a list instead of stderr.
    logs = LogCapture()
    monkeypatch.setattr(interceptors, "log", structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[structlog.contextvars.merge_contextvars, logs],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper()))))
    app = build(settings_for("analytics", sqlite_backend, CJO_LOG_SLOW_RPC_MS=slow_ms),
                Env({}))
    try:
        async with serving(app) as address:
            await _list_and_fail(address)
    finally:
        await close_channels()
    lines = [(line["log_level"], line["method"], line["code"], line.get("slow"))
             for line in logs.entries if line["event"] == "rpc"]
    failed = ("warning", REPORT, "INVALID_ARGUMENT", None)  # a failure always
    if slow_ms == "0":  # every call is slow: the OK one at info
        assert lines == [("info", LIST, "OK", True), failed]
    elif level == "debug":
        assert lines == [("debug", LIST, "OK", None), failed]
    else:
        assert lines == [failed]


async def test_client_and_server_spans_carry_one_trace(sqlite_backend: Backend) -> None:
    spans = span_recorder()
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    try:
        async with serving(app) as address:
            with continue_trace("test", TRACEPARENT):
                await _list_and_fail(address)
    finally:
        await close_channels()
    ours = [s for s in spans.get_finished_spans()
            if format(s.context.trace_id, "032x") == TRACE_ID and s.name in (LIST, REPORT)]
    by = {(s.kind, s.name): s for s in ours}
    assert len(ours) == 4 and len(by) == 4, [(s.kind, s.name) for s in ours]
    for method, code in ((LIST, 0), (REPORT, 3)):
        client, server = by[SpanKind.CLIENT, method], by[SpanKind.SERVER, method]
        # The server span is the client span's child: the traceparent crossed the call.
        assert server.parent is not None and server.parent.span_id == client.context.span_id
        assert server.parent.is_remote
        for span in (client, server):
            assert span.attributes is not None
            assert {k: span.attributes[k] for k in (
                "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code")} == {
                "rpc.system": "grpc", "rpc.service": "cjo.analytics.v1.AnalyticsService",
                "rpc.method": method.rsplit("/", 1)[1], "rpc.grpc.status_code": code}
        # A failed call is an error to the caller; INVALID_ARGUMENT is not the server's failure.
        assert client.status.status_code == (StatusCode.ERROR if code else StatusCode.UNSET)
        assert server.status.status_code == StatusCode.UNSET
