"""``agentcrond``: the daemon's entry point and composition root."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from agentcron import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentcrond", description="The agentcron daemon.")
    parser.add_argument("--version", action="version", version=f"agentcrond {__version__}")
    parser.parse_args(argv)
    print(f"agentcrond {__version__}")
    return 0
