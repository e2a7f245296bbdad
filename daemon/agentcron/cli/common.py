"""What every daemon-talking CLI command shares: socket options, the client, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from agentcron.client import Client, DaemonUnreachable
from agentcron.errors import AgentcronError, ApiError
from agentcron.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from agentcron.paths import resolve_socket_path

START_HINT = (
    "start the daemon with `agentcrond --config /path/to/config.toml` "
    "(or `systemctl start agentcron`), or point --socket / AGENTCRON_SOCKET at its socket"
)


class UsageError(Exception):
    """The command line is inconsistent (exit code 2)."""


def connection_options() -> argparse.ArgumentParser:
    """A parent parser with ``--socket`` and ``--json`` for every daemon-talking command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--socket",
        metavar="PATH",
        help="the daemon's control socket (default: $AGENTCRON_SOCKET, else the standard path)",
    )
    parent.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parent


def run_with_client(args: argparse.Namespace, command: Callable[[Client], Awaitable[int]]) -> int:
    """Run ``command`` with a connected client; map failures to exit codes and messages."""
    socket_path = resolve_socket_path(args.socket)

    async def main() -> int:
        async with Client(socket_path) as client:
            return await command(client)

    try:
        return anyio.run(main, backend="asyncio")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DaemonUnreachable as exc:
        print(f"error: {exc}\n{START_HINT}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiError as exc:
        print(f"error: {exc.error_type}: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except AgentcronError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "follow", False) else EXIT_INTERRUPTED


def load_body_file(name: str) -> dict[str, Any]:
    """Read a JSON object from ``name`` (``-`` = stdin); ``UsageError`` when it is not one."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--file: cannot read {name}: {exc}") from exc
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--file: {name} is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise UsageError(f"--file: {name} must hold a JSON object")
    return body


def usage_guard(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Turn a ``UsageError`` raised before the client starts into exit code 2."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return guarded
