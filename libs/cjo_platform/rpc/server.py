"""The one gRPC server bootstrap every service uses.

Order matters: logging and tracing are configured first, interceptors exist before the server is
built, health reports SERVING only once the database answers, and SIGTERM flips health to
NOT_SERVING and drains in-flight calls for a grace period before stopping background work.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, runtime_checkable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cjo_platform import event_loop
from cjo_platform.clock import Clock, FileOffsetClock, SystemClock
from cjo_platform.collector import collect_rarely
from cjo_platform.config import (
    ConfigError,
    Env,
    ServiceSettings,
    load_service_settings,
    warn_unused,
)
from cjo_platform.db.engine import Database
from cjo_platform.logging import configure_logging, get_logger
from cjo_platform.metrics import (
    MetricsInterceptor,
    QueueGauges,
    configure_metrics,
    observe_queues,
    shutdown_metrics,
)
from cjo_platform.rpc.auth import Authenticator
from cjo_platform.rpc.client import MAX_MESSAGE_BYTES, close_channels
from cjo_platform.rpc.interceptors import (
    SLOW_RPC_MS,
    AuthInterceptor,
    Decorator,
    ErrorInterceptor,
    Layered,
    LoggingInterceptor,
    _Wrapping,
)
from cjo_platform.rpc.tracing import server_spans
from cjo_platform.rpc.validation import ValidationInterceptor
from cjo_platform.telemetry import configure_tracing, shutdown_tracing

log = get_logger("cjo.server")

BACKGROUND_STOP_SECONDS = 15.0
# How often the health of the parts that report their own (HealthReporting) is read.
HEALTH_REPORT_SECONDS = 1.0
# Exit code of a service command (python -m cjo_<service> <command>) that raised: 2 stays for
# bad configuration or usage, 0 and 1 for what the command itself reports.
COMMAND_FAILED = 3


LAYERS = ("tracing", "metrics", "logging", "errors", "auth", "validation")
"""The layers every call to a cjo server passes, outermost first (``leave_out`` names)."""


def server_interceptors(service: str, authenticator: Authenticator,
                        service_only_methods: Collection[str] = (), *, metrics: bool,
                        slow_rpc_ms: float = SLOW_RPC_MS,
                        leave_out: Collection[str] = ()) -> list[grpc.aio.ServerInterceptor]:
    """The interceptor of every cjo server: its layers, outermost first, are the server span
    (health checks and reflection untraced), metrics (when on: outside logging and errors, so
    they see the caller's final code), the log line, error mapping, authentication and,
    innermost, validation (what no service can store is refused before any servicer runs),
    composed once per method (:class:`~cjo_platform.rpc.interceptors.Layered`). ``leave_out``
    drops layers by name (:data:`LAYERS`): for ``make bench-rpc``, which measures each one's
    cost on this very stack."""
    unknown = set(leave_out) - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; known: {LAYERS}")
    layers: list[tuple[str, Callable[[], _Wrapping | Decorator]]] = [
        ("tracing", lambda: server_spans),
        ("metrics", MetricsInterceptor),
        ("logging", lambda: LoggingInterceptor(slow_rpc_ms)),
        ("errors", lambda: ErrorInterceptor(domain=f"{service}.cjo")),
        ("auth", lambda: AuthInterceptor(authenticator, service_only_methods)),
        ("validation", ValidationInterceptor),
    ]
    return [Layered([make() for name, make in layers
                     if name not in leave_out and (metrics or name != "metrics")])]


@runtime_checkable
class HealthReporting(Protocol):
    """A background worker with a health of its own, reported by ``grpc.health.v1`` under
    ``health_name`` (an event bus consumer: ``cjo.bus.<topic>``) while the service as a whole
    (``""``) stays SERVING: a probe or an operator can watch it without the pod leaving its
    Service's endpoints. Found among :attr:`ServiceApp.background` (the objects whose bound
    methods the jobs are)."""

    health_name: str

    def healthy(self) -> bool: ...


@dataclass
class Servicer:
    """A servicer object, its ``add_XServicer_to_server`` function and full service name."""

    instance: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    full_name: str


@dataclass
class ServiceApp:
    """Everything a service's bootstrap wires together for :func:`serve`."""

    settings: ServiceSettings
    db: Database
    servicers: Sequence[Servicer]
    authenticator: Authenticator
    service_only_methods: Collection[str] = ()
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    migrate: Callable[[], None] = lambda: None
    # Further one-off subcommands (``python -m cjo_<service> <name> [args]``): each takes its
    # arguments and returns the process's exit code.
    commands: Mapping[str, Callable[[list[str]], int]] = field(default_factory=dict)
    on_stop: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # Queue depths for operators (outbox, due work, consumer lag), read from the database by
    # cheap cached queries when Prometheus scrapes (cjo_platform.metrics).
    gauges: QueueGauges | None = None


async def serve(app: ServiceApp, *, stop: asyncio.Event | None = None,
                handle_signals: bool = True,
                on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or until ``stop`` is set), then drain and clean up.

    ``on_ready`` receives the bound port once health says SERVING (tests bind port 0).
    """
    settings = app.settings
    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    if settings.auto_migrate:
        await app.db.run(app.migrate)

    if app.gauges is not None and settings.metrics_port:
        app.on_stop.append(observe_queues(settings.service, app.gauges))
    server = grpc.aio.server(
        interceptors=server_interceptors(settings.service, app.authenticator,
                                         app.service_only_methods,
                                         metrics=bool(settings.metrics_port),
                                         slow_rpc_ms=settings.log_slow_rpc_ms),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for servicer in app.servicers:
        servicer.add_to_server(servicer.instance, server)
    reflection.enable_server_reflection(
        [s.full_name for s in app.servicers] + [health.SERVICE_NAME, reflection.SERVICE_NAME],
        server)
    port = server.add_insecure_port(settings.address)
    await server.start()

    await app.db.run(app.db.ping)  # SERVING only once the database answers
    for name in ["", *(s.full_name for s in app.servicers)]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", address=f"{settings.host}:{port}",
             event_loop=event_loop.running_loop_kind(),
             database=app.db.engine.url.render_as_string(hide_password=True))
    if on_ready is not None:
        on_ready(port)

    tasks = [asyncio.create_task(job(), name=job.__name__) for job in app.background]
    reporting = [part for part in (getattr(job, "__self__", None) for job in app.background)
                 if isinstance(part, HealthReporting)]
    if reporting:
        tasks.append(asyncio.create_task(_report_health(health_servicer, reporting),
                                         name="report_health"))
    stopper = asyncio.create_task(stop.wait())
    watched = {stopper, *tasks}
    done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    for task in done - {stopper}:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task died; stopping", task=task.get_name(),
                      exc_info=task.exception())

    log.info("draining", grace_seconds=settings.shutdown_grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_seconds)
    for task in tasks:
        task.cancel()
    if tasks:
        # Workers may finish what they started (a send under way), but never hold the exit.
        _, stuck = await asyncio.wait(
            tasks, timeout=settings.shutdown_grace_seconds + BACKGROUND_STOP_SECONDS)
        for task in stuck:
            log.error("background task ignored cancellation", task=task.get_name(),
                      stack="".join(_format_stack(task)))
    stopper.cancel()
    for hook in app.on_stop:
        await hook()
    app.db.dispose()
    shutdown_tracing()
    log.info("stopped")


class Build(Protocol):
    """A service's ``bootstrap.build``."""

    def __call__(self, settings: ServiceSettings, env: Env, clock: Clock | None = None,
                 ) -> ServiceApp: ...


def service_clock(settings: ServiceSettings) -> Clock:
    """The wall clock, or in an end-to-end test (CJO_TEST_CLOCK_FILE with CJO_ENV=test, which
    config enforces) the wall clock plus the offset the test writes to that file."""
    if settings.test_clock_file is None:
        return SystemClock()
    log.warning("TEST CLOCK IN USE: time is the wall clock plus the offset in a file; "
                "for tests only, never in production", file=str(settings.test_clock_file),
                environment=settings.environment)
    return FileOffsetClock(settings.test_clock_file)


def main(service: str, build: Build, argv: Sequence[str] | None = None) -> None:
    """``python -m cjo_<service> [serve|migrate|<a command of the app>] [args]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "serve"
    env = Env()  # the app's commands are known once it is built, so usage is checked after
    try:
        settings = load_service_settings(service, env)
        loop = event_loop.event_loop_setting(env)
        env.check()
        configure_logging(service, fmt=settings.log_format, level=settings.log_level)
        configure_tracing(service)
        app = build(settings, env, clock=service_clock(settings))
        env.check()
    except ConfigError as exc:
        print(f"cjo-{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    warn_unused(service, env.unused(service), log)
    if command == "migrate":
        app.migrate()
        log.info("migrated")
        app.db.dispose()
        return
    if command == "serve" and not _serve_metrics(service, settings, env):
        app.db.dispose()
        raise SystemExit(2)
    if command != "serve":
        run = app.commands.get(command)
        if run is None:
            app.db.dispose()
            _usage(service, app.commands)
        try:
            code = run(args[1:])
        except Exception:
            # Apart from the command's own codes: a script must tell "it failed" (database
            # unreachable, lock timeout) from what the command reports.
            log.exception("command failed", command=command)
            code = COMMAND_FAILED
        finally:
            app.db.dispose()
        raise SystemExit(code)
    # Every service's hot paths build many short-lived containers per item (rows, messages,
    # dicts): the cyclic collector at its default threshold costs 13-20% of a process's CPU
    # there and finds almost nothing (cjo_platform.collector).
    collect_rarely()
    event_loop.run(_serve_process(app), loop)


def _serve_metrics(service: str, settings: ServiceSettings, env: Env) -> bool:
    """Start /metrics. A port chosen in CJO_METRICS_PORT that cannot be had stops the process
    (exit 2); the default one taken (a second service on one machine) only costs the metrics."""
    try:
        port = configure_metrics(service, settings.host, settings.metrics_port)
    except OSError as exc:
        if env.raw("CJO_METRICS_PORT"):
            print(f"cjo-{service}: CJO_METRICS_PORT={settings.metrics_port}: cannot listen "
                  f"on {settings.host}:{settings.metrics_port}: {exc}", file=sys.stderr)
            return False
        log.warning("metrics port in use; this process serves no metrics (set "
                    "CJO_METRICS_PORT to a free port, or 0)", port=settings.metrics_port,
                    error=str(exc))
        return True
    if port is not None:
        log.info("metrics", address=f"http://{settings.host}:{port}/metrics")
    return True


def _usage(service: str, commands: Collection[str]) -> NoReturn:
    names = "|".join(["serve", "migrate", *commands])
    print(f"usage: python -m cjo_{service} [{names}]", file=sys.stderr)
    raise SystemExit(2)


async def _serve_process(app: ServiceApp) -> None:
    try:
        await serve(app)
    finally:
        # Client channels are per process (shared by everything in it), so they close with it.
        await close_channels()
        shutdown_metrics()


async def _report_health(servicer: health.aio.HealthServicer,
                         parts: Sequence[HealthReporting]) -> None:
    """Keep each part's ``grpc.health.v1`` status up to date (SERVING or NOT_SERVING)."""
    shown: dict[str, bool] = {}
    while True:
        for part in parts:
            healthy = part.healthy()
            if shown.get(part.health_name) != healthy:
                shown[part.health_name] = healthy
                await servicer.set(part.health_name, health_pb2.HealthCheckResponse.SERVING
                                   if healthy else health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(HEALTH_REPORT_SECONDS)


def _format_stack(task: asyncio.Task[Any]) -> list[str]:
    import io

    out = io.StringIO()
    task.print_stack(file=out)
    return [out.getvalue()]
