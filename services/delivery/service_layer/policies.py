"""The workspace's delivery policy: frequency caps and quiet hours."""

from __future__ import annotations

from cjo_delivery.adapters import provider_store
from cjo_delivery.domain.policies import DeliveryPolicy
from cjo_platform.db.unit_of_work import UnitOfWork


def get_policy(uow: UnitOfWork, workspace_id: str) -> DeliveryPolicy:
    """The stored policy, or the empty one (no caps, no quiet hours)."""
    return provider_store.get_policy(uow.session, workspace_id)


def update_policy(uow: UnitOfWork, workspace_id: str, policy: DeliveryPolicy) -> DeliveryPolicy:
    """Replace the policy as a whole; the next send round applies it."""
    provider_store.put_policy(uow.session, workspace_id, policy, uow.now())
    return policy
