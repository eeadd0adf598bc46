"""The in-app inbox: messages stored per profile, read or dismissed by the person."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cjo_platform.errors import InvalidArgument
from cjo_platform.limits import MAX_ID_LENGTH

NAME_PREFIX = "inboxMessages/"


class InboxState(StrEnum):
    UNREAD = "unread"
    READ = "read"
    DISMISSED = "dismissed"


@dataclass(frozen=True)
class InboxMessage:
    workspace_id: str
    message_id: str
    profile_id: str
    content: bytes  # serialized RenderedInApp, as rendered
    state: InboxState
    journey_id: str
    create_time: datetime
    update_time: datetime


def inbox_name(message_id: str) -> str:
    return f"{NAME_PREFIX}{message_id}"


def inbox_id_of(name: str, field: str = "name") -> str:
    message_id = name.removeprefix(NAME_PREFIX)
    if (not name.startswith(NAME_PREFIX) or not message_id or "/" in message_id
            or len(message_id) > MAX_ID_LENGTH):
        raise InvalidArgument.one(field, "must be inboxMessages/{message_id}")
    return message_id
