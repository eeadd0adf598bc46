"""The six services as separate processes on loopback, with a real SMTP server and a real OTLP
trace receiver, for end-to-end tests. A service may run as several replicas behind a balancer
(tests/grpc_balancer.py), as a Kubernetes Service spreads calls over a Deployment's pods."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from aiosmtpd.controller import Controller
from grpc_balancer import Balancer, balancing
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from cjo_platform.clock import (
    TEST_CLOCK_RECHECK_SECONDS,
    advance_test_clock,
    read_test_clock_offset,
    set_test_clock_offset,
)
from support import SERVICE_TOKEN, Backend, free_port, operator_environ

SERVICES = ("identity", "content", "orchestration", "delivery", "analytics", "decisioning")

# How long an end-to-end test waits for a state the suite reaches in a few seconds on a quiet
# machine (a sent email, a moved enrollment, a span): the six service processes share two cores
# with the test and, in CI beside helpers' runs, with other suites (load 20: three emails took
# over 20 s once). Waits end as soon as the state is reached; this only bounds a stuck suite.
STATE_TIMEOUT = 60.0


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_unix_nano: int = 0  # when the span began, to tell the order of calls within a trace
    end_unix_nano: int = 0


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attrs.get("service.name", "")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(ReceivedSpan(
                        service, span.name, span.kind, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), span.start_time_unix_nano,
                        span.end_time_unix_nano))
        return trace_service_pb2.ExportTraceServiceResponse()


class Inbox:
    """aiosmtpd handler keeping every envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@dataclass
class Suite:
    ports: dict[str, int]  # what a client dials per service: its process, or its balancer
    env: dict[str, str]
    traces: TraceReceiver
    mail: Inbox
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    clock_file: Path | None = None  # the shared test clock, when the suite runs on one
    # Each process's own port by process name: the service's name, or `<service>-<n>` for the
    # replicas of a service that runs several (behind `balancers[service]`).
    process_ports: dict[str, int] = field(default_factory=dict)
    balancers: dict[str, Balancer] = field(default_factory=dict)

    def replicas(self, service: str) -> list[str]:
        """The process names of ``service``."""
        return [n for n in self.process_ports if n == service or n.startswith(f"{service}-")]

    def now(self) -> datetime:
        """The time the services see: the wall clock, plus the test clock's offset."""
        offset = read_test_clock_offset(self.clock_file) if self.clock_file else timedelta(0)
        return datetime.now(UTC) + offset

    def advance(self, delta: timedelta) -> datetime:
        """Move every service's clock forward by ``delta`` (needs ``clock_start``). Each service
        looks at the clock file at least every TEST_CLOCK_RECHECK_SECONDS; this returns after
        twice that, so from then on every service reads the new time (their workers act on it
        at their next poll)."""
        if self.clock_file is None:
            raise AssertionError("running_suite(..., clock_start=...) runs on a test clock")
        advance_test_clock(self.clock_file, delta)
        time.sleep(2 * TEST_CLOCK_RECHECK_SECONDS)
        return self.now()

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def start(self, name: str) -> None:
        """Start the process ``name`` (a service, or one replica of it)."""
        service = name.split("-", 1)[0]
        log = (self.logs / f"{name}.log").open("ab")
        env = {**self.env, f"CJO_{service.upper()}_PORT": str(self.process_ports[name])}
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"cjo_{service}"], env=env, stdout=log,
            stderr=subprocess.STDOUT)

    async def stop(self, service: str, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal a service and wait for it to exit. The wait happens off the event loop, which
        must keep serving: the trace receiver is in it, and services flush spans on the way out."""
        proc = self.processes.pop(service)
        proc.send_signal(sig)
        try:
            return await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    async def wait_ready(self, service: str, timeout: float = 120) -> None:
        """Wait until the process ``service`` (a service, or one replica) reports SERVING. A
        process that exits fails at once; the long limit is for a machine busy with other work
        (six processes importing at once on two cores), not for a normal start (~3 s)."""
        address = f"127.0.0.1:{self.process_ports[service]}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                proc = self.processes[service]
                if proc.poll() is not None:
                    raise AssertionError(f"{service} exited with {proc.returncode}:\n"
                                         + self.log(service))
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"{service} not ready:\n" + self.log(service))
                await asyncio.sleep(0.1)

    def log(self, service: str) -> str:
        path = self.logs / f"{service}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""


@asynccontextmanager
async def running_suite(backend: Backend, tmp_path: Path,
                        extra_env: dict[str, str] | None = None,
                        clock_start: datetime | None = None,
                        replicas: Mapping[str, int] | None = None) -> AsyncIterator[Suite]:
    """Start the suite. With ``clock_start``, every service runs on one test clock
    (CJO_TEST_CLOCK_FILE, CJO_ENV=test) that reads ``clock_start`` now and that the test moves
    with :meth:`Suite.advance`. ``replicas`` runs a service as that many processes (on one
    database: PostgreSQL) behind a round-robin balancer that every client and peer dials."""
    traces = TraceReceiver()
    otlp = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, otlp)
    otlp_port = otlp.add_insecure_port("127.0.0.1:0")
    await otlp.start()

    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()

    ports = {name: free_port() for name in SERVICES}
    process_ports = {name: port for name, port in ports.items()
                     if (replicas or {}).get(name, 1) <= 1}
    for name, count in (replicas or {}).items():
        if count > 1:
            process_ports.update({f"{name}-{i}": free_port() for i in range(count)})
    stack = AsyncExitStack()
    balancers: dict[str, Balancer] = {}
    for name, count in (replicas or {}).items():
        if count > 1:
            balancers[name] = await stack.enter_async_context(balancing(
                [f"127.0.0.1:{process_ports[f'{name}-{i}']}" for i in range(count)]))
            # Peers and the test dial the balancer; each replica listens on its own port.
            ports[name] = int(balancers[name].address.rsplit(":", 1)[1])
    env = operator_environ()
    env.update(backend.env())
    env.update({
        "CJO_SERVICE_TOKEN": SERVICE_TOKEN,
        "CJO_LOG_FORMAT": "json",
        "CJO_SMTP_HOST": "127.0.0.1",
        "CJO_SMTP_PORT": str(smtp_port),
        # The tests' providers are sinks on 127.0.0.1.
        "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS": "true",
        "CJO_SHUTDOWN_GRACE_SECONDS": "2",
        # No /metrics listener unless a test asks for one: every process would otherwise try
        # the default port 9464 and all but the first log that it is in use.
        "CJO_METRICS_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PYTHONUNBUFFERED": "1",
        **{f"CJO_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **(extra_env or {}),
    })
    clock_file = None
    if clock_start is not None:
        clock_file = tmp_path / "test-clock"
        set_test_clock_offset(clock_file, clock_start - datetime.now(UTC))
        env.update({"CJO_ENV": "test", "CJO_TEST_CLOCK_FILE": str(clock_file)})
    logs = tmp_path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    suite = Suite(ports, env, traces, inbox, logs, clock_file=clock_file,
                  process_ports=process_ports, balancers=balancers)
    try:
        for name in process_ports:
            suite.start(name)
        await asyncio.gather(*(suite.wait_ready(name) for name in process_ports))
        yield suite
    finally:
        for name in list(suite.processes):
            with suppress(subprocess.TimeoutExpired):
                await suite.stop(name)
        await stack.aclose()
        smtp.stop()
        await otlp.stop(None)
