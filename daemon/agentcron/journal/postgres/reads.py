"""The PostgreSQL journal's reads, on a small pool of connections of their own.

The list queries are built by pure functions (``deployments_query``, ``runs_query``) so that
tests can check with ``EXPLAIN`` that every filter combination is served by an index, newest
first by ``(created_at, id)``, without a sort. Cursor positions and the filters' times are
microseconds (``agentcron.core.pagination``); they meet ``timestamptz`` exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from agentcron.core.models import Deployment, DeploymentRun
from agentcron.core.pagination import Position
from agentcron.core.timeutil import from_micros, to_micros
from agentcron.journal.postgres.errors import map_postgres_errors
from agentcron.journal.postgres.rows import (
    DEPLOYMENT_COLUMNS,
    RUN_COLUMNS,
    deployment_from_row,
    run_from_row,
    session_from_row,
)
from agentcron.journal.protocol import DeploymentFilter, RunFilter, ScheduleRow
from agentcron.journal.rows import SESSION_COLUMNS

# The latest occurrence per deployment is one backward step in the runs_occurrence index.
SCHEDULE_ROWS_SQL = (
    "SELECT id, schedule_expression, schedule_timezone, updated_at, "
    "(SELECT max(scheduled_at) FROM runs WHERE runs.deployment_id = deployments.id "
    "AND runs.scheduled_at IS NOT NULL) "
    "FROM deployments WHERE NOT archived AND NOT paused AND schedule_expression IS NOT NULL "
    "ORDER BY created_at, id"
)


_RECENT_SCHEDULED_ERRORS = (
    "SELECT runs.error_type FROM runs JOIN deployments ON deployments.id = runs.deployment_id "
    "WHERE runs.created_at IS NOT NULL AND runs.trigger_type = 'schedule' "
    "AND NOT deployments.archived AND NOT deployments.paused "
    "AND deployments.schedule_expression IS NOT NULL "
    "ORDER BY runs.created_at DESC, runs.id DESC LIMIT $1"
)


class _Params:
    """Positional parameters ``$1, $2, ...`` in the order they are added."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _page(where: list[str], params: _Params, after: Position | None, limit: int) -> str:
    if after is not None:
        at, ident = params.add(from_micros(after.created_at)), params.add(after.id)
        where.append(f"(created_at, id) < ({at}, {ident})")
    clause = " AND ".join(where) if where else "true"
    return f"{clause} ORDER BY created_at DESC, id DESC LIMIT {params.add(limit)}"


def deployments_query(
    flt: DeploymentFilter, *, after: Position | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of one page of deployments, newest first."""
    params = _Params()
    where: list[str] = []
    if flt.agent_id is not None:
        where.append(f"agent_id = {params.add(flt.agent_id)}")
    if not flt.include_archived:
        where.append("archived = false")
    if flt.paused is not None:
        where.append(f"paused = {params.add(flt.paused)}")
    if flt.created_at_gte is not None:
        where.append(f"created_at >= {params.add(from_micros(flt.created_at_gte))}")
    if flt.created_at_lte is not None:
        where.append(f"created_at <= {params.add(from_micros(flt.created_at_lte))}")
    tail = _page(where, params, after, limit)
    return f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE {tail}", params.values


def runs_query(flt: RunFilter, *, after: Position | None, limit: int) -> tuple[str, list[Any]]:
    """The SQL and parameters of one page of completed runs, newest first."""
    params = _Params()
    where = ["created_at IS NOT NULL"]
    if flt.deployment_id is not None:
        where.append(f"deployment_id = {params.add(flt.deployment_id)}")
    if flt.has_error is not None:
        where.append(f"has_error = {params.add(flt.has_error)}")
    if flt.trigger_type is not None:
        where.append(f"trigger_type = {params.add(flt.trigger_type)}")
    for op, value in (
        (">", flt.created_at_gt),
        (">=", flt.created_at_gte),
        ("<", flt.created_at_lt),
        ("<=", flt.created_at_lte),
    ):
        if value is not None:
            where.append(f"created_at {op} {params.add(from_micros(value))}")
    tail = _page(where, params, after, limit)
    return f"SELECT {RUN_COLUMNS} FROM runs WHERE {tail}", params.values


class JournalQueries:
    """Read methods over the pool ``_pool``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        with map_postgres_errors():
            return list(await self._pool.fetch(sql, *params))

    async def explain(
        self, sql: str, params: Sequence[Any], *, settings: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The top node of ``sql``'s plan (``EXPLAIN (FORMAT JSON)``), planned with the
        planner ``settings`` given (e.g. ``{"enable_sort": "off"}``) for this query only."""
        with map_postgres_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                for name, value in (settings or {}).items():
                    await conn.execute("SELECT set_config($1, $2, true)", name, value)
                text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
        plan: dict[str, Any] = json.loads(text)[0]["Plan"]
        return plan

    # --- deployments -------------------------------------------------------------------------

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        rows = await self._fetch(
            f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1", deployment_id
        )
        return deployment_from_row(rows[0]) if rows else None

    async def get_deployments(self, deployment_ids: list[str]) -> dict[str, Deployment]:
        """The deployments among ``deployment_ids`` that exist, by id (one query)."""
        if not deployment_ids:
            return {}
        rows = await self._fetch(
            f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ANY($1::text[])",
            list(deployment_ids),
        )
        found = (deployment_from_row(row) for row in rows)
        return {deployment.id: deployment for deployment in found}

    async def schedule_rows(self) -> list[ScheduleRow]:
        """Every deployment that fires (scheduled, not paused, not archived), oldest first,
        with its latest scheduled run (times in microseconds, as ``ScheduleRow`` has them)."""
        return [
            ScheduleRow(
                deployment_id,
                expression,
                timezone,
                to_micros(updated_at),
                None if latest is None else to_micros(latest),
            )
            for deployment_id, expression, timezone, updated_at, latest in await self._fetch(
                SCHEDULE_ROWS_SQL
            )
        ]

    async def list_deployments(
        self, flt: DeploymentFilter, *, after: Position | None, limit: int
    ) -> list[Deployment]:
        sql, params = deployments_query(flt, after=after, limit=limit)
        return [deployment_from_row(row) for row in await self._fetch(sql, *params)]

    async def count_scheduled(self) -> int:
        """Non-archived deployments with a schedule (what ``max_deployments`` limits)."""
        rows = await self._fetch(
            "SELECT count(*) FROM deployments "
            "WHERE NOT archived AND schedule_expression IS NOT NULL"
        )
        return int(rows[0][0])

    async def counts(self) -> dict[str, int]:
        """``active``, ``paused``, ``archived``, ``scheduled`` deployments and ``runs``."""
        rows = await self._fetch(
            "SELECT "
            "count(*) FILTER (WHERE NOT archived AND NOT paused), "
            "count(*) FILTER (WHERE NOT archived AND paused), "
            "count(*) FILTER (WHERE archived), "
            "count(*) FILTER (WHERE NOT archived AND schedule_expression IS NOT NULL), "
            "(SELECT count(*) FROM runs WHERE created_at IS NOT NULL) "
            "FROM deployments"
        )
        active, paused, archived, scheduled, runs = (int(value) for value in rows[0])
        return {
            "active": active,
            "paused": paused,
            "archived": archived,
            "scheduled": scheduled,
            "runs": runs,
        }

    # --- runs --------------------------------------------------------------------------------

    async def recent_scheduled_errors(self, limit: int) -> list[str | None]:
        """The error types (``None``: a session was created) of the latest ``limit`` completed
        scheduled runs of deployments that still fire, newest first (along ``runs_trigger``)."""
        rows = await self._fetch(_RECENT_SCHEDULED_ERRORS, limit)
        return [row[0] for row in rows]

    async def get_run(self, run_id: str) -> DeploymentRun | None:
        """A completed run (open claims are not visible)."""
        rows = await self._fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND created_at IS NOT NULL", run_id
        )
        return run_from_row(rows[0]) if rows else None

    async def list_runs(
        self, flt: RunFilter, *, after: Position | None, limit: int
    ) -> list[DeploymentRun]:
        sql, params = runs_query(flt, after=after, limit=limit)
        return [run_from_row(row) for row in await self._fetch(sql, *params)]

    # --- local sessions ------------------------------------------------------------------------

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        """A local session's record; see ``Journal.get_session``."""
        rows = await self._fetch(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1",
            session_id,
        )
        return session_from_row(rows[0]) if rows else None
