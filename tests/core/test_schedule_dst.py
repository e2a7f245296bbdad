"""DST tables: literal wall-clock matching across both transitions of 2026 in eight zones.

Every expected instant below was worked out by hand from the zone's 2026 rules (noted per block)
and is cross-checked against the brute-force oracle of ``test_schedule_property``. Rules of the
game (SPEC §3): a wall time that does not exist is skipped, a wall time that occurs twice fires
twice (first pass, then second pass), everything else fires once at ``wall - offset``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from agentcron.core.schedule import (
    Occurrence,
    SkippedOccurrence,
    compile_schedule,
    load_timezone,
    preview,
    upcoming,
)
from agentcron.core.timeutil import parse_ts
from agentcron.errors import ScheduleError
from tests.support.cron_oracle import oracle

# (zone, expression, after, expected UTC instants); the id says what the row shows.
CASES: list[tuple[str, str, str, str, list[str]]] = [
    # America/New_York: EST -05 / EDT -04. Mar 8 02:00 -> 03:00 (02:xx missing);
    # Nov 1 02:00 -> 01:00 (01:xx twice: 05:xxZ then 06:xxZ).
    ("new-york-daily-spring-skips-0230", "America/New_York", "30 2 * * *", "2026-03-07T00:00Z",
     ["2026-03-07T07:30Z", "2026-03-09T06:30Z", "2026-03-10T06:30Z"]),
    ("new-york-hourly-spring", "America/New_York", "0 * * * *", "2026-03-08T05:30Z",
     ["2026-03-08T06:00Z", "2026-03-08T07:00Z", "2026-03-08T08:00Z"]),
    ("new-york-15min-spring", "America/New_York", "*/15 * * * *", "2026-03-08T06:30Z",
     ["2026-03-08T06:45Z", "2026-03-08T07:00Z", "2026-03-08T07:15Z", "2026-03-08T07:30Z"]),
    ("new-york-weekly-spring", "America/New_York", "30 2 * * SUN", "2026-03-01T00:00Z",
     ["2026-03-01T07:30Z", "2026-03-15T06:30Z"]),
    ("new-york-daily-fall-fires-0130-twice", "America/New_York", "30 1 * * *",
     "2026-10-31T00:00Z",
     ["2026-10-31T05:30Z", "2026-11-01T05:30Z", "2026-11-01T06:30Z", "2026-11-02T06:30Z"]),
    ("new-york-hourly-fall", "America/New_York", "0 * * * *", "2026-11-01T04:30Z",
     ["2026-11-01T05:00Z", "2026-11-01T06:00Z", "2026-11-01T07:00Z", "2026-11-01T08:00Z"]),
    ("new-york-15min-fall-from-first-pass", "America/New_York", "*/15 * * * *",
     "2026-11-01T05:30Z",
     ["2026-11-01T05:45Z", "2026-11-01T06:00Z", "2026-11-01T06:15Z", "2026-11-01T06:30Z",
      "2026-11-01T06:45Z", "2026-11-01T07:00Z"]),
    ("new-york-15min-in-hour-1-fall", "America/New_York", "*/15 1 * * *", "2026-11-01T00:00Z",
     ["2026-11-01T05:00Z", "2026-11-01T05:15Z", "2026-11-01T05:30Z", "2026-11-01T05:45Z",
      "2026-11-01T06:00Z", "2026-11-01T06:15Z", "2026-11-01T06:30Z", "2026-11-01T06:45Z",
      "2026-11-02T06:00Z"]),
    ("new-york-weekly-fall", "America/New_York", "30 1 * * 0", "2026-10-25T00:00Z",
     ["2026-10-25T05:30Z", "2026-11-01T05:30Z", "2026-11-01T06:30Z"]),
    # Europe/Berlin: CET +01 / CEST +02. Mar 29 02:00 -> 03:00; Oct 25 03:00 -> 02:00
    # (02:xx twice: 00:xxZ then 01:xxZ).
    ("berlin-daily-spring-skips-0230", "Europe/Berlin", "30 2 * * *", "2026-03-28T00:00Z",
     ["2026-03-28T01:30Z", "2026-03-30T00:30Z"]),
    ("berlin-hourly-spring", "Europe/Berlin", "0 * * * *", "2026-03-29T00:30Z",
     ["2026-03-29T01:00Z", "2026-03-29T02:00Z", "2026-03-29T03:00Z"]),
    ("berlin-15min-spring", "Europe/Berlin", "*/15 * * * *", "2026-03-29T00:40Z",
     ["2026-03-29T00:45Z", "2026-03-29T01:00Z", "2026-03-29T01:15Z"]),
    ("berlin-weekly-spring", "Europe/Berlin", "30 2 * * 0", "2026-03-22T00:00Z",
     ["2026-03-22T01:30Z", "2026-04-05T00:30Z"]),
    ("berlin-daily-fall-fires-0230-twice", "Europe/Berlin", "30 2 * * *", "2026-10-24T00:00Z",
     ["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-25T01:30Z", "2026-10-26T01:30Z"]),
    ("berlin-hourly-fall", "Europe/Berlin", "0 * * * *", "2026-10-24T23:30Z",
     ["2026-10-25T00:00Z", "2026-10-25T01:00Z", "2026-10-25T02:00Z", "2026-10-25T03:00Z"]),
    ("berlin-15min-in-hour-2-fall", "Europe/Berlin", "*/15 2 * * *", "2026-10-24T23:59Z",
     ["2026-10-25T00:00Z", "2026-10-25T00:15Z", "2026-10-25T00:30Z", "2026-10-25T00:45Z",
      "2026-10-25T01:00Z", "2026-10-25T01:15Z", "2026-10-25T01:30Z", "2026-10-25T01:45Z",
      "2026-10-26T01:00Z"]),
    ("berlin-weekly-fall", "Europe/Berlin", "30 2 * * SUN", "2026-10-18T00:00Z",
     ["2026-10-18T00:30Z", "2026-10-25T00:30Z", "2026-10-25T01:30Z"]),
    # Europe/Dublin: IST +01 in summer, GMT +00 in winter (tzdata models winter as negative
    # DST; only offsets matter). Mar 29 01:00 -> 02:00; Oct 25 02:00 -> 01:00 (01:xx twice).
    ("dublin-daily-spring-skips-0130", "Europe/Dublin", "30 1 * * *", "2026-03-28T00:00Z",
     ["2026-03-28T01:30Z", "2026-03-30T00:30Z"]),
    ("dublin-hourly-spring", "Europe/Dublin", "0 * * * *", "2026-03-29T00:30Z",
     ["2026-03-29T01:00Z", "2026-03-29T02:00Z"]),
    ("dublin-15min-spring", "Europe/Dublin", "*/15 * * * *", "2026-03-29T00:50Z",
     ["2026-03-29T01:00Z", "2026-03-29T01:15Z"]),
    ("dublin-weekly-spring", "Europe/Dublin", "30 1 * * 0", "2026-03-22T00:00Z",
     ["2026-03-22T01:30Z", "2026-04-05T00:30Z"]),
    ("dublin-daily-fall-fires-0130-twice", "Europe/Dublin", "30 1 * * *", "2026-10-24T00:00Z",
     ["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-25T01:30Z", "2026-10-26T01:30Z"]),
    ("dublin-hourly-fall", "Europe/Dublin", "0 * * * *", "2026-10-24T23:30Z",
     ["2026-10-25T00:00Z", "2026-10-25T01:00Z", "2026-10-25T02:00Z"]),
    ("dublin-15min-in-hour-1-fall", "Europe/Dublin", "*/15 1 * * *", "2026-10-24T23:59Z",
     ["2026-10-25T00:00Z", "2026-10-25T00:15Z", "2026-10-25T00:30Z", "2026-10-25T00:45Z",
      "2026-10-25T01:00Z", "2026-10-25T01:15Z", "2026-10-25T01:30Z", "2026-10-25T01:45Z",
      "2026-10-26T01:00Z"]),
    ("dublin-weekly-fall", "Europe/Dublin", "30 1 * * SUN", "2026-10-18T00:00Z",
     ["2026-10-18T00:30Z", "2026-10-25T00:30Z", "2026-10-25T01:30Z"]),
    # Australia/Lord_Howe: +10:30 standard, +11 in summer, a 30-minute shift. Apr 5 02:00 ->
    # 01:30 (01:30-01:59 twice: 14:xxZ then 15:xxZ on Apr 4); Oct 4 02:00 -> 02:30 (02:00-02:29
    # missing).
    ("lord-howe-daily-fall-fires-0145-twice", "Australia/Lord_Howe", "45 1 * * *",
     "2026-04-03T00:00Z",
     ["2026-04-03T14:45Z", "2026-04-04T14:45Z", "2026-04-04T15:15Z", "2026-04-05T15:15Z"]),
    ("lord-howe-hourly-fall-half-hour-step", "Australia/Lord_Howe", "0 * * * *",
     "2026-04-04T13:30Z",
     ["2026-04-04T14:00Z", "2026-04-04T15:30Z", "2026-04-04T16:30Z", "2026-04-04T17:30Z"]),
    ("lord-howe-15min-in-hour-1-fall", "Australia/Lord_Howe", "*/15 1 * * *",
     "2026-04-04T13:59Z",
     ["2026-04-04T14:00Z", "2026-04-04T14:15Z", "2026-04-04T14:30Z", "2026-04-04T14:45Z",
      "2026-04-04T15:00Z", "2026-04-04T15:15Z", "2026-04-05T14:30Z"]),
    ("lord-howe-weekly-fall", "Australia/Lord_Howe", "45 1 * * 0", "2026-03-29T00:00Z",
     ["2026-04-04T14:45Z", "2026-04-04T15:15Z", "2026-04-11T15:15Z"]),
    ("lord-howe-daily-spring-skips-0215", "Australia/Lord_Howe", "15 2 * * *",
     "2026-10-02T00:00Z",
     ["2026-10-02T15:45Z", "2026-10-04T15:15Z", "2026-10-05T15:15Z"]),
    ("lord-howe-hourly-spring", "Australia/Lord_Howe", "0 * * * *", "2026-10-03T14:00Z",
     ["2026-10-03T14:30Z", "2026-10-03T16:00Z", "2026-10-03T17:00Z"]),
    ("lord-howe-15min-in-hour-2-spring", "Australia/Lord_Howe", "*/15 2 * * *",
     "2026-10-03T00:00Z",
     ["2026-10-03T15:30Z", "2026-10-03T15:45Z", "2026-10-04T15:00Z"]),
    ("lord-howe-weekly-spring", "Australia/Lord_Howe", "15 2 * * SUN", "2026-09-27T00:00Z",
     ["2026-10-10T15:15Z", "2026-10-17T15:15Z"]),
    # America/Santiago: -03 in summer, -04 in winter, transitions at midnight. Apr 5 00:00 ->
    # Apr 4 23:00 (23:xx on Apr 4 twice); Sep 6 00:00 -> 01:00 (00:xx on Sep 6 missing).
    ("santiago-daily-fall-fires-2330-twice", "America/Santiago", "30 23 * * *",
     "2026-04-04T00:00Z",
     ["2026-04-04T02:30Z", "2026-04-05T02:30Z", "2026-04-05T03:30Z", "2026-04-06T03:30Z"]),
    ("santiago-hourly-fall", "America/Santiago", "0 * * * *", "2026-04-05T01:30Z",
     ["2026-04-05T02:00Z", "2026-04-05T03:00Z", "2026-04-05T04:00Z", "2026-04-05T05:00Z"]),
    ("santiago-15min-in-hour-23-fall", "America/Santiago", "*/15 23 * * *", "2026-04-04T12:00Z",
     ["2026-04-05T02:00Z", "2026-04-05T02:15Z", "2026-04-05T02:30Z", "2026-04-05T02:45Z",
      "2026-04-05T03:00Z", "2026-04-05T03:15Z", "2026-04-05T03:30Z", "2026-04-05T03:45Z",
      "2026-04-06T03:00Z"]),
    ("santiago-weekly-fall", "America/Santiago", "30 23 * * SAT", "2026-03-29T00:00Z",
     ["2026-03-29T02:30Z", "2026-04-05T02:30Z", "2026-04-05T03:30Z"]),
    ("santiago-daily-spring-skips-midnight", "America/Santiago", "0 0 * * *",
     "2026-09-05T00:00Z",
     ["2026-09-05T04:00Z", "2026-09-07T03:00Z", "2026-09-08T03:00Z"]),
    ("santiago-hourly-spring", "America/Santiago", "0 * * * *", "2026-09-06T03:30Z",
     ["2026-09-06T04:00Z", "2026-09-06T05:00Z"]),
    ("santiago-15min-in-hour-0-spring", "America/Santiago", "*/15 0 * * *", "2026-09-05T12:00Z",
     ["2026-09-07T03:00Z", "2026-09-07T03:15Z", "2026-09-07T03:30Z"]),
    ("santiago-weekly-spring", "America/Santiago", "0 0 * * SUN", "2026-08-30T00:00Z",
     ["2026-08-30T04:00Z", "2026-09-13T03:00Z"]),
    # Africa/Cairo: EET +02 / EEST +03 (DST again since 2023). Apr 24 00:00 -> 01:00 (00:xx
    # missing); Oct 29 24:00 -> 23:00 (23:xx on Oct 29 twice: 20:xxZ then 21:xxZ).
    ("cairo-daily-spring-skips-0030", "Africa/Cairo", "30 0 * * *", "2026-04-22T00:00Z",
     ["2026-04-22T22:30Z", "2026-04-24T21:30Z", "2026-04-25T21:30Z"]),
    ("cairo-hourly-spring", "Africa/Cairo", "0 * * * *", "2026-04-23T21:30Z",
     ["2026-04-23T22:00Z", "2026-04-23T23:00Z"]),
    ("cairo-15min-in-hour-0-spring", "Africa/Cairo", "*/15 0 * * *", "2026-04-23T12:00Z",
     ["2026-04-24T21:00Z", "2026-04-24T21:15Z"]),
    ("cairo-weekly-spring", "Africa/Cairo", "30 0 * * FRI", "2026-04-16T00:00Z",
     ["2026-04-16T22:30Z", "2026-04-30T21:30Z"]),
    ("cairo-daily-fall-fires-2330-twice", "Africa/Cairo", "30 23 * * *", "2026-10-28T00:00Z",
     ["2026-10-28T20:30Z", "2026-10-29T20:30Z", "2026-10-29T21:30Z", "2026-10-30T21:30Z"]),
    ("cairo-hourly-fall", "Africa/Cairo", "0 * * * *", "2026-10-29T19:30Z",
     ["2026-10-29T20:00Z", "2026-10-29T21:00Z", "2026-10-29T22:00Z"]),
    ("cairo-15min-in-hour-23-fall", "Africa/Cairo", "*/15 23 * * *", "2026-10-29T12:00Z",
     ["2026-10-29T20:00Z", "2026-10-29T20:15Z", "2026-10-29T20:30Z", "2026-10-29T20:45Z",
      "2026-10-29T21:00Z", "2026-10-29T21:15Z", "2026-10-29T21:30Z", "2026-10-29T21:45Z",
      "2026-10-30T21:00Z"]),
    ("cairo-weekly-fall", "Africa/Cairo", "30 23 * * THU", "2026-10-21T00:00Z",
     ["2026-10-22T20:30Z", "2026-10-29T20:30Z", "2026-10-29T21:30Z"]),
    # Asia/Kolkata: +05:30 all year, no transitions.
    ("kolkata-daily", "Asia/Kolkata", "30 2 * * *", "2026-03-07T00:00Z",
     ["2026-03-07T21:00Z", "2026-03-08T21:00Z"]),
    ("kolkata-hourly", "Asia/Kolkata", "0 * * * *", "2026-11-01T05:30Z",
     ["2026-11-01T06:30Z", "2026-11-01T07:30Z"]),
    ("kolkata-15min", "Asia/Kolkata", "*/15 * * * *", "2026-11-01T05:30Z",
     ["2026-11-01T05:45Z", "2026-11-01T06:00Z"]),
    ("kolkata-weekly", "Asia/Kolkata", "0 9 * * MON", "2026-03-01T00:00Z",
     ["2026-03-02T03:30Z", "2026-03-09T03:30Z"]),
    # UTC: wall time is UTC.
    ("utc-daily", "UTC", "30 1 * * *", "2026-03-08T00:00Z",
     ["2026-03-08T01:30Z", "2026-03-09T01:30Z"]),
    ("utc-hourly", "UTC", "0 * * * *", "2026-11-01T00:30Z",
     ["2026-11-01T01:00Z", "2026-11-01T02:00Z"]),
    ("utc-15min", "UTC", "*/15 * * * *", "2026-11-01T01:50Z",
     ["2026-11-01T02:00Z", "2026-11-01T02:15Z"]),
    ("utc-weekly", "UTC", "0 2 * * SUN", "2026-10-25T00:00Z",
     ["2026-10-25T02:00Z", "2026-11-01T02:00Z"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("zone", "expression", "after", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_fire_instants_across_dst_transitions(
    zone: str, expression: str, after: str, expected: list[str]
) -> None:
    """The next instants are exactly the hand-derived ones, and the brute-force oracle agrees."""
    want = [parse_ts(text) for text in expected]
    start = parse_ts(after)
    assert upcoming(expression, zone, start, len(want)) == want
    assert oracle(expression, ZoneInfo(zone), start, want[-1]) == want


def test_results_are_utc_and_strictly_after_the_start() -> None:
    """An `after` equal to an occurrence excludes it; results carry datetime.UTC."""
    start = parse_ts("2026-05-08T20:00:00Z")
    got = upcoming("0 20 * * *", "UTC", start, 2)
    assert got == [parse_ts("2026-05-09T20:00Z"), parse_ts("2026-05-10T20:00Z")]
    assert all(instant.tzinfo is UTC for instant in got)


def test_after_in_another_offset_is_converted() -> None:
    """`after` may carry any offset; it is the instant that counts, not its wall time."""
    plus_nine = datetime(2026, 5, 9, 4, 59, tzinfo=timezone(timedelta(hours=9)))  # 19:59Z
    assert compile_schedule("0 20 * * *", "UTC").next_after(plus_nine) == parse_ts(
        "2026-05-08T20:00Z"
    )


def test_seconds_in_after_are_respected() -> None:
    """An `after` 30 s past a matching minute moves on to the next occurrence."""
    start = parse_ts("2026-05-08T20:00:30Z")
    assert compile_schedule("* * * * *", "UTC").next_after(start) == parse_ts("2026-05-08T20:01Z")


def test_naive_after_is_a_value_error() -> None:
    """A naive datetime has no instant: ValueError at the call instead of guessing a zone."""
    schedule = compile_schedule("* * * * *", "UTC")
    naive = datetime(2026, 5, 8, 20, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_after(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.iter_after(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        upcoming("* * * * *", "UTC", naive, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        preview("* * * * *", "UTC", naive, 1)


@pytest.mark.parametrize(
    "after",
    [datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)],
    ids=["datetime-max", "datetime-min"],
)
def test_after_outside_the_supported_years_is_a_value_error(after: datetime) -> None:
    """Instants at the ends of datetime's range are refused clearly instead of overflowing."""
    with pytest.raises(ValueError, match="after must lie in the years 2-9998"):
        compile_schedule("0 0 * * *", "Pacific/Kiritimati").next_after(after)


def test_leap_day_schedule_is_found_quickly_years_ahead() -> None:
    """`0 0 29 2 *` jumps to the next leap year without walking minute by minute."""
    start = parse_ts("2097-03-01T00:00Z")
    got = upcoming("0 0 29 2 *", "UTC", start, 2)
    assert got == [parse_ts("2104-02-29T00:00Z"), parse_ts("2108-02-29T00:00Z")]  # 2100 skipped


def test_or_rule_schedule_fires_on_either_day() -> None:
    """`0 9 13 * FRI` fires on every Friday and on every 13th (POSIX OR rule)."""
    got = upcoming("0 9 13 * FRI", "UTC", parse_ts("2026-11-01T00:00Z"), 5)
    days = [instant.day for instant in got]
    assert days == [6, 13, 20, 27, 4]  # 13 Nov 2026 is itself a Friday; Dec 4 is a Friday


# SPEC §3's day rule across DST: a day field is unrestricted only when it is a bare `*`, so `*/n`
# (even `*/1`) restricts it and, with the other day field restricted too, either may match.
# (id, zone, expression, after, expected UTC instants); the comment gives the local reading.
DAY_RULE_CASES: list[tuple[str, str, str, str, list[str]]] = [
    # Odd days OR Mondays; Vixie cron would give only the odd Mondays (May 11, 25).
    ("utc-odd-days-or-mondays", "UTC", "0 0 */2 * 1", "2026-05-01T00:00Z",
     ["2026-05-03T00:00Z", "2026-05-04T00:00Z", "2026-05-05T00:00Z", "2026-05-07T00:00Z",
      "2026-05-09T00:00Z", "2026-05-11T00:00Z"]),
    # Lord Howe (+10:30, +11:00 from 2027-10-03 02:00 -> 02:30): 1, 16, 31 October OR Thursdays;
    # the first match is Friday 1 October 00:00 +10:30 (Vixie cron: 2030-10-31).
    ("lord-howe-every-minute-first-is-oct-1", "Australia/Lord_Howe", "* * */15 10 4",
     "2027-04-01T00:00Z",
     ["2027-09-30T13:30Z", "2027-09-30T13:31Z", "2027-09-30T13:32Z"]),
    ("lord-howe-midnights-across-the-half-hour-shift", "Australia/Lord_Howe", "0 0 */15 10 4",
     "2027-04-01T00:00Z",
     ["2027-09-30T13:30Z", "2027-10-06T13:00Z", "2027-10-13T13:00Z", "2027-10-15T13:00Z",
      "2027-10-20T13:00Z", "2027-10-27T13:00Z"]),
    # Chisinau (EEST +03 -> EET +02 on 2027-10-31 03:00): the 4th OR Sun/Wed/Sat in Aug-Oct.
    # Sun 1, Wed 4 (also the 4th), Sat 7, Sun 8 August; Vixie cron: only the 4th.
    ("chisinau-4th-or-sun-wed-sat", "Europe/Chisinau", "0 9 4 8-10 */3", "2027-08-01T00:00Z",
     ["2027-08-01T06:00Z", "2027-08-04T06:00Z", "2027-08-07T06:00Z", "2027-08-08T06:00Z"]),
    ("chisinau-every-5-min-first-is-sunday-aug-1", "Europe/Chisinau", "*/5 * 4 8-10 */3",
     "2027-07-31T00:00Z",
     ["2027-07-31T21:00Z", "2027-07-31T21:05Z", "2027-07-31T21:10Z"]),
    # Sunday 31 October is the fall-back day: 02:55 EEST, then 02:00 EET (second pass).
    ("chisinau-every-5-min-fall-back-sunday", "Europe/Chisinau", "*/5 * 4 8-10 */3",
     "2027-10-30T23:50Z",
     ["2027-10-30T23:55Z", "2027-10-31T00:00Z", "2027-10-31T00:05Z"]),
    # `*/1` in day-of-month restricts it: every day OR Sundays = every day; 02:30 on the
    # spring-forward day (8 March) does not exist and is skipped. Vixie cron: Sundays only.
    ("new-york-star-1-day-of-month-every-day-spring", "America/New_York", "30 2 */1 * SUN",
     "2026-03-07T00:00Z",
     ["2026-03-07T07:30Z", "2026-03-09T06:30Z", "2026-03-10T06:30Z"]),
    # `*/1` in day-of-week restricts it: the 1st OR any weekday = every day; 29 March skipped.
    # Vixie cron: the 1st only.
    ("berlin-star-1-day-of-week-every-day-spring", "Europe/Berlin", "30 2 1 * */1",
     "2026-03-28T00:00Z",
     ["2026-03-28T01:30Z", "2026-03-30T00:30Z"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("zone", "expression", "after", "expected"),
    [case[1:] for case in DAY_RULE_CASES],
    ids=[case[0] for case in DAY_RULE_CASES],
)
def test_day_rule_only_a_bare_star_is_unrestricted(
    zone: str, expression: str, after: str, expected: list[str]
) -> None:
    """Both day fields restricted unless a bare `*`: either matches; the oracle agrees."""
    want = [parse_ts(text) for text in expected]
    start = parse_ts(after)
    assert upcoming(expression, zone, start, len(want)) == want
    assert oracle(expression, ZoneInfo(zone), start, want[-1]) == want


def test_preview_marks_repeated_wall_times_on_both_occurrences() -> None:
    """On New York's fall-back day 01:30 appears twice, both with the fires-twice note."""
    items = preview("30 1 * * *", "America/New_York", parse_ts("2026-10-31T12:00Z"), 3)
    assert all(isinstance(item, Occurrence) for item in items)
    assert [(item.at, item.note) for item in items if isinstance(item, Occurrence)] == [
        (parse_ts("2026-11-01T05:30Z"), "fires twice: 01:30 occurs twice"),
        (parse_ts("2026-11-01T06:30Z"), "fires twice: 01:30 occurs twice"),
        (parse_ts("2026-11-02T06:30Z"), None),
    ]
    first, second = items[0], items[1]
    assert isinstance(first, Occurrence)
    assert isinstance(second, Occurrence)
    assert (first.local.tzname(), second.local.tzname()) == ("EDT", "EST")
    assert first.local.replace(tzinfo=None) == second.local.replace(tzinfo=None)


def test_preview_reports_skipped_wall_times_where_they_would_have_been() -> None:
    """On the spring-forward day the missing 02:30 is a note between the real occurrences."""
    items = preview("30 2 * * *", "America/New_York", parse_ts("2026-03-07T00:00Z"), 2)
    assert [type(item) for item in items] == [Occurrence, SkippedOccurrence, Occurrence]
    skipped = items[1]
    assert isinstance(skipped, SkippedOccurrence)
    assert skipped.wall == datetime(2026, 3, 8, 2, 30)
    assert skipped.note == "skipped: 02:30 does not exist on 2026-03-08 in America/New_York"


def test_preview_does_not_report_gaps_before_the_start() -> None:
    """A missing wall time already behind `after` on the wall clock is not reported."""
    items = preview("30 2 * * *", "America/New_York", parse_ts("2026-03-08T08:00Z"), 1)
    assert [type(item) for item in items] == [Occurrence]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Mars/Base", r"^schedule.timezone: unknown IANA timezone 'Mars/Base'$"),
        ("", r"^schedule.timezone: must be an IANA timezone name"),
        ("   ", r"^schedule.timezone: must be an IANA timezone name"),
        ("../etc/passwd", r"path-like names are not allowed"),
        ("/etc/localtime", r"path-like names are not allowed"),
        ("America//New_York", r"path-like names are not allowed"),
        ("America/New_York/", r"path-like names are not allowed"),
        (" UTC", r"path-like names are not allowed"),
        ("America", r"unknown IANA timezone 'America'"),
        ("america/new_york", r"unknown IANA timezone"),
        ("EST+5", r"unknown IANA timezone"),
        ("localtime", r"unknown IANA timezone 'localtime'"),
    ],
    ids=["unknown", "empty", "blank", "dotdot", "absolute", "double-slash", "trailing-slash",
         "padded", "directory", "wrong-case", "posix-tz-string", "host-localtime"],
)  # fmt: skip
def test_unknown_or_path_like_timezones_are_rejected(name: str, message: str) -> None:
    """Timezone names must be IANA names zoneinfo can load, never paths."""
    with pytest.raises(ScheduleError, match=message):
        load_timezone(name)


def test_compile_schedule_prefixes_errors_with_the_field() -> None:
    """compile_schedule names which part of the schedule is wrong."""
    with pytest.raises(ScheduleError, match=r"^schedule.expression: minute field: 60 is out"):
        compile_schedule("60 * * * *", "UTC")
    with pytest.raises(ScheduleError, match=r"^schedule.timezone: unknown IANA timezone"):
        compile_schedule("0 * * * *", "Mars/Base")


def test_compile_schedule_is_cached() -> None:
    """Deployments sharing an expression and zone share one compiled schedule."""
    assert compile_schedule("7 7 * * *", "Europe/Berlin") is compile_schedule(
        "7 7 * * *", "Europe/Berlin"
    )


def _uncached(expression: str, zone: str, after: datetime, count: int) -> list[datetime]:
    return list(islice(compile_schedule(expression, zone).iter_after(after), count))


@pytest.mark.parametrize(
    ("expression", "zone", "minute"),
    [
        ("* * * * *", "UTC", "2026-05-08T20:00Z"),
        ("0 20 * * *", "America/New_York", "2026-05-09T00:00Z"),  # the occurrence's own minute
        ("30 1 * * *", "America/New_York", "2026-11-01T05:30Z"),  # first of a repeated 01:30
        ("30 1 * * *", "America/New_York", "2026-11-01T06:30Z"),  # its second instant
        ("*/15 * * * *", "Australia/Lord_Howe", "2026-04-04T14:45Z"),  # 30-minute shift
        ("0 0 * * *", "America/Santiago", "2026-09-06T04:00Z"),  # midnight transition
    ],
    ids=[
        "every-minute",
        "daily-ny",
        "fall-back-first",
        "fall-back-second",
        "lord-howe",
        "santiago",
    ],
)
def test_upcoming_after_any_instant_of_a_minute_equals_after_the_minute_start(
    expression: str, zone: str, minute: str
) -> None:
    """Occurrences are whole minutes, so "strictly after now" and "strictly after the start of
    now's minute" give the same instants: the per-minute memo of upcoming() is exact."""
    start = parse_ts(minute)
    expected_after_start = _uncached(expression, zone, start, 5)
    for offset in (0, 1, 17_000_000, 59_999_999):  # microseconds into the minute
        after = start + timedelta(microseconds=offset)
        assert _uncached(expression, zone, after, 5) == expected_after_start  # the claim
        assert upcoming(expression, zone, after, 5) == expected_after_start  # memo included


def test_upcoming_is_exact_where_an_offset_has_seconds() -> None:
    """Africa/Monrovia was UTC-0:44:30 until 1972: occurrences fall at :30 seconds, so one can
    lie between a minute's start and `after`; the memo then does not answer."""
    first = upcoming("* * * * *", "Africa/Monrovia", parse_ts("1970-01-01T12:00:10Z"), 2)
    assert first == [parse_ts("1970-01-01T12:00:30Z"), parse_ts("1970-01-01T12:01:30Z")]
    later = upcoming("* * * * *", "Africa/Monrovia", parse_ts("1970-01-01T12:00:45Z"), 2)
    assert later == [parse_ts("1970-01-01T12:01:30Z"), parse_ts("1970-01-01T12:02:30Z")]
