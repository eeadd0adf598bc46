"""The Kubernetes manifests are valid Kubernetes objects: the base and every overlay, rendered,
pass the strict OpenAPI schemas of the oldest Kubernetes deploy/README.md supports and of the
newest one kubernetes-validate knows (strict: a misspelt or misplaced field is an error, where
`kubectl apply` would drop it or fail only on a real cluster). The schemas ship inside the
kubernetes-validate package, so nothing is fetched."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize_render import render

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir()
                  if (p / "kustomization.yaml").is_file())


def supported_versions() -> list[str]:
    """The version the deploy README promises, and the newest schemas at hand."""
    readme = (REPO / "deploy" / "README.md").read_text()
    found = re.search(r"need Kubernetes (\d+\.\d+) or newer", readme)
    assert found, "deploy/README.md names the oldest Kubernetes the manifests need"
    return sorted({f"{found.group(1)}.0", kubernetes_validate.latest_version()})


def problems(documents: list[dict[str, Any]], version: str) -> list[str]:
    found = []
    for document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.path)
            found.append(f"{document['kind']} {document['metadata']['name']} at {where}: "
                         f"{error.message}")
    return found


@pytest.mark.parametrize("version", supported_versions())
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_to_valid_kubernetes_objects(overlay: str, version: str) -> None:
    documents = render(K8S / "overlays" / overlay)
    assert {d["kind"] for d in documents} >= {"Deployment", "Service", "ConfigMap"}
    assert problems(documents, version) == []


def test_the_base_alone_is_valid() -> None:
    documents = render(K8S / "base")
    assert problems(documents, supported_versions()[0]) == []


def test_a_misspelt_field_fails_the_check(tmp_path: Path) -> None:
    """Guards the guard: strict validation really catches what kubectl would quietly drop."""
    shutil.copytree(K8S, tmp_path / "k8s")
    identity = tmp_path / "k8s" / "base" / "identity.yaml"
    text = identity.read_text()
    assert "readinessProbe:" in text
    identity.write_text(text.replace("readinessProbe:", "readynessProbe:", 1))
    found = problems(render(tmp_path / "k8s" / "overlays" / "production"),
                     supported_versions()[0])
    assert len(found) == 1 and "Deployment cjo-identity" in found[0], found
    assert "readynessProbe" in found[0]


def test_a_wrong_type_fails_the_check(tmp_path: Path) -> None:
    shutil.copytree(K8S, tmp_path / "k8s")
    pdb = tmp_path / "k8s" / "overlays" / "production" / "pdb.yaml"
    pdb.write_text(pdb.read_text().replace("minAvailable: 1", "minAvailable: [1]", 1))
    found = problems(render(tmp_path / "k8s" / "overlays" / "production"),
                     supported_versions()[0])
    assert found and "PodDisruptionBudget" in found[0], found


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_python_rendering_matches_kubectl(overlay: str) -> None:
    """The renderer the checks rely on says what kustomize says (less generator hashes)."""
    printed = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
                             capture_output=True, text=True, check=True).stdout
    by_kubectl = [d for d in yaml.safe_load_all(printed) if d]
    generated = {d["metadata"]["name"] for d in render(K8S / "overlays" / overlay)
                 if d["kind"] in ("ConfigMap", "Secret")}

    def unhashed(value: Any) -> Any:
        # cjo-config-2f7fc422tg -> cjo-config, wherever a generated name is referenced.
        if isinstance(value, dict):
            return {k: unhashed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [unhashed(v) for v in value]
        if isinstance(value, str):
            for name in generated:
                if re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", value):
                    return name
        return value

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(map(unhashed, by_kubectl), key=key) == sorted(
        render(K8S / "overlays" / overlay), key=key)
