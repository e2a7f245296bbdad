"""The PostgreSQL journal: deployments, runs and local sessions in a PostgreSQL database.

``PostgresJournal.open`` connects, migrates (``agentcron.journal.postgres.schema``) and runs
the group-commit writer (``agentcron.journal.postgres.writer``) on its own connection in its
own task group while the journal is open (``async with``). All writes go through that writer;
reads use a small pool, so a list never waits behind a write batch.

The same contract as the SQLite journal (``agentcron.journal.protocol``): a run is *claimed*
(an open row, unique per ``(deployment_id, scheduled_at)``) before its session is created and
*completed* after; only completed runs are visible. The connection URL's password, and the
password itself, appear in no message, log line or ``location``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
import asyncpg

from agentcron.clock import Clock
from agentcron.config import redact_url
from agentcron.core.models import (
    AgentRef,
    Deployment,
    DeploymentRun,
    RunError,
    TriggerType,
)
from agentcron.errors import AgentcronError, JournalError
from agentcron.journal.postgres.errors import FOREIGN, map_postgres_errors
from agentcron.journal.postgres.lease import NOTIFY_CHANGE, LeaseLink
from agentcron.journal.postgres.outbox import AttemptOp, EventsOp, OutboxQueries, RetryOp
from agentcron.journal.postgres.reads import JournalQueries
from agentcron.journal.postgres.retention import RetentionOps
from agentcron.journal.postgres.rows import DEPLOYMENT_MUTABLE, DEPLOYMENT_NAMES, deployment_values
from agentcron.journal.postgres.schema import migrate
from agentcron.journal.postgres.writer import GroupCommitWriter
from agentcron.journal.postgres.writes import (
    ClaimOp,
    CompleteOp,
    Fence,
    RecoverOp,
    SessionEndOp,
    SessionRecoverOp,
    SessionStartOp,
    StatementOp,
)
from agentcron.journal.protocol import Claim, Delivery, EndpointState, OutboxEvent
from agentcron.journal.rows import RECOVERED_ERROR, check_outcome, new_claim

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a connection (at open, and when the writer reconnects)."""
COMMAND_TIMEOUT = 30.0
"""Seconds a statement may take before it counts as the server being unavailable."""
READ_POOL_SIZE = 4

_INSERT_DEPLOYMENT = (
    f"INSERT INTO deployments ({', '.join(DEPLOYMENT_NAMES)}) VALUES "
    f"({', '.join(f'${n}' for n in range(1, len(DEPLOYMENT_NAMES) + 1))})"
)
_UPDATE_DEPLOYMENT = (
    "UPDATE deployments SET "
    + ", ".join(f"{name} = ${n}" for n, name in enumerate(DEPLOYMENT_MUTABLE, start=1))
    + f" WHERE id = ${len(DEPLOYMENT_MUTABLE) + 1}"
)


class PostgresJournal(JournalQueries, OutboxQueries, RetentionOps):
    """The open PostgreSQL journal (implements ``agentcron.journal.Journal``).

    Open with ``async with PostgresJournal.open(url, password=...) as journal:``; leaving the
    block commits what is queued and closes the connections. Reads are in ``JournalQueries``.
    """

    def __init__(
        self,
        url: str,
        writer: GroupCommitWriter,
        pool: asyncpg.Pool,
        connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
    ) -> None:
        super().__init__(pool)
        self._location = redact_url(url)
        self._writer = writer
        self._connect = connect
        self._node_id: str | None = None
        self._fence_source: Callable[[], Fence] | None = None
        self._in_flight: set[str] = set()  # claims of this process not completed yet

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        clock: Clock | None = None,
        pool_size: int = READ_POOL_SIZE,
        on_commit: Callable[[float], None] | None = None,
    ) -> AsyncIterator[PostgresJournal]:
        """Connect to the database at ``url`` (``postgresql://...``), migrate it and open the
        journal for the ``async with`` block. ``password``, when given, is used instead of
        one in the URL (libpq's ``PGPASSWORD`` and ``~/.pgpass`` apply otherwise).

        Raises ``JournalError`` when the database is not usable now: unreachable, refusing
        the login, written by a newer agentcron. ``clock`` is accepted for symmetry with the
        SQLite journal (whose writer paces on it); this writer needs no clock.
        ``on_commit(seconds)`` is called with the duration of each committed write
        transaction (the ``agentcron_journal_commit_duration_seconds`` metric).
        """
        location = redact_url(url)
        settings = {"application_name": "agentcrond"}
        # While the server is away the read pool retries its one idle connection and logs
        # each attempt with a traceback; the journal's own errors say it once, without one.
        logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(
                url,
                password=password,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=settings,
            )

        conn: asyncpg.Connection | None = None
        pool: asyncpg.Pool | None = None
        try:
            conn = await connect()
            await migrate(conn, location)
            pool = await asyncpg.create_pool(
                url,
                password=password,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=settings,
            )
        except BaseException as exc:
            if pool is not None:
                pool.terminate()
            if conn is not None:
                conn.terminate()
            if isinstance(exc, AgentcronError) or not isinstance(exc, (*FOREIGN, ValueError)):
                raise
            # At start every failure is fatal (the daemon exits and says why), not a 503.
            raise JournalError(f"cannot open the journal {location}: {exc}") from exc
        writer = GroupCommitWriter(conn, connect, on_commit=on_commit)
        journal = cls(url, writer, pool, connect)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(writer.run)
                try:
                    yield journal
                finally:
                    with anyio.CancelScope(shield=True):
                        await writer.close()
        finally:
            with anyio.CancelScope(shield=True):
                await _close_pool(pool)

    @property
    def location(self) -> str:
        """The database URL without its password."""
        return self._location

    @property
    def transactions(self) -> int:
        """Write transactions committed since open (fewer than writes: group commit)."""
        return self._writer.transactions

    @property
    def write_failure(self) -> str | None:
        """Why writes are failing right now, or ``None`` once the latest batch committed."""
        return self._writer.write_failure

    @property
    def writer_connection(self) -> asyncpg.Connection | None:
        """The writer's connection (``None`` while lost): for tests and maintenance only."""
        return self._writer.connection

    # --- leadership (several daemons on one database) ---------------------------------------

    def lease_link(
        self,
        *,
        holder: str,
        ttl: float,
        on_change: Callable[[str, str], None],
        on_release: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> LeaseLink:
        """A ``LeaseLink`` on a dedicated connection of this database (not yet open)."""
        if self._connect is None:
            raise JournalError("this journal was opened without a way to connect again")
        return LeaseLink(
            self._connect,
            holder=holder,
            ttl=ttl,
            on_change=on_change,
            on_release=on_release,
            on_lost=on_lost,
        )

    def attach_leadership(self, node_id: str, fence: Callable[[], Fence]) -> None:
        """From now on every deployment change sends ``pg_notify`` (``<node_id> <id>``) in
        its own transaction, and every scheduled claim is fenced by ``fence()`` (which raises
        ``ServiceUnavailable`` when this daemon is not the leader)."""
        self._node_id = node_id
        self._fence_source = fence

    def _notify_statements(self, deployment_id: str) -> list[tuple[str, Sequence[Any]]]:
        if self._node_id is None:
            return []
        return [(NOTIFY_CHANGE, [f"{self._node_id} {deployment_id}"])]

    # --- runs --------------------------------------------------------------------------------

    async def claim_run(
        self,
        *,
        deployment_id: str,
        agent: AgentRef,
        trigger_type: TriggerType,
        scheduled_at: datetime | None,
        claimed_at: datetime,
        fence: Fence | None = None,
    ) -> Claim | None:
        """Durably write an open run row; see ``Journal.claim_run``.

        With ``fence`` (a leader's lease, for several daemons on one database) the claim is
        written only if that lease is still held at that epoch when its transaction runs, and
        records the epoch; otherwise it raises ``ServiceUnavailable`` and writes nothing.
        """
        if fence is None and trigger_type is TriggerType.SCHEDULE and self._fence_source:
            fence = self._fence_source()  # ServiceUnavailable: not the leader
        claim = new_claim(
            deployment_id=deployment_id,
            agent=agent,
            trigger_type=trigger_type,
            scheduled_at=scheduled_at,
        )
        self._in_flight.add(claim.run_id)  # before it commits: a recovery never takes it
        landed: Claim | None = None
        try:
            landed = await self._writer.submit(
                ClaimOp(claim=claim, claimed_at=claimed_at, fence=fence)
            )
        finally:
            if landed is None:
                self._in_flight.discard(claim.run_id)
        return landed

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
        try:
            return await self._writer.submit(
                CompleteOp(
                    claim=claim,
                    session_id=session_id,
                    error=error,
                    completed_at=completed_at,
                    last_run_at=last_run_at,
                    events=events,
                )
            )
        finally:  # landed or not, the next recovery may complete it now
            self._in_flight.discard(claim.run_id)

    async def recover_open_claims(
        self,
        now: datetime,
        *,
        events_for: Callable[[DeploymentRun], Sequence[OutboxEvent]] | None = None,
    ) -> list[DeploymentRun]:
        """Complete every open claim as ``service_unavailable``; return those runs.

        With leadership attached (``attach_leadership``), claims this process made and has
        not completed yet are left alone: with several daemons on one database, a follower
        that begins to lead may have manual runs in flight, which it completes itself (every
        other open claim is an earlier leader's, or a stopped daemon's)."""
        return await self._writer.submit(
            RecoverOp(
                outcome=RECOVERED_ERROR,
                completed_at=now,
                events_for=events_for,
                keep=(lambda: self._in_flight) if self._node_id is not None else frozenset,
            )
        )

    # --- deployments -------------------------------------------------------------------------

    async def insert_deployment(self, deployment: Deployment) -> None:
        """Store a new deployment."""
        values = deployment_values(deployment)
        row = [values[name] for name in DEPLOYMENT_NAMES]
        statements = [*self._notify_statements(deployment.id), (_INSERT_DEPLOYMENT, row)]
        await self._writer.submit(StatementOp(statements=statements))

    async def update_deployment(
        self, deployment: Deployment, *, events: Sequence[OutboxEvent] = ()
    ) -> None:
        """Write every service-owned column of ``deployment`` (not ``last_run_at``) and
        ``events``, in one transaction.

        Raises ``NotFound`` if it does not exist.
        """
        values = deployment_values(deployment)
        row = [values[name] for name in (*DEPLOYMENT_MUTABLE, "id")]
        await self._writer.submit(
            StatementOp(
                statements=[*self._notify_statements(deployment.id), (_UPDATE_DEPLOYMENT, row)],
                expect_rows=1,
                missing=f"deployment {deployment.id} not found",
                events=events,
            )
        )

    async def storage_bytes(self) -> int:
        """The size of the whole database the journal lives in, in bytes."""
        with map_postgres_errors():
            size = await self._pool.fetchval("SELECT pg_database_size(current_database())")
        return int(size)

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
                attempted_at=attempted_at,
                status_code=status_code,
                error=error,
                next_attempt_at=next_attempt_at,
                endpoint_state=endpoint_state,
            )
        )

    async def retry_deliveries(
        self, endpoint: str, *, now: datetime, event_id: str | None = None
    ) -> int:
        """Make failed and pending deliveries due now; see ``Journal.retry_deliveries``."""
        return await self._writer.submit(RetryOp(endpoint=endpoint, event_id=event_id, now=now))

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
        """Queue the record that local session ``session_id`` started as process ``pid``."""
        self._writer.submit_nowait(
            SessionStartOp(
                session_id=session_id,
                run_id=run_id,
                deployment_id=deployment_id,
                pid=pid,
                started_at=started_at,
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
        """Queue a local session's end (see ``Journal.session_ended``)."""
        self._writer.submit_nowait(
            SessionEndOp(
                session_id=session_id,
                exit_status=exit_status,
                ended_at=ended_at,
                end_reason=end_reason,
                log_bytes=log_bytes,
            )
        )

    async def recover_sessions(self, *, host: str, ended_at: datetime) -> list[str]:
        """End the sessions ``host`` left running; see ``Journal.recover_sessions``."""
        return await self._writer.submit(SessionRecoverOp(host=host, ended_at=ended_at))

    async def flush(self) -> None:
        """Return once every write queued so far has committed (or failed)."""
        await self._writer.submit(StatementOp(statements=[]))

    def __repr__(self) -> str:
        return f"PostgresJournal({self._location!r})"


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close the read pool gracefully, or drop it (a server gone away, a stuck read)."""
    with anyio.move_on_after(CONNECT_TIMEOUT) as scope:
        try:
            await pool.close()
        except (*FOREIGN, ValueError):
            pool.terminate()
    if scope.cancelled_caught:
        pool.terminate()
