"""How a file's fields compare with what a server stores: what `cjo apply` and
`cjo_orchestration.journeyfile apply` change (and whether they change anything at all)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _shape(stored: Any, desired: Any, defaults: Mapping[str, Any], path: str = "") -> Any:
    """``stored`` as the manifest would see it: where the manifest sets a mapping, the stored
    keys it does not set are kept only when they hold something other than the service's
    default (they are then removed by the apply); defaults the service fills in are no
    difference (a send node's failure policy). A key the manifest sets to the service's
    default is no difference either where the stored object leaves it out (the service does
    not keep a default it is sent: a zero re-entry cooldown)."""
    if isinstance(desired, dict) and isinstance(stored, dict):
        shaped = {}
        for k, v in stored.items():
            here = f"{path}.{k}" if path else k
            if k in desired:
                shaped[k] = _shape(v, desired[k], defaults, here)
            elif defaults.get(here, _NO_DEFAULT) != v:
                shaped[k] = v
        for k, v in desired.items():
            if k not in stored and defaults.get(f"{path}.{k}" if path else k, _NO_DEFAULT) == v:
                shaped[k] = v
        return shaped
    if isinstance(desired, list) and isinstance(stored, list) and len(desired) == len(stored):
        return [_shape(s, d, defaults, path) for s, d in zip(stored, desired, strict=True)]
    return stored


_NO_DEFAULT = object()


def compare(stored: dict[str, Any], desired: dict[str, Any],
            defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The stored object as the manifest would see it (for the diff), and the top-level fields
    to write: those the manifest sets to something else, and those it leaves out that the
    server holds a non-default value for (to clear them)."""
    before = _shape(stored, desired, defaults)
    paths = sorted(k for k in {*desired, *before} if before.get(k) != desired.get(k))
    return before, paths
