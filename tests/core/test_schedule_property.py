"""Property test: the schedule engine agrees with a brute-force minute-by-minute oracle.

The oracle (``tests.support.cron_oracle``) knows nothing about gaps, folds, the engine's day
iteration or its day rule: it walks UTC minute by minute and matches each minute's wall-clock
time in the zone, so wall times that do not exist are skipped and repeated ones fire twice.
"""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentcron.core.cron import CronExpression
from agentcron.core.schedule import Occurrence, compile_schedule, preview
from agentcron.errors import ScheduleError
from tests.support.cron_oracle import oracle

ZONES = (
    "America/New_York",
    "Europe/Berlin",
    "Europe/Dublin",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Africa/Cairo",
    "Asia/Kolkata",
    "UTC",
    "Pacific/Chatham",
    "America/St_Johns",
    "Asia/Tehran",
    "Antarctica/Troll",
)


@functools.cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """UTC instants (to the hour) where the zone's offset changes, 2022-2027."""
    zone = ZoneInfo(zone_name)
    found = []
    instant = datetime(2022, 1, 1, tzinfo=UTC)
    previous = instant.astimezone(zone).utcoffset()
    while instant.year < 2028:
        offset = instant.astimezone(zone).utcoffset()
        if offset != previous:
            found.append(instant)
            previous = offset
        instant += timedelta(hours=1)
    return tuple(found)


FIELD_CHOICES = (
    ("*", "*/15", "0", "30", "0,30", "5-10", "*/7", "45", "0-59/20", "59", "10/25"),
    ("*", "0", "1", "2", "1-3", "*/6", "23", "0,12", "2/5", "0-3", "22-23"),
    ("*", "*", "1", "15", "1-7", "*/2", "*/1", "29", "31", "30", "L", "*/15"),
    ("*", "*", "1-6", "3,10", "*/3", "2", "MAR-NOV", "apr", "oct-dec"),
    ("*", "*", "0", "1-5", "SAT,SUN", "*/2", "*/1", "*/3", "7", "FRI", "thu"),
)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    return " ".join(draw(st.sampled_from(choices)) for choices in FIELD_CHOICES)


@st.composite
def starts(draw: st.DrawFn, zone_name: str) -> datetime:
    """Either near one of the zone's offset changes or anywhere in 2022-2027."""
    if draw(st.booleans()) and transitions(zone_name):
        base = draw(st.sampled_from(transitions(zone_name)))
        jitter = draw(st.integers(min_value=-36 * 3600, max_value=12 * 3600))
    else:
        base = datetime(2022, 1, 1, tzinfo=UTC)
        jitter = draw(st.integers(min_value=0, max_value=6 * 365 * 86400))
    seconds = draw(st.sampled_from((0, 0, 1, 30, 59)))
    return base + timedelta(seconds=jitter - jitter % 60 + seconds)


def _compiled_or_reject(expression: str, zone_name: str) -> CronExpression:
    try:
        return compile_schedule(expression, zone_name).cron
    except ScheduleError:
        assume(False)  # the never-matching or unsupported combinations are tested elsewhere
        raise


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), zone_name=st.sampled_from(ZONES), expression=expressions())
def test_iter_after_matches_the_minute_by_minute_oracle(
    data: st.DataObject, zone_name: str, expression: str
) -> None:
    """Within a window of up to 3 days the engine yields the oracle's instants, in order."""
    _compiled_or_reject(expression, zone_name)
    after = data.draw(starts(zone_name), label="after")
    window = timedelta(minutes=data.draw(st.integers(min_value=1, max_value=3 * 1440)))
    until = after + window
    expected = oracle(expression, ZoneInfo(zone_name), after, until)
    got = []
    for instant in compile_schedule(expression, zone_name).iter_after(after):
        if instant > until:
            break
        got.append(instant)
    assert got == expected


@settings(max_examples=60, deadline=None)
@given(data=st.data(), zone_name=st.sampled_from(ZONES), expression=expressions())
def test_next_after_and_preview_agree_with_iter_after(
    data: st.DataObject, zone_name: str, expression: str
) -> None:
    """next_after is the first of iter_after; preview's occurrences are the same instants."""
    _compiled_or_reject(expression, zone_name)
    after = data.draw(starts(zone_name), label="after")
    schedule = compile_schedule(expression, zone_name)
    instants = []
    for instant in schedule.iter_after(after):
        instants.append(instant)
        if len(instants) == 5:
            break
    assert schedule.next_after(after) == instants[0]
    assert all(a < b for a, b in itertools.pairwise(instants))
    assert all(instant.tzinfo is UTC and instant > after for instant in instants)
    shown = [
        item.at for item in preview(expression, zone_name, after, 5) if isinstance(item, Occurrence)
    ]
    assert shown == instants


def test_the_oracle_itself_sees_a_repeated_and_a_skipped_hour() -> None:
    """The oracle sees New York's 01:30 twice on the fall-back day and 02:30 never in spring."""
    zone = ZoneInfo("America/New_York")
    fall = oracle(
        "30 1,2 * * *",
        zone,
        datetime(2026, 11, 1, 4, tzinfo=UTC),
        datetime(2026, 11, 1, 8, tzinfo=UTC),
    )
    assert [t.hour for t in fall] == [5, 6, 7]  # 01:30 EDT, 01:30 EST, 02:30 EST
    spring = oracle(
        "30 1,2 * * *",
        zone,
        datetime(2026, 3, 8, 4, tzinfo=UTC),
        datetime(2026, 3, 8, 9, tzinfo=UTC),
    )
    assert [t.hour for t in spring] == [6]  # 01:30 EST only


def test_the_oracle_treats_only_a_bare_star_as_unrestricted() -> None:
    """`0 0 */2 * 1`: both day fields are restricted, so odd days OR Mondays (SPEC §3)."""
    zone = ZoneInfo("UTC")
    found = oracle(
        "0 0 */2 * 1", zone, datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 12, tzinfo=UTC)
    )
    # May 2026: the 4th and 11th are Mondays; odd days are 3, 5, 7, 9, 11.
    assert [t.day for t in found] == [3, 4, 5, 7, 9, 11]
