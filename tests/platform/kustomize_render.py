"""Renders deploy/k8s's kustomizations in Python, for the manifest tests.

kustomize (or `kubectl kustomize`) is not something `make install` can bring: it comes from no
registry the build machines reach. This covers the part of kustomize the manifests use --
resources (files and directories), namespace, images, replicas, ConfigMap and Secret generators
(with `behavior: merge`) and strategic-merge patches by kind and name -- and refuses any other
field, so a kustomization using something new fails here loudly instead of being checked half
rendered. Generated names carry no content hash (the schemas do not care); where kubectl is
installed, a test compares the two renderings.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Document = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "images", "replicas",
             "configMapGenerator", "secretGenerator", "patches"}
# Kinds that live outside namespaces, among those the manifests could use.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
                  "StorageClass", "CustomResourceDefinition", "PersistentVolume"}


def load_documents(path: Path) -> list[Document]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(directory: Path) -> list[Document]:
    """The documents `kubectl kustomize directory` would print, less the hash suffixes."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml uses {sorted(unknown)}: teach "
                         "tests/platform/kustomize_render.py what they do")
    documents: list[Document] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        documents.extend(render(path) if path.is_dir() else load_documents(path))
    for generator in kustomization.get("configMapGenerator", []):
        _generate(documents, "ConfigMap", generator)
    for generator in kustomization.get("secretGenerator", []):
        _generate(documents, "Secret", generator)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only `patches: - path: FILE` is rendered here")
        for change in load_documents(directory / patch["path"]):
            target = _find(documents, change["kind"], change["metadata"]["name"])
            merged = _merge(target, change)
            target.clear()
            target.update(merged)
    for image in kustomization.get("images", []):
        for document in documents:
            for container in _containers(document):
                name, _, tag = container.get("image", "").partition(":")
                if name == image["name"]:
                    reference = image.get("newName", name)
                    if "digest" in image:
                        container["image"] = f"{reference}@{image['digest']}"
                    else:
                        container["image"] = f"{reference}:{image.get('newTag', tag or 'latest')}"
    for replicas in kustomization.get("replicas", []):
        _find(documents, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED:
                document["metadata"]["namespace"] = kustomization["namespace"]
    return documents


def _find(documents: list[Document], kind: str, name: str) -> Document:
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise ValueError(f"no {kind} {name} to change")


def _generate(documents: list[Document], kind: str, generator: dict[str, Any]) -> None:
    if set(generator) - {"name", "behavior", "literals", "options", "type"}:
        raise ValueError(f"generator {generator['name']}: only literals are rendered here")
    data = dict(literal.split("=", 1) for literal in generator.get("literals", []))
    if kind == "Secret":
        data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    if generator.get("behavior") == "merge":
        _find(documents, kind, generator["name"]).setdefault("data", {}).update(data)
        return
    document: Document = {"apiVersion": "v1", "kind": kind,
                          "metadata": {"name": generator["name"]}, "data": data}
    labels = generator.get("options", {}).get("labels")
    if labels:
        document["metadata"]["labels"] = dict(labels)
    if kind == "Secret":
        document["type"] = generator.get("type", "Opaque")
    documents.append(document)


def _merge(base: Any, change: Any) -> Any:
    """A strategic merge as Kubernetes does it for the fields the patches touch: maps merge
    key by key, lists of named items (containers, env, volumes, ports) merge by name, other
    lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(change, dict):
        merged = copy.deepcopy(base)
        for key, value in change.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (isinstance(base, list) and isinstance(change, list)
            and all(isinstance(i, dict) and "name" in i for i in base + change)):
        # New items go first, in the patch's order, as kustomize puts them.
        merged_list = copy.deepcopy(base)
        added = []
        for item in change:
            index = next((n for n, b in enumerate(merged_list) if b["name"] == item["name"]),
                         None)
            if index is None:
                added.append(copy.deepcopy(item))
            else:
                merged_list[index] = _merge(merged_list[index], item)
        return added + merged_list
    return copy.deepcopy(change)


def _containers(document: Document) -> list[dict[str, Any]]:
    pod = document.get("spec", {}).get("template", {}).get("spec", {})
    if document["kind"] == "CronJob":
        pod = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]
