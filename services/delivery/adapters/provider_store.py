"""Storage of providers and delivery policies."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cjo_delivery.adapters.tables import policies, provider_breakers, provider_rates, providers
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.policies import DeliveryPolicy, FrequencyCap, QuietHours
from cjo_delivery.domain.providers import ProviderConfig, ProviderKind
from cjo_platform.db.engine import upsert
from cjo_platform.logging import get_logger
from cjo_platform.secret_box import MARKER, SecretBox, SecretsUnreadable

log = get_logger(__name__)

p = providers.c


def provider_from_row(row: Row[Any], box: SecretBox) -> ProviderConfig:
    try:
        secrets, error = box.unseal(row.workspace_id, row.provider_id, row.secrets), ""
    except SecretsUnreadable as exc:
        # Reported where it matters (the sender's provider, the re-encryption pass), not on
        # every read: one unreadable row must not break listing or the other providers.
        secrets, error = {}, str(exc)
    return ProviderConfig(
        workspace_id=row.workspace_id, provider_id=row.provider_id, channel=Channel(row.channel),
        kind=ProviderKind(row.kind), priority=row.priority, display_name=row.display_name,
        config=json.loads(row.config), secrets=secrets,
        disabled=bool(row.disabled), etag=row.etag, create_time=row.create_time,
        update_time=row.update_time, secrets_error=error, webhook_nonce=row.webhook_nonce)


def new_etag() -> str:
    return uuid.uuid4().hex[:16]


def _sealed(box: SecretBox, config: ProviderConfig) -> str:
    return box.seal(config.workspace_id, config.provider_id, config.secrets)


def insert_provider(session: Session, config: ProviderConfig, box: SecretBox) -> None:
    session.execute(providers.insert().values(
        workspace_id=config.workspace_id, provider_id=config.provider_id,
        channel=config.channel.value, kind=config.kind.value, priority=config.priority,
        display_name=config.display_name, config=json.dumps(config.config, sort_keys=True),
        secrets=_sealed(box, config), disabled=config.disabled,
        etag=config.etag, create_time=config.create_time, update_time=config.update_time,
        webhook_nonce=config.webhook_nonce))


def replace_provider(session: Session, config: ProviderConfig, box: SecretBox, *,
                     secrets_changed: bool) -> None:
    """Without ``secrets_changed`` the stored secrets stay byte for byte: an update of other
    settings never re-encrypts them, nor blanks ones this process cannot decrypt."""
    values: dict[str, Any] = dict(
        priority=config.priority, display_name=config.display_name,
        config=json.dumps(config.config, sort_keys=True), disabled=config.disabled,
        etag=config.etag, update_time=config.update_time, webhook_nonce=config.webhook_nonce)
    if secrets_changed:
        values["secrets"] = _sealed(box, config)
    before = session.execute(select(p.config, p.disabled).where(
        p.workspace_id == config.workspace_id, p.provider_id == config.provider_id)).first()
    session.execute(update(providers).where(
        p.workspace_id == config.workspace_id, p.provider_id == config.provider_id).values(
        **values))
    # After the provider row, the lock order of a sender's reservation (rate_store).
    if before is None or (before.config, before.disabled) != (values["config"], config.disabled):
        # A new rate, or a provider back in service, starts afresh: the turns and arrival
        # time of the old settings could hold a backlog hours behind the new rate.
        session.execute(delete(provider_rates).where(
            provider_rates.c.workspace_id == config.workspace_id,
            provider_rates.c.provider_id == config.provider_id))
    # New settings (a fixed URL or key) get a closed breaker, as every replica's live provider
    # is rebuilt with a fresh one when the etag changes.
    _forget_breaker(session, config.workspace_id, config.provider_id)


def get_provider(session: Session, workspace_id: str, provider_id: str, box: SecretBox,
                 for_update: bool = False) -> ProviderConfig | None:
    query = select(providers).where(p.workspace_id == workspace_id, p.provider_id == provider_id)
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).first()
    return provider_from_row(row, box) if row is not None else None


def delete_provider(session: Session, workspace_id: str, provider_id: str) -> bool:
    result = session.execute(delete(providers).where(
        p.workspace_id == workspace_id, p.provider_id == provider_id))
    session.execute(delete(provider_rates).where(
        provider_rates.c.workspace_id == workspace_id,
        provider_rates.c.provider_id == provider_id))
    _forget_breaker(session, workspace_id, provider_id)
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _forget_breaker(session: Session, workspace_id: str, provider_id: str) -> None:
    session.execute(delete(provider_breakers).where(
        provider_breakers.c.workspace_id == workspace_id,
        provider_breakers.c.provider_id == provider_id))


def list_providers(session: Session, workspace_id: str, box: SecretBox,
                   channel: Channel | None = None) -> list[ProviderConfig]:
    query = select(providers).where(p.workspace_id == workspace_id)
    if channel is not None:
        query = query.where(p.channel == channel.value)
    rows = session.execute(query.order_by(p.channel, p.priority, p.create_time,
                                          p.provider_id)).all()
    return [provider_from_row(r, box) for r in rows]


def _not_as_written_by(box: SecretBox) -> ColumnElement[bool]:
    """Rows whose stored secrets differ in form from what ``box`` writes: not under its first
    key, or (a box without keys) not plaintext."""
    if box.encrypts:
        return p.secrets.not_like(box.current_prefix + "%")
    return p.secrets.like(MARKER + "%")


def reseal_secrets(session: Session, reader: SecretBox, writer: SecretBox) -> tuple[int, int]:
    """Rewrite, as ``writer`` writes them, the secrets of every provider stored otherwise,
    decrypting them with ``reader``; returns (rewritten, unreadable).

    ``writer`` is the configured box (re-encryption under the first key) or a box without
    keys (back to plaintext JSON for a release without encryption). Idempotent, and safe with
    several replicas at once: rows already in the target form are not selected, and the rest
    are locked (FOR UPDATE on PostgreSQL), so a second run waits, then finds them done and
    leaves them. A row ``reader`` cannot decrypt is left as it is and logged with its provider
    id; it never stops the others.
    """
    rows = session.execute(
        select(p.workspace_id, p.provider_id, p.secrets).where(_not_as_written_by(writer))
        .order_by(p.workspace_id, p.provider_id).with_for_update()).all()
    rewritten = unreadable = 0
    for row in rows:
        if writer.is_current(row.secrets):  # rewritten by another run while this one waited
            continue
        try:
            secrets = reader.unseal(row.workspace_id, row.provider_id, row.secrets)
        except SecretsUnreadable as exc:
            unreadable += 1
            log.error("provider secrets cannot be decrypted; the provider sends nothing until "
                      "its key is configured again or its secrets are set anew",
                      workspace=row.workspace_id, provider_id=row.provider_id, error=str(exc))
            continue
        session.execute(update(providers).where(
            p.workspace_id == row.workspace_id, p.provider_id == row.provider_id).values(
            secrets=writer.seal(row.workspace_id, row.provider_id, secrets)))
        rewritten += 1
    return rewritten, unreadable


def count_not_as_written_by(session: Session, box: SecretBox) -> int:
    """How many providers' secrets are not in the form ``box`` writes (what a key rotation
    checks before the old key is dropped)."""
    return int(session.execute(
        select(func.count()).select_from(providers).where(_not_as_written_by(box))).scalar_one())


def policy_to_json(policy: DeliveryPolicy) -> str:
    quiet = policy.quiet_hours
    return json.dumps({
        "caps": [{"channel": c.channel.value, "max": c.max_messages,
                  "window": int(c.window.total_seconds())} for c in policy.caps.values()],
        "quiet": None if quiet is None else {
            "start": quiet.start.strftime("%H:%M"), "end": quiet.end.strftime("%H:%M"),
            "zone": quiet.default_time_zone},
    })


def policy_from_json(text: str) -> DeliveryPolicy:
    data = json.loads(text)
    caps = {Channel(c["channel"]): FrequencyCap(Channel(c["channel"]), int(c["max"]),
                                                timedelta(seconds=int(c["window"])))
            for c in data.get("caps", [])}
    quiet = data.get("quiet")
    return DeliveryPolicy(caps, None if quiet is None else QuietHours(
        time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"]), quiet["zone"]))


def get_policy(session: Session, workspace_id: str) -> DeliveryPolicy:
    row = session.execute(select(policies.c.policy).where(
        policies.c.workspace_id == workspace_id)).first()
    return policy_from_json(row.policy) if row is not None else DeliveryPolicy()


def put_policy(session: Session, workspace_id: str, policy: DeliveryPolicy,
               now: datetime) -> None:
    """Replace the workspace's policy. An upsert: concurrent updates of a workspace without a
    policy yet would otherwise both insert, and all but one fail on the primary key."""
    upsert(session, policies, [{"workspace_id": workspace_id, "policy": policy_to_json(policy),
                                "update_time": now}],
           lambda new: {"policy": new.policy, "update_time": new.update_time})
