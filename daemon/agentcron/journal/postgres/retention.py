"""Retention in PostgreSQL: the same two steps as SQLite's (``agentcron.journal.sqlite.
retention``): candidates read on the pool, then one short write that deletes exactly those
ids and checks every condition again.

Runs are found along ``runs_created`` (``EXPLAIN``-checked in the tests); sessions and outbox
events are walked in primary-key order (ULIDs: oldest first), as in SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from agentcron.journal.postgres.errors import map_postgres_errors
from agentcron.journal.postgres.writer import GroupCommitWriter, WriteOp
from agentcron.journal.protocol import Pruned

WALK_CHUNK = 1000

# See agentcron.journal.sqlite.retention: the newest run and the latest scheduled occurrence
# of each deployment stay; each EXISTS is one index seek.
_RUN_PRUNABLE = (
    "r.created_at IS NOT NULL AND r.created_at < $1 "
    "AND EXISTS (SELECT 1 FROM runs AS n WHERE n.deployment_id = r.deployment_id "
    "AND n.created_at IS NOT NULL AND n.created_at > r.created_at) "
    "AND (r.scheduled_at IS NULL OR EXISTS (SELECT 1 FROM runs AS s "
    "WHERE s.deployment_id = r.deployment_id AND s.scheduled_at IS NOT NULL "
    "AND s.scheduled_at > r.scheduled_at))"
)
PRUNE_RUNS_CANDIDATES = (
    f"SELECT r.id FROM runs AS r WHERE {_RUN_PRUNABLE} ORDER BY r.created_at, r.id LIMIT $2"
)
"""The oldest prunable runs, along ``runs_created``."""

PRUNE_RUNS = (
    "DELETE FROM runs WHERE id IN (SELECT r.id FROM runs AS r "
    f"WHERE r.id = ANY($2::text[]) AND {_RUN_PRUNABLE})"
)

RUN_CREATED_AT_RANK = (
    "SELECT created_at FROM runs WHERE created_at IS NOT NULL "
    "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET $1"
)

_SESSIONS_WALK = (
    "SELECT session_id, started_at, ended_at FROM sessions WHERE session_id > $1 "
    "ORDER BY session_id LIMIT $2"
)
_EVENTS_WALK = (
    "SELECT e.id, e.created_at, EXISTS (SELECT 1 FROM webhook_deliveries AS d "
    "WHERE d.event_id = e.id AND d.status = 'pending') "
    "FROM outbox_events AS e WHERE e.id > $1 ORDER BY e.id LIMIT $2"
)
_PRUNE_SESSIONS = (
    "DELETE FROM sessions WHERE session_id = ANY($1::text[]) "
    "AND ended_at IS NOT NULL AND ended_at < $2 RETURNING session_id"
)
_DUE_EVENTS = (
    "SELECT e.id FROM outbox_events AS e WHERE e.id = ANY($1::text[]) AND e.created_at < $2 "
    "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d "
    "WHERE d.event_id = e.id AND d.status = 'pending')"
)


@dataclass(eq=False, slots=True, kw_only=True)
class PruneRunsOp(WriteOp[Pruned]):
    """Delete the runs ``run_ids`` that still qualify."""

    batchable: ClassVar[bool] = False
    run_ids: Sequence[str]
    before: datetime
    result: Pruned = field(default_factory=lambda: Pruned(removed=0, held=0.0))

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[PruneRunsOp]) -> None:
        for op in ops:
            began = time.perf_counter()
            status = await conn.execute(PRUNE_RUNS, op.before, list(op.run_ids))
            op.result = Pruned(removed=_count(status), held=time.perf_counter() - began)

    def describe(self) -> str:
        return f"prune of {len(self.run_ids)} runs"


@dataclass(eq=False, slots=True, kw_only=True)
class PruneSessionsOp(WriteOp[Pruned]):
    """Delete the sessions ``session_ids`` that ended before ``before``."""

    batchable: ClassVar[bool] = False
    session_ids: Sequence[str]
    before: datetime
    result: Pruned = field(default_factory=lambda: Pruned(removed=0, held=0.0))

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[PruneSessionsOp]) -> None:
        for op in ops:
            began = time.perf_counter()
            rows = await conn.fetch(_PRUNE_SESSIONS, list(op.session_ids), op.before)
            op.result = Pruned(
                removed=len(rows),
                held=time.perf_counter() - began,
                session_ids=tuple(row[0] for row in rows),
            )

    def describe(self) -> str:
        return f"prune of {len(self.session_ids)} sessions"


@dataclass(eq=False, slots=True, kw_only=True)
class PruneOutboxOp(WriteOp[Pruned]):
    """Delete the events ``event_ids`` created before ``before`` without a pending delivery,
    with their settled deliveries."""

    batchable: ClassVar[bool] = False
    event_ids: Sequence[str]
    before: datetime
    result: Pruned = field(default_factory=lambda: Pruned(removed=0, held=0.0))

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[PruneOutboxOp]) -> None:
        for op in ops:
            began = time.perf_counter()
            due = [row[0] for row in await conn.fetch(_DUE_EVENTS, list(op.event_ids), op.before)]
            if due:
                await conn.execute(
                    "DELETE FROM webhook_deliveries WHERE event_id = ANY($1::text[]) "
                    "AND status <> 'pending'",
                    due,
                )
                await conn.execute(
                    "DELETE FROM outbox_events AS e WHERE e.id = ANY($1::text[]) AND NOT EXISTS "
                    "(SELECT 1 FROM webhook_deliveries AS d WHERE d.event_id = e.id)",
                    due,
                )
            op.result = Pruned(removed=len(due), held=time.perf_counter() - began)

    def describe(self) -> str:
        return f"prune of {len(self.event_ids)} outbox events"


def _count(status: str) -> int:
    """The row count of a command status such as ``DELETE 42``."""
    return int(status.rsplit(" ", 1)[-1])


class RetentionOps:
    """``Journal.prune_*`` for ``PostgresJournal`` (its read pool and its writer)."""

    _pool: asyncpg.Pool
    _writer: GroupCommitWriter

    async def _read(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        with map_postgres_errors():
            return list(await self._pool.fetch(sql, *params))

    async def prune_runs(self, before: datetime, limit: int) -> Pruned:
        """Remove up to ``limit`` completed runs created before ``before``; see ``Journal``."""
        rows = await self._read(PRUNE_RUNS_CANDIDATES, before, limit)
        if not rows:
            return Pruned(removed=0, held=0.0)
        return await self._writer.submit(
            PruneRunsOp(run_ids=[row[0] for row in rows], before=before)
        )

    async def run_created_at_rank(self, rank: int) -> datetime | None:
        """The ``created_at`` of the ``rank``-th newest completed run, or ``None``."""
        rows = await self._read(RUN_CREATED_AT_RANK, max(rank, 1) - 1)
        return rows[0][0] if rows else None

    async def prune_sessions(
        self, before: datetime, limit: int, *, session_ids: Sequence[str] | None = None
    ) -> Pruned:
        """Remove up to ``limit`` sessions that ended before ``before``; see ``Journal``."""
        if session_ids is not None:
            chosen = list(dict.fromkeys(session_ids))[:limit]
        else:
            chosen = await self._walk(
                _SESSIONS_WALK,
                limit,
                due=lambda row: row[2] is not None and row[2] < before,
                later=lambda row: row[1] >= before,
            )
        if not chosen:
            return Pruned(removed=0, held=0.0)
        return await self._writer.submit(PruneSessionsOp(session_ids=chosen, before=before))

    async def prune_outbox(self, before: datetime, limit: int) -> Pruned:
        """Remove up to ``limit`` settled outbox events created before ``before``."""
        chosen = await self._walk(
            _EVENTS_WALK,
            limit,
            due=lambda row: row[1] < before and not row[2],
            later=lambda row: row[1] >= before,
        )
        if not chosen:
            return Pruned(removed=0, held=0.0)
        return await self._writer.submit(PruneOutboxOp(event_ids=chosen, before=before))

    async def _walk(
        self,
        sql: str,
        limit: int,
        *,
        due: Callable[[Any], bool],
        later: Callable[[Any], bool],
    ) -> list[str]:
        """Walk a table in primary-key order collecting up to ``limit`` due ids; stop at its
        end or after a whole chunk of rows created after the cutoff."""
        chosen: list[str] = []
        after = ""
        while len(chosen) < limit:
            rows = await self._read(sql, after, WALK_CHUNK)
            if not rows:
                break
            chosen.extend(row[0] for row in rows if due(row))
            if all(later(row) for row in rows):
                break
            after = rows[-1][0]
        return chosen[:limit]
