"""The real ``agentcrond`` on a wall clock set ahead of the machine's.

    python -m tests.support.shifted_daemon SECONDS [agentcrond arguments...]

End-to-end tests start the daemon this way a few seconds before a whole minute of its wall
clock, instead of waiting up to a minute for the next real one. Only the wall clock is shifted
(it is read through ``Clock.now``); waiting stays on the monotonic clock, as in the daemon.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from agentcron import daemon
from agentcron.clock import SystemClock


class ShiftedClock:
    """The system clock with ``offset`` added to its wall-clock time."""

    def __init__(self, offset: timedelta) -> None:
        self._system = SystemClock()
        self._offset = offset

    def now(self) -> datetime:
        return self._system.now() + self._offset

    async def sleep(self, seconds: float) -> None:
        await self._system.sleep(seconds)


def offset_before_minute(lead: float) -> float:
    """Seconds to add to the wall clock so that it reads ``lead`` seconds before a whole
    minute right now (between 0 and 60)."""
    return -(time.time() + lead) % 60


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    offset = timedelta(seconds=float(args.pop(0)))
    return daemon.main(args, clock=ShiftedClock(offset))


if __name__ == "__main__":
    sys.exit(main())
