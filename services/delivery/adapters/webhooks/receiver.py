"""Reads a provider's status webhook: picks the provider's module by its ``webhook_format``
setting, checks the request is the provider's and returns the events it reports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from cjo_delivery.adapters.http_client import HttpClient, HttpTimeout, HttpTransportError
from cjo_delivery.adapters.webhooks import dsn, mailgun, postmark, sendgrid, ses, twilio
from cjo_delivery.adapters.webhooks.request import Refused, WebhookRequest
from cjo_delivery.domain.provider_events import OneTimeToken, ProviderEvent, WebhookFormat
from cjo_delivery.domain.providers import ProviderConfig
from cjo_platform.clock import Clock

# Well within the engagement listener's read timeout (10 s), so that a slow fetch is answered
# with this module's 503 (the provider retries), with time left for the transaction.
FETCH_TIMEOUT = 4.0
# A bounce's status (RFC 3464) comes before the original message it returns: what follows is
# not read, so a crafted "bounce" costs at most this much parsing.
MAX_DSN_BYTES = 256 * 1024


class Unavailable(Exception):
    """Something the check needs could not be had now (SNS's certificate, the provider's
    secrets): answered 503, so the provider retries."""


@dataclass(frozen=True)
class Reading:
    events: list[ProviderEvent]
    # Spent with the events, in their transaction (a Mailgun token): not before, so Mailgun's
    # retry of a report that failed here is not taken for a replay.
    token: OneTimeToken | None = None


class ProviderWebhooks:
    def __init__(self, client: HttpClient, clock: Clock) -> None:
        self.client = client
        self.clock = clock
        self.sns = ses.SnsVerifier(self._fetch)

    async def _fetch(self, url: str) -> bytes:
        try:
            response = await self.client.get(url, timeout=FETCH_TIMEOUT)
        except (HttpTimeout, HttpTransportError) as exc:
            raise Unavailable(f"{url}: {exc}") from None
        if not response.is_success:
            raise Unavailable(f"{url}: {response.status_code}")
        return response.content

    async def read(self, provider: ProviderConfig, request: WebhookRequest) -> Reading:
        """Refused when the request is not the provider's; Malformed when it is unreadable."""
        if request.method != "POST":
            raise Refused(405, "POST only")
        if provider.secrets_error:
            raise Unavailable("the provider's secrets cannot be decrypted")
        c, s = provider.config, provider.secrets
        match WebhookFormat(c["webhook_format"]):
            case WebhookFormat.SENDGRID:
                return Reading(sendgrid.events(request, c.get("webhook_public_key", ""),
                                               self.clock.now().timestamp()))
            case WebhookFormat.SES:
                return Reading(await ses.events(request, self.sns,
                                                c.get("webhook_sns_hosts", ""),
                                                c.get("webhook_sns_topic_arns", ""),
                                                self.clock.now()))
            case WebhookFormat.MAILGUN:
                found, token, timestamp, digest = mailgun.events(
                    request, s.get("webhook_signing_key", ""), self.clock.now().timestamp())
                expiry = datetime.fromtimestamp(timestamp + mailgun.REPLAY_WINDOW_SECONDS, UTC)
                return Reading(found, OneTimeToken(token, expiry, digest))
            case WebhookFormat.POSTMARK:
                return Reading(postmark.events(request, c.get("webhook_username", ""),
                                               s.get("webhook_password", "")))
            case WebhookFormat.TWILIO:
                return Reading(twilio.events(request, s.get("webhook_auth_token")
                                             or s.get("auth_token", "")))
            case WebhookFormat.DSN:
                # A bounce mailbox has no signature: the signed URL is the credential. Parsed
                # off the event loop, which every RPC and send of the process shares.
                return Reading(await asyncio.to_thread(dsn.events,
                                                       request.body[:MAX_DSN_BYTES]))
