"""The server bootstrap every service shares: health, reflection, interceptors and drain."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo_analytics.bootstrap import build
from cjo_platform.config import Env
from cjo_platform.rpc.status import error_reason
from support import Backend, as_service, serving, settings_for, span_recorder


async def test_health_and_reflection_need_no_key(sqlite_backend: Backend) -> None:
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "cjo.analytics.v1.AnalyticsService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name async for r in responses for s in r.list_services_response.service}
        assert {"cjo.analytics.v1.AnalyticsService", "grpc.health.v1.Health"} <= names


async def test_errors_are_rich_statuses(sqlite_backend: Backend) -> None:
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnalyticsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="x"),
                                        metadata=as_service("ws"))
        status = rpc_status.from_call(bad.value)
        assert status is not None and error_reason(status) == "INVALID_ARGUMENT"
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="journeys/j"))
        status = rpc_status.from_call(anonymous.value)
        assert status is not None and error_reason(status) == "API_KEY_MISSING"


async def test_stopping_returns_and_closes_the_port(sqlite_backend: Backend) -> None:
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    async with serving(app) as address:
        pass
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1)
        assert gone.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                     grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_each_rpc_is_traced_and_health_checks_are_not(sqlite_backend: Backend) -> None:
    from opentelemetry import trace

    spans = span_recorder()
    app = build(settings_for("analytics", sqlite_backend), Env({}))
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = pb_grpc.AnalyticsServiceStub(channel)
        for _ in range(2):
            await health.Check(health_pb2.HealthCheckRequest(service=""))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetJourneyReport(pb.GetJourneyReportRequest(journey="x"),
                                            metadata=as_service("ws"))
    server_spans = [s.name for s in spans.get_finished_spans()
                    if s.kind == trace.SpanKind.SERVER]
    assert server_spans == ["/cjo.analytics.v1.AnalyticsService/GetJourneyReport"] * 2


async def test_a_method_is_decorated_once_not_on_every_call() -> None:
    from cjo_platform.rpc.interceptors import ErrorInterceptor

    async def behavior(request: object, context: object) -> object:
        return request

    registered = grpc.unary_unary_rpc_method_handler(behavior)
    other = grpc.unary_unary_rpc_method_handler(behavior)
    interceptor = ErrorInterceptor(domain="test.cjo")
    decorated = 0
    decorate = interceptor.decorate

    def counting(behavior: object, method: str, streaming: bool) -> object:
        nonlocal decorated
        decorated += 1
        return decorate(behavior, method, streaming)  # type: ignore[arg-type]

    interceptor.decorate = counting  # type: ignore[method-assign]

    class Details:
        method = "/cjo.analytics.v1.AnalyticsService/GetJourneyReport"

    below = registered

    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return below

    first = await interceptor.intercept_service(continuation, Details())
    again = await interceptor.intercept_service(continuation, Details())
    assert again is first and decorated == 1
    assert await first.unary_unary("request", None) == "request"
    # A different handler below (a lower interceptor that wraps per call) is wrapped anew.
    below = other
    assert await interceptor.intercept_service(continuation, Details()) is not first
    assert decorated == 2
