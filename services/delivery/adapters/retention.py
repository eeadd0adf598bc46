"""Delivery's retention kinds (cjo_platform.db.retention), besides the request log and dead
letters every service has: the rendered bodies of final messages, and the in-app inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import ColumnElement, and_
from sqlalchemy.engine import Row

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters.tables import inbox_messages, messages
from cjo_delivery.domain.messages import FINAL_STATUSES
from cjo_platform.db.retention import Rule

# A rendered body holds the person's name, address and whatever the template put in; once the
# message is final only support looks at it, and a month covers a complaint.
MESSAGE_BODIES_DAYS = 30
# An in-app message half a year old is no longer shown to anyone.
INBOX_MESSAGES_DAYS = 180


def _body_stored() -> ColumnElement[bool]:
    """Messages whose body is still stored: the rows of ix_messages_bodies, which a pass walks
    (not the ever more messages whose body went)."""
    stored: ColumnElement[bool] = messages.c.body_removed_time.is_(None)
    return stored


def _bodies_removable() -> ColumnElement[bool]:
    """Final messages whose body is still stored (a queued or sending one needs it)."""
    return and_(_body_stored(), messages.c.status.in_(sorted(s.value for s in FINAL_STATUSES)))


def without_body(content: bytes) -> bytes:
    """The stored RenderedMessage without its body: the channel, content key, revision, version,
    locale and variant stay (engagement facts still name the content and variant)."""
    try:
        rendered = common_pb2.RenderedMessage.FromString(content)
    except DecodeError:
        return b""
    rendered.ClearField("body")
    stripped: bytes = rendered.SerializeToString()
    return stripped


def _remove_body(row: Row[Any], now: datetime) -> dict[str, Any]:
    return {"content": without_body(row.content), "body_removed_time": now}


RULES = [
    Rule("message_bodies", messages, messages.c.create_time, MESSAGE_BODIES_DAYS,
         _bodies_removable, rewrite=_remove_body, read=[messages.c.content],
         indexed=_body_stored,
         description="rendered bodies of final messages (the message row and status stay)"),
    Rule("inbox_messages", inbox_messages, inbox_messages.c.create_time, INBOX_MESSAGES_DAYS,
         description="in-app inbox messages"),
]
