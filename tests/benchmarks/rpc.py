"""`make bench-rpc`: the fixed CPU cost of one call between cjo services, layer by layer.

A server process with cjo's real server stack (:func:`cjo_platform.rpc.server.server_interceptors`,
tracing, metrics and the garbage collector configured as a service configures them, log lines at
info as in production, written to /dev/null) serves ``AnalyticsService.RecordFacts`` from a
servicer that answers at once; this process calls it with one fact and the service token on
cjo's real :func:`~cjo_platform.rpc.client.channel`. Printed for each variant, 1 and 32 calls in
flight: calls/s and CPU µs per call in the server process and in the client (process CPU time
over the calls, every thread counted: gRPC's own included).

Both processes run on the loop CJO_EVENT_LOOP names (uvloop unless ``asyncio``).

``--tracing`` (printed first): ``off`` (the default: no exporter, so no span is recorded, only
its context carried) or ``export`` (both processes send every span over OTLP, as a service with
OTEL_EXPORTER_OTLP_ENDPOINT set does, to a sink in a third process that drops them): the
``-tracing`` and ``-client-tracing`` variants give what tracing costs a call in that mode.

Variants: ``bare`` (grpc.aio without any interceptor on either side), ``cjo`` (the full stack)
and the full stack less one layer (``-tracing`` the server span, ``-client-tracing`` the client
span, ``-metrics``, ``-logging``, ``-errors``, ``-auth``, ``-validation``): the difference to
``cjo`` is that layer's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cjo.analytics.v1 import analytics_service_pb2 as pb
from cjo.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from cjo.analytics.v1 import fact_pb2
from cjo_platform import event_loop
from cjo_platform.collector import collect_rarely
from cjo_platform.rpc.auth import Authenticator, Principal
from cjo_platform.rpc.client import CHANNEL_OPTIONS, channel, on_behalf_of
from cjo_platform.rpc.server import LAYERS, server_interceptors
from support import SERVICE_TOKEN, free_port

SECONDS = 1.5  # how long each figure is measured for
IN_FLIGHT = (1, 32)
WORKSPACE = "ws-bench"


@dataclass(frozen=True)
class Variant:
    name: str
    leave_out: tuple[str, ...] | None  # None: no server interceptor at all
    client_traced: bool


def variants() -> list[Variant]:
    return [Variant("bare", None, False), Variant("cjo", (), True),
            *(Variant(f"-{layer}", (layer,), True) for layer in LAYERS),
            Variant("-client-tracing", (), False)]


class Answering(pb_grpc.AnalyticsServiceServicer):  # type: ignore[misc]
    """RecordFacts answered at once: one OK result per fact, nothing stored."""

    async def RecordFacts(self, request: pb.RecordFactsRequest,
                          context: grpc.aio.ServicerContext) -> pb.RecordFactsResponse:
        return pb.RecordFactsResponse(results=[pb.RecordFactResult() for _ in request.facts])


async def _no_keys(secret: str) -> Principal | None:
    return None


def _serve(port: int, leave_out: tuple[str, ...] | None, cpu: Any, ready: Any) -> None:
    """The server process; answers its process CPU seconds on ``cpu`` whenever asked."""
    from cjo_platform.logging import configure_logging
    from cjo_platform.metrics import configure_metrics
    from cjo_platform.telemetry import configure_tracing

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the log lines are written, as in production, but not shown
    configure_logging("analytics", fmt="json", level="info")
    configure_tracing("analytics")
    configure_metrics("analytics", "127.0.0.1", free_port())
    collect_rarely()  # as every service process does (cjo_platform.rpc.server.main)

    def answer_cpu() -> None:
        while True:
            cpu.recv()
            cpu.send(time.process_time())

    threading.Thread(target=answer_cpu, daemon=True).start()

    async def main() -> None:
        interceptors = [] if leave_out is None else server_interceptors(
            "analytics", Authenticator(SERVICE_TOKEN, _no_keys), metrics=True,
            leave_out=leave_out)
        server = grpc.aio.server(interceptors=interceptors)
        pb_grpc.add_AnalyticsServiceServicer_to_server(Answering(), server)
        await _serve_until_terminated(server, port, ready)

    event_loop.run(main())


async def _serve_until_terminated(server: grpc.aio.Server, port: int, ready: Any) -> None:
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    ready.set()
    await server.wait_for_termination()


@contextmanager
def _spawned(target: Callable[..., None], *args: Any) -> Iterator[None]:
    """``target(*args, ready)`` in a process of its own, until the block ends; the block starts
    once it set ``ready``."""
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(30):
            raise RuntimeError(f"the benchmark's {target.__name__} did not start")
        yield
    finally:
        process.terminate()
        process.join()


@contextmanager
def _server(leave_out: tuple[str, ...] | None) -> Iterator[tuple[int, Callable[[], float]]]:
    """The server in a process of its own; yields its port and a reader of its CPU seconds."""
    port = free_port()
    ours, theirs = multiprocessing.get_context("spawn").Pipe()

    def cpu() -> float:
        ours.send(None)
        return float(ours.recv())

    with _spawned(_serve, port, leave_out, theirs):
        yield port, cpu


def _request() -> pb.RecordFactsRequest:
    fact = fact_pb2.Fact(
        fact_id="f-1", type=fact_pb2.FACT_TYPE_MESSAGE_SENT, profile_id="p-1",
        journey_id="j-1", enrollment_id="e-1", message_id="m-1", journey_version=3,
        node_id="email-1", content_key="welcome", occur_time=Timestamp(seconds=1_780_000_000))
    return pb.RecordFactsRequest(facts=[fact])


async def _measure(call: Callable[[], Awaitable[Any]], in_flight: int, seconds: float,
                   server_cpu: Callable[[], float]) -> tuple[float, float, float]:
    """(calls/s, server CPU µs per call, client CPU µs per call)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    server_before, client_before = server_cpu(), time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    server_used, client_used = server_cpu() - server_before, time.process_time() - client_before
    return done / elapsed, server_used / done * 1e6, client_used / done * 1e6


Figures = tuple[float, float, float]  # calls/s, server and client CPU µs per call


async def measure_variant(variant: Variant, seconds: float) -> dict[int, Figures]:
    with _server(variant.leave_out) as (port, server_cpu):
        target = f"127.0.0.1:{port}"
        own = None
        if variant.client_traced:
            ch = channel(target)
        else:
            ch = own = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        try:
            stub = pb_grpc.AnalyticsServiceStub(ch)
            request, metadata = _request(), on_behalf_of(SERVICE_TOKEN, WORKSPACE)

            async def call() -> None:
                await stub.RecordFacts(request, metadata=metadata)

            for _ in range(200):  # warm up: the channel, the per-method caches
                await call()
            return {n: await _measure(call, n, seconds, server_cpu) for n in IN_FLIGHT}
        finally:
            if own is not None:
                await own.close()


def _sink(port: int, ready: Any) -> None:
    """An OTLP trace receiver that drops what it is sent, in a process of its own."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

    class Dropping(otlp_grpc.TraceServiceServicer):  # type: ignore[misc]
        async def Export(self, request: Any, context: Any) -> Any:
            return otlp.ExportTraceServiceResponse()

    async def main() -> None:
        server = grpc.aio.server()
        otlp_grpc.add_TraceServiceServicer_to_server(Dropping(), server)
        await _serve_until_terminated(server, port, ready)

    asyncio.run(main())


@contextmanager
def tracing_mode(mode: str) -> Iterator[str]:
    """This process's and its servers' environment for ``mode``; yields what to print."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        os.environ.pop(name, None)
    if mode == "off":
        yield "tracing: off (no exporter: spans not recorded, their context carried)"
        return
    port = free_port()
    with _spawned(_sink, port):
        os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                           "OTEL_EXPORTER_OTLP_INSECURE": "true"})
        try:
            yield "tracing: export (every span sent over OTLP to a sink in another process)"
        finally:
            from cjo_platform.telemetry import shutdown_tracing

            shutdown_tracing()  # the client's last spans go while the sink still listens


async def run(names: list[str] | None, seconds: float) -> list[tuple[str, dict[int, Any]]]:
    from cjo_platform.rpc.client import close_channels
    from cjo_platform.telemetry import configure_tracing

    configure_tracing("orchestration")  # the client's spans cost what a service's cost
    chosen = [v for v in variants() if names is None or v.name in names]
    results = []
    try:
        for variant in chosen:
            results.append((variant.name, await measure_variant(variant, seconds)))
    finally:
        await close_channels()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=SECONDS,
                        help="how long each figure is measured for")
    parser.add_argument("--variants", default="",
                        help="comma-separated subset of: "
                             + ", ".join(v.name for v in variants()))
    parser.add_argument("--tracing", choices=("off", "export"), default="off",
                        help="off: no exporter; export: every span sent to an OTLP sink")
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()] or None
    collect_rarely()  # the client is a service process too
    with tracing_mode(args.tracing) as mode:
        results = event_loop.run(run(names, args.seconds))
    print(mode)
    print(f"{'variant':<16}" + "".join(
        f"{f'{n} in flight: calls/s':>24}{'server µs':>11}{'client µs':>11}" for n in IN_FLIGHT))
    for name, figures in results:
        print(f"{name:<16}" + "".join(
            f"{figures[n][0]:>24,.0f}{figures[n][1]:>11,.0f}{figures[n][2]:>11,.0f}"
            for n in IN_FLIGHT))


if __name__ == "__main__":
    main()
