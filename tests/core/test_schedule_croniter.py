"""Differential test: the schedule engine agrees with croniter in UTC.

croniter is the widely used Python cron library; in UTC it has no daylight-saving behaviour of
its own to disagree about, so for any expression both accept, the fire instants after any
instant must be the same. Generated expressions cover numbers, names, ranges, lists and steps
in every field, with both day fields restricted often (SPEC §3's OR rule).

Where croniter 7 reads an expression differently, the expression is excluded
(``test_croniter_differs_only_where_excluded`` pins each case against the brute-force oracle):

- **A restricted day field that covers its whole range**, while the other day field is
  restricted too. Under SPEC §3 only a bare ``*`` is unrestricted, so both fields restrict and
  either may match: ``0 0 1-31 * */3`` and ``0 0 2 * *,3`` run daily. croniter reads some
  spellings of a whole range as a bare ``*`` (any list holding ``*``, like ``*,3``; ``1-31``,
  ``0-6``, ``sun-sat`` or ``*/1`` when the other day field's text holds a ``*``) and then
  needs both fields: Sundays, Wednesdays and Saturdays; only the 2nd.
- **An open-ended day-of-week step that lands on 7.** croniter's day of week ends at 6, so
  ``1/2`` is Monday, Wednesday, Friday; here it runs to 7 (Sunday, as 0), as ``5/10`` runs to
  the end of its field everywhere else.
- **A range whose ends are equal** (``5-5``, ``feb-feb``): a croniter bug reads it as the
  whole field, so ``* * * 2-2 *`` runs all year (and ``5-5/2`` becomes ``*/2``); here it is
  that one value, as in every cron.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentcron.core.cron import CronExpression
from agentcron.core.schedule import compile_schedule
from agentcron.errors import ScheduleError
from tests.support.cron_oracle import oracle

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (low, high, names) per field: minute, hour, day of month, month, day of week.
FIELDS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (0, 59, ()),
    (0, 23, ()),
    (1, 31, ()),
    (1, 12, MONTHS),
    (0, 7, WEEKDAYS),
)
INSTANTS = 12


@st.composite
def values(draw: st.DrawFn, field: int) -> tuple[str, int]:
    """One value of the field, as a number or (month, day of week) a name in any case."""
    low, high, names = FIELDS[field]
    number = draw(st.integers(min_value=low, max_value=high))
    if names and number - low < len(names) and draw(st.booleans()):
        name = names[number - low]
        return draw(st.sampled_from((name, name.upper(), name.title()))), number
    return str(number), number


@st.composite
def elements(draw: st.DrawFn, field: int) -> str:
    """``*``, ``*/s``, ``n``, ``a-b``, ``a-b/s`` or ``n/s`` (steps up to the field's width)."""
    low, high, _ = FIELDS[field]
    step = draw(st.integers(min_value=1, max_value=high - low + 1))
    kind = draw(st.sampled_from(("star", "star-step", "value", "range", "range-step", "open")))
    if kind == "star":
        return "*"
    if kind == "star-step":
        return f"*/{step}"
    text, number = draw(values(field))
    if kind == "value":
        return text
    if kind == "open":
        return f"{text}/{step}"
    (start, _), (end, _) = sorted([(text, number), draw(values(field))], key=lambda v: v[1])
    return f"{start}-{end}" + (f"/{step}" if kind == "range-step" else "")


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = []
    for field in range(5):
        if field in (2, 4) and draw(st.booleans()):  # a bare * for a day field, often
            fields.append("*")
            continue
        parts = draw(st.lists(elements(field), min_size=1, max_size=3))
        fields.append(",".join(parts))
    return " ".join(fields)


def number(field: int, text: str) -> int:
    names = FIELDS[field][2]
    return names.index(text.lower()) + FIELDS[field][0] if text.lower() in names else int(text)


def croniter_reads_differently(expression: str, cron: CronExpression) -> str | None:
    """Why croniter's reading differs from ours here (see the module docstring), or None."""
    fields = expression.split()
    for field, text in enumerate(fields):
        for part in text.split(","):
            start, dash, end = part.partition("/")[0].partition("-")
            if dash and number(field, start) == number(field, end):
                return "a range with equal ends"
    _, _, dom, _, dow = fields
    whole_range = len(cron.days_of_month) == 31 or set(cron.days_of_week) >= set(range(7))
    if dom != "*" and dow != "*" and whole_range:
        return "a restricted day field covers its whole range"
    for part in dow.split(","):
        start, slash, step = part.partition("/")
        open_ended = slash and start != "*" and "-" not in start
        if open_ended and (7 - number(4, start)) % int(step) == 0:
            return "an open-ended day-of-week step lands on 7"
    return None


def croniter_after(expression: str, after: datetime, count: int) -> list[datetime]:
    iterator = croniter(expression, after)
    return [iterator.get_next(datetime) for _ in range(count)]


def engine_after(expression: str, after: datetime, count: int) -> list[datetime]:
    schedule = compile_schedule(expression, "UTC")
    return list(itertools.islice(schedule.iter_after(after), count))


@st.composite
def afters(draw: st.DrawFn) -> datetime:
    """Any second from 2000 to 2089, sometimes with microseconds."""
    seconds = draw(st.integers(min_value=0, max_value=90 * 365 * 86400))
    micros = draw(st.sampled_from((0, 0, 0, 1, 500_000, 999_999)))
    return datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=micros)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(expression=expressions(), after=afters())
def test_the_engine_fires_when_croniter_does_in_utc(expression: str, after: datetime) -> None:
    """The next twelve fire instants after any instant are croniter's, for every expression
    both accept and croniter reads as SPEC §3 does."""
    try:
        cron = compile_schedule(expression, "UTC").cron
    except ScheduleError:
        assume(False)  # what the engine rejects (a never-matching date, ...) is tested elsewhere
        raise
    assume(croniter_reads_differently(expression, cron) is None)
    assert engine_after(expression, after, INSTANTS) == croniter_after(expression, after, INSTANTS)


@pytest.mark.parametrize(
    ("expression", "days"),
    [
        ("0 0 1-31 * */3", list(range(1, 31))),
        ("0 0 */2 * sun-sat", list(range(1, 31))),
        ("0 0 */2 * */1", list(range(1, 31))),
        ("0 0 2 * *,3", list(range(1, 31))),
        ("0 0 * * 1/2", [1, 2, 4, 6, 8, 9, 11, 13, 15, 16, 18, 20, 22, 23, 25, 27, 29, 30]),
        ("0 0 2-2 * *", [2]),
    ],
    ids=[
        "day-of-month-range-beside-a-star",
        "day-of-week-range-beside-a-star",
        "day-of-week-step-beside-a-star",
        "star-in-a-day-of-week-list",
        "weekday-step-lands-on-sunday",
        "range-with-equal-ends",
    ],
)
def test_croniter_differs_only_where_excluded(expression: str, days: list[int]) -> None:
    """Where the differential test skips croniter, the engine does what SPEC §3 says (the
    brute-force oracle agrees) and croniter does not; if croniter changes, drop the exclusion.
    November 2026 begins on a Sunday."""
    after = datetime(2026, 11, 1, tzinfo=UTC) - timedelta(seconds=1)  # Sunday 1 November 2026
    engine = engine_after(expression, after, len(days))
    assert [instant.day for instant in engine] == days
    assert engine == oracle(expression, ZoneInfo("UTC"), after, engine[-1])
    assert croniter_reads_differently(expression, compile_schedule(expression, "UTC").cron)
    assert croniter_after(expression, after, len(days)) != engine
