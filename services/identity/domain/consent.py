"""May a profile be reached on a channel (and topic)? Delivery asks before every send."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from cjo_identity.domain.golden import ConsentRecord
from cjo_identity.domain.settings import IdentitySettings


class ConsentState(StrEnum):
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Decision:
    state: ConsentState
    allowed: bool
    reason: str


def _said(record: ConsentRecord) -> Decision:
    how = f" via {record.source}" if record.source else ""
    if record.subscribed:
        return Decision(ConsentState.SUBSCRIBED, True, f"subscribed{how}")
    return Decision(ConsentState.UNSUBSCRIBED, False, f"unsubscribed{how}")


def decide(consents: Mapping[tuple[str, str], ConsentRecord] | None, channel: str, topic: str,
           settings: IdentitySettings) -> Decision:
    """``consents``: a profile's (its record's, by (channel, topic)), ``None`` for no profile.
    An unsubscribe from the whole channel covers every topic; otherwise what the person said
    about the topic, then about the channel, then the workspace's default for the channel."""
    if consents is None:
        return Decision(ConsentState.UNKNOWN, False, "unknown profile")
    whole = consents.get((channel, ""))
    if whole is not None and not whole.subscribed:
        return _said(whole)
    if topic and (channel, topic) in consents:
        return _said(consents[(channel, topic)])
    if whole is not None:
        return _said(whole)
    if settings.opt_in(channel):
        return Decision(ConsentState.UNKNOWN, False, "opt-in channel; no consent")
    return Decision(ConsentState.UNKNOWN, True, "opt-out channel; never unsubscribed")
