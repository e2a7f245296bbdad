"""The webhook outbox in PostgreSQL: event rows, one delivery row per endpoint, endpoint states.

The same tables and semantics as the SQLite outbox (``agentcron.journal.sqlite.outbox``).
``insert_events`` is what every write op that carries events calls inside its transaction
(``CompleteOp``, ``StatementOp``, ``RecoverOp`` and ``EventsOp`` here), so an event is
committed with the change that caused it or not at all. ``AttemptOp`` and ``RetryOp`` are the
delivery worker's and the CLI's writes; ``OutboxQueries`` holds the reads (mixed into
``PostgresJournal`` beside ``JournalQueries``, on the same read pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from agentcron.errors import AgentcronError
from agentcron.journal.postgres.writer import WriteOp
from agentcron.journal.protocol import Delivery, DeliveryStatus, EndpointState, OutboxEvent

_INSERT_EVENTS = """
INSERT INTO outbox_events (id, type, body, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
"""
_INSERT_DELIVERIES = """
INSERT INTO webhook_deliveries (event_id, endpoint, status, retry_from, next_attempt_at)
SELECT d.event_id, d.endpoint, 'pending', d.created_at, d.created_at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS d (event_id, endpoint, created_at)
"""
_DELIVERY_COLUMNS = (
    "d.event_id, e.type, d.endpoint, e.body, e.created_at, d.status, d.attempts, d.retry_from, "
    "d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.delivered_at"
)
_SETTLE_ATTEMPT = """
UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2,
    last_attempt_at = $3, last_status = $4, last_error = $5, delivered_at = $6
WHERE endpoint = $7 AND event_id = $8 AND status = 'pending'
"""
_UPSERT_ENDPOINT = """
INSERT INTO webhook_endpoints (name, failing_since, disabled_at, last_success_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET failing_since = excluded.failing_since,
    disabled_at = excluded.disabled_at, last_success_at = excluded.last_success_at
"""


async def insert_events(conn: asyncpg.Connection, events: Sequence[OutboxEvent]) -> None:
    """Insert ``events`` and one pending delivery per endpoint each, due at once (in the
    caller's transaction). An event without endpoints is not stored."""
    kept = [event for event in events if event.endpoints]
    if not kept:
        return
    await conn.execute(
        _INSERT_EVENTS,
        [event.id for event in kept],
        [event.type for event in kept],
        [event.body for event in kept],
        [event.created_at for event in kept],
    )
    pairs = [(event, endpoint) for event in kept for endpoint in event.endpoints]
    await conn.execute(
        _INSERT_DELIVERIES,
        [event.id for event, _ in pairs],
        [endpoint for _, endpoint in pairs],
        [event.created_at for event, _ in pairs],
    )


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(
        event_id=row[0],
        event_type=row[1],
        endpoint=row[2],
        body=row[3],
        created_at=row[4],
        status=row[5],
        attempts=row[6],
        retry_from=row[7],
        next_attempt_at=row[8],
        last_attempt_at=row[9],
        last_status=row[10],
        last_error=row[11],
        delivered_at=row[12],
    )


@dataclass(eq=False, slots=True, kw_only=True)
class EventsOp(WriteOp[None]):
    """Store events that no other write carries (``Journal.add_events``)."""

    events: Sequence[OutboxEvent]
    result: None = None
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[EventsOp]) -> None:
        await insert_events(conn, [event for op in ops for event in op.events])

    def describe(self) -> str:
        return f"{len(self.events)} webhook event(s)"


@dataclass(eq=False, slots=True, kw_only=True)
class AttemptOp(WriteOp[None]):
    """Settle one delivery attempt and write the endpoint's state (``record_attempt``)."""

    batchable: ClassVar[bool] = False
    event_id: str
    endpoint: str
    attempted_at: datetime
    status_code: int | None
    error: str | None
    next_attempt_at: datetime | None
    endpoint_state: EndpointState
    result: None = None
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[AttemptOp]) -> None:
        for op in ops:
            delivered_at: datetime | None = None
            if op.error is None:
                status, delivered_at = "delivered", op.attempted_at
            else:
                status = "pending" if op.next_attempt_at is not None else "failed"
            await conn.execute(
                _SETTLE_ATTEMPT,
                status,
                op.next_attempt_at if status == "pending" else None,
                op.attempted_at,
                op.status_code,
                op.error,
                delivered_at,
                op.endpoint,
                op.event_id,
            )
            state = op.endpoint_state
            await conn.execute(
                _UPSERT_ENDPOINT,
                state.name,
                state.failing_since,
                state.disabled_at,
                state.last_success_at,
            )

    def describe(self) -> str:
        return f"webhook delivery of {self.event_id} to {self.endpoint}"


@dataclass(eq=False, slots=True, kw_only=True)
class RetryOp(WriteOp[int]):
    """Make an endpoint's failed and pending deliveries due now; re-enable the endpoint."""

    batchable: ClassVar[bool] = False
    endpoint: str
    event_id: str | None
    now: datetime
    result: int = 0
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[RetryOp]) -> None:
        for op in ops:
            sql = (
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, "
                "retry_from = $1 WHERE endpoint = $2 AND status IN ('pending', 'failed')"
            )
            params: list[Any] = [op.now, op.endpoint]
            if op.event_id is not None:
                sql += " AND event_id = $3"
                params.append(op.event_id)
            status = await conn.execute(sql, *params)
            last = status.rsplit(" ", 1)[-1]
            op.result = int(last) if last.isdigit() else 0
            await conn.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL, disabled_at = NULL "
                "WHERE name = $1",
                op.endpoint,
            )

    def describe(self) -> str:
        return f"retry of webhook deliveries to {self.endpoint}"


class OutboxQueries:
    """The outbox's reads (on the journal's read pool)."""

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        raise NotImplementedError  # JournalQueries provides it

    async def pending_deliveries(self, endpoint: str, *, limit: int) -> list[Delivery]:
        """Pending deliveries of ``endpoint``, earliest due first (``webhook_deliveries_due``)."""
        rows = await self._fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries AS d "
            "JOIN outbox_events AS e ON e.id = d.event_id "
            "WHERE d.endpoint = $1 AND d.status = 'pending' "
            "ORDER BY d.next_attempt_at, d.event_id LIMIT $2",
            endpoint,
            limit,
        )
        return [delivery_from_row(tuple(row)) for row in rows]

    async def endpoint_states(self) -> dict[str, EndpointState]:
        rows = await self._fetch(
            "SELECT name, failing_since, disabled_at, last_success_at FROM webhook_endpoints"
        )
        return {
            row[0]: EndpointState(
                name=row[0],
                failing_since=row[1],
                disabled_at=row[2],
                last_success_at=row[3],
            )
            for row in rows
        }

    async def list_deliveries(
        self,
        *,
        endpoint: str | None = None,
        status: DeliveryStatus | None = None,
        after: tuple[str, str] | None = None,
        limit: int,
    ) -> list[Delivery]:
        where = ["true"]
        params: list[Any] = []

        def add(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if endpoint is not None:
            where.append(f"d.endpoint = {add(endpoint)}")
        if status is not None:
            where.append(f"d.status = {add(status)}")
        if after is not None:
            event_id, after_endpoint = add(after[0]), add(after[1])
            where.append(
                f"(d.event_id < {event_id} OR (d.event_id = {event_id} "
                f"AND d.endpoint > {after_endpoint}))"
            )
        rows = await self._fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries AS d "
            "JOIN outbox_events AS e ON e.id = d.event_id "
            f"WHERE {' AND '.join(where)} ORDER BY d.event_id DESC, d.endpoint "
            f"LIMIT {add(limit)}",
            *params,
        )
        return [delivery_from_row(tuple(row)) for row in rows]
