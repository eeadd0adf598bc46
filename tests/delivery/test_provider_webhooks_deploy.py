"""The engagement listener, which real providers post their reports to, is in the Kubernetes
manifests: delivery's pods run it on a fixed port, Service cjo-tracking reaches it, and every
overlay gives it the public URL its links and status webhook URLs are made from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cjo_delivery.bootstrap import load_tracking
from cjo_platform.config import Env, load_service_settings

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"
OVERLAYS = BASE.parent / "overlays"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def literals(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for generator in documents(path)[0].get("configMapGenerator", []):
        if generator["name"] == "cjo-config":
            found.update(literal.split("=", 1) for literal in generator["literals"])
    return found


def test_the_tracking_listener_is_deployed_and_reachable() -> None:
    [deployment] = [d for d in documents(BASE / "delivery.yaml") if d["kind"] == "Deployment"]
    [server] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in server["env"]}
    assert env["CJO_DELIVERY_TRACKING_PORT"] == "8080"
    assert env["CJO_DELIVERY_TRACKING_URL"] == {"configMapKeyRef": {
        "name": "cjo-config", "key": "CJO_DELIVERY_TRACKING_URL"}}

    [service] = documents(BASE / "tracking.yaml")
    assert "tracking.yaml" in documents(BASE / "kustomization.yaml")[0]["resources"]
    assert service["kind"] == "Service" and service["metadata"]["name"] == "cjo-tracking"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]

    base_url = literals(BASE / "kustomization.yaml")["CJO_DELIVERY_TRACKING_URL"]
    dev_url = literals(OVERLAYS / "dev" / "kustomization.yaml")["CJO_DELIVERY_TRACKING_URL"]
    for url in (base_url, dev_url):
        # What the pod's settings make of it: accepted, and the URL links are built on.
        environ = Env({"CJO_DELIVERY_TRACKING_PORT": env["CJO_DELIVERY_TRACKING_PORT"],
                       "CJO_DELIVERY_TRACKING_URL": url, "CJO_SERVICE_TOKEN": "x" * 32})
        tracking = load_tracking(load_service_settings("delivery", environ), environ)
        environ.check()
        assert tracking is not None and tracking[1] == 8080
        assert tracking[0].status_url("ws", "p1").startswith(f"{url}/s/")
