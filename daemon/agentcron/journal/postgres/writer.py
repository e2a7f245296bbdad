"""Group commit on PostgreSQL: one writer task, one connection, few transactions.

Every write is a ``WriteOp`` handed to ``GroupCommitWriter.submit``. The writer task takes
everything queued since its last commit and applies it in one transaction on its own
connection, consecutive ops of one kind together (a thousand claims are one ``INSERT ...
SELECT FROM unnest(...)``), and resolves each caller's future only after ``COMMIT``: an
``await`` returns once *its* transaction is durable. A server's commit costs a WAL flush and a
round trip whatever the batch holds, so writes that arrive while one commits simply wait for
the next, larger batch. (No pacing timer as in the SQLite writer: measured on the benchmark's
burst, 2 ms or 5 ms between transactions changed neither their number nor the throughput.)

An op may fail alone without failing its batch (``op.failure``: an update that found no row, a
claim of an unknown deployment). If the batch's transaction fails, it is rolled back and its
ops are retried one transaction each, so one bad op fails alone; if the connection was lost,
every op of the batch fails with ``ServiceUnavailable`` and the next batch reconnects. A
record nobody waits for (``submit_nowait``) rides in the same batches; its failure is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from itertools import groupby
from typing import Any, ClassVar, Generic, Self, TypeVar

import anyio
import anyio.abc
import asyncpg
import structlog

from agentcron.errors import AgentcronError, JournalError, ServiceUnavailable
from agentcron.journal.batches import fail_queued, settle_batch, write_failure_after
from agentcron.journal.postgres.errors import FOREIGN, map_postgres_errors, translate

log = structlog.get_logger(__name__)
R = TypeVar("R")

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class WriteOp(Generic[R]):
    """One write whose committed result is an ``R``; subclasses implement ``apply`` for a run
    of consecutive ops of their kind.

    ``apply`` runs inside the open transaction and sets each op's ``result``, or its ``failure``
    when that op fails alone (the rest of the batch still commits). Raising fails the whole
    batch, which is then retried op by op.
    """

    batchable: ClassVar[bool] = True
    result: R
    failure: AgentcronError | None = None

    @classmethod
    async def apply(cls, conn: asyncpg.Connection, ops: Sequence[Self]) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """What this write was, for the log line of a failure nobody waited for."""
        return type(self).__name__


class GroupCommitWriter:
    """The single writer task over a connection it opens with ``connect`` (and reopens after
    the connection was lost). ``transactions`` counts committed write transactions;
    ``on_commit(seconds)`` is told how long each committed one took (a metric)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        connect: Connect,
        *,
        max_batch: int = 4096,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        self._conn: asyncpg.Connection | None = conn
        self._on_commit = on_commit
        self._connect = connect
        self._max_batch = max_batch
        self._queue: list[tuple[WriteOp[Any], asyncio.Future[Any] | None]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._running = False
        self._stopped = anyio.Event()
        self.transactions = 0
        """Write transactions committed so far (the group-commit counter)."""
        self.write_failure: str | None = None
        """Why the latest batch could not be written (server down, connection lost, read-only,
        out of space): set on ``ServiceUnavailable``, cleared by the next batch that commits."""

    @property
    def connection(self) -> asyncpg.Connection | None:
        """The writer's connection (``None`` while lost); for tests and maintenance."""
        return self._conn

    async def submit(self, op: WriteOp[R]) -> R:
        """Queue ``op``; return its result once its transaction has committed."""
        if self._closing or not self._running:
            raise JournalError("the journal is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        self._wakeup.set()
        return await future

    def submit_nowait(self, op: WriteOp[Any]) -> None:
        """Queue ``op`` without waiting for it; a failure is logged (``journal_write_failed``).
        Raises ``JournalError`` if the writer is closed."""
        if self._closing or not self._running:
            raise JournalError("the journal is closed")
        self._queue.append((op, None))
        self._wakeup.set()

    async def close(self) -> None:
        """Commit everything already queued, stop ``run``, close the connection."""
        self._closing = True
        self._wakeup.set()
        if self._running:
            await self._stopped.wait()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except (*FOREIGN, ValueError):  # closing a broken connection: nothing to keep
                conn.terminate()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer task: commit what is queued until ``close``; start it in a task group.

        Cancelled from outside, it fails what is still queued (``JournalError``).
        """
        self._running = True
        task_status.started()
        try:
            await self._commit_until_closed()
        finally:
            self._closing = True
            fail_queued(self._queue)
            self._queue.clear()
            self._stopped.set()

    async def _commit_until_closed(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                ops = [op for op, _ in batch]
                errors = await self._commit_batch(ops)
                self.write_failure = write_failure_after(self.write_failure, errors)
                settle_batch(batch, errors)
            if self._closing:
                return

    async def _commit_batch(self, ops: list[WriteOp[Any]]) -> list[AgentcronError | None]:
        """One transaction for ``ops``, or one each if that fails; per op, the error its
        caller gets (``None``: committed, see ``op.result``)."""
        try:
            await self._transaction(ops)
        except AgentcronError as exc:
            if len(ops) == 1 or isinstance(exc, ServiceUnavailable):
                return [exc] * len(ops)
            log.warning("journal_batch_failed", ops=len(ops), error=repr(exc.__cause__ or exc))
            errors: list[AgentcronError | None] = []
            for op in ops:
                try:
                    await self._transaction([op])
                except AgentcronError as single:  # the failure belongs to this caller alone
                    errors.append(single)
                else:
                    errors.append(op.failure)
            return errors
        return [op.failure for op in ops]

    async def _transaction(self, ops: list[WriteOp[Any]]) -> None:
        """One transaction for ``ops``; raises the project's error (``map_postgres_errors``).

        ``on_commit`` hears the duration of each committed one (a bug in it is ignored)."""
        began = time.perf_counter()
        for op in ops:
            op.failure = None
        conn = self._conn
        try:
            with map_postgres_errors():
                if conn is None or conn.is_closed():  # lost: the next batch reconnects
                    self._conn = None
                    conn = self._conn = await self._connect()
                async with conn.transaction():
                    for _, group in groupby(ops, key=type):
                        members = list(group)
                        kind = type(members[0])
                        if kind.batchable:
                            await kind.apply(conn, members)
                        else:
                            for member in members:
                                await kind.apply(conn, [member])
        except ServiceUnavailable:
            self._drop_if_broken()
            raise
        except Exception as exc:  # a bug in an op: that caller's JournalError, not the writer's end
            raise translate(exc) from exc
        self.transactions += 1
        if self._on_commit is not None:
            with contextlib.suppress(Exception):
                self._on_commit(time.perf_counter() - began)

    def _drop_if_broken(self) -> None:
        """After a connection-level failure, forget a connection that cannot be used again."""
        conn = self._conn
        if conn is not None and (conn.is_closed() or conn.is_in_transaction()):
            conn.terminate()
            self._conn = None
