"""Signed tracking links: open pixel, click redirect and one-click unsubscribe.

A link carries what it is about (message, workspace, and for clicks the target URL) and an
HMAC-SHA256 over exactly that, keyed with the deployment's tracking secret, so nobody can forge
a click, an open or an unsubscribe for a message they never received, nor turn the redirect
into an open redirect to a URL of their choosing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class TrackingToken:
    action: str  # "open" | "click" | "unsubscribe"
    workspace_id: str
    message_id: str
    url: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(token: TrackingToken, secret: bytes) -> str:
    payload = _b64(json.dumps([token.action, token.workspace_id, token.message_id, token.url],
                              separators=(",", ":")).encode())
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:16]
    return f"{payload}.{_b64(mac)}"


def verify(signed: str, secret: bytes) -> TrackingToken | None:
    """The token, or None when it was not signed with ``secret`` (forged or damaged)."""
    payload, _, mac = signed.partition(".")
    try:
        expected = hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        action, workspace_id, message_id, url = json.loads(_unb64(payload))
    except (ValueError, TypeError):
        return None
    return TrackingToken(str(action), str(workspace_id), str(message_id), str(url))
