"""`agentcron sessions` sub-commands: get, logs (optionally following) and stop one local
session (the ``command`` launcher's; with ``managed_agents`` the daemon says where it lives)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agentcron.cli.common import connection_options, run_with_client
from agentcron.cli.output import print_json, session_detail
from agentcron.client import Client
from agentcron.exits import EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `sessions` sub-commands to the CLI."""
    group = subparsers.add_parser("sessions", help="inspect, follow and stop local sessions")
    commands = group.add_subparsers(dest="sessions_command", metavar="COMMAND")
    common = connection_options()

    get = commands.add_parser("get", parents=[common], help="show one session's state")
    get.add_argument("session_id", metavar="ID")
    get.set_defaults(handler=_get)

    logs = commands.add_parser(
        "logs",
        parents=[common],
        help="print a session's log",
        description="Print a session's log (its stdout and stderr). With --follow, keep "
        "printing what it writes until the session ends.",
    )
    logs.add_argument("session_id", metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true", help="until the session ends")
    logs.add_argument(
        "--offset", type=_offset, default=0, metavar="N", help="start at byte N (default 0)"
    )
    logs.set_defaults(handler=_logs)

    stop = commands.add_parser(
        "stop",
        parents=[common],
        help="stop a running session",
        description="SIGTERM to the session's process group, SIGKILL after its stop_grace; "
        "returns once it ended. Stopping an ended session changes nothing.",
    )
    stop.add_argument("session_id", metavar="ID")
    stop.set_defaults(handler=_stop)
    group.set_defaults(handler=lambda _args: _help(group))


def _offset(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _show(args: argparse.Namespace, session: dict[str, Any]) -> None:
    if args.json:
        print_json(session)
    else:
        print(session_detail(session))


def _get(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        _show(args, await client.get_session(args.session_id))
        return EXIT_OK

    return run_with_client(args, command)


def _stop(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        _show(args, await client.stop_session(args.session_id))
        return EXIT_OK

    return run_with_client(args, command)


def _logs(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        out = sys.stdout.buffer
        async for chunk in client.session_log(
            args.session_id, offset=args.offset, follow=args.follow
        ):
            out.write(chunk)
            out.flush()
        return EXIT_OK

    return run_with_client(args, command)
