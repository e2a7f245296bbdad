"""The journal file: opening, permissions, migrations, group commit, errors, query plans."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from structlog.testing import capture_logs

from agentcron import ids
from agentcron.clock import Clock, SystemClock
from agentcron.core.models import AgentRef, Deployment, Schedule, TriggerType
from agentcron.core.pagination import Position
from agentcron.core.timeutil import to_micros
from agentcron.errors import JournalError, NotFound, ServiceUnavailable
from agentcron.journal import Claim, DeploymentFilter, RunFilter, SqliteJournal
from agentcron.journal.sqlite.reads import deployments_query, runs_query
from agentcron.journal.sqlite.schema import SCHEMA_VERSION
from agentcron.journal.sqlite.writer import GroupCommitWriter, WriteOp
from tests.support.fakes import FakeClock, eventually

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def make_deployment(*, created_at: datetime = T0, scheduled: bool = True) -> Deployment:
    return Deployment(
        id=ids.new_id(ids.DEPLOYMENT),
        name="nightly",
        description=None,
        agent=AgentRef(id="agent_test", version=1),
        environment_id="env_test",
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
        schedule=Schedule(expression="0 * * * *", timezone="UTC") if scheduled else None,
        created_at=created_at,
        updated_at=created_at,
    )


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


async def test_open_creates_parent_directory_and_a_0600_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "journal.db"
    async with SqliteJournal.open(path) as journal:
        await journal.insert_deployment(make_deployment())
        assert journal.path == path
        assert journal.location == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = path.with_name("journal.db-wal")
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_open_tightens_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    async with SqliteJournal.open(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_empty_file_is_migrated_from_version_zero(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"")
    async with SqliteJournal.open(path) as journal:
        deployment = make_deployment()
        await journal.insert_deployment(deployment)
        assert await journal.get_deployment(deployment.id) == deployment
    assert user_version(path) == SCHEMA_VERSION


async def test_version_zero_database_is_migrated(tmp_path: Path) -> None:
    """A SQLite file at user_version 0 (e.g. created by hand) gets the whole schema."""
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    assert user_version(path) == 0
    async with SqliteJournal.open(path):
        pass
    assert user_version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"deployments", "runs", "sessions", "notes"} <= tables


async def test_reopening_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    deployment = make_deployment()
    async with SqliteJournal.open(path) as first:
        await first.insert_deployment(deployment)
    async with SqliteJournal.open(path) as second:
        assert await second.get_deployment(deployment.id) == deployment
    assert user_version(path) == SCHEMA_VERSION


async def test_newer_schema_version_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError) as caught:
        async with SqliteJournal.open(path):
            pass
    assert str(caught.value) == (
        f"journal.db was written by a newer agentcron (schema {SCHEMA_VERSION + 1}, this "
        f"version understands {SCHEMA_VERSION}); upgrade agentcron or restore a backup"
    )
    assert user_version(path) == SCHEMA_VERSION + 1  # left untouched


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a sqlite database, just some text" * 100)
    with pytest.raises(JournalError, match="cannot open the journal"):
        async with SqliteJournal.open(path):
            pass


async def test_group_commit_batches_concurrent_writes(journal: SqliteJournal) -> None:
    """200 concurrent claims commit in far fewer transactions than claims."""
    deployment = make_deployment()
    await journal.insert_deployment(deployment)
    before = journal.transactions
    claims = await asyncio.gather(
        *(
            journal.claim_run(
                deployment_id=deployment.id,
                agent=deployment.agent,
                trigger_type=TriggerType.SCHEDULE,
                scheduled_at=T0 + timedelta(minutes=i),
                claimed_at=T0,
            )
            for i in range(200)
        )
    )
    assert all(claim is not None for claim in claims)
    assert len({claim.run_id for claim in claims if claim is not None}) == 200
    transactions = journal.transactions - before
    assert 1 <= transactions < 20
    (row,) = await journal.schedule_rows()
    assert row.latest_scheduled_at == to_micros(T0 + timedelta(minutes=199))


@dataclasses.dataclass(eq=False)
class _TimedOp(WriteOp[None]):
    """Records when its transaction applied it and which transaction that was.

    A gated op keeps its transaction open (in the writer's thread) until ``release`` is set,
    after setting ``applying``: a test queues more writes in between, while it commits.
    """

    began: float = 0.0
    transaction: int = 0
    result: None = None
    applying: threading.Event | None = None
    release: threading.Event | None = None

    @classmethod
    def gated(cls) -> _TimedOp:
        return cls(applying=threading.Event(), release=threading.Event())

    @classmethod
    def apply(cls, conn: sqlite3.Connection, ops: Sequence[_TimedOp]) -> None:
        began = time.monotonic()
        for op in ops:
            op.began = began
            op.transaction = id(ops)
        for op in ops:
            if op.applying is not None and op.release is not None:
                op.applying.set()
                op.release.wait(timeout=10)


async def _queue_while_committing(first: _TimedOp, queue: Callable[[], object]) -> None:
    """Once ``first``'s transaction is applying it, ``queue()`` more writes (starting tasks
    that submit them); let it commit once all of them are queued."""
    assert first.applying is not None
    assert first.release is not None
    assert await anyio.to_thread.run_sync(first.applying.wait, 10), "first never applied"
    queue()
    await anyio.wait_all_tasks_blocked()  # every submitter now waits for its commit
    first.release.set()


@asynccontextmanager
async def _paced_writer(
    tmp_path: Path, pace: float, clock: Clock | None = None
) -> AsyncIterator[GroupCommitWriter]:
    """A writer on its own file, run in a task group like the journal runs it."""
    conn = sqlite3.connect(tmp_path / "paced.db", isolation_level=None, check_same_thread=False)
    writer = GroupCommitWriter(conn, clock=clock or SystemClock(), pace=pace)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        try:
            yield writer
        finally:
            await writer.close()


async def test_a_burst_is_paced_into_one_later_transaction(tmp_path: Path) -> None:
    """Writes queued while a transaction commits wait for the pace, then commit together."""
    async with _paced_writer(tmp_path, pace=0.3) as writer:
        first = _TimedOp.gated()
        burst = [_TimedOp() for _ in range(5)]

        def queue_burst() -> None:
            for op in burst:
                tg.start_soon(writer.submit, op)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.submit, first)
            await _queue_while_committing(first, queue_burst)
        assert len({op.transaction for op in burst}) == 1
        # The pace counts from when the writer began the first transaction, a thread hop
        # before ``first.began``: allow that hop (well under 5 ms), not a missing pace.
        assert burst[0].began - first.began >= 0.3 - 0.005


async def test_the_pace_is_kept_on_the_injected_clock(tmp_path: Path) -> None:
    """On a fake clock a burst's transaction waits until the clock has moved by the pace."""
    clock = FakeClock(T0)
    async with _paced_writer(tmp_path, pace=0.5, clock=clock) as writer:
        first = _TimedOp.gated()
        burst = [_TimedOp() for _ in range(3)]
        committed = anyio.Event()

        async def submit_burst() -> None:
            await asyncio.gather(*(writer.submit(op) for op in burst))
            committed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.submit, first)
            await _queue_while_committing(first, lambda: tg.start_soon(submit_burst))
            await eventually(lambda: clock.sleepers == 1, "the writer waits for the pace")
            assert not committed.is_set()
            assert burst[0].began == 0.0
            await clock.advance(0.5)
            await committed.wait()
        assert len({op.transaction for op in burst}) == 1


async def test_sequential_writes_are_not_paced(tmp_path: Path) -> None:
    """A write that finds the writer idle commits at once, however recent the last one."""
    async with _paced_writer(tmp_path, pace=5.0) as writer:
        started = time.monotonic()
        for _ in range(3):
            await writer.submit(_TimedOp())
        assert time.monotonic() - started < 2.5


async def test_a_failing_write_fails_alone_within_its_batch(journal: SqliteJournal) -> None:
    """A claim for an unknown deployment fails (404) while its batch-mates commit."""
    deployment = make_deployment()
    await journal.insert_deployment(deployment)

    async def claim(deployment_id: str, minute: int) -> Claim | None:
        return await journal.claim_run(
            deployment_id=deployment_id,
            agent=deployment.agent,
            trigger_type=TriggerType.SCHEDULE,
            scheduled_at=T0 + timedelta(minutes=minute),
            claimed_at=T0,
        )

    results = await asyncio.gather(
        claim(deployment.id, 1),
        claim("depl_missing", 2),
        claim(deployment.id, 3),
        return_exceptions=True,
    )
    assert isinstance(results[0], Claim)
    assert isinstance(results[1], NotFound)
    assert str(results[1]) == "deployment not found (the run names no stored deployment)"
    assert isinstance(results[2], Claim)


async def test_full_disk_is_service_unavailable(journal: SqliteJournal) -> None:
    """SQLITE_FULL (the file may not grow) surfaces as ServiceUnavailable, and the journal
    keeps working once space is back."""
    # Limit the writer connection's file size like a full disk (in the writer's own thread).
    pages = await journal.run_on_writer(lambda conn: conn.execute("PRAGMA page_count").fetchone())
    assert pages is not None
    await journal.run_on_writer(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages[0]}"))
    big = dataclasses.replace(make_deployment(), description="x" * 200_000)
    with pytest.raises(ServiceUnavailable, match="disk is full"):
        await journal.insert_deployment(big)
    await journal.run_on_writer(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    await journal.insert_deployment(big)
    assert await journal.get_deployment(big.id) == big


async def test_local_sessions_are_recorded(journal: SqliteJournal) -> None:
    journal.session_started(
        session_id="sesn_1", run_id="drun_1", deployment_id="depl_1", pid=4242, started_at=T0
    )
    await journal.flush()
    started = await journal.get_session("sesn_1")
    assert started is not None
    assert (started["pid"], started["exit_status"], started["ended_at"]) == (4242, None, None)
    journal.session_ended(session_id="sesn_1", exit_status=-15, ended_at=T0 + timedelta(1))
    await journal.flush()
    assert await journal.get_session("sesn_1") == {
        "session_id": "sesn_1",
        "run_id": "drun_1",
        "deployment_id": "depl_1",
        "pid": 4242,
        "exit_status": -15,
        "started_at": T0,
        "ended_at": T0 + timedelta(1),
        "end_reason": "exited",
        "signal": 15,
        "log_bytes": None,
        "host": None,
    }
    assert await journal.get_session("sesn_unknown") is None


async def test_session_records_commit_in_order_in_one_batch(journal: SqliteJournal) -> None:
    """Queued starts and ends of many sessions share transactions and keep their order."""
    before = journal.transactions
    for index in range(200):
        journal.session_started(
            session_id=f"sesn_{index}",
            run_id="drun_1",
            deployment_id="depl_1",
            pid=index,
            started_at=T0,
        )
        journal.session_ended(session_id=f"sesn_{index}", exit_status=index % 3, ended_at=T0)
    await journal.flush()
    assert journal.transactions - before <= 3
    for index in (0, 101, 199):
        record = await journal.get_session(f"sesn_{index}")
        assert record is not None
        assert (record["pid"], record["exit_status"]) == (index, index % 3)


async def test_a_failed_session_record_is_logged_and_fails_alone(journal: SqliteJournal) -> None:
    with capture_logs() as logs:
        journal.session_started(
            session_id="sesn_ok", run_id="drun_1", deployment_id="depl_1", pid=7, started_at=T0
        )
        journal.session_ended(session_id="sesn_unknown", exit_status=0, ended_at=T0)
        journal.session_ended(session_id="sesn_ok", exit_status=0, ended_at=T0)
        await journal.flush()
    failures = [entry for entry in logs if entry["event"] == "journal_write_failed"]
    assert failures == [
        {
            "event": "journal_write_failed",
            "log_level": "error",
            "write": "end of session sesn_unknown",
            "error": "session sesn_unknown not found",
        }
    ]
    record = await journal.get_session("sesn_ok")
    assert record is not None
    assert record["exit_status"] == 0


async def test_closed_journal_refuses_writes(tmp_path: Path) -> None:
    async with SqliteJournal.open(tmp_path / "journal.db") as journal:
        pass
    with pytest.raises(JournalError, match="closed"):
        await journal.insert_deployment(make_deployment())


# --- query plans ---------------------------------------------------------------------------

AFTER = Position(created_at=1, id="x")

DEPLOYMENT_FILTERS = {
    "default": (DeploymentFilter(), "deployments_live"),
    "include-archived": (DeploymentFilter(include_archived=True), "deployments_created"),
    "active": (DeploymentFilter(paused=False), "deployments_state"),
    "paused": (DeploymentFilter(paused=True), "deployments_state"),
    "agent": (DeploymentFilter(agent_id="agent_a"), "deployments_agent_live"),
    "agent-include-archived": (
        DeploymentFilter(agent_id="agent_a", include_archived=True),
        "deployments_agent",
    ),
    "agent-paused": (DeploymentFilter(agent_id="agent_a", paused=True), "deployments_agent_state"),
    "created-range": (DeploymentFilter(created_at_gte=1, created_at_lte=2), "deployments_live"),
    "agent-active-range": (
        DeploymentFilter(agent_id="a", paused=False, created_at_gte=1),
        "deployments_agent_state",
    ),
}

RUN_FILTERS = {
    "all": (RunFilter(), "runs_created"),
    "deployment": (RunFilter(deployment_id="depl_1"), "runs_deployment"),
    "has-error": (RunFilter(has_error=True), "runs_error"),
    "no-error": (RunFilter(has_error=False), "runs_error"),
    "trigger": (RunFilter(trigger_type="manual"), "runs_trigger"),
    "deployment-has-error": (RunFilter(deployment_id="depl_1", has_error=True), "runs_deployment"),
    "deployment-trigger": (
        RunFilter(deployment_id="depl_1", trigger_type="schedule"),
        "runs_deployment",
    ),
    "error-trigger": (RunFilter(has_error=True, trigger_type="schedule"), "runs_error"),
    "all-three": (
        RunFilter(deployment_id="depl_1", has_error=False, trigger_type="manual"),
        "runs_deployment",
    ),
    "created-gt-lt": (RunFilter(created_at_gt=1, created_at_lt=5), "runs_created"),
    "deployment-created-range": (
        RunFilter(deployment_id="d", created_at_gte=1, created_at_lte=5),
        "runs_deployment",
    ),
}


def assert_indexed_without_sort(plan: list[str], table: str, index: str) -> None:
    """One step, reading ``table`` through ``index`` in order: no table scan, no sorting."""
    assert len(plan) == 1, plan
    assert plan[0].startswith((f"SEARCH {table} USING INDEX {index} ", f"SCAN {table} USING"))
    assert f"USING INDEX {index}" in plan[0], plan
    assert "TEMP B-TREE" not in plan[0], plan


@pytest.mark.parametrize("name", list(DEPLOYMENT_FILTERS))
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "next-page"])
async def test_every_deployment_filter_uses_its_index_and_no_sort(
    journal: SqliteJournal, name: str, paged: bool
) -> None:
    flt, index = DEPLOYMENT_FILTERS[name]
    sql, params = deployments_query(flt, after=AFTER if paged else None, limit=21)
    assert_indexed_without_sort(await journal.explain(sql, params), "deployments", index)


@pytest.mark.parametrize("name", list(RUN_FILTERS))
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "next-page"])
async def test_every_run_filter_uses_its_index_and_no_sort(
    journal: SqliteJournal, name: str, paged: bool
) -> None:
    """Runs are the big table: every filter is a SEARCH on its index, never a SCAN."""
    flt, index = RUN_FILTERS[name]
    sql, params = runs_query(flt, after=AFTER if paged else None, limit=21)
    plan = await journal.explain(sql, params)
    assert_indexed_without_sort(plan, "runs", index)
    assert plan[0].startswith("SEARCH runs"), plan
