"""The SQLite journal: agentcron's one file of deployments, runs and local sessions.

``SqliteJournal.open`` prepares the file (mode 0600, WAL, ``synchronous=FULL``, foreign keys,
forward migrations) and runs the group-commit writer (``agentcron.journal.sqlite.writer``) in
its own task group while the journal is open (``async with``). All writes go through that
writer on one connection; reads use a second, query-only connection, so a list never waits
behind a large write batch.

A run is *claimed* (an open row, unique per ``(deployment_id, scheduled_at)``) before its
session is created and *completed* after; only completed runs are visible to the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio

from agentcron.clock import Clock, SystemClock
from agentcron.core.models import (
    AgentRef,
    Deployment,
    DeploymentRun,
    RunError,
    TriggerType,
)
from agentcron.core.timeutil import to_micros
from agentcron.errors import JournalError
from agentcron.journal.protocol import Claim, Delivery, EndpointState, OutboxEvent
from agentcron.journal.rows import RECOVERED_ERROR, SESSION_COLUMNS, check_outcome, new_claim
from agentcron.journal.sqlite.outbox import AttemptOp, EventsOp, OutboxQueries, RetryOp
from agentcron.journal.sqlite.reads import JournalQueries
from agentcron.journal.sqlite.retention import RetentionOps
from agentcron.journal.sqlite.rows import (
    DEPLOYMENT_COLUMNS,
    DEPLOYMENT_MUTABLE,
    deployment_params,
    session_from_row,
)
from agentcron.journal.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from agentcron.journal.sqlite.writer import GroupCommitWriter
from agentcron.journal.sqlite.writes import (
    ClaimOp,
    CompleteOp,
    RecoverOp,
    SessionEndOp,
    SessionRecoverOp,
    SessionStartOp,
    StatementOp,
)

_T = TypeVar("_T")
BUSY_TIMEOUT_MS = 5000
GROUP_COMMIT_PACE = 0.002
"""Seconds between the starts of transactions in a write burst (see ``GroupCommitWriter``)."""

_INSERT_DEPLOYMENT = (
    f"INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES "
    f"({', '.join(':' + c.strip() for c in DEPLOYMENT_COLUMNS.split(','))})"
)
_UPDATE_DEPLOYMENT = (
    "UPDATE deployments SET "
    + ", ".join(f"{c} = :{c}" for c in DEPLOYMENT_MUTABLE)
    + " WHERE id = :id"
)


async def _connect(path: Path) -> aiosqlite.Connection:
    """The query-only reading connection."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA query_only = ON")
    except BaseException:
        await conn.close()
        raise
    return conn


def _open_writer(path: Path) -> sqlite3.Connection:
    """The writing connection (blocking: run in a thread), in WAL mode and migrated.

    Raises ``JournalError`` for a journal of a newer schema or one that cannot use WAL.
    """
    prepared = False
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        row = _switch_to_wal(conn)
        if row is None or str(row[0]).lower() != "wal":
            raise JournalError(f"journal: cannot switch {path.name} to WAL mode")
        _migrate(conn)
        prepared = True
    finally:
        if not prepared:
            conn.close()
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> Any:
    """``PRAGMA journal_mode = WAL``, waiting like ``busy_timeout`` while another connection
    is converting the same fresh file (SQLite answers that switch busy without waiting)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "") == "SQLITE_BUSY"
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # in the opening thread, never on the event loop


def _migrate(conn: sqlite3.Connection) -> None:
    """Forward migrations, one transaction per step, each begun with the write lock so that
    two starters at once migrate once: the second waits, then finds the version moved."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("PRAGMA user_version").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal.db was written by a newer agentcron (schema {version}, this "
                    f"version understands {SCHEMA_VERSION}); upgrade agentcron or restore a backup"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """The statements of a migration script (``executescript`` would commit first)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    return statements


def _prepare_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class SqliteJournal(JournalQueries, OutboxQueries, RetentionOps):
    """The open SQLite journal (implements ``agentcron.journal.Journal``).

    Open with ``async with SqliteJournal.open(path) as journal:``; leaving the block commits
    what is queued and closes the file. Reading methods are in ``JournalQueries``.
    """

    def __init__(
        self,
        path: Path,
        writer_conn: sqlite3.Connection,
        reader_conn: aiosqlite.Connection,
        clock: Clock,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(reader_conn)
        self.path = path
        self._writer = GroupCommitWriter(
            writer_conn, clock=clock, pace=GROUP_COMMIT_PACE, on_commit=on_commit
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path,
        *,
        clock: Clock | None = None,
        on_commit: Callable[[float], None] | None = None,
    ) -> AsyncIterator[SqliteJournal]:
        """Open (creating if needed) the journal at ``path`` for the ``async with`` block.

        Raises ``JournalError`` when the file is not usable: written by a newer agentcron,
        not a database, unreadable. ``clock`` paces group commits (the system clock if None).
        ``on_commit(seconds)`` is called, in the writer's thread, with the duration of each
        committed write transaction (the ``agentcron_journal_commit_duration_seconds`` metric).
        """
        path = Path(path)
        writer: sqlite3.Connection | None = None
        try:
            _prepare_file(path)
            writer = await asyncio.to_thread(_open_writer, path)
            reader = await _connect(path)
        except (sqlite3.Error, OSError) as exc:  # at start every failure is fatal, not a 503
            if writer is not None:
                writer.close()
            raise JournalError(f"cannot open the journal {path}: {exc}") from exc
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        journal = cls(path, writer, reader, clock or SystemClock(), on_commit)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(journal._writer.run)
                try:
                    yield journal
                finally:
                    with anyio.CancelScope(shield=True):
                        await journal._close()
        finally:
            await reader.close()

    async def _close(self) -> None:
        """Commit what is queued, stop the writer and close its connection."""
        await self._writer.close()

    async def run_on_writer(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``function(conn)`` on the writing connection, in the writer's thread, between
        transactions (maintenance: backups, integrity checks, connection limits)."""
        return await self._writer.call(function)

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def transactions(self) -> int:
        """Write transactions committed since open (fewer than writes: group commit)."""
        return self._writer.transactions

    @property
    def write_failure(self) -> str | None:
        """Why writes are failing right now (disk full, I/O error, a lock), or ``None`` once
        the latest write transaction committed."""
        return self._writer.write_failure

    # --- runs --------------------------------------------------------------------------------

    async def claim_run(
        self,
        *,
        deployment_id: str,
        agent: AgentRef,
        trigger_type: TriggerType,
        scheduled_at: datetime | None,
        claimed_at: datetime,
    ) -> Claim | None:
        """Durably write an open run row; see ``Journal.claim_run``."""
        claim = new_claim(
            deployment_id=deployment_id,
            agent=agent,
            trigger_type=trigger_type,
            scheduled_at=scheduled_at,
        )
        return await self._writer.submit(
            ClaimOp(
                claim=claim,
                scheduled_micros=None if scheduled_at is None else to_micros(scheduled_at),
                claimed_at=to_micros(claimed_at),
            )
        )

    async def complete_run(
        self,
        claim: Claim,
        *,
        session_id: str | None,
        error: RunError | None,
        completed_at: datetime,
        last_run_at: datetime | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> DeploymentRun:
        """Record the outcome of an open claim; see ``Journal.complete_run``."""
        check_outcome(session_id, error)
        return await self._writer.submit(
            CompleteOp(
                claim=claim,
                session_id=session_id,
                error=error,
                completed_at=completed_at,
                completed_micros=to_micros(completed_at),
                last_run_at=None if last_run_at is None else to_micros(last_run_at),
                events=events,
            )
        )

    async def recover_open_claims(
        self,
        now: datetime,
        *,
        events_for: Callable[[DeploymentRun], Sequence[OutboxEvent]] | None = None,
    ) -> list[DeploymentRun]:
        """Complete every open claim (left by a daemon that stopped between claiming and
        confirming a session) as ``service_unavailable``; return those runs."""
        return await self._writer.submit(
            RecoverOp(error=RECOVERED_ERROR, completed_at=to_micros(now), events_for=events_for)
        )

    # --- deployments (the service's row-level writes) ----------------------------------------

    async def insert_deployment(self, deployment: Deployment) -> None:
        """Store a new deployment."""
        await self._writer.submit(
            StatementOp(statements=[(_INSERT_DEPLOYMENT, deployment_params(deployment))])
        )

    async def update_deployment(
        self, deployment: Deployment, *, events: Sequence[OutboxEvent] = ()
    ) -> None:
        """Write every service-owned column of ``deployment`` (not ``last_run_at``) and
        ``events``, in one transaction.

        Raises ``NotFound`` if it does not exist.
        """
        params = deployment_params(deployment)
        values = {key: params[key] for key in (*DEPLOYMENT_MUTABLE, "id")}
        await self._writer.submit(
            StatementOp(
                statements=[(_UPDATE_DEPLOYMENT, values)],
                expect_rows=1,
                missing=f"deployment {deployment.id} not found",
                events=events,
            )
        )

    async def storage_bytes(self) -> int:
        """The journal file and its WAL, in bytes."""

        def size() -> int:
            total = 0
            for suffix in ("", "-wal"):
                try:
                    total += os.stat(f"{self.path}{suffix}").st_size
                except FileNotFoundError:
                    continue
            return total

        return await asyncio.to_thread(size)

    # --- the webhook outbox ------------------------------------------------------------------

    async def add_events(self, events: Sequence[OutboxEvent]) -> None:
        """Store events that no other write carries; see ``Journal.add_events``."""
        if any(event.endpoints for event in events):
            await self._writer.submit(EventsOp(events=events))

    async def record_attempt(
        self,
        delivery: Delivery,
        *,
        attempted_at: datetime,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
        endpoint_state: EndpointState,
    ) -> None:
        """Settle one delivery attempt; see ``Journal.record_attempt``."""
        await self._writer.submit(
            AttemptOp(
                event_id=delivery.event_id,
                endpoint=delivery.endpoint,
                attempted_at=to_micros(attempted_at),
                status_code=status_code,
                error=error,
                next_attempt_at=None if next_attempt_at is None else to_micros(next_attempt_at),
                endpoint_state=endpoint_state,
            )
        )

    async def retry_deliveries(
        self, endpoint: str, *, now: datetime, event_id: str | None = None
    ) -> int:
        """Make failed and pending deliveries due now; see ``Journal.retry_deliveries``."""
        return await self._writer.submit(
            RetryOp(endpoint=endpoint, event_id=event_id, now=to_micros(now))
        )

    # --- local sessions (agentcron.launchers.base.SessionRecorder) -----------------------------

    def session_started(
        self,
        *,
        session_id: str,
        run_id: str,
        deployment_id: str,
        pid: int,
        started_at: datetime,
        host: str | None = None,
    ) -> None:
        """Queue the record that local session ``session_id`` started as process ``pid``.

        It commits with the next group commit, in order with every write queued before it;
        nothing waits for it (a failure is logged). ``flush()`` waits for it.
        """
        self._writer.submit_nowait(
            SessionStartOp(
                session_id=session_id,
                run_id=run_id,
                deployment_id=deployment_id,
                pid=pid,
                started_at=to_micros(started_at),
                host=host,
            )
        )

    def session_ended(
        self,
        *,
        session_id: str,
        exit_status: int | None,
        ended_at: datetime,
        end_reason: str = "exited",
        log_bytes: int | None = None,
    ) -> None:
        """Queue a local session's end (see ``Journal.session_ended``); see
        ``session_started``. An unknown ``session_id`` is logged as a failed write."""
        self._writer.submit_nowait(
            SessionEndOp(
                session_id=session_id,
                exit_status=exit_status,
                ended_at=to_micros(ended_at),
                end_reason=end_reason,
                log_bytes=log_bytes,
            )
        )

    async def recover_sessions(self, *, host: str, ended_at: datetime) -> list[str]:
        """End the sessions ``host`` left running; see ``Journal.recover_sessions``."""
        return await self._writer.submit(SessionRecoverOp(host=host, ended_at=to_micros(ended_at)))

    async def flush(self) -> None:
        """Return once every write queued so far has committed (or failed)."""
        await self._writer.submit(StatementOp(statements=[]))

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        """A local session's record; see ``Journal.get_session``."""
        rows = await self._fetch(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?",
            (session_id,),
        )
        return session_from_row(rows[0]) if rows else None
