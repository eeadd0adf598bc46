"""The id analytics knows a content item's variant test by, shared by the service that records
its exposures (delivery) and the one that reports on it (analytics)."""

from __future__ import annotations

CONTENT_EXPERIMENT_PREFIX = "content:"


def content_experiment_id(content_key: str) -> str:
    """``content:{content_key}``: one experiment per content item with variants (items that share
    an ``experiment_key`` assign alike, but are analysed one item at a time)."""
    return f"{CONTENT_EXPERIMENT_PREFIX}{content_key}"
