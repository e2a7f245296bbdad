"""Retention (issue 14, item 1): the pruner on a real journal file and a fake clock.

The big test seeds 200,000 runs and 5,000 session logs (with their rows) spread over half a
year, then prunes with the default ``[retention]`` while 180 every-minute deployments keep
firing, and checks that exactly what was due went: no open claim, no running session, no
newest run of a deployment nor its latest scheduled occurrence, and every occurrence of the
storm fired once. ``AGENTCRON_RETENTION_RUNS=1000000`` runs it bigger.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from agentcron import ids
from agentcron.config import Config, RetentionConfig, parse_config
from agentcron.core.models import AgentRef, TriggerType
from agentcron.core.timeutil import to_micros
from agentcron.daemon import reload
from agentcron.journal import SqliteJournal
from agentcron.journal.sqlite.retention import PRUNE_RUNS_CANDIDATES, RUN_CREATED_AT_RANK
from agentcron.runtime.retention import Pruner
from tests.support.fakes import FakeClock, RecordingLauncher
from tests.support.scheduler_rig import scheduler_rig, stored_deployment

NOW = datetime(2026, 6, 1, 11, 59, 30, tzinfo=UTC)
DAY = timedelta(days=1)
RUNS = int(os.environ.get("AGENTCRON_RETENTION_RUNS", "200000"))
LOGS = 5000
ACTIVE, STALE = 180, 20
AGENT = AgentRef(id="agent_test", version=1)


@dataclasses.dataclass
class Seeded:
    runs: list[tuple[str, str, int, int | None]]
    """(run id, deployment id, created_at, scheduled_at) in microseconds."""
    active: list[str]
    stale: list[str]
    sessions: list[tuple[str, int | None]]
    """(session id, ended_at)."""
    last_run_at: dict[str, int]


async def seed(path: Path, sessions_dir: Path) -> Seeded:
    """Deployments through the journal; runs, sessions and logs straight into the file."""
    active = [stored_deployment(NOW - 200 * DAY, "* * * * *") for _ in range(ACTIVE)]
    stale = [stored_deployment(NOW - 200 * DAY, "0 0 1 1 *") for _ in range(STALE)]
    async with SqliteJournal.open(path) as journal:
        for deployment in (*active, *stale):
            await journal.insert_deployment(deployment)
    deployments = [d.id for d in (*active, *stale)]
    per = RUNS // len(deployments)
    span = 180 * DAY
    runs: list[tuple[str, str, int, int | None]] = []
    rows = []
    last: dict[str, int] = {}
    for index, deployment_id in enumerate(deployments):
        stale_one = index >= ACTIVE
        start = NOW - span
        step = (80 * DAY if stale_one else span - timedelta(minutes=1)) / per
        for n in range(per):
            created = to_micros(start + step * n) + index
            manual = n % 10 == 9 or (stale_one and n == per - 1 and index % 2 == 0)
            scheduled = None if manual else created - 500_000
            run_id = ids.new_id(ids.RUN)
            runs.append((run_id, deployment_id, created, scheduled))
            rows.append(
                (
                    run_id,
                    deployment_id,
                    AGENT.id,
                    AGENT.version,
                    "manual" if manual else "schedule",
                    scheduled,
                    created - 1000,
                    "sesn_seeded",
                    created,
                )
            )
            last[deployment_id] = created
    sessions: list[tuple[str, int | None]] = []
    sessions_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # noqa: ASYNC240 - setup
    session_rows = []
    for n in range(LOGS):
        started = to_micros(NOW - 60 * DAY + (60 * DAY) * n / LOGS)
        ended = None if n % 50 == 0 else started + 60_000_000
        session_id = ids.new_id(ids.SESSION)
        sessions.append((session_id, ended))
        session_rows.append((session_id, "drun_x", deployments[0], 1000 + n, 0, started, ended))
        (sessions_dir / f"{session_id}.log").write_bytes(b"x" * 100)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB: the seeding's indexes stay cached
        conn.executemany(
            "INSERT INTO runs (id, deployment_id, agent_id, agent_version, trigger_type, "
            "scheduled_at, claimed_at, session_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.executemany(
            "UPDATE deployments SET last_run_at = ? WHERE id = ?",
            [(at, deployment_id) for deployment_id, at in last.items()],
        )
        conn.executemany(
            "INSERT INTO sessions (session_id, run_id, deployment_id, pid, exit_status, "
            "started_at, ended_at) VALUES (?,?,?,?,?,?,?)",
            session_rows,
        )
    return Seeded(
        runs=runs,
        active=[d.id for d in active],
        stale=[d.id for d in stale],
        sessions=sessions,
        last_run_at=last,
    )


def due_runs(seeded: Seeded, before: int) -> set[str]:
    """What the contract says may go: older than ``before``, neither the deployment's newest
    run nor its latest scheduled occurrence."""
    newest: dict[str, tuple[int, str]] = {}
    latest_scheduled: dict[str, int] = {}
    for run_id, deployment_id, created, scheduled in seeded.runs:
        newest[deployment_id] = max(newest.get(deployment_id, (0, "")), (created, run_id))
        if scheduled is not None:
            latest_scheduled[deployment_id] = max(latest_scheduled.get(deployment_id, 0), scheduled)
    return {
        run_id
        for run_id, deployment_id, created, scheduled in seeded.runs
        if created < before
        and newest[deployment_id][1] != run_id
        and (scheduled is None or scheduled != latest_scheduled[deployment_id])
    }


async def test_retention_prunes_exactly_what_is_due_while_a_storm_fires(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.db"
    sessions_dir = tmp_path / "state" / "sessions"
    seeded = await seed(path, sessions_dir)
    config = RetentionConfig()
    assert config.runs is not None
    assert config.sessions is not None
    runs_before = to_micros(NOW - timedelta(seconds=config.runs))
    sessions_before = to_micros(NOW - timedelta(seconds=config.sessions))
    expected_gone = due_runs(seeded, runs_before)
    assert len(expected_gone) > RUNS // 3  # a real backlog: about half the runs are due

    async with scheduler_rig(path, start=NOW) as rig:
        # open claims older than everything, on deployments that do not fire meanwhile
        open_claims = []
        for deployment_id in seeded.stale[:5]:
            claim = await rig.journal.claim_run(
                deployment_id=deployment_id,
                agent=AGENT,
                trigger_type=TriggerType.SCHEDULE,
                scheduled_at=NOW - 300 * DAY,
                claimed_at=NOW - 300 * DAY,
            )
            assert claim is not None
            open_claims.append(claim.run_id)
        firing = rig.stack.firing
        pruner = Pruner(
            journal=rig.journal,
            clock=rig.clock,
            config=config,
            sessions_dir=sessions_dir,
            busy=lambda: firing.stats.in_flight > 0,
            pause=0.0005,
            rest_ratio=0.5,  # the storm's minutes are squeezed; so is the rest between batches
        )
        done = anyio.Event()
        reports = []

        async def prune() -> None:
            reports.append(await pruner.prune_once())
            done.set()

        rig.tg.start_soon(prune)
        minutes = 0
        while not done.is_set() or minutes < 2:
            await rig.advance(60)  # a storm: every active deployment fires
            minutes += 1
            with anyio.move_on_after(0.25):  # the rest of the minute, squeezed
                await done.wait()
        report = reports[0]

        assert report.error is None
        assert report.runs == len(expected_gone)
        assert report.sessions == sum(
            1 for _, ended in seeded.sessions if ended is not None and ended < sessions_before
        )
        assert report.log_files == report.sessions
        assert report.batches > 10  # small batches, not one transaction
        on_disk = sum(p.stat().st_blocks * 512 for p in sessions_dir.iterdir())
        assert pruner.session_log_bytes == on_disk

        # every occurrence of the storm fired exactly once, pruning or not
        with sqlite3.connect(path) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM runs")}
            storm = conn.execute(
                "SELECT deployment_id, scheduled_at, count(*) FROM runs "
                "WHERE scheduled_at > ? GROUP BY deployment_id, scheduled_at",
                (to_micros(NOW),),
            ).fetchall()
            still_open = {
                row[0] for row in conn.execute("SELECT id FROM runs WHERE created_at IS NULL")
            }
            last_run_at = dict(conn.execute("SELECT id, last_run_at FROM deployments"))
            session_rows = {row[0] for row in conn.execute("SELECT session_id FROM sessions")}
        assert len(storm) == ACTIVE * minutes
        assert {count for _, _, count in storm} == {1}
        assert {deployment_id for deployment_id, _, _ in storm} == set(seeded.active)
        seeded_ids = {run[0] for run in seeded.runs}
        assert stored & seeded_ids == seeded_ids - expected_gone
        assert still_open == set(open_claims)
        # last_run_at: the seeded ones where nothing fired, the storm's latest elsewhere
        for deployment_id in seeded.stale:
            assert last_run_at[deployment_id] == seeded.last_run_at[deployment_id]
        latest_storm = to_micros(NOW.replace(second=0) + timedelta(minutes=minutes))
        for deployment_id in seeded.active:
            assert last_run_at[deployment_id] >= latest_storm
        # sessions: the ended, old ones went with their logs; running ones stayed, however old
        kept_sessions = {
            sid for sid, ended in seeded.sessions if ended is None or ended >= sessions_before
        }
        assert session_rows == kept_sessions
        assert {p.stem for p in sessions_dir.iterdir()} == kept_sessions
        assert any(ended is None and sid in kept_sessions for sid, ended in seeded.sessions)

        # a second pass, minutes later, removes exactly what came due meanwhile
        later = rig.clock.now()
        again = await pruner.prune_once()
        newly_due = due_runs(seeded, to_micros(later - timedelta(seconds=config.runs)))
        assert again.runs == len(newly_due - expected_gone)
        later_sessions = to_micros(later - timedelta(seconds=config.sessions))
        assert again.sessions == sum(
            1
            for _, ended in seeded.sessions
            if ended is not None and sessions_before <= ended < later_sessions
        )


async def test_runs_max_count_keeps_the_newest_runs(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    async with SqliteJournal.open(tmp_path / "journal.db") as journal:
        deployment = stored_deployment(NOW - DAY, "* * * * *")
        await journal.insert_deployment(deployment)
        created = []
        for n in range(1500):
            claim = await journal.claim_run(
                deployment_id=deployment.id,
                agent=AGENT,
                trigger_type=TriggerType.MANUAL,
                scheduled_at=None,
                claimed_at=NOW,
            )
            assert claim is not None
            run = await journal.complete_run(
                claim, session_id="s", error=None, completed_at=NOW - timedelta(seconds=n)
            )
            created.append(run)
        pruner = Pruner(
            journal=journal,
            clock=clock,
            config=RetentionConfig(runs=None, runs_max_count=1200),
            pause=0.0,
        )
        report = await pruner.prune_once()
        assert report.runs == 300
        # with both limits, whichever removes more applies: the count here, then the age
        pruner.reload(RetentionConfig(runs=90 * 86400.0, runs_max_count=1000))
        report = await pruner.prune_once()
        assert report.runs == 200
        left = await journal.counts()
        assert left["runs"] == 1000
        assert await journal.get_run(created[0].id) is not None  # the newest
        assert await journal.get_run(created[999].id) is not None
        assert await journal.get_run(created[1000].id) is None


def write_log(directory: Path, session_id: str, size: int, mtime: float) -> None:
    path = directory / f"{session_id}.log"
    path.write_bytes(b"y" * size)
    os.utime(path, (mtime, mtime))


async def test_session_logs_budget_prunes_oldest_ended_and_orphans_never_running(
    tmp_path: Path,
) -> None:
    """Over ``session_logs_max_bytes``, the oldest logs' ended sessions go first; a running
    session's log stays however old; an old log no session names goes too."""
    clock = FakeClock(NOW)
    directory = tmp_path / "sessions"
    directory.mkdir()
    base = NOW.timestamp()
    async with SqliteJournal.open(tmp_path / "journal.db") as journal:
        order = [ids.new_id(ids.SESSION) for _ in range(10)]
        for n, session_id in enumerate(order):
            journal.session_started(
                session_id=session_id, run_id="r", deployment_id="d", pid=n, started_at=NOW
            )
            if n != 0:  # the oldest log belongs to a session still running
                journal.session_ended(session_id=session_id, exit_status=0, ended_at=NOW)
            write_log(directory, session_id, 1024 * 1024, base - 3600 * (10 - n))
        await journal.flush()
        orphan = ids.new_id(ids.SESSION)
        write_log(directory, orphan, 10, base - 40 * 86400)  # older than `sessions`
        young_orphan = ids.new_id(ids.SESSION)
        write_log(directory, young_orphan, 10, base - 60)  # its row may still be on its way
        pruner = Pruner(
            journal=journal,
            clock=clock,
            config=RetentionConfig(session_logs_max_bytes=6 * 1024 * 1024),
            sessions_dir=directory,
            pause=0.0,
        )
        report = await pruner.prune_once()
        left = {path.stem for path in directory.iterdir()}
        # 10 MiB + 20 B over a 6 MiB budget: the 4 oldest files' bytes go, but the oldest
        # is running, so sessions 1-4 go now (the next pass may take one more)
        assert order[0] in left
        assert left >= set(order[5:])
        assert not left & set(order[1:4])
        assert orphan not in left
        assert young_orphan in left
        assert report.sessions >= 3
        assert await journal.get_session(order[0]) is not None
        assert await journal.get_session(order[1]) is None
        on_disk = sum(p.stat().st_blocks * 512 for p in directory.iterdir())
        assert pruner.session_log_bytes == on_disk
        health = await pruner.health()
        assert health["journal_bytes"] > 0
        assert health["last_prune"]["removed"]["sessions"] == report.sessions


async def test_sighup_applies_new_retention_values_and_wakes_the_pruner(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    async with SqliteJournal.open(tmp_path / "journal.db") as journal:
        pruner = Pruner(journal=journal, clock=clock, config=RetentionConfig(), pause=0.0)
        new = RetentionConfig(runs=7 * 86400.0, sessions=None, runs_max_count=None)
        config = dataclasses.replace(_config(tmp_path), retention=new)
        async with anyio.create_task_group() as tg:
            await tg.start(pruner.run)
            with anyio.fail_after(10):
                while pruner.last is None:  # noqa: ASYNC110 - polled state
                    await anyio.sleep(0.01)
            first = pruner.last
            reload(lambda: config, RecordingLauncher(), {}, pruner=pruner)
            with anyio.fail_after(10):
                while pruner.last is first:  # noqa: ASYNC110 - polled state
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert pruner.config == new


def _config(tmp_path: Path) -> Config:
    return parse_config({"daemon": {"state_dir": str(tmp_path)}}, environ={"HOME": str(tmp_path)})


async def test_sqlite_prune_reads_follow_indexes(tmp_path: Path) -> None:
    """The candidates are a range of ``runs_created`` (oldest first, no sort), their EXISTS
    checks are seeks; the delete finds rows by primary key."""
    path = tmp_path / "journal.db"
    async with SqliteJournal.open(path):
        pass
    with sqlite3.connect(path) as conn:
        plan = [
            row[3]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {PRUNE_RUNS_CANDIDATES}", {"before": 1, "limit": 10}
            )
        ]
        assert any("USING INDEX runs_created" in line for line in plan), plan
        assert any("runs_deployment" in line for line in plan), plan
        assert any("runs_occurrence" in line for line in plan), plan
        assert not any(line.startswith(("SCAN", "USE TEMP B-TREE")) for line in plan), plan
        rank = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {RUN_CREATED_AT_RANK}", (5,))]
        assert any("runs_created" in line for line in rank), rank
