"""Messages: queue them (idempotent per key), read them, and erase a profile's."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from cjo_delivery.adapters import repository
from cjo_delivery.domain.messages import Accepted, Message, MessageStatus, NewMessage
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import NotFound, Violations
from cjo_platform.limits import MAX_ID_LENGTH

Announce = Callable[[UnitOfWork, str, Sequence[Message]], None]
# The signal (cjo_platform.db.signals) that wakes the senders of every replica: messages were
# queued, or released from being held.
QUEUED_SIGNAL = "queued"


def queue_messages(uow: UnitOfWork, workspace_id: str, batch: Sequence[NewMessage],
                   traceparent: str, announce: Announce) -> list[Accepted]:
    """Queue the messages whose idempotency key is new; one answer per item, in order (a key
    seen before answers with its first message, ``duplicate`` set). When any is new,
    ``announce`` (uow, workspace, the new messages) signals it in the transaction, so the
    senders of every replica wake once it committed. ``traceparent`` is the request's trace,
    which the message's send follows."""
    accepted = repository.queue_messages(uow.session, workspace_id, batch, uow.now(),
                                         traceparent, lambda: uuid.uuid4().hex)
    # A held message is claimed only once released: nothing to wake a sender for.
    queued = [a.message for a in accepted
              if not a.duplicate and a.message.status is MessageStatus.QUEUED]
    if queued:
        announce(uow, workspace_id, queued)
    return accepted


def get_message(uow: UnitOfWork, workspace_id: str, message_id: str, name: str) -> Message:
    message = repository.get_message(uow.session, workspace_id, message_id)
    if message is None:
        raise NotFound(f"message {name!r} does not exist", reason="MESSAGE_NOT_FOUND")
    return message


def list_messages(uow: UnitOfWork, workspace_id: str, *, profile_id: str, journey_id: str,
                  status: MessageStatus | None, limit: int,
                  after: tuple[datetime, str] | None) -> list[Message]:
    """Newest first, up to ``limit``, after the (create_time, message_id) ``after``."""
    return repository.list_messages(uow.session, workspace_id, profile_id=profile_id,
                                    journey_id=journey_id, limit=limit, after=after,
                                    status=status)


def erase_profiles(uow: UnitOfWork, workspace_id: str,
                   profile_ids: Sequence[str]) -> list[tuple[int, int]]:
    """Erase what delivery holds of each profile (see repository.erase_profile for what is
    canceled, blanked and kept); (canceled, in flight) per profile, in order."""
    problems = Violations()
    for index, profile_id in enumerate(profile_ids):
        problems.check(0 < len(profile_id) <= MAX_ID_LENGTH, f"profile_ids[{index}]",
                       f"must be 1 to {MAX_ID_LENGTH} characters")
    problems.raise_if_any()
    now = uow.now()
    return [repository.erase_profile(uow.session, workspace_id, profile_id, now)
            for profile_id in profile_ids]
