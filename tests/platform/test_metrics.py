"""Metrics for operators: every service process serves /metrics for Prometheus with its RPC rates,
errors and latencies and its queue depths; the Grafana dashboard reads only metrics that a
scrape has; the manifests let Prometheus find the endpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families

from cjo.identity.v1 import event_pb2, identity_service_pb2, identity_service_pb2_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_platform.config import DEFAULT_METRICS_PORT, DEFAULT_PORTS
from support import SERVICE_TOKEN, bearer, free_port, operator_environ

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "cjo-dashboard.json"
BASE = ROOT / "deploy" / "k8s" / "base"
EVENTS = 5
INGEST = "/cjo.identity.v1.IdentityService/IngestEvents"
GET_PROFILE = "/cjo.identity.v1.IdentityService/GetProfile"


@dataclass
class Process:
    service: str
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def scrape(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """``/metrics`` as {sample name: [(labels, value)]}, as Prometheus would read it."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as reply:
            assert reply.status == 200
            body = reply.read().decode()
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                samples.setdefault(s.name, []).append((dict(s.labels), s.value))
        return samples


def wait_serving(process: Process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{process.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.proc.poll() is not None:
                raise AssertionError(f"{process.service} exited:\n{process.log.read_text()}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{process.service} not ready:\n{process.log.read_text()}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Process]]:
    """Every service as its own process on SQLite, each with its own /metrics port. Peers
    point at a port nobody listens on, so what identity puts in its outbox stays there."""
    tmp = tmp_path_factory.mktemp("metrics")
    nowhere = f"127.0.0.1:{free_port()}"
    env = operator_environ()
    env.update({"CJO_SERVICE_TOKEN": SERVICE_TOKEN, "CJO_DATA_DIR": str(tmp),
                "CJO_LOG_FORMAT": "json", "CJO_SHUTDOWN_GRACE_SECONDS": "1",
                "PYTHONUNBUFFERED": "1",
                **{f"CJO_{name.upper()}_TARGET": nowhere for name in DEFAULT_PORTS}})
    processes: dict[str, Process] = {}
    try:
        for service in DEFAULT_PORTS:
            port, metrics_port = free_port(), free_port()
            log = tmp / f"{service}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", f"cjo_{service}"],
                env={**env, f"CJO_{service.upper()}_PORT": str(port),
                     "CJO_METRICS_PORT": str(metrics_port)},
                stdout=log.open("wb"), stderr=subprocess.STDOUT)
            processes[service] = Process(service, port, metrics_port, proc, log)
        for process in processes.values():
            wait_serving(process)
        yield processes
    finally:
        for process in processes.values():
            process.proc.terminate()
        for process in processes.values():
            process.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def identity_calls(services: dict[str, Process]) -> None:
    """A workspace, EVENTS events ingested (their outbox rows wait: orchestration is
    unreachable), one profile read that succeeds and one that fails with NOT_FOUND."""
    with grpc.insecure_channel(f"127.0.0.1:{services['identity'].port}") as channel:
        key = ws_grpc.WorkspaceServiceStub(channel).CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id="metrics", display_name="Metrics"),
            metadata=bearer(SERVICE_TOKEN)).api_key.secret
        identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        ingested = identity.IngestEvents(identity_service_pb2.IngestEventsRequest(events=[
            event_pb2.Event(message_id=f"m-{i}", type=event_pb2.EVENT_TYPE_TRACK,
                            name="signed_up", source="web",
                            identifiers=[event_pb2.Identifier(type="user_id", value=f"u-{i}")])
            for i in range(EVENTS)]), metadata=bearer(key))
        assert [r.status.code for r in ingested.results] == [0] * EVENTS
        identity.GetProfile(identity_service_pb2.GetProfileRequest(
            name=f"profiles/{ingested.results[0].profile_id}"), metadata=bearer(key))
        with pytest.raises(grpc.RpcError) as missing:
            identity.GetProfile(identity_service_pb2.GetProfileRequest(
                name="profiles/nobody"), metadata=bearer(key))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float | None:
    for got, v in samples.get(name, []):
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    return None


def test_rpcs_are_counted_by_method_and_code_with_their_latency(
        services: dict[str, Process], identity_calls: None) -> None:
    samples = services["identity"].scrape()
    count = "rpc_server_duration_seconds_count"
    assert value(samples, count, rpc_method=INGEST, rpc_grpc_status_code="OK") == 1
    assert value(samples, count, rpc_method=GET_PROFILE, rpc_grpc_status_code="OK") == 1
    assert value(samples, count, rpc_method=GET_PROFILE,
                 rpc_grpc_status_code="NOT_FOUND") == 1
    # A latency histogram: cumulative buckets ending in +Inf, which holds every call.
    buckets = [(float(labels["le"]), v) for labels, v in
               samples["rpc_server_duration_seconds_bucket"]
               if labels["rpc_method"] == INGEST]
    assert [le for le, _ in buckets][-1] == float("inf")
    assert buckets[-1][1] == 1 and len(buckets) > 10
    assert (value(samples, "rpc_server_duration_seconds_sum", rpc_method=INGEST) or 0) > 0
    # The health checks this test made to wait for SERVING are not in the rate.
    methods = {labels["rpc_method"] for labels, _ in samples[count]}
    assert not any("grpc.health" in m for m in methods)


def test_outbox_rows_waiting_show_with_their_age(
        services: dict[str, Process], identity_calls: None) -> None:
    deadline = time.monotonic() + 30
    while True:  # a scrape reads the queues at most every few seconds
        samples = services["identity"].scrape()
        rows = value(samples, "cjo_outbox_rows", topic="orchestration.events")
        if rows == EVENTS or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows == EVENTS, samples.get("cjo_outbox_rows")
    age = value(samples, "cjo_outbox_oldest_age_seconds", topic="orchestration.events")
    assert age is not None and age >= 0


def test_every_service_reports_its_queues(services: dict[str, Process]) -> None:
    """Due steps and consumer lag (orchestration), queued messages by state (delivery),
    unlearned outcomes (decisioning): present at 0 on an idle service, not missing."""
    orchestration = services["orchestration"].scrape()
    assert value(orchestration, "cjo_orchestration_steps_due") == 0
    assert value(orchestration, "cjo_orchestration_steps_lag_seconds") == 0
    assert value(orchestration, "cjo_inbox_events", source="identity") == 0
    delivery = services["delivery"].scrape()
    assert {labels["status"]: v for labels, v in delivery["cjo_delivery_messages"]} == {
        "queued": 0, "sending": 0, "deferred": 0, "held": 0}
    assert value(services["decisioning"].scrape(),
                 "cjo_decisioning_outcomes_unlearned") == 0
    assert value(services["identity"].scrape(), "cjo_identity_backfills", state="pending") == 0


PROMQL_WORDS = {"sum", "rate", "by", "le", "histogram_quantile", "max", "min", "without",
                "increase", "topk", "or", "vector", "on", "avg", "count", "irate", "s", "m"}


def panel_metrics(dashboard: dict[str, object]) -> set[str]:
    names: set[str] = set()
    panels = list(dashboard["panels"])  # type: ignore[call-overload]
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            # Label matchers, ranges, strings and grouping clauses name no metric.
            expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]|\b(by|without)\s*\([^)]*\)', " ",
                          target["expr"])
            names.update(w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
                         if w not in PROMQL_WORDS)
    return names


def test_every_dashboard_panel_reads_a_metric_the_services_serve(
        services: dict[str, Process], identity_calls: None) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    served: set[str] = set()
    for process in services.values():
        served.update(process.scrape())
    wanted = panel_metrics(dashboard)
    assert wanted, "the dashboard has no queries"
    assert wanted <= served, sorted(wanted - served)
    assert "rpc_server_duration_seconds_bucket" in wanted
    assert {"cjo_outbox_rows", "cjo_orchestration_steps_due", "cjo_delivery_messages",
            "cjo_inbox_events", "cjo_decisioning_outcomes_unlearned"} <= wanted


def test_the_manifests_let_prometheus_scrape_every_service() -> None:
    config = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    literals = dict(kv.split("=", 1) for kv in config["configMapGenerator"][0]["literals"])
    assert literals["CJO_METRICS_PORT"] == str(DEFAULT_METRICS_PORT)
    for service in DEFAULT_PORTS:
        deployment = next(d for d in yaml.safe_load_all((BASE / f"{service}.yaml").read_text())
                          if d["kind"] == "Deployment")
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", service
        assert annotations["prometheus.io/port"] == literals["CJO_METRICS_PORT"], service
        assert annotations["prometheus.io/path"] == "/metrics", service
        server = next(c for c in template["spec"]["containers"] if c["name"] == "server")
        ports = {p["name"]: p["containerPort"] for p in server["ports"]}
        assert ports["metrics"] == DEFAULT_METRICS_PORT, service


def test_an_rpc_duration_recorded_in_a_sampled_span_keeps_no_exemplar() -> None:
    # Prometheus' text format drops exemplars: offering each RPC's duration to a reservoir
    # (the SDK's default in a sampled span, i.e. on every traced call) was work for nothing.
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from cjo_platform.metrics import LATENCY_BUCKETS, meter_provider

    reader = InMemoryMetricReader()
    histogram = meter_provider("test", [reader]).get_meter("cjo").create_histogram(
        "rpc.server.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
    span = TracerProvider().get_tracer("test").start_span("call")
    assert span.get_span_context().trace_flags.sampled
    with trace.use_span(span, end_on_exit=True):
        histogram.record(0.002, {"rpc.method": INGEST, "rpc.grpc.status_code": "OK"})
    data = reader.get_metrics_data()
    assert data is not None
    [point] = [point for resource in data.resource_metrics for scope in resource.scope_metrics
               for metric in scope.metrics for point in metric.data.data_points]
    assert point.count == 1 and point.sum == 0.002
    assert list(point.exemplars) == []
