"""The pruner: removes what ``[retention]`` no longer keeps, in small batches at low priority.

One *pass* every ``interval`` (and one at start):

1. **runs** created before ``now - runs``, and beyond the ``runs_max_count`` newest ones
   (``Journal.prune_runs``: open claims, each deployment's newest run and latest scheduled
   occurrence are never removed);
2. **outbox** events older than ``now - runs`` whose deliveries are all settled
   (``Journal.prune_outbox``: a pending delivery is never removed);
3. **sessions** that ended before ``now - sessions``, then their log files;
4. **session logs** over ``session_logs_max_bytes`` in total: the sessions of the oldest log
   files (by modification time) go first, ended ones only; log files no session row names
   any more (left by a crash between the two steps) once older than ``sessions``.

Each batch is one short write transaction; its size adapts so that the writer's hold stays
near ``target_hold`` (``Pruned.held``, measured inside the transaction). Between batches the
pruner sleeps at least ``pause`` and ``rest_ratio`` (4) times the last hold, and while the
fire path is busy (``busy()``: fires in flight or one due within 2 s, see
``agentcron.daemon.fires_busy``) it waits (up to ``max_yield`` per batch, so a backlog still
shrinks under a steady load), so a storm's claims and completions meet at most one batch.

The latest pass's report is kept in memory (``last``) for ``/v1/health`` and ``agentcron
status``; after a restart it is empty until the first pass, which runs at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from agentcron.clock import Clock
from agentcron.config import RetentionConfig
from agentcron.core.timeutil import format_ts
from agentcron.errors import AgentcronError
from agentcron.journal import Journal, Pruned

log = structlog.get_logger(__name__)

FIRST_BATCH = 200
MIN_BATCH = 20
MAX_BATCH = 1000
TARGET_HOLD = 0.003
"""Seconds one prune transaction should hold the writer (the adaptive batch aims here)."""
PAUSE = 0.02
"""Seconds of rest, at least, between two batches."""
REST_RATIO = 4.0
"""Rest between batches, at least, as a multiple of the last batch's hold: the pruner holds
the writer for at most a fifth of the time while it works through a backlog."""
MAX_YIELD = 5.0
"""Seconds a batch waits, at most, for the fires in flight to finish."""
ORPHAN_CHECKS = 1000
"""Old log files looked up in the journal per pass (those no session names are removed)."""


@dataclass(slots=True, kw_only=True)
class PruneReport:
    """What one pass removed, and how."""

    started_at: datetime
    finished_at: datetime | None = None
    runs: int = 0
    sessions: int = 0
    log_files: int = 0
    outbox_events: int = 0
    batches: int = 0
    longest_hold: float = 0.0
    """Seconds: the longest writer hold of one batch of this pass."""
    error: str | None = None
    """Why the pass stopped early (the journal was unavailable), or ``None``."""

    @property
    def removed(self) -> int:
        return self.runs + self.sessions + self.outbox_events

    def to_wire(self) -> dict[str, Any]:
        return {
            "started_at": format_ts(self.started_at),
            "finished_at": None if self.finished_at is None else format_ts(self.finished_at),
            "removed": {
                "runs": self.runs,
                "sessions": self.sessions,
                "log_files": self.log_files,
                "outbox_events": self.outbox_events,
            },
            "batches": self.batches,
            "longest_hold_ms": round(self.longest_hold * 1000, 3),
            "error": self.error,
        }


@dataclass(slots=True)
class _Logs:
    """The session log directory as last scanned: session id -> (mtime, bytes on disk)."""

    files: dict[str, tuple[float, int]] = field(default_factory=dict)
    total: int = 0


def _scan(directory: Path | None) -> _Logs:
    logs = _Logs()
    if directory is None:
        return logs
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return logs
    for entry in entries:
        if not entry.name.endswith(".log"):
            continue
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        used = stat.st_blocks * 512  # what the disk pays (a 100-byte log takes a block)
        logs.files[entry.name[: -len(".log")]] = (stat.st_mtime, used)
        logs.total += used
    return logs


def _unlink(directory: Path, session_ids: list[str]) -> int:
    removed = 0
    for session_id in session_ids:
        try:
            (directory / f"{session_id}.log").unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("retention_log_unlink_failed", session_id=session_id, error=str(exc))
            continue
        removed += 1
    return removed


class Pruner:
    """Applies ``RetentionConfig`` to ``journal`` and the session logs in ``sessions_dir``
    (``None``: no local sessions, e.g. the ``managed_agents`` launcher)."""

    def __init__(
        self,
        *,
        journal: Journal,
        clock: Clock,
        config: RetentionConfig,
        sessions_dir: Path | None = None,
        busy: Callable[[], bool] | None = None,
        target_hold: float = TARGET_HOLD,
        pause: float = PAUSE,
        max_yield: float = MAX_YIELD,
        first_batch: int = FIRST_BATCH,
        rest_ratio: float = REST_RATIO,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self.config = config
        self._sessions_dir = sessions_dir
        self._busy = busy or (lambda: False)
        self._target_hold = target_hold
        self._pause = pause
        self._max_yield = max_yield
        self._rest_ratio = rest_ratio
        self.batch = first_batch
        self.last: PruneReport | None = None
        """The latest finished pass (``None`` before the first)."""
        self.session_log_bytes: int | None = None
        """Bytes of session logs on disk (allocated blocks) at the latest scan (``None``
        before the first)."""
        self.holds: list[float] = []
        """Every batch's writer hold in seconds, since start (benchmarks read it)."""
        self.removed = 0
        """Rows removed since start (runs, sessions, outbox events)."""
        self._wakeup = anyio.Event()

    def reload(self, config: RetentionConfig) -> None:
        """SIGHUP: new retention values; a pass runs at once with them."""
        self.config = config
        self._wakeup.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """A pass now, then one every ``interval`` (or at once after ``reload``)."""
        task_status.started()
        while True:
            self._wakeup = anyio.Event()
            try:
                await self.prune_once()
            except Exception:  # a bug here must not stop the daemon from firing
                log.exception("retention_pass_crashed")
            await self._rest(self.config.interval)

    async def _rest(self, seconds: float) -> None:
        """Sleep ``seconds`` on the daemon's clock, or until ``reload``."""
        async with anyio.create_task_group() as tg:

            async def sleep() -> None:
                await self._clock.sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(sleep)
            await self._wakeup.wait()
            tg.cancel_scope.cancel()

    async def health(self) -> dict[str, Any]:
        """The ``retention`` part of ``/v1/health``: the journal's size on disk, the session
        logs' bytes at the latest scan and the latest pass."""
        return {
            "journal_bytes": await self._journal.storage_bytes(),
            "session_log_bytes": self.session_log_bytes,
            "last_prune": None if self.last is None else self.last.to_wire(),
        }

    async def prune_once(self) -> PruneReport:
        """One pass (see the module docstring); returns, and keeps in ``last``, its report."""
        config = self.config
        now = self._clock.now()
        report = PruneReport(started_at=now)
        try:
            await self._prune_runs(report, now, config)
            if config.runs is not None:
                before = now - timedelta(seconds=config.runs)
                report.outbox_events = await self._batches(
                    report, lambda limit: self._journal.prune_outbox(before, limit)
                )
            await self._prune_sessions(report, now, config)
        except AgentcronError as exc:  # the journal is unavailable now: try again next pass
            report.error = str(exc)
            log.warning("retention_pass_failed", error=str(exc))
        report.finished_at = self._clock.now()
        self.last = report
        if report.removed or report.log_files:
            log.info(
                "retention_pruned",
                runs=report.runs,
                sessions=report.sessions,
                log_files=report.log_files,
                outbox_events=report.outbox_events,
                batches=report.batches,
                longest_hold_ms=round(report.longest_hold * 1000, 3),
            )
        return report

    async def _prune_runs(
        self, report: PruneReport, now: datetime, config: RetentionConfig
    ) -> None:
        cutoffs: list[datetime] = []
        if config.runs is not None:
            cutoffs.append(now - timedelta(seconds=config.runs))
        if config.runs_max_count is not None:
            ranked = await self._journal.run_created_at_rank(config.runs_max_count)
            if ranked is not None:
                cutoffs.append(ranked)  # strictly older than the Nth newest: beyond the count
        if cutoffs:
            before = max(cutoffs)  # older than either limit keeps: both limits hold
            report.runs = await self._batches(
                report, lambda limit: self._journal.prune_runs(before, limit)
            )

    async def _prune_sessions(
        self, report: PruneReport, now: datetime, config: RetentionConfig
    ) -> None:
        directory = self._sessions_dir
        if config.sessions is not None:
            before = now - timedelta(seconds=config.sessions)
            await self._batches(
                report,
                lambda limit: self._journal.prune_sessions(before, limit),
                on_sessions=lambda ids: self._removed_sessions(report, ids),
            )
        logs = await asyncio.to_thread(_scan, directory)
        if directory is not None and logs.files:
            cap = config.session_logs_max_bytes
            if cap is not None and logs.total > cap:
                await self._over_budget(report, logs, logs.total - cap)
            if config.sessions is not None:
                await self._orphans(report, logs, now.timestamp() - config.sessions)
        self.session_log_bytes = sum(size for _, size in logs.files.values())

    async def _over_budget(self, report: PruneReport, logs: _Logs, excess: int) -> None:
        """Prune the (ended) sessions of the oldest log files until ``excess`` bytes go."""
        chosen: list[str] = []
        for session_id, (_, size) in sorted(logs.files.items(), key=lambda item: item[1][0]):
            if excess <= 0:
                break
            chosen.append(session_id)
            excess -= size
        ended_by = self._clock.now() + timedelta(days=1)  # ended at all: the ids decide
        while chosen:
            chunk, chosen = chosen[: self.batch], chosen[self.batch :]

            def by_ids(limit: int, ids: list[str] = chunk) -> Awaitable[Pruned]:
                return self._journal.prune_sessions(ended_by, limit, session_ids=ids)

            pruned = await self._batch(report, by_ids)
            await self._removed_sessions(report, pruned.session_ids, logs)
            if chosen:
                await anyio.sleep(self._rest_after(pruned))

    async def _orphans(self, report: PruneReport, logs: _Logs, older_than: float) -> None:
        """Remove old log files that no session row names (a crash between the row's delete
        and the file's); files of sessions still recorded stay."""
        old = [sid for sid, (mtime, _) in logs.files.items() if mtime < older_than]
        orphans = [
            session_id
            for session_id in old[:ORPHAN_CHECKS]
            if await self._journal.get_session(session_id) is None
        ]
        if orphans:
            await self._removed_sessions(report, orphans, logs, rows=False)

    async def _removed_sessions(
        self,
        report: PruneReport,
        session_ids: tuple[str, ...] | list[str],
        logs: _Logs | None = None,
        *,
        rows: bool = True,
    ) -> None:
        if rows:
            report.sessions += len(session_ids)
        if self._sessions_dir is None or not session_ids:
            return
        report.log_files += await asyncio.to_thread(_unlink, self._sessions_dir, list(session_ids))
        if logs is not None:
            for session_id in session_ids:
                logs.files.pop(session_id, None)

    async def _batches(
        self,
        report: PruneReport,
        prune: Callable[[int], Awaitable[Pruned]],
        *,
        on_sessions: Callable[[tuple[str, ...]], Awaitable[None]] | None = None,
    ) -> int:
        """Call ``prune(limit)`` until a batch comes back short; returns how many went."""
        total = 0
        while True:
            limit = self.batch
            pruned = await self._batch(report, prune)
            total += pruned.removed
            if on_sessions is not None and pruned.session_ids:
                await on_sessions(pruned.session_ids)
            if pruned.removed < limit:
                return total
            await anyio.sleep(self._rest_after(pruned))

    async def _batch(
        self, report: PruneReport, prune: Callable[[int], Awaitable[Pruned]]
    ) -> Pruned:
        """One batch, after the fires in flight; its hold sizes the next one."""
        await self._yield_to_fires()
        pruned = await prune(self.batch)
        report.batches += 1
        self.removed += pruned.removed
        if pruned.removed:
            self.holds.append(pruned.held)
            report.longest_hold = max(report.longest_hold, pruned.held)
            self._adapt(pruned.held)
        return pruned

    def _rest_after(self, pruned: Pruned) -> float:
        return max(self._pause, self._rest_ratio * pruned.held)

    def _adapt(self, held: float) -> None:
        """Size the next batch so that its hold comes near ``target_hold``."""
        if held > self._target_hold * 1.5:
            self.batch = max(MIN_BATCH, int(self.batch * 0.7))
        elif held < self._target_hold / 2:
            self.batch = min(MAX_BATCH, int(self.batch * 1.25) + 1)

    async def _yield_to_fires(self) -> None:
        """Wait (up to ``max_yield``) while fires are in flight: they go first."""
        deadline = time.monotonic() + self._max_yield
        while self._busy() and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, polled
            await anyio.sleep(self._pause)
