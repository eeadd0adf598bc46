"""Time: when a wait node's timer fires (a duration, a local time on allowed weekdays in the
profile's zone, an event's timeout) and which zone a profile lives in."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cjo_orchestration.domain.journeys import LocalTime, WaitAction

_MAX_ZONE_NAME = 64  # the longest IANA name is about 30 characters


def _zone(name: object) -> ZoneInfo | None:
    if not isinstance(name, str) or not name or len(name) > _MAX_ZONE_NAME:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory: OSError
        return None


def profile_zone(traits: Mapping[str, Any], default: str) -> ZoneInfo:
    for name in (traits.get("timezone"), traits.get("time_zone"), default):
        zone = _zone(name)
        if zone is not None:
            return zone
    return ZoneInfo("UTC")


def profile_time_zone(traits: Mapping[str, Any]) -> str:
    """The IANA time zone a profile's traits name (``timezone``, else ``time_zone``), for
    delivery's quiet hours; "" when none names a known zone (delivery then uses its policy's
    default rather than refusing the message)."""
    for name in (traits.get("timezone"), traits.get("time_zone")):
        if _zone(name) is not None:
            assert isinstance(name, str)
            return name
    return ""


def next_local_time(now: datetime, zone: ZoneInfo, local: LocalTime) -> datetime:
    """The first instant after ``now`` when the wall clock in ``zone`` shows the wanted time on
    an allowed weekday. Computed on the local calendar, so it stays at 09:00 across DST; a time
    that a spring-forward skips resolves to the instant after the gap."""
    today = now.astimezone(zone).date()
    for offset in range(0, 9):
        day = today + timedelta(days=offset)
        if local.weekdays and day.isoweekday() not in local.weekdays:
            continue
        candidate = datetime.combine(day, time(local.hour, local.minute), tzinfo=zone)
        instant = candidate.astimezone(UTC)
        if instant > now:
            return instant
    raise AssertionError("an allowed weekday falls within 8 days")


def wait_until(action: WaitAction, traits: Mapping[str, Any], now: datetime
               ) -> tuple[datetime, str]:
    """When the timer of a wait entered at ``now`` fires, and the waiting step's detail."""
    if action.duration is not None:
        until, detail = now + action.duration, "until"
    elif action.local_time is not None:
        zone = profile_zone(traits, action.local_time.default_time_zone)
        until, detail = next_local_time(now, zone, action.local_time), f"until ({zone.key})"
    elif action.best_time is not None:
        # Only a best-time wait that paces a loop alone (an older version): its max_delay.
        until = now + action.best_time.max_delay
        return until, (f"until {until.isoformat()} (max_delay: the only kind of wait in a loop, "
                       "so decisioning is not asked)")
    else:
        assert action.event is not None
        until = now + action.event.timeout
        detail = f"for event {action.event.event_name} until"
    return until, f"{detail} {until.isoformat()}"
