"""The real ``agentcrond`` on a wall clock that runs faster than the machine's.

    python -m tests.support.fast_daemon ORIGIN SPEED [agentcrond arguments...]

The daemon's wall clock reads ``ORIGIN + (time.time() - ORIGIN) * SPEED`` (Unix seconds) and
its waits last ``1 / SPEED`` of what it asks, so every daemon started with the same ORIGIN and
SPEED agrees on the time, and at ``SPEED = 60`` a ``* * * * *`` schedule fires every real
second. Only the scheduler's clock is fast: leases, timeouts and the database keep real time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio

from agentcron import daemon


class FastClock:
    """Wall-clock time ``speed`` times as fast as the machine's since ``origin``."""

    def __init__(self, origin: float, speed: float) -> None:
        self.origin = origin
        self.speed = speed

    def at(self, real: float) -> datetime:
        """The fast clock's reading at the machine's Unix time ``real``."""
        return datetime.fromtimestamp(self.origin + (real - self.origin) * self.speed, UTC)

    def now(self) -> datetime:
        return self.at(time.time())

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds) / self.speed)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    clock = FastClock(float(args.pop(0)), float(args.pop(0)))
    return daemon.main(args, clock=clock)


if __name__ == "__main__":
    sys.exit(main())
