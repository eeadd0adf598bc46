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


# Input-only fields (never read back, so never compared), at any depth, each with the
# output-only field beside it that says whether the server holds one (None: nothing says).
SECRETS: Mapping[str, str | None] = {"secret": "secret_set", "secrets": None}
_COMPANIONS = frozenset(c for c in SECRETS.values() if c)
MASK = "(secret)"


def _plain(data: Any) -> Any:
    """``data`` without its secrets and the output-only fields saying one is set (a mapping
    left empty by that goes too)."""
    if isinstance(data, list):
        return [_plain(v) for v in data]
    if not isinstance(data, dict):
        return data
    kept = {}
    for k, v in data.items():
        if k in SECRETS or k in _COMPANIONS:
            continue
        inner = _plain(v)
        if not (isinstance(v, dict) and v and not inner):
            kept[k] = inner
    return kept


def _unheld(desired: Any, stored: Any) -> bool:
    """Whether ``desired`` sets a secret the server says it does not hold."""
    if isinstance(desired, list):
        others = stored if isinstance(stored, list) and len(stored) == len(desired) else [
            None] * len(desired)
        return any(_unheld(d, o) for d, o in zip(desired, others, strict=True))
    if not isinstance(desired, dict):
        return False
    stored = stored if isinstance(stored, dict) else {}
    for k, v in desired.items():
        companion = SECRETS.get(k)
        if k in SECRETS:
            if companion and v not in (None, "") and not stored.get(companion):
                return True
        elif _unheld(v, stored.get(k)):
            return True
    return False


def held_secrets(desired: Any, stored: Any, path: str = "") -> list[str]:
    """The secrets ``desired`` sets that the server says it holds (dotted paths): not compared,
    so sent only with another change of their field, or by ``cjo apply --rotate-secrets``."""
    if not isinstance(desired, dict):
        return []
    stored = stored if isinstance(stored, dict) else {}
    found = []
    for k, v in desired.items():
        here = f"{path}.{k}" if path else k
        companion = SECRETS.get(k)
        if k in SECRETS:
            if companion and v not in (None, "") and stored.get(companion):
                found.append(here)
        else:
            found += held_secrets(v, stored.get(k), here)
    return found


def masked(data: Any) -> Any:
    """``data`` with every secret's value replaced by a mask, to be shown (a diff)."""
    if isinstance(data, list):
        return [masked(v) for v in data]
    if isinstance(data, dict):
        return {k: MASK if k in SECRETS and v not in (None, "") else masked(v)
                for k, v in data.items()}
    return data


def compare(stored: dict[str, Any], desired: dict[str, Any],
            defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The stored object as the manifest would see it (for the diff), and the top-level fields
    to write: those the manifest sets to something else, and those it leaves out that the
    server holds a non-default value for (to clear them). Secrets are never read back: they are
    no difference, nor are the output-only fields saying one is set, except that a field whose
    secret the server does not hold (``secret_set`` false) is written. So applying a manifest
    again changes nothing; a secret changed in the manifest is sent with any other change of
    its field."""
    plain_stored, plain_desired = _plain(stored), _plain(desired)
    before = _shape(plain_stored, plain_desired, defaults)
    paths = sorted(k for k in {*plain_desired, *before}
                   if before.get(k) != plain_desired.get(k)
                   or _unheld(desired.get(k), stored.get(k)))
    return before, paths
