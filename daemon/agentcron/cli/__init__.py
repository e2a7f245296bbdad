"""The ``agentcron`` client CLI (SPEC §8).

Exit codes: 0 ok, 1 API error (message printed), 2 usage error, 3 daemon not reachable.
Each command group lives in its own module with a ``register(subparsers)`` function that adds
its sub-commands; a sub-command's handler takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agentcron import __version__
from agentcron.cli import (
    deployments,
    journal,
    runs,
    schedule,
    sessions,
    socket_path,
    status,
    webhooks,
)
from agentcron.exits import EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentcron", description="Control the agentcron daemon and preview cron schedules."
    )
    parser.add_argument("--version", action="version", version=f"agentcron {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (deployments, runs, schedule, status, webhooks, socket_path, sessions, journal):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = handler(args)
    return code
