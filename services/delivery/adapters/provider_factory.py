"""Turns a stored provider configuration into a live provider."""

from __future__ import annotations

import ssl

from cjo_delivery.adapters.http_client import HttpClient
from cjo_delivery.adapters.http_providers import (
    FcmPushProvider,
    JsonHttpProvider,
    TwilioSmsProvider,
    WebhookProvider,
)
from cjo_delivery.adapters.smtp import SmtpProvider, SmtpSettings
from cjo_delivery.domain.providers import ProviderConfig, ProviderKind
from cjo_delivery.domain.sending import OutgoingMessage, Provider, ProviderError
from cjo_platform.clock import Clock
from cjo_platform.logging import get_logger

log = get_logger(__name__)


class UnreadableSecretsProvider:
    """Stands in for a provider whose stored secrets no configured key decrypts.

    Each send fails as TRANSIENT with the reason: the cause is the deployment's key set (a key
    removed too early, or a replica started with an older CJO_DELIVERY_SECRET_KEYS during a
    rollout), not the message, so the sender moves on to the workspace's next provider, and
    messages with no other provider are retried with backoff (up to CJO_DELIVERY_MAX_ATTEMPTS)
    rather than failed for good by a configuration slip that restoring the key repairs. A
    permanent error would also stop the failover to the next provider."""

    def __init__(self, config: ProviderConfig) -> None:
        self.reason = f"provider {config.provider_id}: {config.secrets_error}"

    async def send(self, message: OutgoingMessage) -> str:
        raise ProviderError(self.reason, transient=True)

    async def close(self) -> None:
        return None


class ProviderFactory:
    """Builds providers; the HTTP ones share one pooled client (``http_connections`` connections
    at most, TLS verified with ``tls_context`` or the system's trust store). They dial only
    public addresses unless ``allow_private`` (adapters/destinations.py)."""

    def __init__(self, clock: Clock, *, smtp_connections: int = 4, http_connections: int = 64,
                 tls_context: ssl.SSLContext | None = None, allow_private: bool = False) -> None:
        self.clock = clock
        self.smtp_connections = smtp_connections
        self.tls_context = tls_context
        self.allow_private = allow_private
        self.client = HttpClient(connections=http_connections, tls_context=tls_context,
                                 allow_private=allow_private)

    def build(self, config: ProviderConfig) -> Provider:
        if config.secrets_error:
            # Built once per provider version and process, so this is logged once, not per send.
            log.error("provider secrets cannot be decrypted; sends through it fail until the "
                      "key is configured again or its secrets are set anew",
                      workspace=config.workspace_id, provider_id=config.provider_id,
                      error=config.secrets_error)
            return UnreadableSecretsProvider(config)
        kind = config.kind
        if kind is ProviderKind.SMTP:
            c, s = config.config, config.secrets
            starttls = c.get("starttls", "false") == "true"
            return SmtpProvider(SmtpSettings(
                host=c["host"], port=int(c.get("port", "587" if starttls else "25")),
                sender=c["from"], starttls=starttls, username=s.get("username", ""),
                password=s.get("password", ""),
                timeout_seconds=float(c.get("timeout_seconds", "10")),
                data_timeout_seconds=float(c.get("data_timeout_seconds", "60")),
                connections=self.smtp_connections, ca_file=c.get("ca_file", ""),
                webhook_format=c.get("webhook_format", ""), allow_private=self.allow_private,
                # A workspace's own CA bundle wins over the deployment's TLS context.
                tls_context=None if c.get("ca_file") else self.tls_context), self.clock)
        if kind is ProviderKind.HTTP_JSON:
            return JsonHttpProvider(config, self.client, self.clock)
        if kind is ProviderKind.TWILIO_SMS:
            return TwilioSmsProvider(config, self.client, self.clock)
        if kind is ProviderKind.FCM_PUSH:
            return FcmPushProvider(config, self.client, self.clock)
        return WebhookProvider(config, self.client, self.clock)

    async def close(self) -> None:
        await self.client.close()
