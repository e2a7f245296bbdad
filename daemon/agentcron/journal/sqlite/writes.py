"""The journal's write operations, each applied by the group-commit writer in batches."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from agentcron.core.models import DeploymentRun, RunError
from agentcron.errors import JournalError, NotFound
from agentcron.journal.protocol import Claim, OutboxEvent
from agentcron.journal.rows import completed_run, exit_signal
from agentcron.journal.sqlite.outbox import insert_events
from agentcron.journal.sqlite.rows import RUN_COLUMNS, run_from_row
from agentcron.journal.sqlite.writer import WriteOp

_IN_CHUNK = 500

_INSERT_CLAIM = (
    "INSERT INTO runs (id, deployment_id, agent_id, agent_version, trigger_type, scheduled_at, "
    "claimed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_COMPLETE = (
    "UPDATE runs SET session_id = ?, error_type = ?, error_message = ?, created_at = ? "
    "WHERE id = ? AND created_at IS NULL"
)
_LAST_RUN_AT = (
    "UPDATE deployments SET last_run_at = max(coalesce(last_run_at, 0), ?) "
    "WHERE id = (SELECT deployment_id FROM runs WHERE id = ?)"
)


@dataclass(eq=False, slots=True, kw_only=True)
class ClaimOp(WriteOp[Claim | None]):
    """Insert an open run row; ``result`` is the claim, or ``None`` if the occurrence is taken.

    ``claim`` is what the row records; the insert is the claim only if it lands.
    """

    claim: Claim
    scheduled_micros: int | None
    claimed_at: int
    result: Claim | None = None

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[ClaimOp]) -> None:
        rows = [
            (
                op.claim.run_id,
                op.claim.deployment_id,
                op.claim.agent.id,
                op.claim.agent.version,
                op.claim.trigger_type.value,
                op.scheduled_micros,
                op.claimed_at,
            )
            for op in ops
        ]
        cursor = conn.executemany(_INSERT_CLAIM, rows)
        if cursor.rowcount == len(ops):
            for op in ops:
                op.result = op.claim
            return
        inserted: set[str] = set()
        for start in range(0, len(ops), _IN_CHUNK):
            chunk = [op.claim.run_id for op in ops[start : start + _IN_CHUNK]]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id FROM runs WHERE id IN ({marks})"
            inserted.update(row[0] for row in conn.execute(query, chunk))
        for op in ops:
            op.result = op.claim if op.claim.run_id in inserted else None

    def describe(self) -> str:
        return f"claim of run {self.claim.run_id}"


@dataclass(eq=False, slots=True, kw_only=True)
class CompleteOp(WriteOp[DeploymentRun]):
    """Give an open claim its outcome (and maybe its deployment's ``last_run_at``).

    ``result`` is the completed run, built from the claim: completing reads nothing.
    """

    claim: Claim
    session_id: str | None
    error: RunError | None
    completed_at: datetime
    completed_micros: int
    last_run_at: int | None
    events: Sequence[OutboxEvent] = ()
    result: DeploymentRun = field(init=False)

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[CompleteOp]) -> None:
        rows = [
            (
                op.session_id,
                op.error.type if op.error else None,
                op.error.message if op.error else None,
                op.completed_micros,
                op.claim.run_id,
            )
            for op in ops
        ]
        cursor = conn.executemany(_COMPLETE, rows)
        if cursor.rowcount != len(ops):
            if len(ops) == 1:
                raise JournalError(f"run {ops[0].claim.run_id} is not an open claim")
            raise JournalError("a run in the batch is not an open claim")
        last_runs = [(op.last_run_at, op.claim.run_id) for op in ops if op.last_run_at is not None]
        if last_runs:
            conn.executemany(_LAST_RUN_AT, last_runs)
        events = [event for op in ops for event in op.events]
        if events:
            insert_events(conn, events)
        for op in ops:
            op.result = completed_run(
                op.claim, session_id=op.session_id, error=op.error, completed_at=op.completed_at
            )

    def describe(self) -> str:
        return f"completion of run {self.claim.run_id}"


@dataclass(eq=False, slots=True, kw_only=True)
class RecoverOp(WriteOp[list[DeploymentRun]]):
    """Complete every open claim with ``error``; ``result`` lists the completed runs."""

    batchable: ClassVar[bool] = False
    error: RunError
    completed_at: int
    events_for: Callable[[DeploymentRun], Sequence[OutboxEvent]] | None = None
    result: list[DeploymentRun] = field(default_factory=list)

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[RecoverOp]) -> None:
        for op in ops:
            open_ids = [
                row[0] for row in conn.execute("SELECT id FROM runs WHERE created_at IS NULL")
            ]
            conn.executemany(
                _COMPLETE,
                [
                    (None, op.error.type, op.error.message, op.completed_at, run_id)
                    for run_id in open_ids
                ],
            )
            runs: list[DeploymentRun] = []
            for run_id in open_ids:
                row = conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
                if row is not None:
                    runs.append(run_from_row(row))
            if op.events_for is not None:
                insert_events(conn, [event for run in runs for event in op.events_for(run)])
            op.result = runs


@dataclass(eq=False, slots=True, kw_only=True)
class StatementOp(WriteOp[int]):
    """Plain statements run in order; ``result`` is the last statement's row count.

    With ``expect_rows`` the last statement must change exactly that many rows, or the op
    fails with ``NotFound(missing)``. ``events`` (the outbox) are stored after the statements,
    in the same transaction.
    """

    statements: list[tuple[str, Sequence[Any] | dict[str, Any]]]
    expect_rows: int | None = None
    missing: str = ""
    events: Sequence[OutboxEvent] = ()
    result: int = 0

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[StatementOp]) -> None:
        for op in ops:
            count = 0
            for sql, params in op.statements:
                count = conn.execute(sql, params).rowcount
            if op.expect_rows is not None and count != op.expect_rows:
                raise NotFound(op.missing)
            if op.events:
                insert_events(conn, op.events)
            op.result = count


@dataclass(eq=False, slots=True, kw_only=True)
class SessionStartOp(WriteOp[None]):
    """Record a local session's process (the ``sessions`` table)."""

    session_id: str
    run_id: str
    deployment_id: str
    pid: int
    started_at: int
    host: str | None = None
    result: None = None

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[SessionStartOp]) -> None:
        conn.executemany(
            "INSERT INTO sessions (session_id, run_id, deployment_id, pid, started_at, host) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (op.session_id, op.run_id, op.deployment_id, op.pid, op.started_at, op.host)
                for op in ops
            ],
        )

    def describe(self) -> str:
        return f"start of session {self.session_id}"


@dataclass(eq=False, slots=True, kw_only=True)
class SessionEndOp(WriteOp[None]):
    """Record a local session's exit status (``None``: unknown), end time, reason and log size."""

    session_id: str
    exit_status: int | None
    ended_at: int
    end_reason: str = "exited"
    log_bytes: int | None = None
    result: None = None

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[SessionEndOp]) -> None:
        cursor = conn.executemany(
            "UPDATE sessions SET exit_status = ?, ended_at = ?, end_reason = ?, signal = ?, "
            "log_bytes = ? WHERE session_id = ?",
            [
                (
                    op.exit_status,
                    op.ended_at,
                    op.end_reason,
                    exit_signal(op.exit_status),
                    op.log_bytes,
                    op.session_id,
                )
                for op in ops
            ],
        )
        if cursor.rowcount != len(ops):  # retried one by one: the unknown session fails alone
            raise NotFound(
                f"session {ops[0].session_id} not found" if len(ops) == 1 else "unknown session"
            )

    def describe(self) -> str:
        return f"end of session {self.session_id}"


@dataclass(eq=False, slots=True, kw_only=True)
class SessionRecoverOp(WriteOp[list[str]]):
    """End every session ``host`` (or a daemon before hosts were recorded) left running
    (``end_reason`` ``recovered``, status unknown); ``result`` is their ids."""

    host: str
    ended_at: int
    result: list[str] = field(default_factory=list)

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[SessionRecoverOp]) -> None:
        for op in ops:
            op.result = [
                row[0]
                for row in conn.execute(
                    "UPDATE sessions SET ended_at = ?, end_reason = 'recovered' "
                    "WHERE (host = ? OR host IS NULL) AND ended_at IS NULL RETURNING session_id",
                    (op.ended_at, op.host),
                )
            ]

    def describe(self) -> str:
        return f"recovery of the sessions of host {self.host}"
