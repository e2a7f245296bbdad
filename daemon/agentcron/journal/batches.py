"""What every backend's group-commit writer does with a committed (or failed) batch.

A writer queues ``(op, future)`` pairs (``future`` is ``None`` for a record nobody waits for),
commits a batch, and gets back, per op, the error its caller sees (``None``: committed, the
result is ``op.result``). ``settle_batch`` hands each caller its answer and logs the failures
nobody waits for; ``write_failure_after`` keeps the health's "writes are failing" fact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from agentcron.errors import AgentcronError, JournalError, ServiceUnavailable

log = structlog.get_logger("agentcron.journal")


class BatchedOp(Protocol):
    """A write op as a writer queues it: its committed ``result`` and a description."""

    @property
    def result(self) -> Any: ...

    def describe(self) -> str: ...


def settle_batch(
    batch: Sequence[tuple[BatchedOp, asyncio.Future[Any] | None]],
    errors: Sequence[AgentcronError | None],
) -> None:
    """Resolve each waiting caller with its op's result or error; log failed records."""
    for (op, future), error in zip(batch, errors, strict=True):
        if future is None:
            if error is not None:
                log.error("journal_write_failed", write=op.describe(), error=str(error))
        elif future.done():  # the caller was cancelled; the write happened (or failed) anyway
            continue
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(op.result)


def write_failure_after(
    previous: str | None, errors: Sequence[AgentcronError | None]
) -> str | None:
    """Why writes are failing after this batch: the last ``ServiceUnavailable`` of it, or
    ``None`` once an op committed, else what it was before."""
    unavailable = [error for error in errors if isinstance(error, ServiceUnavailable)]
    if unavailable:
        return unavailable[-1].message
    if any(error is None for error in errors):
        return None
    return previous


def fail_queued(queue: Sequence[tuple[BatchedOp, asyncio.Future[Any] | None]]) -> None:
    """A writer that stops: every caller still waiting in ``queue`` gets ``JournalError``."""
    for _, future in queue:
        if future is not None and not future.done():
            future.set_exception(JournalError("the journal is closed"))
