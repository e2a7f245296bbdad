"""The journal's reads, on a query-only connection of their own.

The list queries are built by pure functions (``deployments_query``, ``runs_query``) so that
tests can check with ``EXPLAIN QUERY PLAN`` that every filter combination is served by an
index, newest first by ``(created_at, id)``, without sorting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from agentcron.core.models import Deployment, DeploymentRun
from agentcron.core.pagination import Position
from agentcron.journal.protocol import DeploymentFilter, RunFilter, ScheduleRow
from agentcron.journal.sqlite.rows import (
    DEPLOYMENT_COLUMNS,
    RUN_COLUMNS,
    deployment_from_row,
    run_from_row,
)
from agentcron.journal.sqlite.writer import map_sqlite_errors

_IN_CHUNK = 500  # ids per "IN (...)" query, well below SQLite's parameter limit


SCHEDULE_ROWS_SQL = (
    "SELECT id, schedule_expression, schedule_timezone, updated_at, "
    "(SELECT max(scheduled_at) FROM runs WHERE runs.deployment_id = deployments.id "
    "AND runs.scheduled_at IS NOT NULL) "
    "FROM deployments WHERE archived = 0 AND paused = 0 AND schedule_expression IS NOT NULL "
    "ORDER BY created_at, id"
)


RECENT_SCHEDULED_ERRORS_SQL = (
    "SELECT runs.error_type FROM runs JOIN deployments ON deployments.id = runs.deployment_id "
    "WHERE runs.created_at IS NOT NULL AND runs.trigger_type = 'schedule' "
    "AND deployments.archived = 0 AND deployments.paused = 0 "
    "AND deployments.schedule_expression IS NOT NULL "
    "ORDER BY runs.created_at DESC, runs.id DESC LIMIT ?"
)


def _page_clauses(
    where: list[str], params: list[Any], after: Position | None, limit: int
) -> tuple[str, list[Any]]:
    if after is not None:
        where.append("(created_at, id) < (?, ?)")
        params.extend((after.created_at, after.id))
    params.append(limit)
    return " AND ".join(where) + " ORDER BY created_at DESC, id DESC LIMIT ?", params


def deployments_query(
    flt: DeploymentFilter, *, after: Position | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of one page of deployments, newest first."""
    where: list[str] = []
    params: list[Any] = []
    if flt.agent_id is not None:
        where.append("agent_id = ?")
        params.append(flt.agent_id)
    if not flt.include_archived:
        where.append("archived = 0")
    if flt.paused is not None:
        where.append("paused = ?")
        params.append(int(flt.paused))
    if flt.created_at_gte is not None:
        where.append("created_at >= ?")
        params.append(flt.created_at_gte)
    if flt.created_at_lte is not None:
        where.append("created_at <= ?")
        params.append(flt.created_at_lte)
    where = where or ["1"]
    tail, params = _page_clauses(where, params, after, limit)
    return f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE {tail}", params


def runs_query(flt: RunFilter, *, after: Position | None, limit: int) -> tuple[str, list[Any]]:
    """The SQL and parameters of one page of completed runs, newest first.

    The most selective filter picks the index (deployment, then error, then trigger); a
    unary ``+`` keeps the planner from using another filter's index for the others, which
    without statistics it might. ``has_error`` is part of the deployment index, so with a
    deployment it is checked without reading the table.
    """
    where = ["created_at IS NOT NULL"]
    params: list[Any] = []
    by_deployment = flt.deployment_id is not None
    if flt.deployment_id is not None:
        where.append("deployment_id = ?")
        params.append(flt.deployment_id)
    if flt.has_error is not None:
        where.append("+has_error = ?" if by_deployment else "has_error = ?")
        params.append(int(flt.has_error))
    if flt.trigger_type is not None:
        indexed = not by_deployment and flt.has_error is None
        where.append("trigger_type = ?" if indexed else "+trigger_type = ?")
        params.append(flt.trigger_type)
    for op, value in (
        (">", flt.created_at_gt),
        (">=", flt.created_at_gte),
        ("<", flt.created_at_lt),
        ("<=", flt.created_at_lte),
    ):
        if value is not None:
            where.append(f"created_at {op} ?")
            params.append(value)
    tail, params = _page_clauses(where, params, after, limit)
    return f"SELECT {RUN_COLUMNS} FROM runs WHERE {tail}", params


class JournalQueries:
    """Read methods over the query-only connection ``_reader``."""

    def __init__(self, reader: aiosqlite.Connection) -> None:
        self._reader = reader

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with map_sqlite_errors():
            return list(await self._reader.execute_fetchall(sql, params))

    async def explain(self, sql: str, params: Sequence[Any]) -> list[str]:
        """The ``EXPLAIN QUERY PLAN`` detail lines of ``sql``."""
        return [row[3] for row in await self._fetch(f"EXPLAIN QUERY PLAN {sql}", params)]

    # --- deployments -------------------------------------------------------------------------

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        rows = await self._fetch(
            f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?",
            (deployment_id,),
        )
        return deployment_from_row(rows[0]) if rows else None

    async def get_deployments(self, deployment_ids: list[str]) -> dict[str, Deployment]:
        """The deployments among ``deployment_ids`` that exist, by id (one query per 500)."""
        found: dict[str, Deployment] = {}
        for start in range(0, len(deployment_ids), _IN_CHUNK):
            chunk = list(deployment_ids[start : start + _IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = await self._fetch(
                f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id IN ({marks})", chunk
            )
            for row in rows:
                deployment = deployment_from_row(row)
                found[deployment.id] = deployment
        return found

    async def schedule_rows(self) -> list[ScheduleRow]:
        """Every deployment that fires (scheduled, not paused, not archived), oldest first, as
        bare rows with its latest scheduled run: what the scheduler's start-up needs, no more.

        The latest run is found through the ``runs_occurrence`` index, one seek per deployment.
        """
        return [ScheduleRow._make(row) for row in await self._fetch(SCHEDULE_ROWS_SQL)]

    async def list_deployments(
        self, flt: DeploymentFilter, *, after: Position | None, limit: int
    ) -> list[Deployment]:
        sql, params = deployments_query(flt, after=after, limit=limit)
        return [deployment_from_row(row) for row in await self._fetch(sql, params)]

    async def count_scheduled(self) -> int:
        """Non-archived deployments with a schedule (what ``max_deployments`` limits)."""
        rows = await self._fetch(
            "SELECT count(*) FROM deployments WHERE archived = 0 "
            "AND schedule_expression IS NOT NULL"
        )
        return int(rows[0][0])

    async def counts(self) -> dict[str, int]:
        """``active``, ``paused``, ``archived``, ``scheduled`` deployments and ``runs``."""
        rows = await self._fetch(
            "SELECT "
            "coalesce(sum(archived = 0 AND paused = 0), 0), "
            "coalesce(sum(archived = 0 AND paused = 1), 0), "
            "coalesce(sum(archived), 0), "
            "coalesce(sum(archived = 0 AND schedule_expression IS NOT NULL), 0) "
            "FROM deployments"
        )
        runs = await self._fetch("SELECT count(*) FROM runs WHERE created_at IS NOT NULL")
        active, paused, archived, scheduled = (int(value) for value in rows[0])
        return {
            "active": active,
            "paused": paused,
            "archived": archived,
            "scheduled": scheduled,
            "runs": int(runs[0][0]),
        }

    # --- runs --------------------------------------------------------------------------------

    async def recent_scheduled_errors(self, limit: int) -> list[str | None]:
        """The error types (``None``: a session was created) of the latest ``limit`` completed
        scheduled runs of deployments that still fire (scheduled, not paused, not archived),
        newest first; read backwards along ``runs_trigger``."""
        rows = await self._fetch(RECENT_SCHEDULED_ERRORS_SQL, (limit,))
        return [row[0] for row in rows]

    async def get_run(self, run_id: str) -> DeploymentRun | None:
        """A completed run (open claims are not visible)."""
        rows = await self._fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ? AND created_at IS NOT NULL",
            (run_id,),
        )
        return run_from_row(rows[0]) if rows else None

    async def list_runs(
        self, flt: RunFilter, *, after: Position | None, limit: int
    ) -> list[DeploymentRun]:
        sql, params = runs_query(flt, after=after, limit=limit)
        return [run_from_row(row) for row in await self._fetch(sql, params)]
