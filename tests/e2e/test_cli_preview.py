"""`agentcron schedule preview`: the table, --json, DST notes, defaults and usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import time_machine

from agentcron.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["schedule", "preview", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_prints_only_the_utc_instants(capsys: pytest.CaptureFixture[str]) -> None:
    """--json is a bare JSON array of RFC 3339 UTC instants, both instants of a repeated time."""
    code, out, err = run(
        capsys, "30 1 * * *", "--timezone", "America/New_York",
        "--from", "2026-10-31T12:00:00Z", "--count", "3", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert json.loads(out) == [
        "2026-11-01T05:30:00Z",
        "2026-11-01T06:30:00Z",
        "2026-11-02T06:30:00Z",
    ]


def test_json_never_contains_skipped_times(capsys: pytest.CaptureFixture[str]) -> None:
    """A wall time skipped by spring-forward is absent from --json (it never fires)."""
    code, out, _ = run(
        capsys, "30 2 * * *", "--timezone", "America/New_York",
        "--from", "2026-03-07T00:00:00Z", "--count", "2", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == ["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"]
    assert "skipped" not in out


def test_table_shows_utc_and_local_and_marks_a_fall_back_day(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each row has the UTC instant and local time with offset and zone; 01:30 is marked twice."""
    code, out, _ = run(
        capsys, "30 1 * * *", "-z", "America/New_York", "--from", "2026-10-31T12:00:00Z", "-n", "3"
    )
    assert code == 0
    rows = out.splitlines()[2:]
    assert rows[0].split() == [
        "2026-11-01T05:30:00Z", "Sun", "2026-11-01", "01:30", "-04:00", "EDT",
        "fires", "twice:", "01:30", "occurs", "twice",
    ]  # fmt: skip
    assert rows[1].split() == [
        "2026-11-01T06:30:00Z", "Sun", "2026-11-01", "01:30", "-05:00", "EST",
        "fires", "twice:", "01:30", "occurs", "twice",
    ]  # fmt: skip
    assert rows[2].split() == [
        "2026-11-02T06:30:00Z",
        "Mon",
        "2026-11-02",
        "01:30",
        "-05:00",
        "EST",
    ]


def test_table_has_a_note_line_where_a_skipped_time_would_have_been(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On the spring-forward day a note row sits between the real occurrences."""
    code, out, _ = run(
        capsys, "30 2 * * *", "-z", "America/New_York", "--from", "2026-03-07T00:00:00Z", "-n", "2"
    )
    assert code == 0
    rows = out.splitlines()
    assert "next 2 fire instants after 2026-03-07T00:00:00Z" in rows[0]
    assert rows[2].startswith("2026-03-07T07:30:00Z")
    assert rows[3].startswith("-")
    assert rows[3].endswith("skipped: 02:30 does not exist on 2026-03-08 in America/New_York")
    assert rows[4].startswith("2026-03-09T06:30:00Z")
    assert len(rows) == 5


def test_half_hour_offsets_are_printed_with_minutes(capsys: pytest.CaptureFixture[str]) -> None:
    """Lord Howe's +10:30 and +11:00 offsets appear as such in the local column."""
    code, out, _ = run(
        capsys, "45 1 * * *", "-z", "Australia/Lord_Howe", "--from", "2026-04-04T12:00Z", "-n", "2"
    )
    assert code == 0
    assert "+11:00" in out.splitlines()[2]
    assert "+10:30" in out.splitlines()[3]


def test_from_without_offset_means_utc(capsys: pytest.CaptureFixture[str]) -> None:
    """`--from 2026-05-08T19:00` is 19:00 UTC, not local time."""
    _, out, _ = run(capsys, "0 20 * * *", "-z", "UTC", "--from", "2026-05-08T19:00", "--json")
    assert json.loads(out) == [f"2026-05-{day:02d}T20:00:00Z" for day in range(8, 18)]


def test_from_defaults_to_now(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --from the preview starts at the current time (read only at this edge)."""
    with time_machine.travel(datetime(2026, 5, 8, 19, 59, 30, tzinfo=UTC), tick=False):
        code, out, _ = run(capsys, "0 20 * * *", "-z", "UTC", "-n", "1", "--json")
    assert (code, json.loads(out)) == (0, ["2026-05-08T20:00:00Z"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["0 0 31 2 *", "-z", "UTC"], "schedule.expression: the expression never matches"),
        (["0 0 * * * *", "-z", "UTC"], "schedule.expression: expected 5 fields"),
        (["@daily", "-z", "UTC"], "schedule.expression: '@daily' shortcuts are not supported"),
        (["0 0 * * *", "-z", "Mars/Base"], "schedule.timezone: unknown IANA timezone 'Mars/Base'"),
        (["0 0 * * *", "-z", "../etc"], "schedule.timezone: '../etc' is not an IANA timezone"),
        (["0 0 * * *", "-z", "UTC", "--from", "soon"], "--from: 'soon' is not an ISO 8601"),
        (["0 0 * * *", "-z", "UTC", "-n", "0"], "--count: must be between 1 and 1000, got 0"),
        (["0 0 * * *", "-z", "UTC", "-n", "1001"], "--count: must be between 1 and 1000"),
        (["0 0 * * *", "-z", "UTC", "-n", "ten"], "--count: 'ten' is not a whole number"),
    ],
    ids=["never-matches", "six-fields", "shortcut", "unknown-zone", "path-zone", "bad-from",
         "count-zero", "count-too-big", "count-not-a-number"],
)  # fmt: skip
def test_invalid_input_exits_2_with_the_message_on_stderr(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Bad expression, zone, --from or --count: exit 2, the reason on stderr, nothing on stdout."""
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_missing_timezone_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--timezone is required; argparse reports it and exits 2."""
    with pytest.raises(SystemExit) as exited:
        main(["schedule", "preview", "0 0 * * *"])
    assert exited.value.code == 2
    assert "--timezone" in capsys.readouterr().err


def test_schedule_without_a_subcommand_prints_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`agentcron schedule` alone explains its sub-commands."""
    assert main(["schedule"]) == 2
    assert "preview" in capsys.readouterr().err


def test_runs_as_a_real_subprocess_without_a_daemon() -> None:
    """`python -m agentcron schedule preview` needs no daemon; errors exit 2 without a traceback."""
    env = {**os.environ, "AGENTCRON_SOCKET": "/nonexistent/agentcron.sock"}
    ok = subprocess.run(
        [sys.executable, "-m", "agentcron", "schedule", "preview", "0 20 * * 5",
         "--timezone", "America/New_York", "--from", "2026-05-01T00:00:00Z", "--count", "2",
         "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert (ok.returncode, ok.stderr) == (0, "")
    assert json.loads(ok.stdout) == ["2026-05-02T00:00:00Z", "2026-05-09T00:00:00Z"]
    bad = subprocess.run(
        [sys.executable, "-m", "agentcron", "schedule", "preview", "0 0 L * *", "-z", "UTC"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "day-of-month field: 'L' (last) is not supported" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_table_says_when_either_day_field_matches(capsys: pytest.CaptureFixture[str]) -> None:
    """`*/2` restricts day-of-month: the table says the OR rule applies and shows odd days too."""
    code, out, _ = run(
        capsys, "0 0 */2 * 1", "--timezone", "UTC", "--from", "2026-05-01T00:00:00Z",
        "--count", "3",
    )  # fmt: skip
    lines = out.splitlines()
    assert code == 0
    assert lines[1] == (
        "days: day-of-month OR day-of-week (both are restricted; only a bare * is not)"
    )
    assert [line[:10] for line in lines[3:]] == ["2026-05-03", "2026-05-04", "2026-05-05"]


def test_table_has_no_day_rule_line_when_a_day_field_is_a_bare_star(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`0 0 * * 1` is Mondays only (AND rule): no OR line."""
    _, out, _ = run(capsys, "0 0 * * 1", "--timezone", "UTC", "--count", "1")
    assert "day-of-month OR" not in out
