"""Retention in SQLite: finding what is due on the reading connection, deleting it in short
write transactions (``Journal.prune_*``).

Every prune is two steps. The candidates (at most ``limit`` ids) are read on the query-only
connection, which never holds the writer; then one ``WriteOp`` deletes exactly those ids,
checking every condition again in its ``WHERE``, so a row that stopped qualifying meanwhile
(it cannot, but a second daemon or a retry might race) stays. The write is indexed by the
primary key and bounded by ``limit``: its hold on the writer is what the pruner sizes.

Runs are found along ``runs_created`` (oldest first). Sessions and outbox events have no index
on their end or creation time (their tables belong to other features' migrations), so they
are walked in primary-key order: their ids are ULIDs, increasing with creation, so the walk
meets the oldest first and stops after a whole chunk of rows that started (were created)
after ``before``, since none of those can have ended before it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import aiosqlite

from agentcron.core.timeutil import from_micros, to_micros
from agentcron.journal.protocol import Pruned
from agentcron.journal.sqlite.writer import GroupCommitWriter, WriteOp, map_sqlite_errors

WALK_CHUNK = 1000
"""Rows read per step of a primary-key walk (sessions, outbox events)."""

# A run may go when a newer completed run of its deployment exists and, for a scheduled run,
# a later scheduled occurrence exists (open or not): the newest run and the latest scheduled
# occurrence (the scheduler's resume point) of each deployment stay. Each EXISTS is one seek
# in runs_deployment / runs_occurrence.
_RUN_PRUNABLE = (
    "r.created_at IS NOT NULL AND r.created_at < :before "
    "AND EXISTS (SELECT 1 FROM runs AS n WHERE n.deployment_id = r.deployment_id "
    "AND n.created_at IS NOT NULL AND n.created_at > r.created_at) "
    "AND (r.scheduled_at IS NULL OR EXISTS (SELECT 1 FROM runs AS s "
    "WHERE s.deployment_id = r.deployment_id AND s.scheduled_at IS NOT NULL "
    "AND s.scheduled_at > r.scheduled_at))"
)
PRUNE_RUNS_CANDIDATES = (
    f"SELECT r.id FROM runs AS r WHERE {_RUN_PRUNABLE} ORDER BY r.created_at, r.id LIMIT :limit"
)
"""The oldest prunable runs: a range of ``runs_created``, oldest first (``EXPLAIN``-checked)."""

RUN_CREATED_AT_RANK = (
    "SELECT created_at FROM runs WHERE created_at IS NOT NULL "
    "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?"
)

_SESSIONS_WALK = (
    "SELECT session_id, started_at, ended_at FROM sessions WHERE session_id > ? "
    "ORDER BY session_id LIMIT ?"
)
_EVENTS_WALK = (
    "SELECT e.id, e.created_at, EXISTS (SELECT 1 FROM webhook_deliveries AS d "
    "WHERE d.event_id = e.id AND d.status = 'pending') "
    "FROM outbox_events AS e WHERE e.id > ? ORDER BY e.id LIMIT ?"
)


def _marks(count: int) -> str:
    return ",".join("?" * count)


@dataclass(eq=False, slots=True, kw_only=True)
class PruneRunsOp(WriteOp[Pruned]):
    """Delete the runs ``run_ids`` that still qualify (see ``_RUN_PRUNABLE``)."""

    batchable: ClassVar[bool] = False
    run_ids: Sequence[str]
    before: int
    result: Pruned = field(default_factory=lambda: Pruned(removed=0, held=0.0))

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[PruneRunsOp]) -> None:
        for op in ops:
            began = time.perf_counter()
            named = {f"id{n}": run_id for n, run_id in enumerate(op.run_ids)}
            names = ",".join(f":{name}" for name in named)
            cursor = conn.execute(
                "DELETE FROM runs WHERE id IN "
                f"(SELECT r.id FROM runs AS r WHERE r.id IN ({names}) AND {_RUN_PRUNABLE})",
                {**named, "before": op.before},
            )
            op.result = Pruned(removed=cursor.rowcount, held=time.perf_counter() - began)

    def describe(self) -> str:
        return f"prune of {len(self.run_ids)} runs"


@dataclass(eq=False, slots=True, kw_only=True)
class PruneSessionsOp(WriteOp[Pruned]):
    """Delete the sessions ``session_ids`` that ended before ``before``."""

    batchable: ClassVar[bool] = False
    session_ids: Sequence[str]
    before: int
    result: Pruned = field(default_factory=lambda: Pruned(removed=0, held=0.0))

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[PruneSessionsOp]) -> None:
        for op in ops:
            began = time.perf_counter()
            marks = _marks(len(op.session_ids))
            removed = [
                row[0]
                for row in conn.execute(
                    f"DELETE FROM sessions WHERE session_id IN ({marks}) "
                    "AND ended_at IS NOT NULL AND ended_at < ? RETURNING session_id",
                    (*op.session_ids, op.before),
                )
            ]
            op.result = Pruned(
                removed=len(removed),
                held=time.perf_counter() - began,
                session_ids=tuple(removed),
            )

    def describe(self) -> str:
        return f"prune of {len(self.session_ids)} sessions"


@dataclass(eq=False, slots=True, kw_only=True)
class PruneOutboxOp(WriteOp[Pruned]):
    """Delete the events ``event_ids`` created before ``before`` that have no pending
    delivery, with their (settled) deliveries."""

    batchable: ClassVar[bool] = False
    event_ids: Sequence[str]
    before: int
    result: Pruned = field(default_factory=lambda: Pruned(removed=0, held=0.0))

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[PruneOutboxOp]) -> None:
        for op in ops:
            began = time.perf_counter()
            marks = _marks(len(op.event_ids))
            due = [
                row[0]
                for row in conn.execute(
                    f"SELECT e.id FROM outbox_events AS e WHERE e.id IN ({marks}) "
                    "AND e.created_at < ? AND NOT EXISTS (SELECT 1 FROM webhook_deliveries "
                    "AS d WHERE d.event_id = e.id AND d.status = 'pending')",
                    (*op.event_ids, op.before),
                )
            ]
            if due:
                due_marks = _marks(len(due))
                conn.execute(
                    f"DELETE FROM webhook_deliveries WHERE event_id IN ({due_marks}) "
                    "AND status <> 'pending'",
                    due,
                )
                conn.execute(
                    f"DELETE FROM outbox_events AS e WHERE e.id IN ({due_marks}) AND NOT EXISTS "
                    "(SELECT 1 FROM webhook_deliveries AS d WHERE d.event_id = e.id)",
                    due,
                )
            op.result = Pruned(removed=len(due), held=time.perf_counter() - began)

    def describe(self) -> str:
        return f"prune of {len(self.event_ids)} outbox events"


class RetentionOps:
    """``Journal.prune_*`` for ``SqliteJournal`` (its reading connection and its writer)."""

    _reader: aiosqlite.Connection
    _writer: GroupCommitWriter

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        with map_sqlite_errors():
            return list(await self._reader.execute_fetchall(sql, params))

    async def prune_runs(self, before: datetime, limit: int) -> Pruned:
        """Remove up to ``limit`` completed runs created before ``before``; see ``Journal``."""
        cutoff = to_micros(before)
        rows = await self._read(PRUNE_RUNS_CANDIDATES, {"before": cutoff, "limit": limit})
        if not rows:
            return Pruned(removed=0, held=0.0)
        return await self._writer.submit(
            PruneRunsOp(run_ids=[row[0] for row in rows], before=cutoff)
        )

    async def run_created_at_rank(self, rank: int) -> datetime | None:
        """The ``created_at`` of the ``rank``-th newest completed run, or ``None``."""
        rows = await self._read(RUN_CREATED_AT_RANK, (max(rank, 1) - 1,))
        return from_micros(rows[0][0]) if rows else None

    async def prune_sessions(
        self, before: datetime, limit: int, *, session_ids: Sequence[str] | None = None
    ) -> Pruned:
        """Remove up to ``limit`` sessions that ended before ``before``; see ``Journal``."""
        cutoff = to_micros(before)
        if session_ids is not None:
            chosen = list(dict.fromkeys(session_ids))[:limit]
        else:
            chosen = await self._walk(
                _SESSIONS_WALK,
                limit,
                due=lambda row: row[2] is not None and row[2] < cutoff,
                later=lambda row: row[1] >= cutoff,
            )
        if not chosen:
            return Pruned(removed=0, held=0.0)
        return await self._writer.submit(PruneSessionsOp(session_ids=chosen, before=cutoff))

    async def prune_outbox(self, before: datetime, limit: int) -> Pruned:
        """Remove up to ``limit`` settled outbox events created before ``before``."""
        cutoff = to_micros(before)
        chosen = await self._walk(
            _EVENTS_WALK,
            limit,
            due=lambda row: row[1] < cutoff and not row[2],
            later=lambda row: row[1] >= cutoff,
        )
        if not chosen:
            return Pruned(removed=0, held=0.0)
        return await self._writer.submit(PruneOutboxOp(event_ids=chosen, before=cutoff))

    async def _walk(
        self,
        sql: str,
        limit: int,
        *,
        due: Callable[[Any], bool],
        later: Callable[[Any], bool],
    ) -> list[str]:
        """Walk a table in primary-key order (oldest first) collecting up to ``limit`` due
        ids; stop at its end or after a whole chunk of rows created after the cutoff."""
        chosen: list[str] = []
        after = ""
        while len(chosen) < limit:
            rows = await self._read(sql, (after, WALK_CHUNK))
            if not rows:
                break
            chosen.extend(row[0] for row in rows if due(row))
            if all(later(row) for row in rows):
                break
            after = rows[-1][0]
        return chosen[:limit]
