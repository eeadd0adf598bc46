"""What the model sees of a person and a situation: a sparse vector of hashed features.

Every feature is a string (``t:plan=gold``, ``s:vip``, ``c:hour=18``) hashed into a fixed
space of :data:`DIMENSIONS` coordinates, so a new trait value, segment or attribute needs no
schema and no vocabulary table shared between replicas. The hash is blake2b, stable across
processes and versions of Python (``hash()`` is salted per process, which would scatter a
persisted model's weights). Index 0 is the bias, present in every vector.

Values: the bias is 1 and every other feature is ``1 / sqrt(n)`` for the n other features, so
``||x||`` is about sqrt(2) whatever the number of traits a person has. The posterior's prior
precision (domain.model) is set against that norm: the prior's spread of a logit does not grow
with the number of traits, and a person with many traits is not explored harder than one with
few.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np

DIMENSIONS = 2**12
"""Size of the hashed feature space; index 0 is the bias."""

MAX_STRING_LENGTH = 64
"""Longer strings are cut: a free-text trait is not a feature worth a coordinate per value."""

MAX_LIST_ITEMS = 50
"""At most this many items of one list trait (segments, tags) become features."""

_COMPUTED = "computed"
_SEGMENTS = "segments"
# Nested parts of the profile view that describe reachability, not the person's taste.
_IGNORED = frozenset({"consent", "identifiers"})

_BIAS_INDICES = np.zeros(1, dtype=np.int64)
_BIAS_VALUES = np.ones(1, dtype=np.float64)


@dataclass(frozen=True)
class ContextView:
    """The decision's context as the model and CEL see it."""

    channel: str
    """"email", "sms", "push", "in_app", "webhook" or "" (any)."""
    time: datetime
    """Aware; read in UTC."""
    attributes: Mapping[str, Any]

    def cel(self) -> dict[str, Any]:
        """``context`` of eligibility and arbitration expressions."""
        utc = self.time.astimezone(UTC)
        return {"channel": self.channel, "hour": utc.hour, "weekday": utc.weekday(),
                "attributes": dict(self.attributes)}


@dataclass(frozen=True)
class Features:
    """A sparse feature vector: sorted unique int64 indices (0, the bias, always present) and
    their float64 values."""

    indices: np.ndarray
    values: np.ndarray

    def to_json(self) -> dict[str, list[Any]]:
        # tolist(): Python ints and floats in one C call, not a numpy scalar per element.
        return {"i": self.indices.tolist(), "v": self.values.tolist()}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Features:
        indices = np.asarray(data.get("i", ()), dtype=np.int64)
        values = np.asarray(data.get("v", ()), dtype=np.float64)
        if indices.shape != values.shape or indices.ndim != 1:
            raise ValueError("features: 'i' and 'v' must be lists of the same length")
        if indices.size and (indices.min() < 0 or indices.max() >= DIMENSIONS):
            raise ValueError(f"features: indices must lie in [0, {DIMENSIONS})")
        return Features(indices, values)


BIAS_ONLY = Features(_BIAS_INDICES, _BIAS_VALUES)
"""The features of a non-contextual model: one propensity per action."""


@lru_cache(maxsize=1 << 16)
def feature_index(name: str) -> int:
    """The coordinate of a feature name, in [1, DIMENSIONS): stable across processes."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (DIMENSIONS - 1)


def _number_bucket(value: float) -> str | None:
    """Numbers by order of magnitude (half powers of two), so 30 and 31 orders share a weight
    and the raw scale of a trait never reaches the logit."""
    if not math.isfinite(value):
        return None
    if value == 0:
        return "0"
    bucket = math.floor(2 * math.log2(abs(value)))
    return f"{'-' if value < 0 else '+'}{max(-40, min(bucket, 80))}"


def _add_value(names: list[str], prefix: str, value: Any) -> None:
    """One trait (or attribute) value as feature names; other types are ignored."""
    if isinstance(value, bool):
        names.append(f"{prefix}={'true' if value else 'false'}")
    elif isinstance(value, int | float):
        bucket = _number_bucket(float(value))
        if bucket is not None:
            names.append(f"{prefix}#{bucket}")
    elif isinstance(value, str):
        names.append(f"{prefix}={value[:MAX_STRING_LENGTH]}")
    elif isinstance(value, list | tuple):
        for item in value[:MAX_LIST_ITEMS]:
            if isinstance(item, str):
                names.append(f"{prefix}[]={item[:MAX_STRING_LENGTH]}")


def feature_names(profile: Mapping[str, Any], context: ContextView, *,
                  names: Sequence[str] = ()) -> list[str]:
    """The features of a person in a context, as names (before hashing)."""
    out: list[str] = []
    allowed = frozenset(names)
    for key, value in profile.items():
        if key == _COMPUTED:
            if isinstance(value, Mapping):
                for name, computed in value.items():
                    if not allowed or f"computed.{name}" in allowed:
                        _add_value(out, f"k:{name}", computed)
        elif key == _SEGMENTS:
            if isinstance(value, list | tuple):
                for segment in value[:MAX_LIST_ITEMS]:
                    if isinstance(segment, str):
                        out.append(f"s:{segment}")
        elif key in _IGNORED or isinstance(value, Mapping):
            continue
        elif not allowed or key in allowed:
            _add_value(out, f"t:{key}", value)
    utc = context.time.astimezone(UTC)
    channel = context.channel or "any"
    out.append(f"c:channel={channel}")
    out.append(f"c:hour={utc.hour}")
    out.append(f"c:weekday={utc.weekday()}")
    out.append(f"c:hour={utc.hour}/{channel}")
    for key, value in context.attributes.items():
        if not isinstance(value, Mapping):
            _add_value(out, f"a:{key}", value)
    return out


def featurize(profile: Mapping[str, Any], context: ContextView, *, names: Sequence[str] = (),
              contextual: bool = True) -> Features:
    """The model's features of a person in a context. ``profile`` is the profile view
    (cjo_platform.profiles); ``names`` the traits to read (``computed.x`` for a computed
    trait), empty for every trait; ``contextual=False`` gives the bias only.

    The indices of :func:`feature_names`, hashed, but a string trait's index is cached by
    (trait, value) and the context's four by (channel, hour, weekday), so most of a person's
    features cost one dict lookup rather than a formatted name and its hash (a third of the
    CPU of a BatchDecide's featurisation, issue 14)."""
    if not contextual:
        return BIAS_ONLY
    allowed = frozenset(names) if names else None
    found: list[int] = []
    other: list[str] = []
    for key, value in profile.items():
        if key == _COMPUTED:
            if isinstance(value, Mapping):
                for name, computed in value.items():
                    if allowed is None or f"computed.{name}" in allowed:
                        _add_value(other, f"k:{name}", computed)
        elif key == _SEGMENTS:
            if isinstance(value, list | tuple):
                found.extend(_segment_index(segment) for segment in value[:MAX_LIST_ITEMS]
                             if isinstance(segment, str))
        elif key in _IGNORED or isinstance(value, Mapping):
            continue
        elif allowed is None or key in allowed:
            if type(value) is str:
                found.append(_trait_index(key, value))
            else:
                _add_value(other, f"t:{key}", value)
    utc = context.time.astimezone(UTC)
    found.extend(_context_indices(context.channel, utc.hour, utc.weekday()))
    for key, value in context.attributes.items():
        if not isinstance(value, Mapping):
            _add_value(other, f"a:{key}", value)
    found.extend(feature_index(name) for name in other)
    # Two names hashing to one coordinate share it (their values add up).
    unique = sorted(set(found))
    count = len(unique)
    indices = np.empty(count + 1, dtype=np.int64)
    indices[0] = 0
    indices[1:] = unique
    scale = 1.0 / math.sqrt(count) if count else 0.0
    if count == len(found):
        values = np.full(count + 1, scale)
    else:
        times: dict[int, float] = {}
        for index in found:
            times[index] = times.get(index, 0.0) + 1.0
        values = np.empty(count + 1, dtype=np.float64)
        values[1:] = [times[i] * scale for i in unique]
    values[0] = 1.0
    return Features(indices, values)


@lru_cache(maxsize=1 << 16)
def _trait_index(key: str, value: str) -> int:
    return feature_index(f"t:{key}={value[:MAX_STRING_LENGTH]}")


@lru_cache(maxsize=1 << 12)
def _segment_index(segment: str) -> int:
    return feature_index(f"s:{segment}")


@lru_cache(maxsize=1 << 10)
def _context_indices(channel: str, hour: int, weekday: int) -> tuple[int, ...]:
    channel = channel or "any"
    return tuple(feature_index(name) for name in (
        f"c:channel={channel}", f"c:hour={hour}", f"c:weekday={weekday}",
        f"c:hour={hour}/{channel}"))
