"""`cjo apply`: make the server hold what the manifests say, touching only what differs."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import json_format

from cjo.orchestration.v1 import journey_pb2
from cjo_cli.manifests import Manifest
from cjo_cli.resources import KIND_TABLE, SETTINGS_PARTS, publish_journey, request_id, settable
from cjo_client import Client


@dataclass
class Outcome:
    kind: str
    name: str
    action: str  # "created", "updated", "unchanged", "published"
    diff: str = ""


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True) if data else ""


def _diff(label: str, before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    lines = difflib.unified_diff(
        _yaml(before).splitlines(keepends=True), _yaml(after).splitlines(keepends=True),
        fromfile=f"{label} (server)" if before is not None else "/dev/null",
        tofile=f"{label} (manifest)")
    return "".join(lines)


def _project(stored: Any, desired: Any) -> Any:
    """``stored`` cut to the shape of ``desired``: the server fills in defaults the manifest
    leaves out (a send node's failure policy), which are no difference."""
    if isinstance(desired, dict) and isinstance(stored, dict):
        return {k: _project(stored[k], v) for k, v in desired.items() if k in stored}
    if isinstance(desired, list) and isinstance(stored, list) and len(desired) == len(stored):
        return [_project(s, d) for s, d in zip(stored, desired, strict=True)]
    return stored


def _changed_fields(stored: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """Top-level fields the manifest sets to something else than the server holds."""
    return sorted(k for k, v in desired.items() if _project(stored.get(k), v) != v)


def _normalise(message_type: Any, spec: dict[str, Any]) -> dict[str, Any]:
    # Through the proto and back, so `3600s` and `1h`-like spellings, enum numbers and default
    # values compare as the server will return them.
    message = message_type()
    json_format.ParseDict(spec, message)
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return data


async def apply(client: Client, manifests: list[Manifest], *, dry_run: bool = False,
                report: Callable[[Outcome], None] = lambda _: None) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for manifest in manifests:
        for outcome in await _apply_one(client, manifest, dry_run):
            report(outcome)
            outcomes.append(outcome)
    return outcomes


async def _apply_one(client: Client, m: Manifest, dry_run: bool) -> list[Outcome]:
    if m.kind == "Settings":
        return await _apply_settings(client, m, dry_run)
    kind = KIND_TABLE[m.kind]
    key = kind.key_of(m.spec)
    if not key:
        raise ValueError(f"{m.source}: a {m.kind} needs `{kind.key_field}`")
    desired = _normalise(kind.message, m.spec)
    stored = await kind.get(client, key)
    # Secrets are never read back: a provider's are compared by name only.
    secrets = desired.pop("secrets", None) if m.kind == "Provider" else None
    if stored is None:
        diff = _diff(f"{m.kind}/{key}", None, desired)
        if not dry_run:
            assert kind.create is not None
            created = await kind.create(client, kind.parse(m.spec),
                                        request_id(m.kind, key, m.spec))
            if m.kind == "Journey" and m.publish:
                await publish_journey(client, created, request_id(m.kind, key, m.spec))
        return [Outcome(m.kind, key, "created", diff)]
    current = settable(stored)
    before = {k: _project(current.get(k), v) for k, v in desired.items()}
    paths = _changed_fields(current, desired)
    if secrets and not set(secrets) <= set(getattr(stored, "secret_keys", [])):
        paths.append("secrets")
    if m.kind == "Content" and getattr(stored, "latest_version", 1) == 0 and not paths:
        # Applied content is published; a draft left unpublished is a change to make.
        if not dry_run:
            await kind.update(client, stored, kind.parse(m.spec), [],
                              request_id(m.kind, key, m.spec, stored_etag(stored)))
        return [Outcome(m.kind, key, "published")]
    publish = (m.kind == "Journey" and m.publish
               and getattr(stored, "state", 0) != journey_pb2.JOURNEY_STATE_ACTIVE)
    if not paths and not publish:
        return [Outcome(m.kind, key, "unchanged")]
    diff = _diff(f"{m.kind}/{key}", {k: v for k, v in before.items() if v is not None},
                 desired) if paths else ""
    if not dry_run:
        rid = request_id(m.kind, key, m.spec, stored_etag(stored))
        updated = stored
        if paths:
            updated = await kind.update(client, stored, kind.parse(m.spec), paths, rid)
        if m.kind == "Journey" and m.publish:
            await publish_journey(client, updated, rid)
    return [Outcome(m.kind, key, "updated" if paths else "published", diff)]


def stored_etag(stored: Any) -> str:
    return str(getattr(stored, "etag", "")) or str(getattr(stored, "update_time", ""))


async def _apply_settings(client: Client, m: Manifest, dry_run: bool) -> list[Outcome]:
    outcomes: list[Outcome] = []
    unknown = set(m.spec) - set(SETTINGS_PARTS)
    if unknown:
        raise ValueError(f"{m.source}: Settings sections are {', '.join(SETTINGS_PARTS)}; "
                         f"not {', '.join(sorted(unknown))}")
    for section, part in SETTINGS_PARTS.items():
        if section not in m.spec:
            continue
        desired = _normalise(part.message, m.spec[section])
        stored = await part.get(client)
        current = settable(stored)
        paths = _changed_fields(current, desired)
        if not paths:
            outcomes.append(Outcome("Settings", section, "unchanged"))
            continue
        diff = _diff(f"Settings/{section}",
                     {k: _project(current[k], v) for k, v in desired.items() if k in current},
                     desired)
        if not dry_run:
            merged = part.message()
            merged.CopyFrom(stored)
            for path in paths:
                merged.ClearField(path)
            json_format.ParseDict({p: desired[p] for p in paths}, merged)
            await part.put(client, merged, paths,
                           request_id("Settings", section, desired, current))
        outcomes.append(Outcome("Settings", section, "updated", diff))
    return outcomes
