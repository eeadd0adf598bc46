"""Request limits shared by every service (documented in the README)."""

from __future__ import annotations

from collections.abc import Sized

from cjo_platform.errors import InvalidArgument

MAX_BATCH_ITEMS = 1000
"""Items per batch call: events, renders, messages, facts."""

MAX_ID_LENGTH = 128
"""Client-chosen identifiers: message ids, idempotency keys, fact ids, request ids."""

MAX_NESTING = 32
"""Levels of nesting in a request (each message, Struct and list is one level): deeper is
refused by the validation layer, well before protobuf's own decoding limit (100)."""


def check_batch(items: Sized, field: str) -> None:
    """Refuse an empty or oversized batch as a whole, naming the field."""
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise InvalidArgument.one(
            field, f"must hold 1 to {MAX_BATCH_ITEMS} items, got {len(items)}")
