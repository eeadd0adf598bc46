"""The id analytics knows a content item's variant test by, shared by the service that records
its exposures (delivery) and the one that reports on it (analytics)."""

from __future__ import annotations

import hashlib

from cjo_platform.limits import MAX_ID_LENGTH

CONTENT_EXPERIMENT_PREFIX = "content:"

LONG_KEY_MARK = "~"
"""Separates a long key's prefix from its hash: never in a content key (lower-case letters,
digits, '-' and '_'), so a shortened id never equals the id of another, shorter key."""

_HASH_CHARS = 16  # 64 bits of SHA-256: two long keys of one workspace never meet in practice


def content_experiment_id(content_key: str) -> str:
    """``content:{content_key}``: one experiment per content item with variants (items that share
    an ``experiment_key`` assign alike, but are analysed one item at a time).

    Always at most :data:`~cjo_platform.limits.MAX_ID_LENGTH` characters, the length analytics
    accepts: a key too long for that (content keys go to 128 characters) gives
    ``content:{the key's first characters}~{16 hex characters of the key's SHA-256}``."""
    whole = f"{CONTENT_EXPERIMENT_PREFIX}{content_key}"
    if len(whole) <= MAX_ID_LENGTH:
        return whole
    digest = hashlib.sha256(content_key.encode()).hexdigest()[:_HASH_CHARS]
    keep = MAX_ID_LENGTH - len(CONTENT_EXPERIMENT_PREFIX) - len(LONG_KEY_MARK) - _HASH_CHARS
    return f"{CONTENT_EXPERIMENT_PREFIX}{content_key[:keep]}{LONG_KEY_MARK}{digest}"
