"""AIP-158 pagination: validated page sizes and opaque page tokens holding a keyset cursor;
and the key of a resource name (AIP-122), shared by every service's API edge."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any, TypeVar

from cjo_platform.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# What one page of a list holds at most, of its large items' bytes (half the 32 MiB message
# limit: room for what the encoding adds); it ends early, with a next page token, past it.
MAX_PAGE_BYTES = 16 * 1024 * 1024


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument.one(field, "must not be negative")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def fit(sizes: Iterable[int], max_bytes: int, least: int = 1) -> int:
    """How many leading entries, each of ``sizes`` bytes, make a page of at most ``max_bytes``;
    at least ``least`` (one by default: an item larger than a page is a page of its own)."""
    total = count = 0
    for size in sizes:
        total += size
        if count >= least and total > max_bytes:
            break
        count += 1
    return count


def encode_token(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode()


def decode_token(token: str, field: str = "page_token") -> dict[str, Any] | None:
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.one(field, "is not a token returned by this method") from None
    # A token is the caller's input: one crafted with a NUL character would reach the
    # database (which refuses it) past the validation of the request's own strings.
    if not isinstance(cursor, dict) or _holds_nul(cursor):
        raise InvalidArgument.one(field, "is not a token returned by this method")
    return cursor


def cursor_value(token: str, name: str, kind: type[T], field: str = "page_token") -> T | None:
    """The ``name`` entry of a token :func:`next_page_token` made (None for the first page);
    INVALID_ARGUMENT naming ``field`` for a token this method did not return."""
    cursor = decode_token(token, field)
    if cursor is None:
        return None
    value = cursor.get(name)
    if not isinstance(value, kind):
        raise InvalidArgument.one(field, "is not a token returned by this method")
    return value


def next_page_token(name: str, after: object | None) -> str:
    """The token of the page after ``after`` (a JSON value); "" when there is none."""
    return "" if after is None else encode_token({name: after})


def key_from_name(name: str, prefix: str, pattern: re.Pattern[str],
                  field_path: str = "name") -> str:
    """``{prefix}{key}`` -> key, the key matching ``pattern``; INVALID_ARGUMENT naming
    ``field_path`` otherwise (a malformed name is the caller's mistake, not an unknown one)."""
    key = name.removeprefix(prefix)
    if not name.startswith(prefix) or pattern.fullmatch(key) is None:
        raise InvalidArgument.one(field_path, f"must be {prefix}{{key}}")
    return key


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False
