"""Cron expression parsing: what is accepted, what each field matches, what is rejected and why."""

from __future__ import annotations

import pytest

from agentcron.core.cron import CronExpression, parse_cron
from agentcron.errors import InvalidRequest, ScheduleError

ALL_MINUTES = frozenset(range(60))
ALL_HOURS = frozenset(range(24))
ALL_DAYS = frozenset(range(1, 32))
ALL_MONTHS = frozenset(range(1, 13))
ALL_WEEKDAYS = frozenset(range(7))


@pytest.mark.parametrize(
    ("expression", "field", "expected"),
    [
        ("* * * * *", "minutes", ALL_MINUTES),
        ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
        ("5/20 * * * *", "minutes", {5, 25, 45}),
        ("10-20/5 * * * *", "minutes", {10, 15, 20}),
        ("0,30,59 * * * *", "minutes", {0, 30, 59}),
        ("0-4,50-52 * * * *", "minutes", {0, 1, 2, 3, 4, 50, 51, 52}),
        ("*/60 * * * *", "minutes", {0}),
        ("0 9-17 * * *", "hours", set(range(9, 18))),
        ("0 */6 * * *", "hours", {0, 6, 12, 18}),
        ("0 22/1 * * *", "hours", {22, 23}),
        ("0 0 1,15 * *", "days_of_month", {1, 15}),
        ("0 0 */10 * *", "days_of_month", {1, 11, 21, 31}),
        ("0 0 * JAN,jul *", "months", {1, 7}),
        ("0 0 * Mar-May *", "months", {3, 4, 5}),
        ("0 0 * */3 *", "months", {1, 4, 7, 10}),
        ("0 0 * * MON-FRI", "days_of_week", {1, 2, 3, 4, 5}),
        ("0 0 * * sun", "days_of_week", {0}),
        ("0 0 * * 7", "days_of_week", {0}),
        ("0 0 * * 0,7", "days_of_week", {0}),
        ("0 0 * * 5-7", "days_of_week", {5, 6, 0}),
        ("0 0 * * */2", "days_of_week", {0, 2, 4, 6}),
        ("0 0 * * SAT,sun", "days_of_week", {6, 0}),
        ("0 0 * * mon-fri/2", "days_of_week", {1, 3, 5}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_field_values(expression: str, field: str, expected: set[int]) -> None:
    """Each accepted syntax expands to exactly the listed values."""
    assert getattr(parse_cron(expression), field) == frozenset(expected)


def test_whitespace_between_and_around_fields_is_ignored() -> None:
    """Tabs, repeated spaces and leading/trailing whitespace separate fields like one space."""
    assert parse_cron("  0\t20  *   * 5 \n") == parse_cron("0 20 * * 5")


def test_a_plain_expression_has_every_field_set() -> None:
    """`0 20 * * 5` is minute 0, hour 20, any day of month, any month, Friday."""
    assert parse_cron("0 20 * * 5") == CronExpression(
        minutes=frozenset({0}),
        hours=frozenset({20}),
        days_of_month=ALL_DAYS,
        months=ALL_MONTHS,
        days_of_week=frozenset({5}),
        dom_restricted=False,
        dow_restricted=True,
    )


@pytest.mark.parametrize(
    ("expression", "dom_restricted", "dow_restricted"),
    [
        ("0 0 * * *", False, False),
        ("0 0 1 * *", True, False),
        ("0 0 * * 1", False, True),
        ("0 0 1 * 1", True, True),
        ("0 0 */1 * 1", True, True),
        ("0 0 */2 * 1", True, True),
        ("0 0 1-31 * 1", True, True),
        ("0 0 1 * */1", True, True),
        ("0 0 * * */1", False, True),
        ("0 0 */1 * *", True, False),
        ("0 0 1 * 0-7", True, True),
    ],
    ids=lambda value: value if isinstance(value, str) else str(value),
)
def test_only_a_bare_star_leaves_a_day_field_unrestricted(
    expression: str, dom_restricted: bool, dow_restricted: bool
) -> None:
    """SPEC §3: only `*` itself is unrestricted; `*/1`, `*/n`, `1-31` and `0-7` restrict."""
    cron = parse_cron(expression)
    assert (cron.dom_restricted, cron.dow_restricted) == (dom_restricted, dow_restricted)


@pytest.mark.parametrize(
    ("expression", "day", "matches"),
    [
        # 2026-05-01 is a Friday, 2026-05-04 a Monday, 2026-05-13 a Wednesday.
        ("0 0 13 * 5", (2026, 5, 1), True),  # OR rule: Friday matches although the 1st is not 13
        ("0 0 13 * 5", (2026, 5, 13), True),  # OR rule: the 13th matches although not Friday
        ("0 0 13 * 5", (2026, 5, 4), False),
        ("0 0 */2 * 1", (2026, 5, 4), True),  # */2 restricts: OR rule, the even 4th is a Monday
        ("0 0 */2 * 1", (2026, 5, 11), True),  # odd day and Monday
        ("0 0 */2 * 1", (2026, 5, 13), True),  # odd day, a Wednesday
        ("0 0 */2 * 1", (2026, 5, 12), False),  # even day, a Tuesday
        ("0 0 */1 * 1", (2026, 5, 13), True),  # */1 restricts too: OR rule, every day
        ("0 0 * * 1", (2026, 5, 13), False),  # bare *: AND rule, only Mondays
        ("0 0 13 * *", (2026, 5, 4), False),  # bare *: AND rule, only the 13th
        ("0 0 1-31 * 1", (2026, 5, 13), True),  # 1-31 is restricted: OR rule, every day
        ("0 0 * * 0", (2026, 5, 3), True),  # Sunday
        ("0 0 * * 7", (2026, 5, 3), True),  # 7 is Sunday too
        ("0 0 1 * *", (2026, 6, 1), True),
        ("0 0 1 7 *", (2026, 6, 1), False),  # wrong month
        ("0 0 13 7 5", (2026, 5, 1), False),  # OR rule never overrides the month
        ("0 0 29 2 *", (2028, 2, 29), True),
    ],
    ids=lambda value: value if isinstance(value, str) else str(value),
)
def test_matches_day_applies_the_posix_or_rule(
    expression: str, day: tuple[int, int, int], matches: bool
) -> None:
    """A day matches by month, then by day-of-month OR day-of-week only when both are restricted."""
    assert parse_cron(expression).matches_day(*day) is matches


def test_a_never_matching_day_of_month_is_fine_when_the_weekday_is_restricted_too() -> None:
    """`0 0 31 2 1` fires on Mondays in February by the OR rule, so it is accepted."""
    cron = parse_cron("0 0 31 2 1")
    assert cron.matches_day(2026, 2, 2)  # a Monday


def test_leap_day_only_expression_is_accepted() -> None:
    """February 29th exists in leap years, so `0 0 29 2 *` is valid."""
    assert parse_cron("0 0 29 2 *").days_of_month == frozenset({29})


def test_schedule_errors_are_400_invalid_request_errors() -> None:
    """A bad expression surfaces as the API's 400 invalid_request_error."""
    with pytest.raises(InvalidRequest) as caught:
        parse_cron("61 * * * *")
    assert caught.value.status == 400
    assert caught.value.error_type == "invalid_request_error"


REJECTED = [
    ("", r"expected 5 fields .*got 0"),
    ("   ", r"expected 5 fields .*got 0"),
    ("* * * *", r"expected 5 fields \(minute hour day-of-month month day-of-week\), got 4$"),
    ("0 0 * * * *", r"got 6: seconds and year fields are not supported"),
    ("0 0 0 * * * 2026", r"got 7: seconds and year fields are not supported"),
    ("0 0 * * * * * *", r"expected 5 fields .*got 8"),
    ("@daily", r"'@daily' shortcuts are not supported: write '0 0 \* \* \*' instead"),
    ("@reboot", r"'@reboot' shortcuts are not supported"),
    ("@hourly", r"'@hourly' shortcuts are not supported"),
    ("0 0 L * *", r"day-of-month field: 'L' \(last\) is not supported"),
    ("0 0 * * 5L", r"day-of-week field: 'L' \(last\) is not supported"),
    ("0 0 L-3 * *", r"day-of-month field: 'L' \(last\) is not supported"),
    ("0 0 15W * *", r"day-of-month field: 'W' \(nearest weekday\) is not supported"),
    ("0 0 LW * *", r"day-of-month field: 'L' \(last\) is not supported"),
    ("0 0 * * 5#3", r"day-of-week field: '#' \(nth weekday of the month\) is not supported"),
    ("0 0 ? * 1", r"day-of-month field: '\?' is not supported"),
    ("60 * * * *", r"minute field: 60 is out of range 0-59"),
    ("0 24 * * *", r"hour field: 24 is out of range 0-23"),
    ("0 0 0 * *", r"day-of-month field: 0 is out of range 1-31"),
    ("0 0 32 * *", r"day-of-month field: 32 is out of range 1-31"),
    ("0 0 * 13 *", r"month field: 13 is out of range 1-12"),
    ("0 0 * 0 *", r"month field: 0 is out of range 1-12"),
    ("0 0 * * 8", r"day-of-week field: 8 is out of range 0-7"),
    ("0 0-70 * * *", r"hour field: 70 is out of range 0-23"),
    ("5-1 * * * *", r"minute field: range '5-1' is reversed"),
    ("0 0 * * FRI-MON", r"day-of-week field: range 'FRI-MON' is reversed"),
    ("*/0 * * * *", r"minute field: step must be at least 1"),
    ("0 1-5/0 * * *", r"hour field: step must be at least 1"),
    ("*/61 * * * *", r"minute field: step 61 is larger than the field's range 0-59"),
    ("*/x * * * *", r"minute field: step 'x' in '\*/x' is not a number"),
    ("*/5/2 * * * *", r"minute field: '\*/5/2' has more than one '/'"),
    ("/5 * * * *", r"minute field: missing value before '/'"),
    ("1,,2 * * * *", r"minute field: empty list item in '1,,2'"),
    ("1, * * * *", r"minute field: empty list item"),
    (",1 * * * *", r"minute field: empty list item"),
    ("1- * * * *", r"minute field: incomplete range '1-'"),
    ("-1 * * * *", r"minute field: incomplete range '-1'"),
    ("x * * * *", r"minute field: 'x' is not a number, range \(a-b\), list \(a,b\) or step"),
    ("0 MON * * *", r"hour field: 'MON' is not a number"),
    ("0 0 * foo *", r"month field: 'foo' is neither a number nor a three-letter month name"),
    ("0 0 * * monday", r"day-of-week field: 'monday' is neither a number nor a three-letter day"),
    ("0 0 * * JAN", r"day-of-week field: 'JAN' is neither a number nor a three-letter day"),
    ("\u0663 * * * *", r"minute field: '\u0663' is not a number \(only ASCII digits 0-9"),
    ("0 \uff11 * * *", r"hour field: '\uff11' is not a number \(only ASCII digits 0-9"),
    ("1.5 * * * *", r"minute field: '1.5' is not a number"),
    ("0 0 31 2 *", r"the expression never matches: February has no day 31"),
    ("0 0 30 2 *", r"the expression never matches: February has no day 30"),
    ("0 0 30,31 2 *", r"the expression never matches: February has no day 30 or 31"),
    (
        "0 0 31 4,6,9,11 *",
        r"the expression never matches: April, June, September and November have no day 31",
    ),
    ("0 0 31 * APR", r"day-of-week field: 'APR' is neither"),
]


@pytest.mark.parametrize(
    ("expression", "message"), REJECTED, ids=[repr(expr) for expr, _ in REJECTED]
)
def test_rejected_expressions_name_the_field_and_the_rule(expression: str, message: str) -> None:
    """Unsupported or invalid expressions raise ScheduleError explaining what is wrong where."""
    with pytest.raises(ScheduleError, match=message):
        parse_cron(expression)


def test_a_star_step_weekday_makes_a_never_matching_day_of_month_fire_on_those_weekdays() -> None:
    """`0 0 31 2 */2`: `*/2` restricts the weekday, so Sun/Tue/Thu/Sat of February match."""
    cron = parse_cron("0 0 31 2 */2")
    assert cron.matches_day(2026, 2, 1)  # a Sunday
    assert not cron.matches_day(2026, 2, 2)  # a Monday


_DAY_OF_MONTH_SPECS = ("*", "*/1", "*/2", "*/15", "1", "30", "31", "29-31", "1-31", "15,31")
_MONTH_SPECS = ("*", "2", "4,6", "2,4", "*/2", "FEB")
_DAY_OF_WEEK_SPECS = ("*", "*/1", "*/3", "0", "7", "MON-FRI", "0-7", "sat")


def _parses(expression: str) -> bool:
    try:
        parse_cron(expression)
    except ScheduleError:
        return False
    return True


def _parsed_under_the_star_prefix_rule(dom: str, month: str, dow: str) -> bool:
    """The earlier rule: OR (never empty) unless a day field started with `*`, else AND."""
    if not dom.startswith("*") and not dow.startswith("*"):
        return True
    return _parses(f"0 0 {dom} {month} *")  # AND: accepted when some (month, day) exists


def test_the_bare_star_rule_rejects_nothing_the_star_prefix_rule_accepted() -> None:
    """Every day-field combination the earlier (Vixie) rule accepted still parses."""
    checked = 0
    for dom in _DAY_OF_MONTH_SPECS:
        for month in _MONTH_SPECS:
            for dow in _DAY_OF_WEEK_SPECS:
                if _parsed_under_the_star_prefix_rule(dom, month, dow):
                    checked += 1
                    assert _parses(f"0 0 {dom} {month} {dow}"), (dom, month, dow)
    assert checked > 400
