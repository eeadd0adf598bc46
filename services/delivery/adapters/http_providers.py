"""Providers spoken over HTTP (one pooled client per process, adapters/http_client.py): a
generic JSON provider, a Twilio-shaped SMS API, FCM HTTP v1 push, and signed webhooks.

Every adapter turns the provider's answer into a ProviderError that says whether a retry can
help, whether the address is gone for good (a bounce: it is then suppressed) and how long the
provider asked us to wait (429 Retry-After). Error texts never contain a secret: credentials
travel only in headers, and headers are never part of an error. Nor do they quote the answer's
body: only its status and, where the provider documents them, its error code (a number for
Twilio, an upper-case name for FCM). The error is read back by the workspace (GetMessage), so
whatever answered must not be able to pass its text through it; the operator's log has the
first ``LOGGED_BODY_CHARS`` of a failed answer's body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

from cjo_delivery.adapters.http_client import (
    HttpClient,
    HttpResponse,
    HttpTimeout,
    HttpTransportError,
)
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.providers import ProviderConfig
from cjo_delivery.domain.sending import OutgoingMessage, ProviderError
from cjo_platform.clock import Clock
from cjo_platform.logging import LogOnce, get_logger

log = get_logger(__name__)

DEFAULT_TIMEOUT = 10.0
# Of a failed answer's body, what the operator's log shows (never the workspace: GetMessage),
# once per provider per _LOG_PERIOD seconds: a provider refusing every send logs once a minute.
LOGGED_BODY_CHARS = 300
_LOG_PERIOD = 60.0
_logged = LogOnce(_LOG_PERIOD)
# What a provider's error may quote of the recipient (Twilio: "The 'To' number +14155550100
# is not a valid phone number"): e-mail addresses, and runs of 6 digits or more (phone
# numbers, with their separators); control characters could forge log lines.
_PERSONAL = re.compile(r"[^\s@<>\"',;:()\[\]]+@[^\s@<>\"',;:()\[\]]+"
                       r"|\+?\(?(?:\d[\s().-]{0,2}){5,}\d")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SIGNATURE_HEADER = "X-Cjo-Signature"
TIMESTAMP_HEADER = "X-Cjo-Timestamp"


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (RFC 9110: delay-seconds or an HTTP date); None when absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - now).total_seconds(), 0.0)


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``: the receiver recomputes
    it and refuses a mismatch or an old timestamp (replay)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _json(response: HttpResponse) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _status(response: HttpResponse) -> str:
    """``503 Service Unavailable``: the code and its standard phrase, never the body's text."""
    try:
        return f"{response.status_code} {HTTPStatus(response.status_code).phrase}"
    except ValueError:
        return str(response.status_code)


# FCM's error status and errorCode values (UNREGISTERED, QUOTA_EXCEEDED, ...).
_FCM_CODE = re.compile(r"[A-Z][A-Z_]{0,63}")


def logged_body(text: str) -> str:
    """Of a failed answer's body, what the operator's log shows: its first characters on one
    line, with no control character, e-mail address or phone number."""
    text = _CONTROL.sub(" ", text[:LOGGED_BODY_CHARS])
    return " ".join(_PERSONAL.sub("***", text).split())


class HttpProvider:
    """Shared plumbing: POST, transport errors, 429 and 5xx. Subclasses build the request and
    read the provider's own error format."""

    def __init__(self, config: ProviderConfig, client: HttpClient, clock: Clock) -> None:
        self.config = config
        self.client = client
        self.clock = clock
        self.timeout = float(config.config.get("timeout_seconds", DEFAULT_TIMEOUT))
        self.where = f"{config.kind.value} provider {config.provider_id}"

    async def _post(self, url: str, **kwargs: Any) -> HttpResponse:
        try:
            response = await self.client.post(url, timeout=self.timeout, **kwargs)
        except HttpTimeout:
            raise ProviderError(f"{self.where}: timed out", transient=True) from None
        except HttpTransportError as exc:
            raise ProviderError(f"{self.where}: {exc}", transient=True) from None
        # The body helps the operator find out why; it stays out of the message's error.
        if response.status_code >= 400 and _logged((self.config.workspace_id,
                                                    self.config.provider_id)):
            log.warning("provider answered an error", workspace_id=self.config.workspace_id,
                        provider_id=self.config.provider_id, status=response.status_code,
                        body=logged_body(response.text))
        if response.status_code == 429:
            raise ProviderError(
                f"{self.where}: {_status(response)}", transient=True,
                retry_after=retry_after_seconds(response.headers.get("Retry-After"),
                                                self.clock.now()))
        return response

    async def close(self) -> None:
        """The client is shared and closed by its owner."""


class JsonHttpProvider(HttpProvider):
    """POSTs the message as JSON to ``url``; any channel."""

    async def send(self, message: OutgoingMessage) -> str:
        body: dict[str, Any] = {"message_id": message.message_id,
                                "channel": message.channel.value, "to": message.to}
        if message.email is not None:
            e = message.email
            body["email"] = {"subject": e.subject, "preheader": e.preheader, "html": e.html,
                             "text": e.text}
        if message.channel is Channel.SMS:
            body["sms"] = {"text": message.sms_text}
        if message.push is not None:
            pu = message.push
            body["push"] = {"title": pu.title, "body": pu.body, "deep_link": pu.deep_link,
                            "image_url": pu.image_url, "data": pu.data}
        if message.channel is Channel.WEBHOOK:
            body["webhook"] = json.loads(message.webhook_body)
        headers = {"Idempotency-Key": message.message_id}
        if "api_key" in self.config.secrets:
            headers["Authorization"] = f"Bearer {self.config.secrets['api_key']}"
        response = await self._post(self.config.config["url"], json_body=body, headers=headers)
        if response.is_success:
            data = _json(response)
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                provider_id: str = data["id"]
                return provider_id
            return message.message_id
        raise ProviderError(f"{self.where}: {_status(response)}",
                            transient=response.status_code >= 500
                            or response.status_code in (401, 403, 408))


# Twilio error codes (https://www.twilio.com/docs/api/errors) that mean the number itself can
# never receive: the address is suppressed.
_TWILIO_BOUNCES = {21211: "invalid 'To' number", 21614: "'To' is not a mobile number",
                   21610: "recipient replied STOP", 21612: "'To' cannot be reached"}
# The account's problem, not the message's: another provider (or later) can succeed.
_TWILIO_PROVIDER_FAULTS = {20003, 20005, 20429, 30001}


class TwilioSmsProvider(HttpProvider):
    """The Twilio Messages API: form POST with HTTP basic auth (account SID, auth token)."""

    async def send(self, message: OutgoingMessage) -> str:
        c = self.config.config
        base = c.get("base_url", "https://api.twilio.com").rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{c['account_sid']}/Messages.json"
        response = await self._post(
            url, form={"To": message.to, "From": c["from"], "Body": message.sms_text},
            auth=(c["account_sid"], self.config.secrets.get("auth_token", "")),
            headers={"I-Twilio-Idempotency-Token": message.message_id})
        data = _json(response)
        if response.is_success and isinstance(data, dict) and isinstance(data.get("sid"), str):
            sid: str = data["sid"]
            return sid
        code = data.get("code") if isinstance(data, dict) else None
        if not isinstance(code, int) or isinstance(code, bool) or not 0 < code < 10**6:
            code = None  # Twilio's codes are numbers of up to five digits
        described = f"{self.where}: {_status(response)}" + (f" error {code}" if code else "")
        if response.is_success:
            raise ProviderError(f"{self.where}: answer without a sid", transient=True)
        if code in _TWILIO_BOUNCES:
            raise ProviderError(f"{described} ({_TWILIO_BOUNCES[code]})", transient=False,
                                bounce=True)
        transient = response.status_code >= 500 or code in _TWILIO_PROVIDER_FAULTS \
            or response.status_code in (401, 403)
        raise ProviderError(described, transient=transient)


_FCM_PERMANENT = {"INVALID_ARGUMENT", "SENDER_ID_MISMATCH"}


class FcmPushProvider(HttpProvider):
    """Firebase Cloud Messaging HTTP v1: ``projects/{id}/messages:send`` with a bearer token."""

    async def send(self, message: OutgoingMessage) -> str:
        assert message.push is not None
        c = self.config.config
        base = c.get("base_url", "https://fcm.googleapis.com").rstrip("/")
        push = message.push
        notification = {"title": push.title, "body": push.body}
        if push.image_url:
            notification["image"] = push.image_url
        data = dict(push.data)
        if push.deep_link:
            data["deep_link"] = push.deep_link
        body = {"message": {"token": message.to, "notification": notification, "data": data}}
        response = await self._post(
            f"{base}/v1/projects/{c['project_id']}/messages:send", json_body=body,
            headers={"Authorization": f"Bearer {self.config.secrets.get('access_token', '')}"})
        answer = _json(response)
        if response.is_success and isinstance(answer, dict) \
                and isinstance(answer.get("name"), str):
            name: str = answer["name"]
            return name
        status, error_code = "", ""
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            error = answer["error"]
            status = str(error.get("status", ""))
            details = error.get("details", [])
            for detail in details if isinstance(details, list) else []:
                if isinstance(detail, dict) and "errorCode" in detail:
                    error_code = str(detail["errorCode"])
        code = error_code or status
        if not _FCM_CODE.fullmatch(code):
            code = ""
        described = f"{self.where}: {_status(response)}" + (f" {code}" if code else "")
        if code == "UNREGISTERED":  # the app was uninstalled or the token expired
            raise ProviderError(described, transient=False, bounce=True)
        if code in _FCM_PERMANENT:
            raise ProviderError(described, transient=False)
        # UNAVAILABLE, INTERNAL, QUOTA_EXCEEDED (as 429, above), THIRD_PARTY_AUTH_ERROR, 401.
        raise ProviderError(described, transient=True)


class WebhookProvider(HttpProvider):
    """POSTs the rendered JSON body to ``url``, signed with the provider's signing secret."""

    async def send(self, message: OutgoingMessage) -> str:
        body = message.webhook_body.encode()
        timestamp = int(self.clock.now().timestamp())
        signature = sign_webhook(self.config.secrets.get("signing_secret", ""), timestamp, body)
        response = await self._post(self.config.config["url"], content=body, headers={
            "Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature, "X-Cjo-Message-Id": message.message_id,
            "Idempotency-Key": message.message_id})
        if response.is_success:
            return message.message_id
        # A receiver that says the body is wrong or the endpoint is gone will say so again.
        permanent = response.status_code in (400, 404, 410, 413, 422)
        raise ProviderError(f"{self.where}: {_status(response)}", transient=not permanent)
