"""Inbox storage, the in-app "provider" that delivers into it, and the hub that wakes live
subscribers.

Storing an inbox message signals it (``cjo_platform.db.signals``, LISTEN/NOTIFY on PostgreSQL):
the hub of every replica wakes the profile's subscribers once the message committed, whichever
replica delivered it. Subscribers do not trust the hub for content: a wake-up (or a poll every
few seconds, the safety net for a lost signal) makes them read what is new from the database,
after the last message they streamed.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cjo_delivery.adapters.tables import inbox_messages
from cjo_delivery.domain.inbox import InboxMessage, InboxState
from cjo_delivery.domain.sending import OutgoingMessage, ProviderError
from cjo_platform.db import insert_ignore
from cjo_platform.db.signals import Signals
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork

i = inbox_messages.c

# The signal of a new inbox message; its payload is the JSON [workspace id, profile id].
INBOX_SIGNAL = "inbox"


def _inbox(row: Row[Any]) -> InboxMessage:
    return InboxMessage(workspace_id=row.workspace_id, message_id=row.message_id,
                        profile_id=row.profile_id, content=row.content,
                        state=InboxState(row.state), journey_id=row.journey_id,
                        create_time=row.create_time, update_time=row.update_time)


def list_inbox(session: Session, workspace_id: str, profile_id: str, *, include_dismissed: bool,
               limit: int, after: tuple[datetime, str] | None,
               newer_than: tuple[datetime, str] | None = None) -> list[InboxMessage]:
    """Newest first after the (time, id) ``after`` (paging); or, with ``newer_than``, oldest
    first after that (time, id), ``(time, "")`` taking every message of that time."""
    query = select(inbox_messages).where(i.workspace_id == workspace_id,
                                         i.profile_id == profile_id)
    if not include_dismissed:
        query = query.where(i.state != InboxState.DISMISSED.value)
    if newer_than is not None:
        time, message_id = newer_than
        query = query.where(or_(i.create_time > time,
                                and_(i.create_time == time, i.message_id > message_id)))
        order: tuple[ColumnElement[Any], ...] = (i.create_time, i.message_id)
    else:
        if after is not None:
            time, message_id = after
            query = query.where(or_(i.create_time < time,
                                    and_(i.create_time == time, i.message_id < message_id)))
        order = (i.create_time.desc(), i.message_id.desc())
    return [_inbox(r) for r in session.execute(query.order_by(*order).limit(limit)).all()]


def ids_at(session: Session, workspace_id: str, profile_id: str, time: datetime) -> set[str]:
    """The ids of the profile's messages created at exactly ``time``."""
    return set(session.execute(select(i.message_id).where(
        i.workspace_id == workspace_id, i.profile_id == profile_id,
        i.create_time == time)).scalars())


def mark(session: Session, workspace_id: str, message_id: str, state: InboxState,
         now: datetime) -> InboxMessage | None:
    session.execute(update(inbox_messages).where(
        i.workspace_id == workspace_id, i.message_id == message_id).values(
        state=state.value, update_time=now))
    row = session.execute(select(inbox_messages).where(
        i.workspace_id == workspace_id, i.message_id == message_id)).first()
    return _inbox(row) if row is not None else None


class InboxHub:
    """Wakes the subscribers of a profile in this process."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)

    def subscribe(self, workspace_id: str, profile_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[(workspace_id, profile_id)].add(event)
        return event

    def unsubscribe(self, workspace_id: str, profile_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get((workspace_id, profile_id))
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[(workspace_id, profile_id)]

    def publish(self, keys: Sequence[tuple[str, str]]) -> None:
        for key in keys:
            for event in self._waiters.get(key, ()):
                event.set()

    def on_signal(self, payload: str | None) -> None:
        """An inbox signal from any replica; None: any profile may have new messages."""
        if payload is None:
            self.publish(list(self._waiters))
            return
        try:
            workspace_id, profile_id = json.loads(payload)
        except (ValueError, TypeError):
            return  # not ours to read; the poll catches up
        self.publish([(str(workspace_id), str(profile_id))])


class InboxProvider:
    """Delivers in-app messages by storing them in the inbox (idempotent per message), and
    signals every replica's subscribers of the profile."""

    def __init__(self, transactions: Transactions, signals: Signals) -> None:
        self.transactions = transactions
        self.signals = signals

    async def send(self, message: OutgoingMessage) -> str:
        if message.in_app is None:
            raise ProviderError("the inbox takes only in-app messages", transient=False)
        content = message.in_app

        def store(uow: UnitOfWork) -> None:
            now = uow.now()
            insert_ignore(uow.session, inbox_messages, [{
                "workspace_id": message.workspace_id, "message_id": message.message_id,
                "profile_id": message.to, "content": content,
                "state": InboxState.UNREAD.value, "journey_id": message.journey_id,
                "create_time": now, "update_time": now}])
            self.signals.send(uow, INBOX_SIGNAL, json.dumps([message.workspace_id, message.to]))

        await self.transactions.run(store)
        return message.message_id

    async def close(self) -> None:
        pass
