"""What every provider module reads: the request as the provider sent it, and how it is
refused."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    # The URL the provider called, as it called it (CJO_DELIVERY_TRACKING_URL + the path and
    # query): what Twilio signs.
    url: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """An application/x-www-form-urlencoded body (the last of repeated keys)."""
        return dict(parse_qsl(self.body.decode("utf-8", errors="replace"),
                              keep_blank_values=True))


class Refused(Exception):
    """The request is not the provider's (bad or missing signature or credentials): answered
    ``status`` and nothing is recorded. The message never quotes a secret."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class Malformed(ValueError):
    """Signed, but not a report this module can read: answered 400."""


def same(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison of two signatures or credentials."""
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)
