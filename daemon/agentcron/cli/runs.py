"""`agentcron runs` sub-commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `runs` sub-commands to the CLI."""
