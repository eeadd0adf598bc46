"""A workspace's providers: create, read, list, update (field mask, etag) and delete.

Secrets go in and never come out of the API; ``box`` seals them at rest (cjo_platform.secret_box).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from secrets import token_urlsafe

from cjo_delivery.adapters import provider_store
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.providers import (
    MAX_PROVIDERS_PER_CHANNEL,
    REQUIRED_SECRETS,
    ProviderConfig,
    ProviderKind,
    validate_provider,
)
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import Aborted, FailedPrecondition, NotFound
from cjo_platform.secret_box import SecretBox


@dataclass(frozen=True)
class ProviderDraft:
    """A provider as the caller describes it: everything but its id, etag and times."""

    channel: Channel | None
    kind: ProviderKind | None
    priority: int = 0
    display_name: str = ""
    config: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    disabled: bool = False


# ``status_webhook_url`` in a mask issues the provider a new status URL (the old one is refused
# from then on): for a URL that leaked, without touching any other provider's or link.
UPDATABLE = frozenset({"priority", "display_name", "config", "secrets", "disabled",
                       "status_webhook_url"})


def new_webhook_nonce() -> str:
    return token_urlsafe(12)


def create_provider(uow: UnitOfWork, workspace_id: str, draft: ProviderDraft, *,
                    box: SecretBox, private_destinations: bool = False) -> ProviderConfig:
    """``private_destinations``: the deployment lets providers send to private addresses
    (CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS)."""
    validate_provider(channel=draft.channel, kind=draft.kind, display_name=draft.display_name,
                      config=draft.config, secrets=draft.secrets,
                      private_destinations=private_destinations).raise_if_any()
    assert draft.channel is not None and draft.kind is not None
    existing = provider_store.list_providers(uow.session, workspace_id, box, draft.channel)
    if len(existing) >= MAX_PROVIDERS_PER_CHANNEL:
        raise FailedPrecondition(f"a channel has at most {MAX_PROVIDERS_PER_CHANNEL} providers",
                                 reason="TOO_MANY_PROVIDERS")
    now = uow.now()
    config = ProviderConfig(
        workspace_id=workspace_id, provider_id=uuid.uuid4().hex, channel=draft.channel,
        kind=draft.kind, priority=draft.priority, display_name=draft.display_name,
        config=dict(draft.config), secrets=dict(draft.secrets), disabled=draft.disabled,
        etag=provider_store.new_etag(), create_time=now, update_time=now,
        webhook_nonce=new_webhook_nonce())
    provider_store.insert_provider(uow.session, config, box)
    return config


def get_provider(uow: UnitOfWork, workspace_id: str, provider_id: str, name: str, *,
                 box: SecretBox) -> ProviderConfig:
    config = provider_store.get_provider(uow.session, workspace_id, provider_id, box)
    if config is None:
        raise NotFound(f"provider {name!r} does not exist", reason="PROVIDER_NOT_FOUND")
    return config


def list_providers(uow: UnitOfWork, workspace_id: str, channel: Channel | None, *,
                   box: SecretBox) -> list[ProviderConfig]:
    """In order of priority; of one channel, or of all when ``channel`` is None."""
    return provider_store.list_providers(uow.session, workspace_id, box, channel)


def update_provider(uow: UnitOfWork, workspace_id: str, provider_id: str, name: str,
                    changes: ProviderDraft, paths: frozenset[str], etag: str, *,
                    box: SecretBox, private_destinations: bool = False) -> ProviderConfig:
    """Change the fields named in ``paths`` (some of :data:`UPDATABLE`) to those of
    ``changes``; given secrets are merged into the stored ones. Refused when ``etag`` is
    given and the provider changed since it was read. A private address is refused only in
    a new ``config``: a provider stored before can still be disabled or deleted (its sends
    are refused when they dial it)."""
    current = provider_store.get_provider(uow.session, workspace_id, provider_id, box,
                                          for_update=True)
    if current is None:
        raise NotFound(f"provider {name!r} does not exist", reason="PROVIDER_NOT_FOUND")
    if etag and etag != current.etag:
        raise Aborted(f"provider {name!r} changed since etag {etag!r} was read",
                      reason="ETAG_MISMATCH")
    config = dict(changes.config) if "config" in paths else current.config
    if "secrets" not in paths:
        secrets = current.secrets
    elif current.secrets_error:
        # The stored ones cannot be read, so there is nothing to merge with: the given
        # secrets replace them all, and the required ones must be among them.
        secrets = dict(changes.secrets)
    else:
        secrets = {**current.secrets, **changes.secrets}
    display = changes.display_name if "display_name" in paths else current.display_name
    # Secrets this process cannot decrypt stay stored as they are when the update leaves them
    # alone (disabling such a provider must work); only their names, which are unknown here,
    # are taken as present.
    kept = (dict.fromkeys(REQUIRED_SECRETS.get(current.kind, ()), "")
            if current.secrets_error and "secrets" not in paths else secrets)
    validate_provider(channel=current.channel, kind=current.kind, display_name=display,
                      config=config, secrets=kept,
                      private_destinations=private_destinations or "config" not in paths
                      ).raise_if_any()
    updated = ProviderConfig(
        workspace_id=workspace_id, provider_id=provider_id, channel=current.channel,
        kind=current.kind,
        priority=changes.priority if "priority" in paths else current.priority,
        display_name=display, config=config, secrets=secrets,
        disabled=changes.disabled if "disabled" in paths else current.disabled,
        etag=provider_store.new_etag(), create_time=current.create_time,
        update_time=uow.now(),
        webhook_nonce=(new_webhook_nonce() if "status_webhook_url" in paths
                       else current.webhook_nonce))
    provider_store.replace_provider(uow.session, updated, box,
                                    secrets_changed="secrets" in paths)
    return updated


def delete_provider(uow: UnitOfWork, workspace_id: str, provider_id: str, name: str) -> None:
    """Delete the provider and its shared rate-limit state."""
    if not provider_store.delete_provider(uow.session, workspace_id, provider_id):
        raise NotFound(f"provider {name!r} does not exist", reason="PROVIDER_NOT_FOUND")
