"""The peer: APScheduler 3.11 doing the storm's work, in its own process so RSS is comparable.

``AsyncIOScheduler`` with a ``SQLAlchemyJobStore`` on a SQLite file; N jobs with
``CronTrigger(minute="*", jitter=max_jitter)`` (every minute, spread like our per-deployment
jitter), ``misfire_grace_time`` 60 s and ``coalesce`` as in our defaults. Each job writes one
durable row (sqlite3, WAL, ``synchronous=FULL``). Measured: setup (adding the N jobs to the
running scheduler), the lag of each job's start behind its scheduled (jittered) run time for the
first whole minute after setup, the time until every row of that minute is committed after the
last due time, and the process's RSS and CPU.

``python -m bench.peer_apscheduler [--quick]`` runs it on its own; ``run_peer()`` is what
``python -m bench peer`` calls. Needs the ``bench`` extra (APScheduler and SQLAlchemy).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bench.common import Row, Spread, host_steal_s, process_usage, render_rows

MISFIRE_GRACE = 60
MARGIN = 2.0  # seconds between the end of setup and the measured minute


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerResult:
    n: int
    setup_s: float
    lag_ms: Spread
    completed_after_last_due_s: float
    runs: int
    missed: int
    rss_mb: float
    hwm_mb: float
    cpu_s: float
    minute: str
    steal_s: float = 0.0  # CPU the hypervisor took from both cores during the run


# --- the worker process ---------------------------------------------------------------------

_db: sqlite3.Connection | None = None
_starts: dict[str, list[float]] = defaultdict(list)
_commits: dict[str, list[float]] = defaultdict(list)


async def storm_job(index: int) -> None:
    """The job: note when it started, then write and commit one durable row."""
    started = time.time()
    assert _db is not None
    _db.execute("INSERT INTO runs (job, started_at) VALUES (?, ?)", (index, started))
    _db.commit()
    job_id = f"job{index}"
    _starts[job_id].append(started)
    _commits[job_id].append(time.time())


def _next_minute(after: float) -> float:
    return (math.floor(after / 60) + 1) * 60.0


async def _worker(n: int, max_jitter: float, directory: Path) -> PeerResult:
    global _db  # noqa: PLW0603 - the job function is referenced by name from the job store
    _db = sqlite3.connect(directory / "runs.db", isolation_level="DEFERRED")
    _db.execute("PRAGMA journal_mode=WAL")
    _db.execute("PRAGMA synchronous=FULL")
    _db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, job INTEGER, started_at REAL)")
    _db.commit()

    scheduled: dict[str, list[float]] = defaultdict(list)
    missed = 0

    def on_event(event: JobEvent) -> None:
        nonlocal missed
        if event.code == EVENT_JOB_SUBMITTED:
            for when in event.scheduled_run_times:
                scheduled[event.job_id].append(when.timestamp())
        else:
            missed += 1

    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{directory / 'jobs.sqlite'}")},
        job_defaults={"misfire_grace_time": MISFIRE_GRACE, "coalesce": True},
        timezone=UTC,
    )
    scheduler.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED)
    scheduler.start()
    setup_started = time.perf_counter()
    for index in range(n):
        scheduler.add_job(
            "bench.peer_apscheduler:storm_job",
            CronTrigger(minute="*", timezone=UTC, jitter=max_jitter or None),
            args=[index],
            id=f"job{index}",
        )
        if index % 256 == 255:
            await asyncio.sleep(0)  # let due jobs run, as a live scheduler would
    setup_s = time.perf_counter() - setup_started
    minute = _next_minute(time.time() + MARGIN)
    deadline = minute + max_jitter + MISFIRE_GRACE + 30

    def in_minute(times: list[float]) -> list[float]:
        return [t for t in times if minute <= t < minute + 60]

    while time.time() < deadline:
        done = sum(1 for job_id in scheduled for t in in_minute(scheduled[job_id]))
        if time.time() > minute + max_jitter and done + missed >= n:
            finished = sum(
                1
                for job_id, times in _commits.items()
                for t in times
                if t >= minute and job_id in scheduled
            )
            if finished >= done:
                break
        await asyncio.sleep(0.2)
    usage = process_usage_self()
    scheduler.shutdown(wait=False)

    lags: list[float] = []
    last_due = -math.inf
    last_commit = -math.inf
    for job_id, times in scheduled.items():
        due = in_minute(times)
        if not due:
            continue
        starts = [s for s in _starts.get(job_id, []) if s >= due[0] - 1]
        commits = [c for c in _commits.get(job_id, []) if c >= due[0] - 1]
        if not starts or not commits:
            continue
        lags.append((starts[0] - due[0]) * 1000)
        last_due = max(last_due, due[0])
        last_commit = max(last_commit, commits[0])
    return PeerResult(
        n=n,
        setup_s=setup_s,
        lag_ms=Spread.of(lags),
        completed_after_last_due_s=last_commit - last_due if lags else math.nan,
        runs=len(lags),
        missed=missed,
        rss_mb=usage["rss_mb"],
        hwm_mb=usage["hwm_mb"],
        cpu_s=usage["cpu_s"],
        minute=datetime.fromtimestamp(minute, UTC).isoformat(),
    )


def worker_main(n: int, max_jitter: float, directory: Path) -> int:
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    result = asyncio.run(_worker(n, max_jitter, directory))
    print(json.dumps(asdict(result)))
    return 0


def process_usage_self() -> dict[str, float]:
    usage = process_usage(os.getpid())
    return {"rss_mb": usage.rss_mb, "hwm_mb": usage.hwm_mb, "cpu_s": usage.cpu_s}


# --- the parent side ------------------------------------------------------------------------


def run_peer(n: int, *, max_jitter: float = 10.0) -> PeerResult:
    """Run the APScheduler storm of ``n`` jobs in a fresh subprocess and return its numbers."""
    steal_before = host_steal_s()
    with tempfile.TemporaryDirectory(prefix="agentcron-peer-") as directory:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.peer_apscheduler",
                "--worker",
                "--n",
                str(n),
                "--max-jitter",
                str(max_jitter),
                "--directory",
                directory,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60 * 30,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"the APScheduler worker failed:\n{completed.stderr[-4000:]}")
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    data["lag_ms"] = Spread(**data["lag_ms"])
    return replace(PeerResult(**data), steal_s=host_steal_s() - steal_before)


def peer_rows(result: PeerResult) -> list[Row]:
    case = f"apscheduler N={result.n:,}"

    def row(metric: str, value: float | str, unit: str = "", target: str = "") -> Row:
        return Row(bench="peer", case=case, metric=metric, value=value, unit=unit, target=target)

    lag = result.lag_ms
    return [
        row("setup (add N jobs)", result.setup_s, "s"),
        row("fire lag p50", lag.p50, "ms"),
        row("fire lag p99", lag.p99, "ms"),
        row("fire lag max", lag.max, "ms"),
        row("all done after last due", result.completed_after_last_due_s, "s"),
        row("runs / missed", f"{result.runs}/{result.missed}"),
        row("RSS peak (VmHWM)", result.hwm_mb, "MB"),
        row("CPU (whole run)", result.cpu_s, "s"),
        row("host steal, both cores, whole run", result.steal_s, "s"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_apscheduler")
    parser.add_argument("--quick", action="store_true", help="N=1,000 only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-jitter", type=float, default=10.0)
    parser.add_argument("--directory", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        # Under ``python -m`` this module is ``__main__``; the job store imports the job by its
        # name, so run the worker in that module object for the job to see the same globals.
        module = importlib.import_module("bench.peer_apscheduler")
        return int(module.worker_main(args.n, args.max_jitter, args.directory))
    sizes = [1_000] if args.quick else [1_000, 10_000]
    rows: list[Row] = []
    for n in sizes:
        rows += peer_rows(run_peer(n, max_jitter=args.max_jitter))
    print(render_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
