"""A unary call through the server's layers folded into one coroutine (ServerStack) is answered,
logged, measured and traced exactly as through the same layers composed one inside another."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
import structlog
from structlog.testing import LogCapture

from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2 as ct_pb
from cjo.content.v1 import content_service_pb2_grpc as ct_grpc
from cjo_platform.errors import NotFound
from cjo_platform.metrics import MetricsInterceptor
from cjo_platform.rpc import interceptors
from cjo_platform.rpc.auth import Authenticator, Principal
from cjo_platform.rpc.interceptors import (
    AuthInterceptor,
    ErrorInterceptor,
    Layered,
    LoggingInterceptor,
)
from cjo_platform.rpc.stack import ServerStack
from cjo_platform.rpc.tracing import server_spans
from cjo_platform.rpc.validation import ValidationInterceptor
from support import SERVICE_TOKEN, as_service, span_recorder

METHOD = "/cjo.content.v1.ContentService/GetSnippet"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# Request names and what the servicer does with each; the last two never reach it.
CALLS = [("ok", True), ("missing", True), ("bug", True), ("ok", False), ("bad\x00name", True)]


class Answering(ct_grpc.ContentServiceServicer):  # type: ignore[misc]
    async def GetSnippet(self, request: Any, context: Any) -> Any:
        if request.name == "missing":
            raise NotFound("no such snippet", reason="SNIPPET_NOT_FOUND")
        if request.name == "bug":
            raise KeyError("a bug")
        return ct_pb.GetSnippetResponse(snippet=content_item_pb2.Snippet(name=request.name))


class Durations:
    """Stands in for the histogram: the labels of each recorded duration."""

    def __init__(self) -> None:
        self.labels: list[dict[str, str]] = []

    def record(self, seconds: float, labels: dict[str, str]) -> None:
        assert seconds >= 0
        self.labels.append(dict(labels))


async def _no_keys(secret: str) -> Principal | None:
    return None


def _layers(leave_out: Sequence[str], durations: Durations) -> dict[str, Any]:
    metrics = MetricsInterceptor()
    metrics.duration = durations
    layers: dict[str, Any] = {
        "tracing": True, "metrics": metrics, "logging": LoggingInterceptor(1000.0),
        "errors": ErrorInterceptor("content.cjo"),
        "auth": AuthInterceptor(Authenticator(SERVICE_TOKEN, _no_keys), ()),
        "validation": ValidationInterceptor()}
    return {name: (False if name == "tracing" else None) if name in leave_out else layer
            for name, layer in layers.items()}


def _composed(layers: dict[str, Any]) -> Layered:
    """The same layers composed one inside another, outermost first."""
    return Layered([server_spans if layer is True else layer
                    for layer in layers.values() if layer not in (None, False)])


async def _observe(interceptor: grpc.aio.ServerInterceptor, durations: Durations,
                   monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    logs = LogCapture()
    monkeypatch.setattr(interceptors, "log", structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[structlog.contextvars.merge_contextvars, logs],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)))
    spans = span_recorder()
    server = grpc.aio.server(interceptors=[interceptor])
    ct_grpc.add_ContentServiceServicer_to_server(Answering(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    answers = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ct_grpc.ContentServiceStub(channel)
            for name, authenticated in CALLS:
                metadata = (*(as_service("ws-1") if authenticated else ()),
                            ("traceparent", TRACEPARENT))
                try:
                    answer = await stub.GetSnippet(ct_pb.GetSnippetRequest(name=name),
                                                   metadata=metadata)
                    answers.append(("OK", answer.snippet.name))
                except grpc.aio.AioRpcError as exc:
                    answers.append((exc.code().name, exc.details()))
    finally:
        await server.stop(None)
    finished = [s for s in spans.get_finished_spans() if s.name == METHOD]
    return {
        "answers": answers,
        "logs": [{k: v for k, v in line.items() if k not in ("duration_ms", "exc_info")}
                 for line in logs.entries],
        "durations": durations.labels,
        "spans": [(s.kind.name, s.parent.span_id if s.parent else None, s.status.status_code.name,
                   dict(s.attributes or {}), [e.name for e in s.events]) for s in finished],
    }


@pytest.mark.parametrize("leave_out", [(), ("errors",), ("tracing", "metrics"),
                                       ("auth", "validation")])
async def test_a_unary_call_meets_the_folded_layers_as_the_composed_ones(
        leave_out: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    folded_durations, composed_durations = Durations(), Durations()
    folded = await _observe(ServerStack(**_layers(leave_out, folded_durations)),
                            folded_durations, monkeypatch)
    composed = await _observe(_composed(_layers(leave_out, composed_durations)),
                              composed_durations, monkeypatch)
    assert folded == composed
    codes = [code for code, _ in folded["answers"]]
    checks = "auth" not in leave_out
    expected = ["OK", "NOT_FOUND", "INTERNAL", "UNAUTHENTICATED" if checks else "OK",
                "INVALID_ARGUMENT" if checks else "OK"]
    if "errors" in leave_out:  # an error escapes every layer: grpc answers UNKNOWN
        expected = ["UNKNOWN" if code != "OK" else code for code in expected]
    assert codes == expected
    if "metrics" not in leave_out and "errors" not in leave_out:
        assert [d["rpc.grpc.status_code"] for d in folded["durations"]] == codes
        assert {d["rpc.method"] for d in folded["durations"]} == {METHOD}
    # A line for each call that failed, with its method, and the workspace once authenticated.
    failed = [line for line in folded["logs"] if line["event"] == "rpc"
              and line["log_level"] != "debug"]
    if "errors" not in leave_out:
        assert [line["code"] for line in failed] == [c for c in codes if c != "OK"]
        assert all(line["method"] == METHOD for line in failed)
        if "auth" not in leave_out:
            assert failed[0]["workspace"] == "ws-1"
    if "tracing" not in leave_out:
        assert len(folded["spans"]) == len(CALLS)
        assert {parent for _, parent, *_ in folded["spans"]} == {0x00f067aa0ba902b7}
        # INTERNAL is the server's failure: an error span; an exception that escaped every
        # layer is recorded on it.
        statuses = [(status, events) for _, _, status, _, events in folded["spans"]]
        assert statuses[2] == (("UNSET", ["exception"]) if "errors" in leave_out
                               else ("ERROR", []))
        if "errors" not in leave_out:  # NOT_FOUND is the caller's mistake
            assert statuses[1] == ("UNSET", [])
