"""Policies checked before every send: consent, the suppression list, frequency caps and quiet
hours. Pure: the sender gathers the facts (one consent batch call, one suppression query, the
recent send times) and asks :func:`decide` what to do with each message."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cjo_delivery.domain.messages import Channel, Claim
from cjo_platform.errors import Violations

MIN_WINDOW = timedelta(minutes=1)
MAX_WINDOW = timedelta(days=365)


@dataclass(frozen=True)
class FrequencyCap:
    channel: Channel
    max_messages: int
    window: timedelta


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    default_time_zone: str = "UTC"

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # spans midnight

    def end_after(self, now: datetime, time_zone: str) -> datetime | None:
        """The end of the quiet hours ``now`` falls in, in UTC; None when ``now`` is not quiet
        in ``time_zone`` (the profile's, else the policy default)."""
        zone = load_zone(time_zone) or load_zone(self.default_time_zone) or ZoneInfo("UTC")
        local = now.astimezone(zone)
        if not self.contains(local.time().replace(tzinfo=None)):
            return None
        day = local.date()
        if self.start > self.end and local.time().replace(tzinfo=None) >= self.start:
            day += timedelta(days=1)  # evening part: the quiet hours end tomorrow morning
        end = datetime.combine(day, self.end, tzinfo=zone)
        return end.astimezone(now.tzinfo)


@dataclass(frozen=True)
class DeliveryPolicy:
    caps: dict[Channel, FrequencyCap] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None

    @property
    def longest_window(self) -> timedelta:
        return max((c.window for c in self.caps.values()), default=timedelta(0))


def load_zone(name: str) -> ZoneInfo | None:
    if not name:
        return None
    if len(name) > 64:  # the longest IANA name is about 30 characters
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory: OSError
        return None


def parse_local_time(text: str) -> time | None:
    try:
        hours, minutes = text.split(":")
        if len(hours) != 2 or len(minutes) != 2:
            return None
        return time(int(hours), int(minutes))
    except ValueError:
        return None


def validate_policy(caps: list[tuple[Channel | None, int, int]],
                    quiet: tuple[str, str, str] | None) -> Violations:
    """``caps`` as (channel, max_messages, window_seconds); ``quiet`` as (start, end, zone)."""
    problems = Violations()
    seen: set[Channel] = set()
    for index, (channel, most, seconds) in enumerate(caps):
        path = f"policy.frequency_caps[{index}]"
        if problems.check(channel is not None, f"{path}.channel", "is required"):
            assert channel is not None
            problems.check(channel not in seen, f"{path}.channel", "has a cap already")
            seen.add(channel)
        problems.check(most >= 1, f"{path}.max_messages", "must be at least 1")
        problems.check(MIN_WINDOW.total_seconds() <= seconds <= MAX_WINDOW.total_seconds(),
                       f"{path}.window_seconds", "must be 60 to 31536000")
    if quiet is not None:
        start, end, zone = quiet
        if problems.check(parse_local_time(start) is not None, "policy.quiet_hours.start",
                          "must be a local time HH:MM"):
            problems.check(start != end, "policy.quiet_hours.end", "must differ from start")
        problems.check(parse_local_time(end) is not None, "policy.quiet_hours.end",
                       "must be a local time HH:MM")
        if zone:
            problems.check(load_zone(zone) is not None, "policy.quiet_hours.default_time_zone",
                           "is not an IANA time zone")
    return problems


@dataclass(frozen=True)
class ConsentQuery:
    profile_id: str
    channel: Channel
    topic: str


@dataclass(frozen=True)
class ConsentDecision:
    allowed: bool
    reason: str


class ConsentUnavailable(Exception):
    """Consent could not be asked (identity down); the messages wait, they are not sent."""


class ConsentDirectory(Protocol):
    async def check(self, workspace_id: str,
                    queries: list[ConsentQuery]) -> list[ConsentDecision]:
        """One decision per query, in order; raises ConsentUnavailable."""
        ...


@dataclass(frozen=True)
class Send:
    pass


@dataclass(frozen=True)
class Suppress:
    reason: str


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: str


Decision = Send | Suppress | Defer


def decide(claim: Claim, policy: DeliveryPolicy, *, consent: ConsentDecision | None,
           suppression: str | None, recent_sends: list[datetime], now: datetime) -> Decision:
    """What to do with one claimed message. ``recent_sends`` are the sorted send times of the
    profile's messages on the channel (all journeys); a Send appends ``now`` to it, so messages
    later in the same batch see this one."""
    if suppression is not None:
        return Suppress(f"address suppressed: {suppression}")
    if claim.transactional:
        return Send()
    if consent is not None and not consent.allowed:
        return Suppress(f"no consent: {consent.reason}")
    if policy.quiet_hours is not None:
        end = policy.quiet_hours.end_after(now, claim.time_zone)
        if end is not None:
            return Defer(end, "quiet hours")
    cap = policy.caps.get(claim.channel)
    if cap is not None and claim.profile_id:
        start = bisect.bisect_right(recent_sends, now - cap.window)
        in_window = recent_sends[start:]
        if len(in_window) >= cap.max_messages:
            # Allowed again when the oldest send that counts leaves the window.
            until = in_window[len(in_window) - cap.max_messages] + cap.window
            return Defer(until, f"frequency cap: {cap.max_messages} per "
                                f"{int(cap.window.total_seconds())} s on {claim.channel.value}")
        bisect.insort(recent_sends, now)
    return Send()
