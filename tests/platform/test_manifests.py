"""Every service in cjo_platform.config.DEFAULT_PORTS ships: the image imports and exposes it,
the Kubernetes base runs it like the others (same hardening, probes on its port, a migrate
initContainer), every pod can dial it (CJO_<SVC>_TARGET) and each overlay accounts for it.

A service added to the code but forgotten here would start under `make run` and then be missing
(or unreachable) in a cluster; these checks read the files, so they need no cluster.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cjo_platform.config import DEFAULT_METRICS_PORT, DEFAULT_PORTS, HTTP_PORTS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAYS = DEPLOY / "k8s" / "overlays"
SERVICES = list(DEFAULT_PORTS)


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def kind(path: Path, wanted: str) -> dict[str, Any]:
    (found,) = [d for d in documents(path) if d["kind"] == wanted]
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def config_literals() -> dict[str, str]:
    (config,) = [g for g in documents(BASE / "kustomization.yaml")[0]["configMapGenerator"]
                 if g["name"] == "cjo-config"]
    return dict(literal.split("=", 1) for literal in config["literals"])


@pytest.mark.parametrize("service", SERVICES)
def test_the_base_runs_every_service_on_its_port(service: str) -> None:
    manifest = BASE / f"{service}.yaml"
    assert manifest.is_file(), f"no Kubernetes manifest for {service}"
    assert f"{service}.yaml" in documents(BASE / "kustomization.yaml")[0]["resources"]
    port = DEFAULT_PORTS[service]

    deployment = kind(manifest, "Deployment")
    assert deployment["metadata"]["name"] == f"cjo-{service}"
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    (migrate,) = pod["initContainers"]
    assert server["args"] == [f"cjo_{service}"]
    assert migrate["args"] == [f"cjo_{service}", "migrate"]
    assert server["ports"] == [{"name": "grpc", "containerPort": port, "protocol": "TCP"},
                               {"name": "metrics", "containerPort": DEFAULT_METRICS_PORT,
                                "protocol": "TCP"}]
    for container in (server, migrate):
        env = env_of(container)
        assert env[f"CJO_{service.upper()}_PORT"] == str(port)
        assert env["OTEL_SERVICE_NAME"] == f"cjo-{service}"
        assert env["CJO_DATABASE_URL"] == {
            "secretKeyRef": {"name": "cjo-secrets", "key": "database-url"}}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == port, probe

    service_object = kind(manifest, "Service")
    assert service_object["metadata"]["name"] == f"cjo-{service}"
    assert service_object["spec"]["selector"] == {"app.kubernetes.io/name": f"cjo-{service}"}
    assert service_object["spec"]["ports"] == [
        {"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP"}]


@pytest.mark.parametrize("service", SERVICES)
def test_every_pod_is_hardened_and_bounded(service: str) -> None:
    pod = kind(BASE / f"{service}.yaml", "Deployment")["spec"]["template"]["spec"]
    # Service links would set CJO_<SVC>_PORT=tcp://..., which the settings refuse.
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in (*pod["initContainers"], *pod["containers"]):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert set(container["resources"]) == {"requests", "limits"}
        assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]


def test_every_pod_can_dial_every_service() -> None:
    literals = config_literals()
    for service, port in DEFAULT_PORTS.items():
        assert literals.get(f"CJO_{service.upper()}_TARGET") == f"cjo-{service}:{port}", service


def test_every_overlay_names_every_service() -> None:
    dev = documents(OVERLAYS / "dev" / "kustomization.yaml")[0]
    assert {r["name"] for r in dev["replicas"]} == {f"cjo-{s}" for s in SERVICES}

    production = documents(OVERLAYS / "production" / "kustomization.yaml")[0]
    scaled = {r["name"] for r in production["replicas"] if r["count"] > 1}
    # A scaled-out service keeps one pod through drains and spreads over nodes; a single replica
    # gets no PDB (minAvailable 1 on one pod would block every drain).
    budgets = {d["metadata"]["name"] for d in documents(OVERLAYS / "production" / "pdb.yaml")}
    spread = {d["metadata"]["name"] for d in documents(OVERLAYS / "production" / "spread.yaml")}
    assert budgets == scaled and spread == scaled
    assert "cjo-decisioning" in scaled, "decide nodes wait on decisioning: run two"


def test_the_image_holds_and_exposes_every_service() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    (imports,) = re.findall(r'RUN python -c "import ([^"]+)"', dockerfile)
    assert {name.strip() for name in imports.split(",")} == {f"cjo_{s}" for s in SERVICES}
    (exposed,) = re.findall(r"^EXPOSE (.+)$", dockerfile, flags=re.MULTILINE)
    assert {int(p) for p in exposed.split()} == {
        *DEFAULT_PORTS.values(), *HTTP_PORTS.values(), DEFAULT_METRICS_PORT}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_the_overlays_render(overlay: str) -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(OVERLAYS / overlay)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered.stdout) if d}
    for service in SERVICES:
        assert ("Deployment", f"cjo-{service}") in names
        assert ("Service", f"cjo-{service}") in names
