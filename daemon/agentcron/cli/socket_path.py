"""`agentcron socket-path`: the control socket the CLI would use, for scripts and the SDK."""

from __future__ import annotations

import argparse
from typing import Any

from agentcron.exits import EXIT_OK
from agentcron.paths import resolve_socket_path


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `socket-path` command to the CLI."""
    command = subparsers.add_parser(
        "socket-path",
        help="print the control socket's path",
        description="Print the control socket the other commands use without --socket: "
        "$AGENTCRON_SOCKET, else the default the daemon binds. Needs no daemon.",
    )
    command.set_defaults(handler=_socket_path)


def _socket_path(_args: argparse.Namespace) -> int:
    print(resolve_socket_path(None))
    return EXIT_OK
