"""The clock, injected everywhere time is read or waited for.

Only ``SystemClock`` reads the real clock. Tests pass a fake that they advance by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

import anyio


class Clock(Protocol):
    """Wall-clock time for decisions, monotonic sleeping for waits."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware, in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` on the monotonic clock (returns at once for <= 0)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))
