"""What a send round's policies and failover need to know about its claims, read in one
statement: the enabled providers and the delivery policies of the claims' workspaces, and which
of their addresses are suppressed (whichever spelling: repository.suppression_spellings).

One ``UNION ALL`` of the three reads, each row tagged with its ``part``, in the providers'
columns: a policy's JSON and a suppression's reason come in ``config``, a suppressed address in
``provider_id``. Three statements cost a send round three round trips (and SQLAlchemy's work for
each), which a lone message pays whole."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, CompoundSelect, Integer, String, literal, null, select, union_all
from sqlalchemy.orm import Session

from cjo_delivery.adapters.provider_store import policy_from_json, provider_from_row
from cjo_delivery.adapters.repository import suppression_reasons, suppression_spellings
from cjo_delivery.adapters.tables import policies, providers, suppressions
from cjo_delivery.domain.policies import DeliveryPolicy
from cjo_delivery.domain.providers import ProviderConfig
from cjo_platform.db import UtcDateTime
from cjo_platform.db.engine import keys_param, one_of_keys
from cjo_platform.secret_box import SecretBox

SuppressionKey = tuple[str, str, str]  # (workspace, channel, address)


def read(session: Session, workspace_ids: Sequence[str], keys: Sequence[SuppressionKey],
         box: SecretBox) -> tuple[list[ProviderConfig], dict[str, DeliveryPolicy],
                                  dict[SuppressionKey, str]]:
    """The enabled providers of ``workspace_ids`` in the order they are tried, their policies,
    and the reasons of the suppressed ``keys``."""
    if not workspace_ids:
        return [], {}, {}
    spellings = {key: suppression_spellings(key[1], key[2]) for key in keys}
    dialect = session.get_bind().dialect.name
    # An address no key has (""): the suppressions' part then finds nothing.
    addresses = sorted({a for found in spellings.values() for a in found}) or [""]
    rows = session.execute(_context(dialect), {
        "workspaces": keys_param(dialect, sorted(set(workspace_ids))),
        "addresses": keys_param(dialect, addresses)}).all()
    provider_rows = sorted((r for r in rows if r.part == "provider"), key=lambda r: (
        r.workspace_id, r.channel, r.priority, r.create_time, r.provider_id))
    found = {r.workspace_id: policy_from_json(r.config) for r in rows if r.part == "policy"}
    reasons = suppression_reasons(spellings, {
        (r.workspace_id, r.channel, r.provider_id): r.config
        for r in rows if r.part == "suppression"})
    return [provider_from_row(r, box) for r in provider_rows], found, reasons


@functools.cache
def _context(dialect: str) -> CompoundSelect[Any]:
    """Built once per dialect, every value bound (one_of_keys)."""
    p, q, s = providers.c, policies.c, suppressions.c
    no_time = null().cast(UtcDateTime)

    def blank(text: str = "") -> Any:
        return literal(text, String)

    return union_all(
        select(blank("provider").label("part"), p.workspace_id, p.provider_id, p.channel,
               p.kind, p.priority, p.display_name, p.config, p.secrets, p.disabled, p.etag,
               p.webhook_nonce, p.create_time, p.update_time)
        .where(one_of_keys(dialect, p.workspace_id, "workspaces"), p.disabled.is_(False)),
        select(blank("policy"), q.workspace_id, blank(), blank(), blank(),
               literal(0, Integer), blank(), q.policy, blank(), literal(False, Boolean),
               blank(), blank(), no_time, no_time)
        .where(one_of_keys(dialect, q.workspace_id, "workspaces")),
        select(blank("suppression"), s.workspace_id, s.address, s.channel, blank(),
               literal(0, Integer), blank(), s.reason, blank(), literal(False, Boolean),
               blank(), blank(), no_time, no_time)
        .where(one_of_keys(dialect, s.address, "addresses"),
               one_of_keys(dialect, s.workspace_id, "workspaces")),
    )
