"""Mailgun webhooks: JSON ``{"signature": {timestamp, token, signature}, "event-data": {...}}``,
signed with the account's HTTP webhook signing key (secret ``webhook_signing_key``): hex
HMAC-SHA256 of ``<timestamp><token>``. A timestamp outside the replay window, or a token seen
before within it, is refused.

An event names cjo's message by the variable ``cjo-message-id`` (``X-Mailgun-Variables``) or
by its ``message-id`` header, the Message-ID cjo wrote (Mailgun drops the brackets).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from typing import Any

from cjo_delivery.adapters.webhooks.request import Malformed, Refused, WebhookRequest, same
from cjo_delivery.domain.engagement import EngagementKind
from cjo_delivery.domain.provider_events import MessageRef, ProviderEvent, cjo_message_id, event

REPLAY_WINDOW_SECONDS = 15 * 60
VARIABLE = "cjo-message-id"
_SEEN_TOKENS = 10_000

_KINDS = {"delivered": EngagementKind.DELIVERED, "opened": EngagementKind.OPENED,
          "clicked": EngagementKind.CLICKED, "unsubscribed": EngagementKind.UNSUBSCRIBED,
          "complained": EngagementKind.COMPLAINED}


class ReplayGuard:
    """Tokens of reports recorded within the replay window, by this process (a replay to
    another replica is still only a repeat, which the engagement ids dedupe downstream).

    A token counts as used once its report is recorded, not when it is first read: Mailgun
    retries a report it got no 2xx for with the same signature, and that retry must pass."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()

    def fresh(self, token: str, timestamp: float, now: float) -> bool:
        if abs(now - timestamp) > REPLAY_WINDOW_SECONDS:
            return False
        while self._seen and (len(self._seen) >= _SEEN_TOKENS
                              or next(iter(self._seen.values())) < now - REPLAY_WINDOW_SECONDS):
            self._seen.popitem(last=False)
        return token not in self._seen

    def used(self, token: str, now: float) -> None:
        self._seen[token] = now


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def events(request: WebhookRequest, signing_key: str, guard: ReplayGuard,
           now: float) -> tuple[list[ProviderEvent], str]:
    """The events and the report's token (to mark used once they are recorded)."""
    try:
        body = request.json()
    except ValueError:
        raise Refused(403, "expected Mailgun's signed JSON") from None
    signature = _dict(_dict(body).get("signature"))
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(),
                        hashlib.sha256).hexdigest()
    if not signing_key or not same(str(signature.get("signature", "")), expected):
        raise Refused(403, "bad signature")
    if not timestamp.isdigit() or not guard.fresh(token, float(timestamp), now):
        raise Refused(403, "replayed or stale")
    data = _dict(body.get("event-data"))
    if not data:
        raise Malformed("expected event-data")
    name = str(data.get("event", ""))
    kind = _KINDS.get(name)
    if name == "failed" and data.get("severity") == "permanent":
        kind = EngagementKind.BOUNCED
    headers = _dict(_dict(data.get("message")).get("headers"))
    ref = MessageRef(message_id=str(_dict(data.get("user-variables")).get(VARIABLE)
                                    or cjo_message_id(str(headers.get("message-id", "")))),
                     provider_message_id=str(headers.get("message-id", "")))
    status = _dict(data.get("delivery-status"))
    reason = " ".join(str(status.get(k)) for k in ("code", "message", "description")
                      if status.get(k)) or str(data.get("reason", ""))
    found = event(kind, ref, reason, data.get("url", ""))
    return ([found] if found is not None else []), token
