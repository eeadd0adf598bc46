"""Provider secrets at rest: rewrite them all in one form (the reseal-secrets command)."""

from __future__ import annotations

from cjo_delivery.adapters.provider_store import count_not_as_written_by, reseal_secrets
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.secret_box import Sealed, SecretBox


def reseal(uow: UnitOfWork, reader: SecretBox, writer: SecretBox) -> tuple[int, int]:
    """Rewrite every provider's secrets as ``writer`` writes them; (rewritten, unreadable)."""
    return reseal_secrets(uow.session, reader, writer)


def count_left(uow: UnitOfWork, writer: SecretBox) -> int:
    """How many providers' secrets are stored in another form than ``writer``'s."""
    return count_not_as_written_by(uow.session, writer)


# For `python -m cjo_delivery reseal-secrets` (cjo_platform.secret_box.reseal_command).
SEALED = Sealed("provider secrets", "delivery", reseal, count_left)
