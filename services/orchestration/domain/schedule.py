"""Scheduled triggers: when a schedule fires, and what the scheduler does with an occurrence, as
pure functions of an injected ``now``.

A cron expression is evaluated in its time zone with cronsim, which follows Debian cron across
daylight-saving changes: a local time the change skips fires at the first instant after the gap,
a local time it repeats fires once. Every instant handed out here is timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from cjo_orchestration.domain.journeys import JourneyGraph, JourneyState, Schedule, TriggerKind
from cjo_platform.errors import Violations
from cjo_platform.limits import check_time

MAX_CRON_LENGTH = 200
# Counting the occurrences missed during an outage stops here; the detail then says "at least".
MAX_MISSED_COUNT = 1000
_SECOND = timedelta(seconds=1)


class OccurrenceState(StrEnum):
    PENDING = "pending"  # due at fire_time, nobody enrolled yet
    RUNNING = "running"  # enrolling the audience, page by page
    DONE = "done"  # every page enrolled
    MISSED = "missed"  # came due while the scheduler was not running; a later one fired instead
    SKIPPED = "skipped"  # came due while the journey was paused
    CANCELLED = "cancelled"  # the journey was archived, or a newer version replaced the schedule
    FAILED = "failed"  # the audience could not be read for good (e.g. the segment is gone)


OPEN_STATES = (OccurrenceState.PENDING, OccurrenceState.RUNNING)
FINAL_STATES = tuple(s for s in OccurrenceState if s not in OPEN_STATES)


def zone_of(schedule: Schedule) -> tzinfo:
    return ZoneInfo(schedule.time_zone) if schedule.time_zone else UTC


def cron_problem(expression: str) -> str:
    """"" for a usable 5-field cron expression, otherwise what is wrong with it."""
    if len(expression) > MAX_CRON_LENGTH:
        return f"at most {MAX_CRON_LENGTH} characters"
    if len(expression.split()) != 5:
        return ("must have 5 fields (minute hour day-of-month month day-of-week), e.g. "
                "'0 9 * * MON'")
    try:
        next(CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC)))
    except (CronSimError, StopIteration) as exc:
        return f"is not a valid cron expression: {exc or 'it never fires'}"
    return ""


def check_schedule(problems: Violations, at: str, schedule: Schedule | None) -> None:
    """Shape problems of a (possibly incomplete) schedule; ``at`` is the trigger's field path."""
    if schedule is None:
        return
    if schedule.cron:
        problem = cron_problem(schedule.cron)
        if problem:
            problems.add(f"{at}.cron", problem)
    if schedule.time_zone:
        try:
            ZoneInfo(schedule.time_zone)
        # ZoneInfoNotFoundError is a KeyError; "America" (a directory) is an OSError.
        except (KeyError, ValueError, OSError):
            problems.add(f"{at}.time_zone", "is not an IANA time zone, e.g. 'Europe/Berlin'")
    for name in ("at", "start_time", "end_time"):  # cron steps from these never overflow
        check_time(problems, f"{at}.{name}", getattr(schedule, name))
    if (schedule.start_time is not None and schedule.end_time is not None
            and schedule.end_time <= schedule.start_time):
        problems.add(f"{at}.end_time", "must be after start_time")


def check_publishable(problems: Violations, at: str, segment_id: str,
                      schedule: Schedule | None, now: datetime | None) -> None:
    """What a schedule needs to run; ``now`` (when known) refuses a one-off time in the past."""
    problems.check(bool(segment_id), f"{at}.segment_id", "is required")
    if schedule is None or (schedule.at is None and not schedule.cron):
        problems.add(f"{at}.cron", "is required (or at): when should the trigger fire?")
        return
    if schedule.at is not None and now is not None and schedule.at < now:
        problems.add(f"{at}.at", f"is in the past ({schedule.at.isoformat()}); a one-off "
                                 "schedule must name a future time")
    if (now is not None and schedule.end_time is not None and schedule.end_time < now):
        problems.add(f"{at}.end_time", "is in the past: the schedule would never fire")


def _cron_times(schedule: Schedule, start: datetime, reverse: bool = False) -> Iterator[datetime]:
    """Fire times strictly after ``start`` (strictly before with ``reverse``), in UTC."""
    for local in CronSim(schedule.cron, start.astimezone(zone_of(schedule)), reverse=reverse):
        yield local.astimezone(UTC)


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after`` within the bounds; None when none is left."""
    if schedule.start_time is not None and schedule.start_time > after:
        after = schedule.start_time - _SECOND  # the start itself may fire
    if schedule.at is not None:
        found: datetime | None = schedule.at if schedule.at > after else None
    elif schedule.cron:
        found = next(_cron_times(schedule, after), None)
    else:
        return None
    if found is None or (schedule.end_time is not None and found > schedule.end_time):
        return None
    return found


def first_fire(schedule: Schedule, now: datetime) -> datetime | None:
    """The first occurrence of a schedule published at ``now``: a one-off time not yet passed,
    or the next cron time after ``now``."""
    if schedule.at is not None:
        return next_fire(schedule, now - timedelta(microseconds=1))
    return next_fire(schedule, now)


@dataclass(frozen=True)
class CatchUp:
    """Several occurrences came due while nobody ran them: fire only ``latest``, once."""

    latest: datetime
    missed: int  # occurrences left out (the first is the row that was due), up to the cap


def catch_up(schedule: Schedule, fire_time: datetime, now: datetime) -> CatchUp | None:
    """None when the occurrence due at ``fire_time`` is still the latest one due by ``now``;
    otherwise the latest due occurrence, which fires instead of all the missed ones."""
    following = next_fire(schedule, fire_time)
    if following is None or following > now:
        return None
    horizon = now if schedule.end_time is None else min(now, schedule.end_time)
    # cronsim's reverse iteration is strictly before its start: start one second later, so a
    # fire time exactly at the horizon counts.
    start = horizon.replace(microsecond=0) + _SECOND
    latest = next(_cron_times(schedule, start, reverse=True), following)
    missed = 1
    for when in _cron_times(schedule, fire_time):
        if when >= latest or missed >= MAX_MISSED_COUNT:
            break
        missed += 1
    return CatchUp(latest, missed)


class Decision(StrEnum):
    """What the scheduler does with a due occurrence, before reading any of its audience."""

    RUN = "run"
    SKIP_PAUSED = "skip_paused"
    CANCEL_ARCHIVED = "cancel_archived"
    CANCEL_SUPERSEDED = "cancel_superseded"
    CATCH_UP = "catch_up"


def decide(state: JourneyState, published_version: int, version: int,
           occurrence_state: OccurrenceState, graph: JourneyGraph, fire_time: datetime,
           now: datetime) -> tuple[Decision, CatchUp | None]:
    """Archived journeys stop their schedule; paused ones skip what comes due (a running
    occurrence halts where it is); a pending occurrence of a version that is no longer the
    published one gives way to the new version's schedule; a pending occurrence with later ones
    already due gives way to the latest (missed while the scheduler was not running)."""
    if state is JourneyState.ARCHIVED:
        return Decision.CANCEL_ARCHIVED, None
    if state is JourneyState.PAUSED:
        return Decision.SKIP_PAUSED, None
    if occurrence_state is OccurrenceState.PENDING:
        trigger = graph.trigger
        if (version != published_version or trigger is None
                or trigger.kind is not TriggerKind.SCHEDULED or trigger.schedule is None):
            return Decision.CANCEL_SUPERSEDED, None
        late = catch_up(trigger.schedule, fire_time, now)
        if late is not None:
            return Decision.CATCH_UP, late
    return Decision.RUN, None


def schedule_of(graph: JourneyGraph) -> tuple[str, Schedule] | None:
    """(segment id, schedule) of a scheduled journey version, else None."""
    trigger = graph.trigger
    if trigger is None or trigger.kind is not TriggerKind.SCHEDULED or trigger.schedule is None:
        return None
    return trigger.segment_id, trigger.schedule


@dataclass(frozen=True)
class Occurrence:
    """One firing of a scheduled journey version, and how far its audience got."""

    workspace_id: str
    journey_id: str
    journey_version: int
    fire_time: datetime
    state: OccurrenceState
    page_token: str = ""  # the audience's next page; "" before the first
    pages: int = 0
    enrolled: int = 0
    not_enrolled: int = 0
    detail: str = ""
    start_time: datetime | None = None
    finish_time: datetime | None = None
    attempts: int = 0  # failed tries in a row to read the audience (transient failures)
    create_time: datetime | None = None  # when it was planned

    @property
    def key(self) -> tuple[str, str, int, datetime]:
        return self.workspace_id, self.journey_id, self.journey_version, self.fire_time

    def settled(self, state: OccurrenceState, detail: str, now: datetime) -> Occurrence:
        """The occurrence in a final state, with why."""
        return replace(self, state=state, detail=detail, finish_time=now, attempts=0)

    @property
    def event_id(self) -> str:
        """What its enrollments carry as their triggering event: one id per occurrence, so a
        page enrolled again after a crash finds the profiles it already enrolled."""
        return f"schedule:{self.journey_version}:{self.fire_time.isoformat()}"
