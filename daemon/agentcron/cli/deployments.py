"""`agentcron deployments` sub-commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `deployments` sub-commands to the CLI."""
