"""What a person (or their mailbox provider) did with a message, and what each engagement
becomes: a status change of the message, an event for identity (so journeys can wait for it and
consent follows an unsubscribe), and a fact for analytics.

Every engagement has an id derived from what it is about (kind, message, and the link for
clicks), so a repeated open, click or webhook is recorded again but deduplicated downstream.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cjo_delivery.domain.messages import Channel, MessageStatus
from cjo_platform.engagement import EVENT_NAME_TEMPLATES


class EngagementKind(StrEnum):
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


EVENT_NAMES = {kind: EVENT_NAME_TEMPLATES[kind.value] for kind in EngagementKind}
"""Each kind's event name (``{channel}`` is the message's channel); shared with orchestration,
whose engagement waits hold only for the journey's own message."""


@dataclass(frozen=True)
class Engagement:
    kind: EngagementKind
    workspace_id: str
    message_id: str
    url: str = ""
    reason: str = ""

    @property
    def engagement_id(self) -> str:
        """Stable for repeats of the same engagement: identity and analytics dedupe on it."""
        suffix = hashlib.sha256(self.url.encode()).hexdigest()[:16] if self.url else ""
        return ":".join(p for p in (self.kind.value, self.message_id, suffix) if p)

    def event_name(self, channel: Channel) -> str:
        return EVENT_NAMES[self.kind].format(channel=channel.value)


def status_after(current: MessageStatus, kind: EngagementKind) -> MessageStatus:
    """The message's status once ``kind`` happened. An open or a click proves delivery; a
    bounce ends it; a later report never takes a message back (bounced stays bounced)."""
    if current in (MessageStatus.BOUNCED, MessageStatus.FAILED, MessageStatus.SUPPRESSED):
        return current
    if kind is EngagementKind.BOUNCED:
        return MessageStatus.BOUNCED
    if kind in (EngagementKind.DELIVERED, EngagementKind.OPENED, EngagementKind.CLICKED) \
            and current is MessageStatus.SENT:
        return MessageStatus.DELIVERED
    return current


def suppresses(kind: EngagementKind) -> bool:
    """A bounce or a spam complaint puts the address on the suppression list."""
    return kind in (EngagementKind.BOUNCED, EngagementKind.COMPLAINED)


_HREF = re.compile(r'(<a\b[^>]*?\bhref\s*=\s*)(["\'])(https?://[^"\']+)\2', re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def rewrite_links(body: str, click_url: Callable[[str], str], open_url: str) -> str:
    """Route http(s) links of an HTML body through the click tracker, and add the open pixel."""
    def swap(match: re.Match[str]) -> str:
        target = html.unescape(match.group(3))
        return f"{match.group(1)}{match.group(2)}{html.escape(click_url(target))}{match.group(2)}"

    rewritten = _HREF.sub(swap, body)
    pixel = (f'<img src="{html.escape(open_url)}" width="1" height="1" alt="" '
             'style="display:none">')
    ends = list(_BODY_END.finditer(rewritten))
    if not ends:
        return rewritten + pixel
    at = ends[-1].start()
    return rewritten[:at] + pixel + rewritten[at:]
