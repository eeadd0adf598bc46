"""`cjo apply`: make the server hold what the manifests say, touching only what differs."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import json_format

from cjo_cli.compare import compare, held_secrets, masked
from cjo_cli.manifests import Manifest
from cjo_cli.resources import (
    KIND_TABLE,
    SETTINGS_PARTS,
    Retired,
    request_id,
    settable,
    stored_etag,
)
from cjo_client import Client


@dataclass
class Outcome:
    kind: str
    name: str
    action: str  # "created", "updated", "unchanged", "published"
    diff: str = ""
    note: str = ""  # something to tell the person, e.g. the id a new journey got


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True) if data else ""


def _diff(label: str, before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    # Secrets are masked: a dry run's output goes to terminals and CI logs.
    lines = difflib.unified_diff(
        _yaml(masked(before)).splitlines(keepends=True),
        _yaml(masked(after)).splitlines(keepends=True),
        fromfile=f"{label} (server)" if before is not None else "/dev/null",
        tofile=f"{label} (manifest)")
    return "".join(lines)


def _normalise(message_type: Any, spec: dict[str, Any]) -> dict[str, Any]:
    # Through the proto and back, so `3600s` and `1h`-like spellings, enum numbers and default
    # values compare as the server will return them.
    message = message_type()
    json_format.ParseDict(spec, message)
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return data


async def apply(client: Client, manifests: list[Manifest], *, dry_run: bool = False,
                recreate: bool = False, rotate_secrets: bool = False,
                report: Callable[[Outcome], None] = lambda _: None) -> list[Outcome]:
    """``recreate``: a manifest naming an archived journey creates a new one (else that is an
    error: the archive was somebody's decision). ``rotate_secrets``: every secret a manifest
    sets is sent, even one the server holds already (they are never read back, so a secret
    changed alone in a manifest is otherwise not seen: each gets a note saying so)."""
    outcomes: list[Outcome] = []
    for manifest in manifests:
        for outcome in await _apply_one(client, manifest, dry_run, recreate, rotate_secrets):
            report(outcome)
            outcomes.append(outcome)
    return outcomes


async def _apply_one(client: Client, m: Manifest, dry_run: bool,
                     recreate: bool = False, rotate: bool = False) -> list[Outcome]:
    if m.kind == "Settings":
        return await _apply_settings(client, m, dry_run, rotate)
    kind = KIND_TABLE[m.kind]
    key = kind.key_of(m.spec)
    if not key:
        raise ValueError(f"{m.source}: a {m.kind} needs `{kind.key_field}`")
    spec = dict(m.spec)
    # The service-given id names the object; it is not a field to set.
    given_id = str(spec.pop(kind.id_field, "")) if kind.id_field else ""
    desired = _normalise(kind.message, spec)
    # What a create replaces goes into its request id: a --recreate of an archived journey
    # whose manifest has not changed since its first create must not replay that create (the
    # server would answer with the archived journey and nothing new would exist).
    replaces: tuple[str, ...] = ()
    try:
        stored = await kind.find(client, m.spec)
    except Retired as exc:
        if not recreate:
            raise ValueError(f"{m.source}: {exc}") from None
        retired = exc.stored  # (its args hold the message)
        replaces = (str(getattr(retired, kind.id_field or "name", "")), stored_etag(retired))
        stored, given_id = None, ""
    publish = kind.publish is not None and (kind.always_publish or m.publish)
    label = f"{m.kind}/{key}"
    # Secrets are never read back, so they cannot be compared: a manifest that has any sends
    # them on every apply (a rotated password then takes effect; the diff says so).
    secrets = desired.pop("secrets", None) if m.kind == "Provider" else None
    if stored is None:
        diff = _diff(label, None, desired) + _SECRETS_NOTE * bool(secrets)
        note = ""
        if not dry_run:
            rid = request_id(m.kind, key, m.spec, *replaces)
            created = await kind.create(client, kind.parse(spec), rid)
            if await kind.get_by_id(client, kind.resource_id(created)) is None:
                # The service answers a request id it has seen with its first answer (for
                # days): the object that create made was deleted since, so the same manifest
                # is a new change and must make a new one (and publish that one).
                rid = request_id(rid, created.name, stored_etag(created))
                created = await kind.create(client, kind.parse(spec), rid)
            if publish and kind.publish is not None:
                await kind.publish(client, created, rid)
            if kind.id_field and not given_id:
                new_id = getattr(created, kind.id_field)
                note = (f"{kind.id_field} {new_id}: add `{kind.id_field}: {new_id}` to "
                        f"{m.source} to keep it through a rename")
        return [Outcome(m.kind, key, "created", diff, note)]
    current = settable(stored)
    before, paths = compare(current, desired, kind.defaults)
    paths, note = _secrets(current, desired, paths, rotate)
    if secrets:
        paths.append("secrets")
    to_publish = publish and (bool(paths) or kind.unpublished(stored))
    if publish and kind.paused(stored):
        # Publishing resumes: an operator's pause stands until they resume it.
        to_publish = False
        note = "; ".join(n for n in (note, "paused; not published (resume it to publish)") if n)
    if not paths and not to_publish:
        return [Outcome(m.kind, key, "unchanged", note=note)]
    shown = [p for p in paths if p != "secrets"]
    diff = _diff(label, before, desired) if shown else ""
    if secrets:
        diff += _SECRETS_NOTE
    if not dry_run:
        rid = request_id(m.kind, key, m.spec, stored_etag(stored))
        updated = stored
        if paths:
            updated = await kind.update(client, stored, kind.parse(spec), paths, rid)
        if to_publish and kind.publish is not None:
            await kind.publish(client, updated, rid)
    return [Outcome(m.kind, key, "updated" if paths else "published", diff, note)]


_SECRETS_NOTE = "secrets: (not compared; sent again)\n"


def _secrets(current: dict[str, Any], desired: dict[str, Any], paths: list[str],
             rotate: bool) -> tuple[list[str], str]:
    """``paths`` with the fields of the secrets the server holds when ``rotate`` (a rotated
    secret is sent), else a note naming those not sent: never silently left as they were."""
    held = [p for p in held_secrets(desired, current) if p.split(".", 1)[0] not in paths]
    if rotate:
        return sorted({*paths, *(p.split(".", 1)[0] for p in held)}), ""
    return paths, "; ".join(f"{p} not compared (the server holds one); --rotate-secrets sends it"
                            for p in held)


async def _apply_settings(client: Client, m: Manifest, dry_run: bool,
                          rotate: bool = False) -> list[Outcome]:
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
        before, paths = compare(current, desired, part.defaults)
        paths, note = _secrets(current, desired, paths, rotate)
        if not paths:
            outcomes.append(Outcome("Settings", section, "unchanged", note=note))
            continue
        diff = _diff(f"Settings/{section}", before, desired)
        if not dry_run:
            merged = part.message()
            merged.CopyFrom(stored)
            for path in paths:
                merged.ClearField(path)
            json_format.ParseDict({p: desired[p] for p in paths if p in desired}, merged)
            await part.put(client, merged, paths,
                           request_id("Settings", section, desired, current))
        outcomes.append(Outcome("Settings", section, "updated", diff, note))
    return outcomes
