"""The PostgreSQL journal's write operations, each applied by the group-commit writer in
batches: one statement over ``unnest``-ed arrays per batch of claims or completions."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from agentcron.core.models import DeploymentRun, RunError
from agentcron.errors import AgentcronError, JournalError, NotFound, ServiceUnavailable
from agentcron.journal.postgres.errors import MISSING_DEPLOYMENT
from agentcron.journal.postgres.outbox import insert_events
from agentcron.journal.postgres.rows import RUN_COLUMNS, run_from_row
from agentcron.journal.postgres.writer import WriteOp
from agentcron.journal.protocol import Claim, OutboxEvent
from agentcron.journal.rows import completed_run, exit_signal

# A claim is inserted only for a stored deployment (the join) and only if its occurrence has
# no run yet (ON CONFLICT on the unique (deployment_id, scheduled_at)); RETURNING names the
# claims that landed. $8 is the fencing epoch recorded with them (NULL: unfenced).
INSERT_CLAIMS = """
INSERT INTO runs (id, deployment_id, agent_id, agent_version, trigger_type, scheduled_at,
                  claimed_at, epoch)
SELECT c.id, c.deployment_id, c.agent_id, c.agent_version, c.trigger_type, c.scheduled_at,
       c.claimed_at, $8::bigint
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[],
            $7::timestamptz[])
     AS c (id, deployment_id, agent_id, agent_version, trigger_type, scheduled_at, claimed_at)
JOIN deployments AS d ON d.id = c.deployment_id
ON CONFLICT ON CONSTRAINT runs_occurrence DO NOTHING
RETURNING runs.id
"""

# The fence, checked in the claims' own transaction, by the database's clock. FOR SHARE holds
# the lease row until the claims commit: a takeover (an UPDATE of that row) waits for them,
# and a claim that waited for a takeover re-reads the row and finds its epoch gone.
HOLD_FENCE = """
SELECT epoch FROM leases
WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
FOR SHARE
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """The condition of a leader's claims: lease ``lease`` is held by ``holder`` at ``epoch``
    and has not expired (``leases``; see ``agentcron.journal.postgres.schema``)."""

    lease: str
    holder: str
    epoch: int


COMPLETE_RUNS = """
UPDATE runs AS r
SET session_id = c.session_id, error_type = c.error_type, error_message = c.error_message,
    created_at = c.created_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
     AS c (id, session_id, error_type, error_message, created_at)
WHERE r.id = c.id AND r.created_at IS NULL
RETURNING r.id
"""

# greatest() ignores NULL: a first last_run_at is set, a later one only moves it forward.
LAST_RUN_AT = """
UPDATE deployments AS d SET last_run_at = greatest(d.last_run_at, c.last_run_at)
FROM unnest($1::text[], $2::timestamptz[]) AS c (id, last_run_at)
WHERE d.id = c.id
"""


@dataclass(eq=False, slots=True, kw_only=True)
class ClaimOp(WriteOp[Claim | None]):
    """Insert an open run row; ``result`` is the claim, or ``None`` if the occurrence is taken.
    A claim of a deployment that does not exist fails alone with ``NotFound``; a claim whose
    ``fence`` does not hold is not written and fails with ``ServiceUnavailable``."""

    claim: Claim
    claimed_at: datetime
    fence: Fence | None = None
    result: Claim | None = None
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[ClaimOp]) -> None:
        by_fence: dict[Fence | None, list[ClaimOp]] = {}
        for op in ops:
            by_fence.setdefault(op.fence, []).append(op)
        for fence, fenced in by_fence.items():
            if fence is not None and not await conn.fetchval(
                HOLD_FENCE, fence.lease, fence.holder, fence.epoch
            ):
                lost = ServiceUnavailable(
                    f"journal: lease {fence.lease!r} is no longer held by {fence.holder!r} "
                    f"at epoch {fence.epoch}; the claim was not written"
                )
                for op in fenced:
                    op.failure = lost
                continue
            await cls._insert(conn, fenced, None if fence is None else fence.epoch)

    @classmethod
    async def _insert(cls, conn: asyncpg.Connection, ops: list[ClaimOp], epoch: int | None) -> None:
        claims = [op.claim for op in ops]
        rows = await conn.fetch(
            INSERT_CLAIMS,
            [c.run_id for c in claims],
            [c.deployment_id for c in claims],
            [c.agent.id for c in claims],
            [c.agent.version for c in claims],
            [c.trigger_type.value for c in claims],
            [c.scheduled_at for c in claims],
            [op.claimed_at for op in ops],
            epoch,
        )
        inserted = {row[0] for row in rows}
        missed = [op for op in ops if op.claim.run_id not in inserted]
        known: set[str] = set()
        if missed:
            wanted = sorted({op.claim.deployment_id for op in missed})
            found = await conn.fetch("SELECT id FROM deployments WHERE id = ANY($1)", wanted)
            known = {row[0] for row in found}
        for op in ops:
            if op.claim.run_id in inserted:
                op.result = op.claim
            elif op.claim.deployment_id in known:
                op.result = None  # the occurrence already has a run
            else:
                op.failure = NotFound(MISSING_DEPLOYMENT)

    def describe(self) -> str:
        return f"claim of run {self.claim.run_id}"


@dataclass(eq=False, slots=True, kw_only=True)
class CompleteOp(WriteOp[DeploymentRun]):
    """Give an open claim its outcome (and maybe its deployment's ``last_run_at``).

    ``result`` is the completed run, built from the claim: completing reads nothing. A claim
    that is not open (already completed, or never written) fails alone with ``JournalError``,
    and its ``events`` (the outbox) are not stored; those of the completions that land are,
    in the same transaction.
    """

    claim: Claim
    session_id: str | None
    error: RunError | None
    completed_at: datetime
    last_run_at: datetime | None
    events: Sequence[OutboxEvent] = ()
    result: DeploymentRun = field(init=False)
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[CompleteOp]) -> None:
        first: dict[str, CompleteOp] = {}
        for op in ops:  # a claim completed twice in one batch: only the first can land
            first.setdefault(op.claim.run_id, op)
        sent = list(first.values())
        rows = await conn.fetch(
            COMPLETE_RUNS,
            [op.claim.run_id for op in sent],
            [op.session_id for op in sent],
            [op.error.type if op.error else None for op in sent],
            [op.error.message if op.error else None for op in sent],
            [op.completed_at for op in sent],
        )
        completed = {row[0] for row in rows}
        landed = [op for op in sent if op.claim.run_id in completed]
        latest: dict[str, datetime] = {}
        for op in landed:
            if op.last_run_at is not None:
                deployment_id = op.claim.deployment_id
                previous = latest.get(deployment_id)
                latest[deployment_id] = (
                    op.last_run_at if previous is None else max(previous, op.last_run_at)
                )
        if latest:
            ordered = sorted(latest)  # one lock order for every writer: no deadlocks
            await conn.execute(LAST_RUN_AT, ordered, [latest[key] for key in ordered])
        events = [event for op in landed for event in op.events]
        if events:
            await insert_events(conn, events)
        for op in ops:
            if first[op.claim.run_id] is not op or op.claim.run_id not in completed:
                op.failure = JournalError(f"run {op.claim.run_id} is not an open claim")
                continue
            op.result = completed_run(
                op.claim, session_id=op.session_id, error=op.error, completed_at=op.completed_at
            )

    def describe(self) -> str:
        return f"completion of run {self.claim.run_id}"


@dataclass(eq=False, slots=True, kw_only=True)
class RecoverOp(WriteOp[list[DeploymentRun]]):
    """Complete every open claim with ``outcome``; ``result`` lists those runs, oldest first.
    ``events_for(run)`` gives each run's outbox events, stored in the same transaction."""

    batchable: ClassVar[bool] = False
    outcome: RunError
    completed_at: datetime
    events_for: Callable[[DeploymentRun], Sequence[OutboxEvent]] | None = None
    keep: Callable[[], Collection[str]] = frozenset
    """Open claims left alone, read as the op applies: this process's own, still in flight
    (its manual runs while it followed, when it begins to lead)."""
    result: list[DeploymentRun] = field(default_factory=list)
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[RecoverOp]) -> None:
        for op in ops:
            rows = await conn.fetch(
                "UPDATE runs SET error_type = $1, error_message = $2, created_at = $3 "
                "WHERE created_at IS NULL AND id <> ALL($4::text[]) "
                f"RETURNING {RUN_COLUMNS}, claimed_at",
                op.outcome.type,
                op.outcome.message,
                op.completed_at,
                sorted(op.keep()),
            )
            rows = sorted(rows, key=lambda row: (row["claimed_at"], row["id"]))
            op.result = [run_from_row(tuple(row)[:-1]) for row in rows]
            if op.events_for is not None:
                events = [event for run in op.result for event in op.events_for(run)]
                await insert_events(conn, events)


@dataclass(eq=False, slots=True, kw_only=True)
class StatementOp(WriteOp[int]):
    """Plain statements run in order; ``result`` is the last statement's row count.

    With ``expect_rows`` the last statement must change exactly that many rows, or the op
    fails alone with ``NotFound(missing)`` (nothing else of the batch is undone) and stores
    no event. ``events`` (the outbox) are stored after the statements, in the same transaction.
    """

    statements: list[tuple[str, Sequence[Any]]]
    expect_rows: int | None = None
    missing: str = ""
    events: Sequence[OutboxEvent] = ()
    result: int = 0
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[StatementOp]) -> None:
        for op in ops:
            count = 0
            for sql, params in op.statements:
                count = _row_count(await conn.execute(sql, *params))
            if op.expect_rows is not None and count != op.expect_rows:
                op.failure = NotFound(op.missing)
            elif op.events:
                await insert_events(conn, op.events)
            op.result = count


def _row_count(status: str) -> int:
    """The row count of a command tag (``"UPDATE 1"``, ``"INSERT 0 1"``)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


@dataclass(eq=False, slots=True, kw_only=True)
class SessionStartOp(WriteOp[None]):
    """Record a local session's process (the ``sessions`` table)."""

    session_id: str
    run_id: str
    deployment_id: str
    pid: int
    started_at: datetime
    host: str | None = None
    result: None = None
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[SessionStartOp]) -> None:
        await conn.executemany(
            "INSERT INTO sessions (session_id, run_id, deployment_id, pid, started_at, host) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (op.session_id, op.run_id, op.deployment_id, op.pid, op.started_at, op.host)
                for op in ops
            ],
        )

    def describe(self) -> str:
        return f"start of session {self.session_id}"


@dataclass(eq=False, slots=True, kw_only=True)
class SessionEndOp(WriteOp[None]):
    """Record a local session's exit status (``None``: unknown), end time, reason and log size;
    an unknown session fails alone."""

    session_id: str
    exit_status: int | None
    ended_at: datetime
    end_reason: str = "exited"
    log_bytes: int | None = None
    result: None = None
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[SessionEndOp]) -> None:
        if len({op.session_id for op in ops}) < len(ops):
            for op in ops:  # a session ended twice in the batch: in order, the later end wins
                await cls.apply(conn, [op])
            return
        rows = await conn.fetch(
            "UPDATE sessions AS s SET exit_status = c.exit_status, ended_at = c.ended_at, "
            "end_reason = c.end_reason, signal = c.signal, log_bytes = c.log_bytes "
            "FROM unnest($1::text[], $2::integer[], $3::timestamptz[], $4::text[], "
            "$5::integer[], $6::bigint[]) "
            "AS c (session_id, exit_status, ended_at, end_reason, signal, log_bytes) "
            "WHERE s.session_id = c.session_id RETURNING s.session_id",
            [op.session_id for op in ops],
            [op.exit_status for op in ops],
            [op.ended_at for op in ops],
            [op.end_reason for op in ops],
            [exit_signal(op.exit_status) for op in ops],
            [op.log_bytes for op in ops],
        )
        ended = {row[0] for row in rows}
        for op in ops:
            if op.session_id not in ended:
                op.failure = NotFound(f"session {op.session_id} not found")

    def describe(self) -> str:
        return f"end of session {self.session_id}"


@dataclass(eq=False, slots=True, kw_only=True)
class SessionRecoverOp(WriteOp[list[str]]):
    """End every session ``host`` (or a daemon before hosts were recorded) left running
    (``end_reason`` ``recovered``, status unknown); ``result`` is their ids."""

    host: str
    ended_at: datetime
    result: list[str] = field(default_factory=list)
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[SessionRecoverOp]) -> None:
        for op in ops:
            rows = await conn.fetch(
                "UPDATE sessions SET ended_at = $1, end_reason = 'recovered' "
                "WHERE (host = $2 OR host IS NULL) AND ended_at IS NULL RETURNING session_id",
                op.ended_at,
                op.host,
            )
            op.result = [row[0] for row in rows]

    def describe(self) -> str:
        return f"recovery of the sessions of host {self.host}"
