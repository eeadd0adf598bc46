"""The first transaction of a send round: claim due messages and read what the policies and
the failover need to know about them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cjo_delivery.adapters import held, repository, round_context
from cjo_delivery.domain.messages import Channel, Claim
from cjo_delivery.domain.policies import DeliveryPolicy
from cjo_delivery.domain.providers import ProviderConfig
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.secret_box import SecretBox


@dataclass(frozen=True)
class RoundContext:
    """What the policies and the failover need for one round, read in the claim's transaction
    (the frequency caps are counted later, under their lock: service_layer/caps.py)."""

    providers: dict[tuple[str, Channel], list[ProviderConfig]]
    policies: dict[str, DeliveryPolicy]
    suppressions: dict[tuple[str, str, str], str]

    def providers_of(self, claim: Claim) -> list[ProviderConfig]:
        return self.providers.get((claim.workspace_id, claim.channel), [])


def claim_due(uow: UnitOfWork, now: datetime, lease: timedelta, batch_size: int,
              box: SecretBox, holder: str, *,
              leave: Collection[str] = ()) -> tuple[list[Claim], RoundContext]:
    """Take up to ``batch_size`` due messages, SENDING under a lease until ``now + lease`` held
    by the sender process ``holder``, with their context: one transaction (one commit) for
    both, the context only read; the workspaces in ``leave`` are not claimed from."""
    claims = repository.claim_due(uow.session, now, now + lease, batch_size, holder=holder,
                                  leave=leave)
    return claims, load_context(uow, claims, box)


def release_orphans(uow: UnitOfWork, now: datetime,
                    after: held.HeldKey | None) -> held.HeldKey | None:
    """One batch of the safety net, in its own transaction (not the claim's): release the held
    messages nothing holds back any more among the next ``held.ORPHAN_BATCH`` after ``after``;
    returns where the next batch starts, None when the pass is over (adapters/held.py)."""
    return held.release_orphans(uow.session, now, after)[1]


def set_back(uow: UnitOfWork, claims: Sequence[Claim], until: datetime) -> None:
    """``claims`` never reached a provider: their lease ends at ``until``, and that end will not
    count against them (see :func:`repository.set_back`)."""
    repository.set_back(uow.session, claims, until)


def load_context(uow: UnitOfWork, claims: Sequence[Claim], box: SecretBox) -> RoundContext:
    if not claims:
        return RoundContext({}, {}, {})
    configs, policies, suppressions = round_context.read(
        uow.session, sorted({c.workspace_id for c in claims}),
        [(c.workspace_id, c.channel.value, c.address) for c in claims], box)
    providers: dict[tuple[str, Channel], list[ProviderConfig]] = defaultdict(list)
    for config in configs:
        providers[(config.workspace_id, config.channel)].append(config)
    return RoundContext(dict(providers), policies, suppressions)
