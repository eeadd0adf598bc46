"""AIP-158 pagination: validated page sizes and opaque page tokens holding a keyset cursor."""

from __future__ import annotations

import base64
import json
from typing import Any

from cjo_platform.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument.one(field, "must not be negative")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


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


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False
