"""The in-app inbox: list a profile's messages, mark one, and the reads a live subscription
makes (where to start, what came after)."""

from __future__ import annotations

from datetime import UTC, datetime

from cjo_delivery.adapters import inbox as store
from cjo_delivery.domain.inbox import InboxMessage, InboxState
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import NotFound

Position = tuple[datetime, str]  # (create_time, message_id)


def list_inbox(uow: UnitOfWork, workspace_id: str, profile_id: str, *, include_dismissed: bool,
               limit: int, after: Position | None) -> list[InboxMessage]:
    """Newest first, up to ``limit``, after the page ending at ``after``."""
    return store.list_inbox(uow.session, workspace_id, profile_id,
                            include_dismissed=include_dismissed, limit=limit, after=after)


def mark(uow: UnitOfWork, workspace_id: str, message_id: str, name: str,
         state: InboxState) -> InboxMessage:
    found = store.mark(uow.session, workspace_id, message_id, state, uow.now())
    if found is None:
        raise NotFound(f"inbox message {name!r} does not exist",
                       reason="INBOX_MESSAGE_NOT_FOUND")
    return found


def starting_point(uow: UnitOfWork, workspace_id: str,
                   profile_id: str) -> tuple[datetime, set[str]]:
    """Where a subscription starts: the newest message's create_time and the ids of every
    message of that time (times tie, so ids alone cannot be the cursor there)."""
    newest = store.list_inbox(uow.session, workspace_id, profile_id, include_dismissed=True,
                              limit=1, after=None)
    if not newest:
        return datetime(1970, 1, 1, tzinfo=UTC), set()
    since = newest[0].create_time
    return since, store.ids_at(uow.session, workspace_id, profile_id, since)


def read_after(uow: UnitOfWork, workspace_id: str, profile_id: str, cursor: Position,
               limit: int) -> list[InboxMessage]:
    """Up to ``limit`` messages after the (time, id) ``cursor``, oldest first."""
    return store.list_inbox(uow.session, workspace_id, profile_id, include_dismissed=True,
                            limit=limit, after=None, newer_than=cursor)
