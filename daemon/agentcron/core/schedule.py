"""When a cron schedule fires: wall-clock matching in an IANA zone, mapped to UTC (SPEC §3).

Pure: every function takes the instant to start from (``after``); nothing here reads the clock,
sleeps or logs.

How an occurrence is found: the matching *local wall-clock* minutes are generated in ascending
order straight from the field sets (month -> day -> hour:minute, skipping whole months and days
that cannot match, so ``0 0 29 2 *`` costs a few steps per year, never a minute-by-minute walk),
and each wall time is mapped to UTC with ``zoneinfo``:

- a wall time whose two ``fold`` offsets agree exists exactly once: ``instant = wall - offset``;
- otherwise it is classified with round trips: ``wall`` with ``fold=0`` / ``fold=1`` converted to
  UTC and back. If neither gives ``wall`` back the time does not exist (spring-forward gap) and is
  **skipped**; if both do at different instants it occurs twice (fall-back) and **fires twice**,
  first instant then second. Only UTC offsets are compared, never ``dst()``, so negative DST
  (Europe/Dublin), 30-minute shifts (Australia/Lord_Howe) and midnight transitions
  (America/Santiago, Africa/Cairo) need no special case.

The second instants of a repeated hour come after the first instants of *later* wall times in
that hour, so they wait in a small queue and are released in UTC order. Results are strictly
increasing, timezone-aware UTC datetimes, strictly after ``after``.
"""

from __future__ import annotations

import calendar
import functools
import zoneinfo
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from itertools import islice

from agentcron.core.cron import CronExpression, parse_cron
from agentcron.errors import ScheduleError

__all__ = [
    "CompiledSchedule",
    "Occurrence",
    "SkippedOccurrence",
    "compile_schedule",
    "load_timezone",
    "preview",
    "upcoming",
]

# Iteration stays inside these years: instants near datetime.min/max cannot change zones.
_FIRST_YEAR = 2
_LAST_YEAR = 9998
# Loadable by zoneinfo on many hosts but not IANA zones: the host's own zone and a POSIX default.
_NOT_IANA = frozenset({"localtime", "posixrules"})
_ZERO = timedelta(0)


class _Kind(IntEnum):
    ONCE = 0  # the wall time occurs once
    FIRST = 1  # first of the two instants of a repeated wall time
    SECOND = 2  # second of the two instants of a repeated wall time
    SKIPPED = 3  # the wall time does not exist (spring-forward gap)


@dataclass(frozen=True, slots=True, kw_only=True)
class Occurrence:
    """One fire instant: ``at`` in UTC, ``local`` the same instant in the schedule's zone.

    ``note`` explains DST effects, e.g. ``"fires twice: 01:30 occurs twice"``; None otherwise.
    """

    at: datetime
    local: datetime
    note: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedOccurrence:
    """A matching wall-clock time that does not exist on that day (no instant, never fired).

    ``wall`` is the naive local wall-clock time; ``note`` reads like
    ``"skipped: 02:30 does not exist on 2026-03-08 in America/New_York"``.
    """

    wall: datetime
    note: str


def load_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name``; ``ScheduleError`` ("schedule.timezone: ...") when it is unknown.

    Empty and path-like names (``../etc``, ``/etc/localtime``) are refused before the lookup.
    """
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(
            "schedule.timezone: must be an IANA timezone name such as 'America/New_York'"
        )
    parts = name.split("/")
    if (
        name != name.strip()
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ScheduleError(
            f"schedule.timezone: {name!r} is not an IANA timezone name (path-like names are "
            "not allowed)"
        )
    if name in _NOT_IANA:
        raise ScheduleError(f"schedule.timezone: unknown IANA timezone {name!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError) as exc:
        raise ScheduleError(f"schedule.timezone: unknown IANA timezone {name!r}") from exc


_parse_cached = functools.lru_cache(maxsize=8192)(parse_cron)


@functools.lru_cache(maxsize=65536)
def compile_schedule(expression: str, timezone: str) -> CompiledSchedule:
    """Validate ``expression`` and ``timezone`` and prepare them for fast iteration.

    Cached: deployments that share an expression and zone share one ``CompiledSchedule``.
    Raises ``ScheduleError`` prefixed ``schedule.expression: `` or ``schedule.timezone: ``.
    """
    try:
        cron = _parse_cached(expression)
    except ScheduleError as exc:
        raise ScheduleError(f"schedule.expression: {exc.message}") from exc
    zone = load_timezone(timezone)
    return CompiledSchedule(expression=expression, timezone=timezone, cron=cron, zone=zone)


def upcoming(expression: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants (UTC) strictly after ``after``.

    Memoized per minute: the answer for the minute ``after`` falls in (strictly after that
    minute's start) is reused for every ``after`` in the minute whenever its first instant lies
    beyond ``after``, which makes it the exact answer: no occurrence lies between the minute's
    start and ``after``, so the first ``count`` after either are the same. Occurrences are whole
    wall-clock minutes, so this holds in every zone whose UTC offset is whole minutes (all of
    today's); otherwise the answer is computed afresh.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    start = _as_utc(after)
    minute = start.replace(second=0, microsecond=0)
    found = _upcoming_after_minute(expression, timezone, minute, count)
    if not found or found[0] > start:
        return list(found)
    return list(islice(compile_schedule(expression, timezone).iter_after(start), count))


@functools.lru_cache(maxsize=4096)
def _upcoming_after_minute(
    expression: str, timezone: str, minute: datetime, count: int
) -> tuple[datetime, ...]:
    return tuple(islice(compile_schedule(expression, timezone).iter_after(minute), count))


def preview(
    expression: str, timezone: str, after: datetime, count: int
) -> list[Occurrence | SkippedOccurrence]:
    """The next ``count`` occurrences after ``after``, with DST notes, for people to read.

    Skipped wall times (spring-forward gaps) between them are included as
    ``SkippedOccurrence`` entries, in wall-clock order; they do not count towards ``count``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    schedule = compile_schedule(expression, timezone)
    start = _as_utc(after)
    result: list[Occurrence | SkippedOccurrence] = []
    fired = 0
    if count == 0:
        return result
    for kind, wall, instant in schedule._walk(start, with_skipped=True):
        if instant is None:
            note = f"skipped: {wall:%H:%M} does not exist on {wall:%Y-%m-%d} in {schedule.timezone}"
            result.append(SkippedOccurrence(wall=wall.replace(tzinfo=None), note=note))
            continue
        twice = None
        if kind in (_Kind.FIRST, _Kind.SECOND):
            twice = f"fires twice: {wall:%H:%M} occurs twice"
        result.append(Occurrence(at=instant, local=instant.astimezone(schedule.zone), note=twice))
        fired += 1
        if fired == count:
            break
    return result


class CompiledSchedule:
    """A validated expression in a zone, ready to produce fire instants.

    Build it with ``compile_schedule`` (cached). ``next_after`` / ``iter_after`` take any
    timezone-aware ``after`` (naive datetimes are a ``ValueError``) and return UTC datetimes.
    """

    __slots__ = (
        "_dom_all",
        "_doms",
        "_dows_all",
        "_months",
        "_or_rule",
        "_py_weekdays",
        "_times",
        "cron",
        "expression",
        "timezone",
        "zone",
    )

    def __init__(
        self, *, expression: str, timezone: str, cron: CronExpression, zone: zoneinfo.ZoneInfo
    ) -> None:
        self.expression = expression
        self.timezone = timezone
        self.cron = cron
        self.zone = zone
        self._months = tuple(sorted(cron.months))
        self._doms = tuple(sorted(cron.days_of_month))
        self._dom_all = len(cron.days_of_month) == 31
        # Python's weekday() (Monday = 0) values that match; cron's Sunday = 0 is Python's 6.
        self._py_weekdays = frozenset((day - 1) % 7 for day in cron.days_of_week)
        self._dows_all = len(cron.days_of_week) == 7
        self._or_rule = cron.either_day
        self._times = tuple(
            (hour, minute) for hour in sorted(cron.hours) for minute in sorted(cron.minutes)
        )

    def __repr__(self) -> str:
        return f"CompiledSchedule(expression={self.expression!r}, timezone={self.timezone!r})"

    def next_after(self, after: datetime) -> datetime:
        """The first fire instant strictly after ``after``, in UTC."""
        for _kind, _wall, instant in self._walk(_as_utc(after), with_skipped=False):
            if instant is not None:
                return instant
        raise ScheduleError(
            f"schedule.expression: {self.expression!r} has no occurrence before year "
            f"{_LAST_YEAR + 1} in {self.timezone}"
        )

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Every fire instant strictly after ``after``, ascending, in UTC.

        ``after`` is checked at once (not on the first ``next()``).
        """
        walk = self._walk(_as_utc(after), with_skipped=False)
        return (instant for _kind, _wall, instant in walk if instant is not None)

    def _walk(
        self, after: datetime, *, with_skipped: bool
    ) -> Iterator[tuple[_Kind, datetime, datetime | None]]:
        """(kind, wall time as an aware fold=0 datetime, UTC instant or None when skipped).

        ``after`` is a UTC datetime checked by ``_as_utc``. Instants are strictly after it and
        ascending; skipped wall times are reported (when asked) if they are later on the wall
        clock than ``after`` is.
        """
        zone = self.zone
        local = after.astimezone(zone)
        wall_after = local.replace(tzinfo=None)
        start = wall_after.replace(second=0, microsecond=0)
        if not local.fold:
            first_offset = local.utcoffset()
            second_offset = local.replace(fold=1).utcoffset()
            if first_offset is not None and second_offset is not None:
                shift = first_offset - second_offset
                if shift > _ZERO:
                    # ``after`` is in the first pass of a repeated hour: the second pass of
                    # earlier wall times is still ahead, so start the walk at the repeat's start.
                    start -= shift
        start_day = (start.year, start.month, start.day)
        times = self._times
        first_index = bisect_left(times, (start.hour, start.minute))
        pending: deque[tuple[datetime, datetime]] = deque()  # (second instant, wall)
        for year, month, day in self._days_from(*start_day):
            index = first_index if (year, month, day) == start_day else 0
            for position in range(index, len(times)):
                hour, minute = times[position]
                wall = datetime(year, month, day, hour, minute, tzinfo=zone)
                offset = wall.utcoffset()
                other = wall.replace(fold=1).utcoffset()
                if offset is None or other is None:  # pragma: no cover - ZoneInfo always answers
                    raise ValueError(f"{zone} gave no UTC offset for {wall}")
                if offset == other:
                    instant = (wall - offset).replace(tzinfo=UTC)
                    while pending and pending[0][0] < instant:
                        queued, queued_wall = pending.popleft()
                        yield _Kind.SECOND, queued_wall, queued
                    if instant > after:
                        yield _Kind.ONCE, wall, instant
                    continue
                kind, first, second = _classify(wall, zone)
                if kind is _Kind.SKIPPED:
                    if with_skipped and wall.replace(tzinfo=None) > wall_after:
                        yield _Kind.SKIPPED, wall, None
                    continue
                while pending and pending[0][0] < first:
                    second_pending, second_wall = pending.popleft()
                    yield _Kind.SECOND, second_wall, second_pending
                if first > after:
                    yield kind, wall, first
                if second is not None and second > after:
                    pending.append((second, wall))
        while pending:
            queued, queued_wall = pending.popleft()
            yield _Kind.SECOND, queued_wall, queued

    def _days_from(self, year: int, month: int, day: int) -> Iterator[tuple[int, int, int]]:
        """Matching calendar days from (year, month, day) on, ascending."""
        months = self._months
        doms = self._doms
        dom_set = self.cron.days_of_month
        weekdays = self._py_weekdays
        or_rule = self._or_rule
        check_weekday = not self._dows_all
        while year <= _LAST_YEAR:
            for current in months:
                if current < month:
                    continue
                first_weekday, length = calendar.monthrange(year, current)
                low = day if current == month else 1
                if or_rule:
                    for candidate in range(low, length + 1):
                        if candidate in dom_set or (first_weekday + candidate - 1) % 7 in weekdays:
                            yield year, current, candidate
                    continue
                candidates = range(low, length + 1) if self._dom_all else doms
                for candidate in candidates:
                    if candidate < low:
                        continue
                    if candidate > length:
                        break
                    if not check_weekday or (first_weekday + candidate - 1) % 7 in weekdays:
                        yield year, current, candidate
            year += 1
            month = 1
            day = 1


def _as_utc(after: datetime) -> datetime:
    """``after`` as a UTC datetime; ValueError when naive or too close to datetime's limits."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"after must be timezone-aware, got naive {after.isoformat()}")
    after = after.astimezone(UTC)
    if not _FIRST_YEAR <= after.year <= _LAST_YEAR:
        raise ValueError(
            f"after must lie in the years {_FIRST_YEAR}-{_LAST_YEAR}, got {after.isoformat()}"
        )
    return after


def _classify(wall: datetime, zone: zoneinfo.ZoneInfo) -> tuple[_Kind, datetime, datetime | None]:
    """Classify a wall time whose fold=0 and fold=1 offsets differ, by zoneinfo round trips.

    Returns (SKIPPED, wall, None), (ONCE, instant, None) or (FIRST, first, second).
    """
    naive = wall.replace(tzinfo=None)
    instants = []
    for fold in (0, 1):
        instant = wall.replace(fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == naive:
            instants.append(instant)
    unique = sorted(set(instants))
    if not unique:
        return _Kind.SKIPPED, wall, None
    if len(unique) == 1:
        return _Kind.ONCE, unique[0], None
    return _Kind.FIRST, unique[0], unique[1]
