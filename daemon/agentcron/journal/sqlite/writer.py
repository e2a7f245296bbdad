"""Group commit: one writer task turns many concurrent writes into few transactions.

Every write to the journal is a ``WriteOp`` handed to ``GroupCommitWriter.submit``. The single
writer task (``run``, started in the journal's task group) takes everything queued since its
last commit, applies it inside one ``BEGIN IMMEDIATE ... COMMIT`` in the writer's own thread
(consecutive ops of one kind together, e.g. one ``executemany`` for a thousand claims) and
only then resolves each caller's future, so an ``await`` returns after *its* transaction is
durable (``synchronous=FULL``). If a batch fails, it is rolled back and its ops are retried one
transaction each, so one bad op fails alone. A record nobody waits for (``submit_nowait``)
rides in the same batches; its failure is logged.

``map_sqlite_errors`` is the one boundary where ``sqlite3`` exceptions become the project's.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import groupby
from typing import Any, ClassVar, Generic, Self, TypeVar

import anyio
import anyio.abc
import structlog

from agentcron.clock import Clock
from agentcron.errors import AgentcronError, JournalError, NotFound, ServiceUnavailable
from agentcron.journal.batches import fail_queued, settle_batch, write_failure_after

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
R = TypeVar("R")

_UNAVAILABLE = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "a disk I/O error occurred",
    "SQLITE_BUSY": "the database is locked by another process",
    "SQLITE_LOCKED": "the database is locked",
    "SQLITE_READONLY": "the database file is read-only",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_NOMEM": "out of memory",
    "SQLITE_PROTOCOL": "a locking protocol error occurred",
    "SQLITE_CORRUPT": "the database file is corrupt",
    "SQLITE_NOTADB": "the file is not a SQLite database",
}


def _translate(exc: sqlite3.Error | ValueError) -> AgentcronError:
    """The project's error for a foreign database error (see ``map_sqlite_errors``)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, reason in _UNAVAILABLE.items():
        if name.startswith(prefix):
            return ServiceUnavailable(f"journal unavailable: {reason} ({name})")
    if isinstance(exc, sqlite3.IntegrityError) and "FOREIGN KEY" in str(exc):
        # Only runs reference another row (their deployment), and deployments are never
        # deleted: the run named a deployment that does not exist.
        return NotFound("deployment not found (the run names no stored deployment)")
    if isinstance(exc, sqlite3.Error):
        return JournalError(f"journal error: {exc}")
    return JournalError(f"journal error: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def map_sqlite_errors() -> Iterator[None]:
    """Raise the project's error for a ``sqlite3`` (or sqlite3's ``ValueError``) failure.

    Disk full, I/O errors, locks, unreadable or corrupt files are ``ServiceUnavailable`` (503):
    the request was fine, the journal cannot take it now. A run naming an unknown deployment
    is ``NotFound``. Anything else is a ``JournalError``. The project's own errors pass.
    """
    try:
        yield
    except AgentcronError:
        raise
    except (sqlite3.Error, ValueError) as exc:
        raise _translate(exc) from exc


class WriteOp(Generic[R]):
    """One write whose committed result is an ``R``; subclasses implement ``apply`` for a run
    of consecutive ops of their kind.

    ``apply`` runs in the writer's thread, inside the open transaction, and stores each op's
    result in ``op.result``; raising fails the whole batch (which is then retried op by op).
    """

    batchable: ClassVar[bool] = True
    result: R

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[Self]) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """What this write was, for the log line of a failure nobody waited for."""
        return type(self).__name__


class GroupCommitWriter:
    """The single writer task over ``conn`` (a connection in autocommit mode).

    A batch is applied by one call into the writer's own thread (``BEGIN`` ... ``COMMIT``,
    and the op-by-op retry of a failed batch), so a transaction costs the event loop one
    hand-off, however many statements it runs. Only that thread touches ``conn`` while the
    writer runs.

    ``on_commit(seconds)`` is told how long each committed transaction took (a metric).

    ``pace`` (seconds, on ``clock``) spaces transactions in a burst: when writes were queued
    while the last transaction committed, the next one begins no sooner than ``pace`` after
    the last began, so the batch gathers what arrives meanwhile (fewer, larger transactions:
    less CPU per write). A write that finds the writer idle commits at once, so lone and
    sequential writes never wait for the pace.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        clock: Clock,
        max_batch: int = 4096,
        pace: float = 0.0,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        self._conn = conn
        self._on_commit = on_commit
        self._clock = clock
        self._max_batch = max_batch
        self._pace = pace
        self._queue: list[tuple[WriteOp[Any], asyncio.Future[Any] | None]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._stopped = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        self.transactions = 0
        """Write transactions committed so far (the group-commit counter)."""
        self.write_failure: str | None = None
        """Why the latest batch could not be written (disk full, I/O error, lock): set when a
        write fails with ``ServiceUnavailable``, cleared by the next batch that commits."""

    async def call(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``function(conn)`` in the writer's thread (for opening, closing and backups)."""
        loop = asyncio.get_running_loop()
        with map_sqlite_errors():
            return await loop.run_in_executor(self._thread, function, self._conn)

    async def submit(self, op: WriteOp[R]) -> R:
        """Queue ``op``; return its result once its transaction has committed."""
        if self._closing or self._loop is None:
            raise JournalError("the journal is closed")
        future: asyncio.Future[R] = self._loop.create_future()
        self._queue.append((op, future))
        self._wakeup.set()
        return await future

    def submit_nowait(self, op: WriteOp[Any]) -> None:
        """Queue ``op`` without waiting for it; it commits in order with what was queued before.

        A failure is logged (``journal_write_failed``, with the op's ``describe()``), since no
        caller is there to see it. Raises ``JournalError`` if the writer is closed.
        """
        if self._closing or self._loop is None:
            raise JournalError("the journal is closed")
        self._queue.append((op, None))
        self._wakeup.set()

    async def close(self) -> None:
        """Commit everything already queued, stop ``run``, close the connection."""
        self._closing = True
        self._wakeup.set()
        if self._loop is not None:
            await self._stopped.wait()
        try:
            await self.call(_close)
        finally:
            self._thread.shutdown(wait=False)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer task: commit what is queued until ``close``; start it in a task group.

        Cancelled from outside, it fails what is still queued (``JournalError``).
        """
        self._loop = asyncio.get_running_loop()
        task_status.started()
        try:
            await self._commit_until_closed()
        finally:
            self._closing = True
            fail_queued(self._queue)
            self._queue.clear()
            self._stopped.set()

    async def _commit_until_closed(self) -> None:
        loop = asyncio.get_running_loop()
        clock, pace = self._clock, self._pace
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            started: datetime | None = None
            while self._queue:
                if started is not None and pace > 0 and not self._closing:
                    # Writes arrived while the last transaction committed: a burst. Let the
                    # batch gather until ``pace`` after that transaction began.
                    elapsed = (clock.now() - started).total_seconds()
                    delay = min(pace, pace - elapsed)  # a wall-clock step never waits longer
                    if delay > 0:
                        await clock.sleep(delay)
                started = clock.now()
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                ops = [op for op, _ in batch]
                errors = await loop.run_in_executor(self._thread, self._commit_batch, ops)
                self.write_failure = write_failure_after(self.write_failure, errors)
                settle_batch(batch, errors)
            if self._closing:
                return

    def _commit_batch(self, ops: list[WriteOp[Any]]) -> list[AgentcronError | None]:
        """In the writer's thread: one transaction for ``ops``, or one each if that fails.

        Returns, per op, the error its caller gets (``None``: committed, see ``op.result``).
        """
        try:
            self._transaction(ops)
        except Exception as exc:  # the whole batch failed: retry each op alone
            if len(ops) == 1:
                return [_own_error(exc)]
            log.warning("journal_batch_failed", ops=len(ops), error=repr(exc.__cause__ or exc))
            errors: list[AgentcronError | None] = []
            for op in ops:
                try:
                    self._transaction([op])
                except Exception as single:  # the failure belongs to this caller alone
                    errors.append(_own_error(single))
                else:
                    errors.append(None)
            return errors
        return [None] * len(ops)

    def _transaction(self, ops: list[WriteOp[Any]]) -> None:
        """One transaction for ``ops``; raises the project's error (``map_sqlite_errors``).

        ``on_commit`` hears the duration of each committed one (a bug in it is ignored)."""
        began = time.perf_counter()
        with map_sqlite_errors():
            self._apply(ops)
        self.transactions += 1
        if self._on_commit is not None:
            with contextlib.suppress(Exception):
                self._on_commit(time.perf_counter() - began)

    def _apply(self, ops: list[WriteOp[Any]]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for _, group in groupby(ops, key=type):
                members = list(group)
                kind = type(members[0])
                if kind.batchable:
                    kind.apply(conn, members)
                else:
                    for member in members:
                        kind.apply(conn, [member])
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have ended the transaction; then there is nothing to undo.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise


def _own_error(exc: Exception) -> AgentcronError:
    """What a writer's caller sees: database errors arrive mapped; anything else (a bug in an
    op) is a ``JournalError`` for that caller, never the end of the writer."""
    if isinstance(exc, AgentcronError):
        return exc
    return JournalError(f"journal error: {type(exc).__name__}: {exc}")


def _close(conn: sqlite3.Connection) -> None:
    conn.close()
