"""The webhook outbox in SQLite: event rows, one delivery row per endpoint, endpoint states.

``insert_events`` is what every write op that carries events calls inside its transaction
(``CompleteOp``, ``StatementOp``, ``RecoverOp`` and ``EventsOp`` here), so an event is
committed with the change that caused it or not at all. ``AttemptOp`` and ``RetryOp`` are
the delivery worker's and the CLI's writes; ``OutboxQueries`` holds the reads (mixed into
``SqliteJournal`` through ``JournalQueries``' reading connection).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from agentcron.core.timeutil import from_micros, to_micros
from agentcron.journal.protocol import Delivery, DeliveryStatus, EndpointState, OutboxEvent
from agentcron.journal.sqlite.writer import WriteOp

_INSERT_EVENT = "INSERT INTO outbox_events (id, type, body, created_at) VALUES (?, ?, ?, ?)"
_INSERT_DELIVERY = (
    "INSERT INTO webhook_deliveries (event_id, endpoint, status, retry_from, next_attempt_at) "
    "VALUES (?, ?, 'pending', ?, ?)"
)
_DELIVERY_COLUMNS = (
    "d.event_id, e.type, d.endpoint, e.body, e.created_at, d.status, d.attempts, d.retry_from, "
    "d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.delivered_at"
)
_UPSERT_ENDPOINT = (
    "INSERT INTO webhook_endpoints (name, failing_since, disabled_at, last_success_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET failing_since = excluded.failing_since, "
    "disabled_at = excluded.disabled_at, last_success_at = excluded.last_success_at"
)


def _micros(value: datetime | None) -> int | None:
    return None if value is None else to_micros(value)


def _instant(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def insert_events(conn: sqlite3.Connection, events: Sequence[OutboxEvent]) -> None:
    """Insert ``events`` and one pending delivery per endpoint each, due at once (in the
    caller's transaction). An event without endpoints is not stored."""
    kept = [event for event in events if event.endpoints]
    if not kept:
        return
    conn.executemany(
        _INSERT_EVENT,
        [(event.id, event.type, event.body, to_micros(event.created_at)) for event in kept],
    )
    rows: list[tuple[str, str, int, int]] = []
    for event in kept:
        created = to_micros(event.created_at)
        rows.extend((event.id, endpoint, created, created) for endpoint in event.endpoints)
    conn.executemany(_INSERT_DELIVERY, rows)


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(
        event_id=row[0],
        event_type=row[1],
        endpoint=row[2],
        body=row[3],
        created_at=from_micros(row[4]),
        status=row[5],
        attempts=row[6],
        retry_from=from_micros(row[7]),
        next_attempt_at=_instant(row[8]),
        last_attempt_at=_instant(row[9]),
        last_status=row[10],
        last_error=row[11],
        delivered_at=_instant(row[12]),
    )


def endpoint_params(state: EndpointState) -> tuple[Any, ...]:
    return (
        state.name,
        _micros(state.failing_since),
        _micros(state.disabled_at),
        _micros(state.last_success_at),
    )


@dataclass(eq=False, slots=True, kw_only=True)
class EventsOp(WriteOp[None]):
    """Store events that no other write carries (``Journal.add_events``)."""

    events: Sequence[OutboxEvent]
    result: None = None

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[EventsOp]) -> None:
        insert_events(conn, [event for op in ops for event in op.events])

    def describe(self) -> str:
        return f"{len(self.events)} webhook event(s)"


@dataclass(eq=False, slots=True, kw_only=True)
class AttemptOp(WriteOp[None]):
    """Settle one delivery attempt and write the endpoint's state (``record_attempt``)."""

    batchable: ClassVar[bool] = False
    event_id: str
    endpoint: str
    attempted_at: int
    status_code: int | None
    error: str | None
    next_attempt_at: int | None
    endpoint_state: EndpointState
    result: None = None

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[AttemptOp]) -> None:
        for op in ops:
            if op.error is None:
                status, delivered_at = "delivered", op.attempted_at
            else:
                status = "pending" if op.next_attempt_at is not None else "failed"
                delivered_at = None
            conn.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, "
                "next_attempt_at = ?, last_attempt_at = ?, last_status = ?, last_error = ?, "
                "delivered_at = ? WHERE endpoint = ? AND event_id = ? AND status = 'pending'",
                (
                    status,
                    op.next_attempt_at if status == "pending" else None,
                    op.attempted_at,
                    op.status_code,
                    op.error,
                    delivered_at,
                    op.endpoint,
                    op.event_id,
                ),
            )
            conn.execute(_UPSERT_ENDPOINT, endpoint_params(op.endpoint_state))

    def describe(self) -> str:
        return f"webhook delivery of {self.event_id} to {self.endpoint}"


@dataclass(eq=False, slots=True, kw_only=True)
class RetryOp(WriteOp[int]):
    """Make an endpoint's failed and pending deliveries due now; re-enable the endpoint."""

    batchable: ClassVar[bool] = False
    endpoint: str
    event_id: str | None
    now: int
    result: int = 0

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[RetryOp]) -> None:
        for op in ops:
            sql = (
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, "
                "retry_from = ? WHERE endpoint = ? AND status IN ('pending', 'failed')"
            )
            params: list[Any] = [op.now, op.now, op.endpoint]
            if op.event_id is not None:
                sql += " AND event_id = ?"
                params.append(op.event_id)
            op.result = conn.execute(sql, params).rowcount
            conn.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL, disabled_at = NULL "
                "WHERE name = ?",
                (op.endpoint,),
            )

    def describe(self) -> str:
        return f"retry of webhook deliveries to {self.endpoint}"


class OutboxQueries:
    """The outbox's reads (on the journal's query-only connection)."""

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError  # JournalQueries provides it

    async def pending_deliveries(self, endpoint: str, *, limit: int) -> list[Delivery]:
        """Pending deliveries of ``endpoint``, earliest due first (``webhook_deliveries_due``)."""
        rows = await self._fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries AS d "
            "JOIN outbox_events AS e ON e.id = d.event_id "
            "WHERE d.endpoint = ? AND d.status = 'pending' "
            "ORDER BY d.next_attempt_at, d.event_id LIMIT ?",
            (endpoint, limit),
        )
        return [delivery_from_row(row) for row in rows]

    async def endpoint_states(self) -> dict[str, EndpointState]:
        rows = await self._fetch(
            "SELECT name, failing_since, disabled_at, last_success_at FROM webhook_endpoints"
        )
        return {
            row[0]: EndpointState(
                name=row[0],
                failing_since=_instant(row[1]),
                disabled_at=_instant(row[2]),
                last_success_at=_instant(row[3]),
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
        where = ["1"]
        params: list[Any] = []
        if endpoint is not None:
            where.append("d.endpoint = ?")
            params.append(endpoint)
        if status is not None:
            where.append("d.status = ?")
            params.append(status)
        if after is not None:
            where.append("(d.event_id < ? OR (d.event_id = ? AND d.endpoint > ?))")
            params.extend((after[0], after[0], after[1]))
        params.append(limit)
        rows = await self._fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries AS d "
            "JOIN outbox_events AS e ON e.id = d.event_id "
            f"WHERE {' AND '.join(where)} ORDER BY d.event_id DESC, d.endpoint LIMIT ?",
            params,
        )
        return [delivery_from_row(row) for row in rows]
