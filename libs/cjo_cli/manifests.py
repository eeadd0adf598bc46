"""Reading `cjo apply -f` input: YAML documents `{kind, spec}` (several per file, `---` apart),
and plain journey files (cjo_orchestration.journeyfile's form, no `kind`) as Journey drafts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cjo_orchestration import journeyfile

KINDS = ("Settings", "Snippet", "Content", "Segment", "Provider", "Action", "DecisionPoint",
         "Journey")
"""Every kind `apply` knows, in the order it applies them: what others refer to goes first
(snippets before the content that includes them, content before journeys and actions)."""


class ManifestError(ValueError):
    """A file that is not a manifest; the message names the file and document."""


@dataclass
class Manifest:
    kind: str
    spec: dict[str, Any]
    source: str  # file and document number, for messages
    publish: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ManifestError(f"{path}: no such file or directory")
    return sorted(p for p in path.rglob("*")
                  if p.suffix in (".yaml", ".yml") and "node_modules" not in p.parts)


def load(path: Path) -> list[Manifest]:
    """Every manifest under ``path``, in apply order (by kind, then by file)."""
    found: list[Manifest] = []
    for file in _files(path):
        try:
            docs = [d for d in yaml.safe_load_all(file.read_text(encoding="utf-8"))
                    if d is not None]
        except (OSError, yaml.YAMLError) as exc:
            raise ManifestError(f"{file}: {exc}") from None
        for number, doc in enumerate(docs, 1):
            source = f"{file}" + (f" (document {number})" if len(docs) > 1 else "")
            if not isinstance(doc, dict):
                raise ManifestError(f"{source}: a document must be a mapping")
            if "kind" not in doc:
                # A journey file as cjo_orchestration.journeyfile reads it.
                try:
                    journeyfile.parse(json.dumps(doc), suffix=".json")
                except journeyfile.JourneyFileError as exc:
                    raise ManifestError(f"{source}: no `kind`, and not a journey: {exc}") from None
                found.append(Manifest("Journey", doc, source))
                continue
            kind = doc["kind"]
            if kind not in KINDS:
                raise ManifestError(f"{source}: kind {kind!r} is none of {', '.join(KINDS)}")
            spec = doc.get("spec")
            if not isinstance(spec, dict):
                raise ManifestError(f"{source}: `spec` must be a mapping")
            unknown = set(doc) - {"kind", "spec", "publish"}
            if unknown:
                raise ManifestError(f"{source}: unknown keys {sorted(unknown)}")
            found.append(Manifest(kind, spec, source, publish=bool(doc.get("publish", False))))
    return sorted(found, key=lambda m: KINDS.index(m.kind))
