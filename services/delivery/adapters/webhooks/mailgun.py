"""Mailgun webhooks: JSON ``{"signature": {timestamp, token, signature}, "event-data": {...}}``,
signed with the account's HTTP webhook signing key (secret ``webhook_signing_key``): hex
HMAC-SHA256 of ``<timestamp><token>``. A timestamp outside the replay window is refused, and so
is a token recorded before (by any replica: the token is spent in the database, in the
transaction that records the events, service_layer/provider_webhooks.py). Mailgun signs only the
timestamp and the token, not the event: spending the token is what stops a seen signature from
carrying another event.

An event names cjo's message by the variable ``cjo-message-id`` (``X-Mailgun-Variables``) or
by its ``message-id`` header, the Message-ID cjo wrote (Mailgun drops the brackets).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cjo_delivery.adapters.webhooks.request import Malformed, Refused, WebhookRequest, same
from cjo_delivery.domain.engagement import EngagementKind
from cjo_delivery.domain.provider_events import MessageRef, ProviderEvent, cjo_message_id, event

REPLAY_WINDOW_SECONDS = 15 * 60
VARIABLE = "cjo-message-id"
MAX_TOKEN = 256

_KINDS = {"delivered": EngagementKind.DELIVERED, "opened": EngagementKind.OPENED,
          "clicked": EngagementKind.CLICKED, "unsubscribed": EngagementKind.UNSUBSCRIBED,
          "complained": EngagementKind.COMPLAINED}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def events(request: WebhookRequest, signing_key: str, now: float
           ) -> tuple[list[ProviderEvent], str, float, str]:
    """The events, the report's token (spent when they are recorded), its timestamp and a
    digest of its event-data (Mailgun's retry of a report carries the same; a replay of the
    token with other event-data does not)."""
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
    if not timestamp.isdigit() or abs(now - int(timestamp)) > REPLAY_WINDOW_SECONDS:
        raise Refused(403, "stale")
    if not 0 < len(token) <= MAX_TOKEN:
        raise Refused(403, "bad token")
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
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return ([found] if found is not None else []), token, float(timestamp), digest
