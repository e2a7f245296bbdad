"""A brute-force cron oracle: every UTC minute whose wall-clock time matches, one by one.

It knows nothing about gaps, folds, the engine's day iteration or its day rule: it decides the
day rule from the expression's text (SPEC §3: a day field is unrestricted only when it is a bare
``*``), walks UTC minute by minute, converts each minute to the zone's wall clock (zoneinfo
sets ``fold`` on the second pass of a repeated hour) and matches the fields. Wall times that do
not exist are never produced by that conversion, so they are skipped; repeated ones are
produced twice, so they fire twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from agentcron.core.cron import parse_cron

MINUTE = timedelta(minutes=1)


def oracle(expression: str, zone: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """Every UTC minute in ``(after, until]`` whose wall-clock time in ``zone`` matches.

    Only the field value sets come from the parser; whether day-of-month OR day-of-week decides
    is read off the text: both day fields restricted means neither is a bare ``*``.
    """
    cron = parse_cron(expression)
    fields = expression.split()
    either_day = fields[2] != "*" and fields[4] != "*"
    instant = after.astimezone(UTC).replace(second=0, microsecond=0) + MINUTE
    found = []
    while instant <= until:
        local = instant.astimezone(zone)
        weekday = (local.weekday() + 1) % 7  # cron: Sunday = 0
        dom = local.day in cron.days_of_month
        dow = weekday in cron.days_of_week
        day_ok = (dom or dow) if either_day else (dom and dow)
        if (
            local.second == 0
            and local.minute in cron.minutes
            and local.hour in cron.hours
            and local.month in cron.months
            and day_ok
        ):
            found.append(instant)
        instant += MINUTE
    return found
