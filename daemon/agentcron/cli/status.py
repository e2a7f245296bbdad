"""`agentcron status`: the daemon's health."""

from __future__ import annotations

import argparse
from typing import Any

from agentcron.cli.common import connection_options, run_with_client
from agentcron.cli.output import health_text, print_json
from agentcron.client import Client
from agentcron.exits import EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `status` command to the CLI."""
    status = subparsers.add_parser(
        "status",
        parents=[connection_options()],
        help="show the daemon's health",
        description="Show the daemon's version, journal, deployment counts and next fire.",
    )
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    async def command(client: Client) -> int:
        health = await client.health()
        if args.json:
            print_json(health)
        else:
            print(health_text(health, str(client.socket_path)))
        return EXIT_OK

    return run_with_client(args, command)
