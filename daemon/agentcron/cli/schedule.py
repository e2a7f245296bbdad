"""`agentcron schedule` sub-commands: preview a cron schedule without the daemon (SPEC §8).

``agentcron schedule preview EXPRESSION --timezone TZ [--from ISO8601] [--count N] [--json]``
prints the next N nominal fire instants strictly after ``--from`` (default: now), exactly as the
daemon computes them (before jitter). The table shows UTC and local time side by side and marks
DST effects: a wall time that occurs twice fires twice (both rows carry a note), a wall time
that does not exist is skipped (a note row where it would have been; never in ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from agentcron.core.schedule import Occurrence, SkippedOccurrence, compile_schedule, preview
from agentcron.core.timeutil import format_ts, parse_ts
from agentcron.errors import ScheduleError
from agentcron.exits import EXIT_OK, EXIT_USAGE

MAX_COUNT = 1000


class _UsageError(Exception):
    """A command-line value is invalid; the message names the option and the rule."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `schedule` sub-commands to the CLI."""
    group = subparsers.add_parser(
        "schedule",
        help="preview cron schedules (works without the daemon)",
        description="Preview cron schedules; works without the daemon.",
    )
    group.set_defaults(handler=lambda _args: _group_help(group))
    commands = group.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND")
    parser = commands.add_parser(
        "preview",
        help="print the next fire instants of a cron expression in a timezone",
        description=(
            "Print the next fire instants (UTC and local time) of a 5-field cron expression "
            "matched in an IANA timezone, strictly after --from, marking times that DST skips "
            "or repeats. Exactly the instants the daemon fires at, before jitter."
        ),
    )
    parser.add_argument("expression", metavar="EXPRESSION", help="e.g. '0 20 * * 5' (quote it)")
    parser.add_argument(
        "--timezone", "-z", required=True, metavar="TZ", help="IANA name, e.g. America/New_York"
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="ISO8601",
        help="start instant (exclusive); without an offset it means UTC; default: now",
    )
    parser.add_argument(
        "--count", "-n", default="10", metavar="N", help=f"how many instants, 1-{MAX_COUNT}"
    )
    parser.add_argument(
        "--json", action="store_true", help="print only a JSON array of UTC instants"
    )
    parser.set_defaults(handler=run_preview)


def _group_help(group: argparse.ArgumentParser) -> int:
    group.print_help(sys.stderr)
    return EXIT_USAGE


def run_preview(args: argparse.Namespace) -> int:
    """Handle `schedule preview`; returns the exit code (0, or 2 for invalid input)."""
    try:
        count = _parse_count(args.count)
        after = _parse_from(args.start)
        items = preview(args.expression, args.timezone, after, count)
    except (ScheduleError, _UsageError) as exc:
        print(f"agentcron schedule preview: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        instants = [format_ts(item.at) for item in items if isinstance(item, Occurrence)]
        print(json.dumps(instants))
        return EXIT_OK
    print(_render(args.expression, args.timezone, after, items))
    return EXIT_OK


def _parse_count(text: str) -> int:
    try:
        count = int(text.strip(), 10)
    except ValueError:
        raise _UsageError(f"--count: {text!r} is not a whole number") from None
    if not 1 <= count <= MAX_COUNT:
        raise _UsageError(f"--count: must be between 1 and {MAX_COUNT}, got {count}")
    return count


def _parse_from(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)  # the only place the preview reads the clock
    try:
        return parse_ts(text)
    except (ValueError, OverflowError) as exc:
        raise _UsageError(
            f"--from: {text!r} is not an ISO 8601 timestamp (e.g. 2026-11-01T00:00:00Z; "
            "without an offset it means UTC)"
        ) from exc


def _render(
    expression: str, timezone: str, after: datetime, items: list[Occurrence | SkippedOccurrence]
) -> str:
    fired = sum(isinstance(item, Occurrence) for item in items)
    rows: list[tuple[str, str, str]] = [("UTC", f"LOCAL ({timezone})", "NOTE")]
    for item in items:
        if isinstance(item, SkippedOccurrence):
            rows.append(("-", f"{item.wall:%a %Y-%m-%d %H:%M} (does not exist)", item.note))
        else:
            rows.append((format_ts(item.at), _local_text(item.local), item.note or ""))
    utc_width = max(len(row[0]) for row in rows)
    local_width = max(len(row[1]) for row in rows)
    lines = [
        f"{expression!r} in {timezone}: next {fired} fire instant{'s' if fired != 1 else ''} "
        f"after {format_ts(after)} (before jitter)",
    ]
    if compile_schedule(expression, timezone).cron.either_day:
        lines.append(
            "days: day-of-month OR day-of-week (both are restricted; only a bare * is not)"
        )
    lines.extend(
        f"{utc:<{utc_width}}  {local:<{local_width}}  {note}".rstrip() for utc, local, note in rows
    )
    return "\n".join(lines)


def _local_text(local: datetime) -> str:
    offset = local.strftime("%z")  # +HHMM (or +HHMMSS)
    offset = f"{offset[:3]}:{offset[3:5]}" if len(offset) == 5 else offset
    return f"{local:%a %Y-%m-%d %H:%M} {offset} {local.tzname()}"
