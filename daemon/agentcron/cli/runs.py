"""`agentcron runs` sub-commands: list (optionally following new runs) and get (with the state
of the run's session)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from typing import Any

import anyio

from agentcron.cli.common import connection_options, run_with_client, usage_guard
from agentcron.cli.output import (
    RUN_HEADERS,
    print_json,
    run_detail,
    run_line,
    run_row,
    session_detail,
    table,
)
from agentcron.client import Client
from agentcron.core.timeutil import parse_ts
from agentcron.errors import NotFound
from agentcron.exits import EXIT_OK

FOLLOW_INTERVAL = 1.0
# Runs become visible when they complete, and two completions may commit out of timestamp
# order: each poll looks back this far and skips the runs it already printed.
FOLLOW_LOOKBACK = timedelta(seconds=30)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `runs` sub-commands to the CLI."""
    group = subparsers.add_parser("runs", help="list and show deployment runs")
    commands = group.add_subparsers(dest="runs_command", metavar="COMMAND")
    common = connection_options()

    listing = commands.add_parser(
        "list",
        parents=[common],
        help="list runs, newest first",
        description="List runs, newest first. With --follow, print the latest runs oldest "
        "first, then each new run once as it is written, until Ctrl-C.",
    )
    listing.add_argument("--deployment", metavar="ID", help="only runs of this deployment")
    outcome = listing.add_mutually_exclusive_group()
    outcome.add_argument("--errors", action="store_true", help="only runs that failed")
    outcome.add_argument("--ok", action="store_true", help="only runs that created a session")
    listing.add_argument("--trigger", choices=("schedule", "manual"))
    size = listing.add_mutually_exclusive_group()
    size.add_argument("--limit", type=_positive, default=20, help="at most N (default 20)")
    size.add_argument("--all", action="store_true", help="follow every page")
    listing.add_argument("--follow", "-f", action="store_true", help="keep printing new runs")
    listing.set_defaults(handler=usage_guard(_list))

    get = commands.add_parser(
        "get",
        parents=[common],
        help="show one run and its session's state",
        description="Show one run; when it created a session, that session's state too (its "
        "status, pid, exit code or signal, end reason and log size).",
    )
    get.add_argument("run_id", metavar="ID")
    get.set_defaults(handler=_get)
    group.set_defaults(handler=lambda _args: _help(group))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    has_error = True if args.errors else False if args.ok else None
    return {
        "deployment_id": args.deployment,
        "has_error": has_error,
        "trigger_type": args.trigger,
    }


def _list(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        max_items = None if args.all else args.limit
        runs = [r async for r in client.iter_runs(max_items=max_items, **_filters(args))]
        if args.follow:
            await _follow(client, args, runs)
        elif args.json:
            print_json(runs)
        else:
            print(table(RUN_HEADERS, (run_row(r) for r in runs)))
        return EXIT_OK

    return run_with_client(args, command)


async def _follow(client: Client, args: argparse.Namespace, latest: list[dict[str, Any]]) -> None:
    seen: dict[str, datetime] = {}
    since = parse_ts((await client.health())["now"])
    for run in reversed(latest):
        _emit(args, run)
        seen[run["id"]] = parse_ts(run["created_at"])
        since = max(since, seen[run["id"]])
    while True:
        await anyio.sleep(FOLLOW_INTERVAL)
        fresh = [
            r
            async for r in client.iter_runs(
                created_at_gte=since - FOLLOW_LOOKBACK, **_filters(args)
            )
            if r["id"] not in seen
        ]
        for run in sorted(fresh, key=lambda r: (parse_ts(r["created_at"]), r["id"])):
            _emit(args, run)
            seen[run["id"]] = parse_ts(run["created_at"])
            since = max(since, seen[run["id"]])
        horizon = since - 2 * FOLLOW_LOOKBACK
        for run_id in [k for k, created in seen.items() if created < horizon]:
            del seen[run_id]


def _emit(args: argparse.Namespace, run: dict[str, Any]) -> None:
    if args.json:
        print_json(run, compact=True)  # JSON lines: one run per line
    else:
        print(run_line(run), flush=True)


def _get(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        run = await client.get_run(args.run_id)
        session: dict[str, Any] | None = None
        unavailable: str | None = None
        if run.get("session_id"):
            try:
                session = await client.get_session(run["session_id"])
            except NotFound as exc:  # hosted, or no longer recorded
                unavailable = exc.message
        if args.json:
            print_json({**run, "session": session} if session is not None else run)
            return EXIT_OK
        print(run_detail(run))
        if session is not None:
            print()
            print(session_detail(session))
        elif unavailable is not None:
            print(f"{'session:':<13} {unavailable}")
        return EXIT_OK

    return run_with_client(args, command)
