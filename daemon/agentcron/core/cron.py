"""Five-field POSIX cron expressions: parsing, validation and day matching (SPEC §3).

Pure: no I/O, no clock, no logging. ``parse_cron`` turns ``minute hour day-of-month month
day-of-week`` into field sets and rejects everything agentcron does not support with a
``ScheduleError`` whose message names the field and the rule.

Accepted per field: numbers, ``*``, ranges ``a-b``, lists ``a,b``, steps ``*/n``, ``a-b/n`` and
``a/n`` (``a`` through the field's maximum by ``n``, as Vixie cron); three-letter month and day
names, case-insensitive, also as range ends (``MON-FRI``). Day-of-week takes 0-7 with 0 and 7 both
Sunday.

Day matching follows SPEC §3: a day-of-month or day-of-week field is *unrestricted* only when it
is a bare ``*``; anything else (``*/1``, ``*/2``, ``1-31``) restricts it. When both fields are
restricted a day matches if **either** matches (the POSIX OR rule), otherwise it must match both.
``CronExpression.either_day`` is the one place that decision is made. (Vixie cron differs: it
treats any field starting with ``*`` as unrestricted.)
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from agentcron.errors import ScheduleError

__all__ = ["CronExpression", "parse_cron"]

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")

_MONTH_FULL = (
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_NAMES = {name[:3].lower(): index for index, name in enumerate(_MONTH_FULL) if name}
_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_ASCII_NUMBER = re.compile(r"[0-9]+", re.ASCII)
_QUARTZ_LW = re.compile(r"[0-9]*[LW]+[0-9]*|L-[0-9]+", re.IGNORECASE)
_SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The longest month each day number can occur in: day 30 needs a 30-day month, 31 a 31-day one.
_MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
# Cron's weekday for Python's ``date.weekday()`` (Monday = 0): Sunday is 0 in cron.
CRON_WEEKDAY = (1, 2, 3, 4, 5, 6, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None


_FIELDS = (
    _Field(name="minute", low=0, high=59, names=None),
    _Field(name="hour", low=0, high=23, names=None),
    _Field(name="day-of-month", low=1, high=31, names=None),
    _Field(name="month", low=1, high=12, names=_MONTH_NAMES),
    _Field(name="day-of-week", low=0, high=7, names=_DAY_NAMES),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CronExpression:
    """A parsed expression: the set of values each field matches.

    ``days_of_week`` uses 0..6 with Sunday = 0 (a 7 in the expression is folded to 0).
    ``dom_restricted`` / ``dow_restricted`` are False only when the field is a bare ``*``.
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    dom_restricted: bool
    dow_restricted: bool

    @property
    def either_day(self) -> bool:
        """Whether a day matches on day-of-month OR day-of-week (both fields restricted).

        Otherwise a day must match both (an unrestricted field matches every day anyway).
        """
        return self.dom_restricted and self.dow_restricted

    def matches_day(self, year: int, month: int, day: int) -> bool:
        """Whether the calendar day matches (month, and day-of-month / day-of-week by POSIX)."""
        if month not in self.months:
            return False
        dom = day in self.days_of_month
        dow = CRON_WEEKDAY[calendar.weekday(year, month, day)] in self.days_of_week
        if self.either_day:
            return dom or dow
        return dom and dow


def parse_cron(expression: str) -> CronExpression:
    """Parse and validate a 5-field cron expression.

    Raises ``ScheduleError`` naming the field and the rule for anything unsupported or invalid,
    including expressions that can never match (``0 0 31 2 *``).
    """
    if not isinstance(expression, str):
        raise ScheduleError(f"expected a string, got {type(expression).__name__}")
    text = expression.strip()
    if text.startswith("@"):
        shortcut = text.split()[0]
        equivalent = _SHORTCUTS.get(shortcut.lower())
        hint = f": write '{equivalent}' instead" if equivalent else ""
        raise ScheduleError(f"'{shortcut}' shortcuts are not supported{hint}")
    fields = text.split()
    if len(fields) != 5:
        message = (
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
        if len(fields) in (6, 7):
            message += ": seconds and year fields are not supported"
        raise ScheduleError(message)
    values = [_parse_field(spec, source) for spec, source in zip(_FIELDS, fields, strict=True)]
    minutes, hours, days_of_month, months, days_of_week = values
    days_of_week = frozenset(day % 7 for day in days_of_week)
    cron = CronExpression(
        minutes=minutes,
        hours=hours,
        days_of_month=days_of_month,
        months=months,
        days_of_week=days_of_week,
        dom_restricted=fields[2] != "*",
        dow_restricted=fields[4] != "*",
    )
    _check_can_match(cron)
    return cron


def _parse_field(spec: _Field, source: str) -> frozenset[int]:
    for char, rule in (("#", "'#' (nth weekday of the month)"), ("?", "'?'")):
        if char in source:
            raise ScheduleError(f"{spec.name} field: {rule} is not supported")
    result: set[int] = set()
    for item in source.split(","):
        if not item:
            raise ScheduleError(f"{spec.name} field: empty list item in {source!r}")
        result.update(_parse_item(spec, item))
    return frozenset(result)


def _parse_item(spec: _Field, item: str) -> range:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if "/" in step_text:
            raise ScheduleError(f"{spec.name} field: {item!r} has more than one '/'")
        if not _ASCII_NUMBER.fullmatch(step_text):
            raise ScheduleError(
                f"{spec.name} field: step {step_text!r} in {item!r} is not a number"
            )
        step = int(step_text)
        if step < 1:
            raise ScheduleError(f"{spec.name} field: step must be at least 1, got {step_text!r}")
        span = spec.high - spec.low + 1
        if step > span:
            raise ScheduleError(
                f"{spec.name} field: step {step} is larger than the field's range "
                f"{spec.low}-{spec.high}"
            )
    if base == "*":
        return range(spec.low, spec.high + 1, step)
    if not base:
        raise ScheduleError(f"{spec.name} field: missing value before '/' in {item!r}")
    start_text, dash, end_text = base.partition("-")
    if dash and (not start_text or not end_text):
        raise ScheduleError(f"{spec.name} field: incomplete range {base!r}")
    start = _parse_value(spec, start_text)
    if not dash:
        # ``a/n`` runs from a through the field's maximum (Vixie cron); plain ``a`` is itself.
        return range(start, (spec.high if slash else start) + 1, step)
    end = _parse_value(spec, end_text)
    if start > end:
        raise ScheduleError(
            f"{spec.name} field: range {base!r} is reversed ({start_text} is after {end_text}); "
            "the start must not be after the end"
        )
    return range(start, end + 1, step)


def _parse_value(spec: _Field, token: str) -> int:
    if _ASCII_NUMBER.fullmatch(token):
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise ScheduleError(
                f"{spec.name} field: {value} is out of range {spec.low}-{spec.high}"
            )
        return value
    if spec.names is not None and token.lower() in spec.names:
        return spec.names[token.lower()]
    if _QUARTZ_LW.fullmatch(token):
        letter = "L" if "l" in token.lower() else "W"
        meaning = "last" if letter == "L" else "nearest weekday"
        raise ScheduleError(f"{spec.name} field: '{letter}' ({meaning}) is not supported")
    if any(char.isdigit() for char in token):
        raise ScheduleError(
            f"{spec.name} field: {token!r} is not a number (only ASCII digits 0-9 are allowed)"
        )
    if spec.names is not None:
        kind = "month" if spec.name == "month" else "day"
        examples = "JAN-DEC" if kind == "month" else "SUN-SAT"
        raise ScheduleError(
            f"{spec.name} field: {token!r} is neither a number nor a three-letter {kind} "
            f"name ({examples})"
        )
    raise ScheduleError(
        f"{spec.name} field: {token!r} is not a number, range (a-b), list (a,b) or step (*/n)"
    )


def _check_can_match(cron: CronExpression) -> None:
    """Reject expressions whose day-of-month never occurs in any of their months.

    With the OR rule (both day fields restricted) any restricted weekday matches, so only the
    AND case can be empty. Every (month, day, weekday) combination recurs within the 400-year
    Gregorian cycle, so a possible (month, day) pair is enough.
    """
    if cron.either_day:
        return
    if any(day <= _MAX_DAYS[month] for month in cron.months for day in cron.days_of_month):
        return
    months = [_MONTH_FULL[month] for month in sorted(cron.months)]
    days = [str(day) for day in sorted(cron.days_of_month)]
    month_text = months[0] if len(months) == 1 else ", ".join(months[:-1]) + " and " + months[-1]
    verb = "has" if len(months) == 1 else "have"
    day_text = " or ".join(days) if len(days) <= 3 else f"{days[0]}-{days[-1]}"
    raise ScheduleError(f"the expression never matches: {month_text} {verb} no day {day_text}")
