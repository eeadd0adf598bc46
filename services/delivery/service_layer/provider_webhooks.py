"""Provider status webhooks: load the provider (with its secrets), check the request is the
provider's and read its events (adapters/webhooks/, no transaction held while SNS's certificate
is fetched), then record every event whose message is found in one transaction, exactly as
cjo's own engagement is recorded (service_layer/engagement.py): status, suppression, identity
event, fact.

A report through a provider's URL is about that provider's messages only: its references are
looked up among the messages the provider may have been handed (recorded as taken by it, its
call failed but it may have taken them, or still SENDING: webhook_store.resolve), so a report
through one provider's URL (a Postmark password, an unsigned bounce mailbox) cannot touch what
another provider sent.

A report about a message cjo does not know is answered 200 and ignored: providers retry
anything else for days, and a message may be another system's sent through the same account.
A report carrying a one-time token (Mailgun) spends it in the transaction that records its
events, so of two deliveries of one token, to any replicas at once, exactly one is recorded and
the other is refused (403); a report that failed to record leaves its token unspent for the
provider's retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cjo_delivery.adapters import provider_store, webhook_store
from cjo_delivery.adapters.webhooks.receiver import ProviderWebhooks, Unavailable
from cjo_delivery.adapters.webhooks.request import Malformed, Refused, WebhookRequest
from cjo_delivery.domain.engagement import Engagement
from cjo_delivery.domain.provider_events import OneTimeToken, ProviderEvent
from cjo_delivery.domain.providers import ProviderConfig
from cjo_delivery.service_layer.engagement import record_engagement
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.secret_box import SecretBox

log = get_logger(__name__)


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    recorded: int = 0


class Replayed(Exception):
    """The report's one-time token was spent by an earlier report with other content."""


class AlreadyRecorded(Exception):
    """The report was recorded before (the provider retries one whose answer it missed)."""


def record_provider_events(uow: UnitOfWork, workspace_id: str,
                           events: Sequence[ProviderEvent], provider_id: str | None = None,
                           token: OneTimeToken | None = None, *,
                           forward_to_decisioning: bool = True) -> int:
    """Records the events whose message exists (among ``provider_id``'s messages, when given);
    how many did. When ``token`` was spent before, records nothing and raises AlreadyRecorded
    (the same content again: the provider's retry) or Replayed (other content)."""
    if token is not None and provider_id is not None:
        spent = webhook_store.spend_token(uow.session, workspace_id, provider_id, token,
                                          uow.now())
        if spent is not None:
            if token.content_digest and spent == token.content_digest:
                raise AlreadyRecorded
            raise Replayed
    found = webhook_store.resolve(uow.session, workspace_id, [e.ref for e in events],
                                  provider_id)
    recorded = 0
    for e in events:
        message_id = found.get(e.ref)
        if message_id is not None and record_engagement(
                uow, Engagement(e.kind, workspace_id, message_id, url=e.url, reason=e.reason),
                forward_to_decisioning=forward_to_decisioning):
            recorded += 1
    return recorded


class ProviderReports:
    """What the engagement listener hands a provider's report to."""

    def __init__(self, transactions: Transactions, secret_box: SecretBox,
                 webhooks: ProviderWebhooks, *, forward_to_decisioning: bool = True) -> None:
        self.transactions = transactions
        self.forward_to_decisioning = forward_to_decisioning
        self.secret_box = secret_box
        self.webhooks = webhooks

    async def provider(self, workspace_id: str, provider_id: str) -> ProviderConfig | None:
        """The provider a status webhook URL is for (None once deleted)."""
        return await self.transactions.run(lambda uow: provider_store.get_provider(
            uow.session, workspace_id, provider_id, self.secret_box))

    async def receive(self, provider: ProviderConfig, request: WebhookRequest) -> Answer:
        where = {"workspace": provider.workspace_id, "provider_id": provider.provider_id,
                 "format": provider.config["webhook_format"]}
        try:
            reading = await self.webhooks.read(provider, request)
        except Refused as exc:
            log.warning("provider report refused", reason=str(exc), **where)
            return Answer(exc.status, str(exc))
        except Malformed as exc:
            return Answer(400, str(exc))
        except Unavailable as exc:
            log.warning("provider report not checked", reason=str(exc), **where)
            return Answer(503, "try again later")
        try:
            return await self.record(provider.workspace_id, reading.events, where,
                                     provider.provider_id, reading.token)
        except AlreadyRecorded:
            # 2xx, or the provider retries it for hours; nothing is recorded twice.
            log.info("provider report recorded before", **where)
            return Answer(200, "recorded before")
        except Replayed:
            log.warning("provider report refused", reason="token already used", **where)
            return Answer(403, "replayed")

    async def record(self, workspace_id: str, events: Sequence[ProviderEvent],
                     where: dict[str, str], provider_id: str | None = None,
                     token: OneTimeToken | None = None) -> Answer:
        """Records ``events`` (about ``provider_id``'s messages, when given)."""
        recorded = await self.transactions.run(
            lambda uow: record_provider_events(
                uow, workspace_id, events, provider_id, token,
                forward_to_decisioning=self.forward_to_decisioning)
        ) if events or token is not None else 0
        if recorded < len(events):
            log.info("provider report about unknown messages ignored",
                     events=len(events), recorded=recorded, **where)
        return Answer(200, f"recorded {recorded} of {len(events)}", recorded)
