"""Scheduler benchmark: a fire storm, startup at 100,000 deployments, and idle CPU.

``python -m bench.scheduler [--quick]`` prints one table:

- **storm**: 10,000 deployments due in the same minute with jitter up to 10 s, the real clock
  (shifted so the minute starts a few seconds after setup), a real journal in a temporary
  directory and a launcher that answers at once. Lag = when ``create_session`` was called minus
  the fire's due time (nominal occurrence + the deployment's jitter offset); "all completed" =
  when every run is durably completed, after the last due time.
- **startup**: a fresh process opens a journal holding 100,000 deployments (a realistic mix of
  expressions and time zones) and starts the scheduler: time to ``task_status.started()`` and the
  process's RSS right after.
- **idle**: CPU the same kind of process uses over 60 idle seconds with 10,000 deployments (all
  due far in the future), reported per minute.

``--quick``: one storm, 20,000 deployments for startup, a 10 s idle window (scaled to a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import structlog

from agentcron import ids
from agentcron.config import Declarations
from agentcron.core.jitter import jitter_offset
from agentcron.core.models import AgentRef, Deployment, Schedule
from agentcron.daemon import build_stack
from agentcron.errors import InvalidRequest
from agentcron.journal import Journal, SqliteJournal
from agentcron.launchers.base import SessionRequest
from agentcron.logs import configure_logging
from bench.common import Row, Spread, process_usage, render_rows

MAX_JITTER = 10.0
LEAD = 6.0  # seconds between the start of setup and the storm's minute (setup takes ~2 s)

_ZONES = [
    "UTC", "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
    "America/Sao_Paulo", "America/Santiago", "America/Toronto", "Europe/London", "Europe/Dublin",
    "Europe/Berlin", "Europe/Paris", "Europe/Madrid", "Europe/Warsaw", "Europe/Kyiv",
    "Africa/Cairo", "Africa/Lagos", "Africa/Johannesburg", "Asia/Kolkata", "Asia/Dubai",
    "Asia/Singapore", "Asia/Shanghai", "Asia/Tokyo", "Asia/Seoul", "Asia/Jakarta",
    "Australia/Sydney", "Australia/Lord_Howe", "Australia/Perth", "Pacific/Auckland",
    "Pacific/Honolulu",
]  # fmt: skip


class OffsetClock:
    """The system clock shifted by a fixed offset, so a storm's minute need not be waited for."""

    def __init__(self, offset: timedelta) -> None:
        self._offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class InstantLauncher:
    """Answers every creation at once and notes when each call began."""

    def __init__(self, clock: OffsetClock) -> None:
        self._clock = clock
        self.calls: dict[str, datetime] = {}
        self.all_called = anyio.Event()
        self.expected = 0

    async def resolve_agent(self, agent_id: str, version: int | None) -> AgentRef:
        if agent_id != "agent_bench":
            raise InvalidRequest(f"agent: unknown agent {agent_id!r}")
        return AgentRef(id=agent_id, version=version or 1)

    async def validate_environment(self, environment_id: str) -> None:
        return None

    async def create_session(self, request: SessionRequest) -> str:
        self.calls[request.deployment_id] = self._clock.now()
        if len(self.calls) >= self.expected:
            self.all_called.set()
        return ids.new_id(ids.SESSION)

    async def validate_vaults(self, vault_ids: Sequence[str]) -> None:
        """Every vault is fine here."""

    def unavailable_reason(self) -> str | None:
        return None

    def reload(self, declarations: Declarations) -> None:
        """Nothing declared locally."""

    async def aclose(self) -> None:
        return None


def make_deployment(now: datetime, expression: str, timezone: str, index: int) -> Deployment:
    """A deployment as the service stores it, with a realistic payload."""
    return Deployment(
        id=ids.new_id(ids.DEPLOYMENT),
        name=f"report {index}",
        description="Summarise yesterday's incidents and open a pull request with the changes.",
        agent=AgentRef(id="agent_bench", version=3),
        environment_id="env_bench",
        initial_events=[
            {
                "type": "user.message",
                "content": [{"type": "text", "text": "Write the daily report for team " * 4}],
            }
        ],
        metadata={"team": f"team-{index % 50}", "tier": "gold"},
        schedule=Schedule(expression=expression, timezone=timezone),
        created_at=now,
        updated_at=now,
    )


def realistic_schedules(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """A few hundred distinct expressions across ~30 zones, plus some unique ones."""
    shapes = [
        "{m} {h} * * *", "{m} {h} * * 1-5", "{m} */2 * * *", "*/15 * * * *", "{m} * * * *",
        "{m} {h} 1 * *", "{m} {h} * * 0", "{m} {h},{h2} * * *", "0 {h} 1,15 * *",
    ]  # fmt: skip
    common: list[str] = []
    for _ in range(300):
        h = rng.randrange(24)
        common.append(rng.choice(shapes).format(m=rng.randrange(60), h=h, h2=(h + 12) % 24))
    result = []
    for _ in range(count):
        if rng.random() < 0.05:
            expression = f"{rng.randrange(60)} {rng.randrange(24)} {rng.randrange(1, 29)} * *"
        else:
            expression = rng.choice(common)
        result.append((expression, rng.choice(_ZONES)))
    return result


async def insert_all(journal: Journal, deployments: Sequence[Deployment]) -> None:
    """Insert concurrently in chunks (the journal group-commits concurrent writes)."""
    for start in range(0, len(deployments), 4096):
        async with anyio.create_task_group() as tg:
            for deployment in deployments[start : start + 4096]:
                tg.start_soon(journal.insert_deployment, deployment)


def quiet_logging() -> None:
    """The daemon's JSON log pipeline, written to /dev/null (its cost is part of the fire)."""
    configure_logging("info", "json")
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=open(os.devnull, "w"))  # noqa: SIM115
    )


# --- storm ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StormResult:
    n: int
    lag_ms: Spread
    completed_after_last_due_s: float
    runs: int
    missed: int
    transactions: int
    cpu_per_fire_us: float


async def storm(n: int, directory: Path) -> StormResult:
    quiet_logging()
    real_now = datetime.now(UTC)
    minute = (real_now + timedelta(minutes=2)).replace(second=0, microsecond=0)
    clock = OffsetClock(minute - timedelta(seconds=LEAD) - real_now)
    expression = f"{minute.minute} {minute.hour} * * *"
    created = clock.now() - timedelta(hours=1)
    deployments = [make_deployment(created, expression, "UTC", i) for i in range(n)]
    async with SqliteJournal.open(directory / "journal.db") as journal:
        await insert_all(journal, deployments)
        launcher = InstantLauncher(clock)
        launcher.expected = n
        scheduler = build_stack(
            journal=journal,
            launcher=launcher,
            clock=clock,
            max_deployments=n,
            max_jitter=MAX_JITTER,
        ).scheduler
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            cpu_before = time.process_time()  # every thread of the process: loop, reader, writer
            transactions_before = journal.transactions
            with anyio.fail_after(LEAD + MAX_JITTER + 60):
                await launcher.all_called.wait()
                await scheduler.idle()
            done_at = clock.now()
            cpu_s = time.process_time() - cpu_before
            transactions = journal.transactions - transactions_before
            health = scheduler.health()
            tg.cancel_scope.cancel()
    due = {d.id: minute + timedelta(seconds=jitter_offset(d.id, MAX_JITTER)) for d in deployments}
    lags = [
        (at - due[deployment_id]).total_seconds() * 1000
        for deployment_id, at in launcher.calls.items()
    ]
    return StormResult(
        n=n,
        lag_ms=Spread.of(lags),
        completed_after_last_due_s=(done_at - max(due.values())).total_seconds(),
        runs=int(health["succeeded"]),
        missed=int(health["missed"]),
        transactions=transactions,
        cpu_per_fire_us=cpu_s / n * 1_000_000,
    )


# --- startup and idle, each in a fresh process --------------------------------------------------


async def populate(path: Path, n: int, far_future: bool = False) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC) - timedelta(seconds=30)
    if far_future:
        schedules = [("0 0 1 1 *", rng.choice(_ZONES)) for _ in range(n)]
    else:
        schedules = realistic_schedules(n, rng)
    deployments = [make_deployment(now, e, z, i) for i, (e, z) in enumerate(schedules)]
    async with SqliteJournal.open(path) as journal:
        await insert_all(journal, deployments)


async def child(path: Path, idle_window: float) -> dict[str, Any]:
    """Open the journal, start the scheduler, report startup time, RSS and idle CPU."""
    quiet_logging()
    started = time.perf_counter()
    clock = OffsetClock(timedelta(0))
    async with SqliteJournal.open(path) as journal:
        launcher = InstantLauncher(clock)
        scheduler = build_stack(
            journal=journal,
            launcher=launcher,
            clock=clock,
            max_deployments=1_000_000,
            max_jitter=MAX_JITTER,
        ).scheduler
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            startup_s = time.perf_counter() - started
            usage = process_usage(os.getpid())
            load_started = time.perf_counter()  # what the journal's part of the startup costs
            await journal.schedule_rows()
            load_s = time.perf_counter() - load_started
            cpu_before = time.process_time()
            if idle_window > 0:
                await anyio.sleep(idle_window)
            idle_cpu_s = time.process_time() - cpu_before
            scheduled = scheduler.health()["scheduled"]
            tg.cancel_scope.cancel()
    return {
        "startup_s": startup_s,
        "load_s": load_s,
        "rss_mb": usage.rss_mb,
        "hwm_mb": usage.hwm_mb,
        "idle_cpu_s": idle_cpu_s,
        "scheduled": scheduled,
    }


def run_child(path: Path, idle_window: float) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.scheduler", "--child", str(path), str(idle_window)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the benchmark child failed:\n{completed.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# --- the table --------------------------------------------------------------------------------


def median_of(results: Sequence[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in results))


def storm_rows(directory: Path, repeats: int) -> list[Row]:
    results = []
    for index in range(repeats):
        (directory / f"storm{index}").mkdir()
        results.append(anyio.run(storm, 10_000, directory / f"storm{index}"))
    case = f"storm N=10,000, jitter<{MAX_JITTER:g}s (median of {repeats})"

    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    return [
        Row(bench="scheduler", case=case, metric="fire lag p50",
            value=med([r.lag_ms.p50 for r in results]), unit="ms"),
        Row(bench="scheduler", case=case, metric="fire lag p99",
            value=med([r.lag_ms.p99 for r in results]), unit="ms", target="< 20 ms"),
        Row(bench="scheduler", case=case, metric="fire lag max",
            value=med([r.lag_ms.max for r in results]), unit="ms"),
        Row(bench="scheduler", case=case, metric="all completed after last due",
            value=med([r.completed_after_last_due_s for r in results]), unit="s",
            target="< 1 s"),
        Row(bench="scheduler", case=case, metric="runs / missed",
            value=f"{min(r.runs for r in results)}/{max(r.missed for r in results)}"),
        Row(bench="scheduler", case=case, metric="write transactions (claims+completions)",
            value=med([float(r.transactions) for r in results])),
        Row(bench="scheduler", case=case, metric="CPU per fire (all threads)",
            value=med([r.cpu_per_fire_us for r in results]), unit="µs"),
    ]  # fmt: skip


def startup_rows(directory: Path, n: int, repeats: int) -> list[Row]:
    path = directory / "startup.db"
    anyio.run(populate, path, n)
    starts = [run_child(path, 0.0) for _ in range(repeats)]
    case = f"startup N={n:,} (median of {repeats})"
    return [
        Row(bench="scheduler", case=case, metric="open journal + build heap",
            value=median_of(starts, "startup_s"), unit="s", target="< 3 s"),
        Row(bench="scheduler", case=case, metric="  of which journal.schedule_rows()",
            value=median_of(starts, "load_s"), unit="s"),
        Row(bench="scheduler", case=case, metric="RSS after startup",
            value=median_of(starts, "rss_mb"), unit="MB", target="< 300 MB"),
        Row(bench="scheduler", case=case, metric="RSS peak (VmHWM)",
            value=median_of(starts, "hwm_mb"), unit="MB"),
    ]  # fmt: skip


def idle_rows(directory: Path, window: float) -> list[Row]:
    path = directory / "idle.db"
    anyio.run(populate, path, 10_000, True)
    idle = run_child(path, window)
    per_minute = idle["idle_cpu_s"] * 60.0 / window
    return [
        Row(bench="scheduler", case=f"idle N=10,000 ({window:g} s window)",
            metric="CPU per idle minute", value=per_minute, unit="s", target="< 0.3 s")
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler")
    parser.add_argument("--quick", action="store_true", help="one short run of each case")
    parser.add_argument("--only", choices=["storm", "startup", "idle"], help="run one case")
    parser.add_argument("--child", nargs=2, metavar=("JOURNAL", "IDLE_S"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(anyio.run(child, Path(args.child[0]), float(args.child[1]))))
        return 0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="agentcron-bench-") as tmp:
        directory = Path(tmp)
        if args.only in (None, "storm"):
            rows += storm_rows(directory, 1 if args.quick else 3)
        if args.only in (None, "startup"):
            rows += startup_rows(
                directory, 20_000 if args.quick else 100_000, 1 if args.quick else 3
            )
        if args.only in (None, "idle"):
            rows += idle_rows(directory, 10.0 if args.quick else 60.0)
    print(render_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
