"""The ``agentcron`` client CLI (SPEC §8). Exit codes: 0 ok, 1 API error, 2 usage, 3 no daemon."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agentcron import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentcron", description=__doc__)
    parser.add_argument("--version", action="version", version=f"agentcron {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0
