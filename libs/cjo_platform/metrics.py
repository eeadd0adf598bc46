"""OpenTelemetry metrics for operators, scraped by Prometheus from each process.

Two kinds: what every RPC records as it finishes (a latency histogram per method and status
code, whose count is the rate and, by code, the errors), and queue depths read from the
service's own database (outbox rows waiting, due steps, queued messages, consumer lag).

Queue depths are observable gauges. A scrape never pays for a heavy query: one round of cheap,
indexed queries runs at most every :data:`QUEUE_READ_SECONDS` and its answer is cached; a query
that fails (or times out) leaves its gauges out of that scrape and counts an error, while the rest
of the scrape, RPC metrics included, is served as usual.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from sqlalchemy import Table, func, select, text
from sqlalchemy.orm import Session

from cjo_platform.clock import Clock
from cjo_platform.db.engine import Database, utc
from cjo_platform.logging import get_logger
from cjo_platform.rpc.interceptors import Behavior, _Wrapping, around_each_call

log = get_logger(__name__)

# Queue depths are read at most this often, whatever the scrape interval or the number of
# scrapers; a value is at most this old.
QUEUE_READ_SECONDS = 5.0
# A probe's queries are cut off after this (PostgreSQL statement_timeout), so a slow database
# delays a scrape by at most this much.
QUEUE_QUERY_TIMEOUT_MS = 2000
# Seconds; from a cached read (~1 ms) to a batch that waits on a peer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)

METER = "cjo"

_server: Any = None
_provider: Any = None


def configure_metrics(service: str, host: str, port: int) -> int | None:
    """Install the process's meter provider with a Prometheus reader and serve ``/metrics`` on
    ``host:port`` (idempotent per process). Returns the bound port, or None when ``port`` is 0:
    then every instrument stays the API's no-op and costs next to nothing."""
    global _server, _provider
    if port == 0:
        return None
    if _server is not None:
        return int(_server.server_port)
    # Imported here: a process with metrics off never loads the exporter nor prometheus_client.
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    provider = meter_provider(service, [PrometheusMetricReader()])
    metrics.set_meter_provider(provider)
    server, _thread = start_http_server(port, addr=host)
    _server, _provider = server, provider
    return int(server.server_port)


def meter_provider(service: str, readers: Sequence[Any]) -> Any:
    """The meter provider of ``service``'s process, read by ``readers``. It offers no
    measurement to an exemplar reservoir: Prometheus' text format, the one way out, carries no
    exemplars, and the SDK's default (an exemplar for every measurement made in a sampled span:
    every RPC) was ~25% of the cost of recording an RPC's duration."""
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": f"cjo-{service}", "service.namespace": "cjo"})
    return MeterProvider(resource=resource, metric_readers=list(readers),
                         exemplar_filter=AlwaysOffExemplarFilter())


def shutdown_metrics() -> None:
    global _server, _provider
    if _server is not None:
        _server.shutdown()
        _server.server_close()
    if _provider is not None:
        _provider.shutdown()
    _server = _provider = None


def meter() -> Meter:
    return metrics.get_meter(METER)


# --- RPCs ------------------------------------------------------------------------------------

class MetricsInterceptor(_Wrapping):
    """Records each RPC's duration by method and final status code (``rpc_server_duration``).

    Outside the logging and error interceptors, so the code is the one the caller got; health
    checks and reflection are not wrapped (they would swamp the rate with probes)."""

    def __init__(self) -> None:
        super().__init__()
        self.duration = meter().create_histogram(
            "rpc.server.duration", unit="s",
            description="Duration of the RPCs this service answered, by method and status code",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)

    def decorate(self, behavior: Behavior, method: str, streaming: bool) -> Behavior:
        record = self.duration.record
        # One attribute dict per method and code, built once: recording then costs a lookup.
        attributes: dict[Any, Mapping[str, str]] = {}

        def finish(context: grpc.aio.ServicerContext, seconds: float) -> None:
            code = context.code() or grpc.StatusCode.OK
            labels = attributes.get(code)
            if labels is None:
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                labels = attributes[code] = {"rpc.method": method, "rpc.grpc.status_code": name}
            record(seconds, labels)

        return around_each_call(behavior, streaming, finish)


# --- queue depths ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Gauge:
    """One observable gauge a probe reports (OpenTelemetry name, e.g. ``cjo.outbox.rows``)."""

    name: str
    description: str
    unit: str = "1"


@dataclass(frozen=True)
class Reading:
    gauge: str
    value: float
    attributes: Mapping[str, str] = field(default_factory=dict)


# Reads some gauges in the service's database at ``now`` (its clock, so a test clock holds).
ReadQueues = Callable[[Session, datetime], Iterable[Reading]]


@dataclass(frozen=True)
class Probe:
    """A few cheap queries (indexed counts and minimums) and the gauges they answer."""

    name: str
    gauges: Sequence[Gauge]
    read: ReadQueues


class QueueGauges:
    """A service's probes over its database, read together at most every ``interval`` seconds."""

    def __init__(self, db: Database, clock: Clock, probes: Sequence[Probe],
                 interval: float = QUEUE_READ_SECONDS) -> None:
        self.db = db
        self.clock = clock
        self.probes = list(probes)
        self.interval = interval
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._readings: dict[str, list[Reading]] = {}

    @property
    def gauges(self) -> list[Gauge]:
        return [g for probe in self.probes for g in probe.gauges]

    def readings(self, gauge: str) -> list[Reading]:
        """The cached readings of ``gauge``, refreshed first when older than the interval."""
        with self._lock:  # one reader queries; concurrent scrapes wait for its answer
            stale = self._read_at is None or time.monotonic() - self._read_at >= self.interval
            if stale:
                self._readings = self._read()
                self._read_at = time.monotonic()
            return self._readings.get(gauge, [])

    def _read(self) -> dict[str, list[Reading]]:
        out: dict[str, list[Reading]] = {}
        now = self.clock.now()
        for probe in self.probes:
            try:
                with self.db.transaction() as session:
                    if not self.db.is_sqlite:
                        session.execute(text(
                            f"SET LOCAL statement_timeout = {QUEUE_QUERY_TIMEOUT_MS}"))
                    readings = list(probe.read(session, now))
            except Exception as exc:  # a failing probe costs its own gauges, not the scrape
                log.warning("queue gauges unreadable", probe=probe.name, error=repr(exc)[:300])
                _probe_errors().add(1, {"probe": probe.name})
                continue
            for reading in readings:
                out.setdefault(reading.gauge, []).append(reading)
        return out


class _Registry:
    """The process's observable gauges, each created once, observing every running service's
    :class:`QueueGauges` (in-process tests run several services in one process). Each reading
    is labelled with its service: several services have an outbox topic ``analytics.facts``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: list[tuple[str, QueueGauges]] = []
        self._created: set[str] = set()

    def add(self, service: str, source: QueueGauges) -> None:
        with self._lock:
            self._sources.append((service, source))
            for probe in source.probes:  # a series at 0 from the start, so increase() works
                _probe_errors().add(0, {"probe": probe.name})
            for gauge in source.gauges:
                if gauge.name not in self._created:
                    self._created.add(gauge.name)
                    meter().create_observable_gauge(
                        gauge.name, callbacks=[self._callback(gauge.name)], unit=gauge.unit,
                        description=gauge.description)

    def remove(self, service: str, source: QueueGauges) -> None:
        with self._lock:
            if (service, source) in self._sources:
                self._sources.remove((service, source))

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                sources = list(self._sources)
            return [Observation(r.value, {**r.attributes, "service": service})
                    for service, source in sources for r in source.readings(name)]
        return observe


_registry = _Registry()
_errors: Any = None


def _probe_errors() -> Any:
    global _errors
    if _errors is None:
        _errors = meter().create_counter(
            "cjo.metrics.probe.errors", unit="1",
            description="Queue-depth probes that failed (their gauges were left out)")
    return _errors


def observe_queues(service: str, source: QueueGauges) -> Callable[[], Coroutine[Any, Any, None]]:
    """Report ``source``'s gauges from now on; returns the hook that stops it."""
    _registry.add(service, source)

    async def stop() -> None:
        _registry.remove(service, source)
    return stop


# --- the outbox, every service's ------------------------------------------------------------

OUTBOX_ROWS = Gauge("cjo.outbox.rows", "Outbox rows waiting to be forwarded, by topic")
OUTBOX_AGE = Gauge("cjo.outbox.oldest.age", "Age of the oldest outbox row waiting, by topic",
                   "s")


def outbox_probe(outbox: Table) -> Probe:
    """Rows waiting and the oldest one's age per topic: one GROUP BY on the (topic, id) index."""

    def read(session: Session, now: datetime) -> Iterable[Reading]:
        query = (select(outbox.c.topic, func.count(), func.min(outbox.c.create_time))
                 .group_by(outbox.c.topic))
        for topic, count, oldest in session.execute(query).all():
            yield Reading(OUTBOX_ROWS.name, count, {"topic": topic})
            yield Reading(OUTBOX_AGE.name, age_seconds(now, oldest), {"topic": topic})

    return Probe("outbox", [OUTBOX_ROWS, OUTBOX_AGE], read)


def age_seconds(now: datetime, since: datetime | None) -> float:
    """Seconds from ``since`` to ``now`` (0 for nothing waiting or a time still ahead)."""
    if since is None:
        return 0.0
    return max(0.0, (now - utc(since)).total_seconds())
