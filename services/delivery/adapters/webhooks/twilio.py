"""Twilio status callbacks: a form POST per status change of a message, signed in
``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with the account's auth token (secret
``webhook_auth_token``, else the provider's ``auth_token``), of the URL Twilio called followed by
every POST parameter, name then value, sorted by name.

``MessageSid`` is the id Twilio answered the send with. ``delivered`` is a delivery;
``undelivered`` and ``failed`` are a bounce only for error codes that say the number can never
receive (others, a handset switched off or carrier filtering, may pass next time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cjo_delivery.adapters.webhooks.request import Refused, WebhookRequest, same
from cjo_delivery.domain.engagement import EngagementKind
from cjo_delivery.domain.provider_events import MessageRef, ProviderEvent, event

SIGNATURE_HEADER = "X-Twilio-Signature"
# https://www.twilio.com/docs/api/errors: blocked, unknown destination, landline or
# unreachable carrier, invalid number, not a mobile number, opted out (STOP).
PERMANENT_ERRORS = frozenset({"30004", "30005", "30006", "21211", "21612", "21614", "21610"})


def signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    text = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), text.encode(),
                                     hashlib.sha1).digest()).decode()


def events(request: WebhookRequest, auth_token: str) -> list[ProviderEvent]:
    params = request.form()
    given = request.header(SIGNATURE_HEADER)
    if not auth_token or not given or not same(given,
                                               signature(auth_token, request.url, params)):
        raise Refused(403, "bad signature")
    status = params.get("MessageStatus") or params.get("SmsStatus", "")
    error = params.get("ErrorCode", "")
    kind = None
    if status == "delivered":
        kind = EngagementKind.DELIVERED
    elif status in ("undelivered", "failed") and error in PERMANENT_ERRORS:
        kind = EngagementKind.BOUNCED
    found = event(kind, MessageRef(provider_message_id=params.get("MessageSid", "")),
                  f"{status} error {error}" if error else status)
    return [found] if found is not None else []
