"""Retention benchmark: pruning a million runs while a 10,000-deployment storm fires, and the
journal's size at steady state.

``python -m bench.retention [--quick]`` prints one table:

- **prune during a storm**: a journal file seeded (straight SQL) with ``RUNS`` runs, all
  older than the default 90 days, spread over the storm's ``N`` deployments. The storm is
  ``bench.scheduler``'s: ``N`` deployments due in one minute with jitter up to 10 s, the real
  scheduler and fire path on the real clock (shifted), a launcher that answers at once. Case
  *without pruning*: the storm alone. Case *with pruning*: the daemon's ``Pruner`` (default
  ``[retention]``, default batch sizing and rest, yielding to fires in flight) starts before
  the minute and works through the backlog while the storm fires; runs/s pruned = the runs it
  removed from its start until 5 s after the storm, over that time (it yields to the storm, so
  this is the rate a busy daemon gets, not the file's limit). Fire lag = launcher call minus
  due time (nominal + jitter), p50/p99 of each case, and their ratio; the cases interleave,
  ``--repeats`` (3) storms each, and every figure is the median over them. Writer hold = the
  time the delete statements of one batch took inside their write transaction
  (``Pruned.held``); its max is the largest of all repeats.
- **steady state**: a fake clock at 1,000 deployments per minute, every run claimed and
  completed through the journal (group commit, as the fire path does), the pruner's pass every
  simulated minute (the default ``interval``) with ``runs_max_count`` = ``CAP``; the file's
  size (``journal.db`` + WAL, checkpointed) once the count is reached and again after twice as
  many runs more went through: pruned pages are reused, so it stays put. Bytes per kept run =
  the final size / the runs kept; the size at the
  defaults (``runs_max_count`` = 1,000,000, ``runs`` = 90 days) and with only the 90 days
  (``runs_max_count = "off"``: 90 x 1,440 x 1,000 = 129.6 M runs) are that figure times the
  runs kept.

``--quick``: 100,000 runs and a 2,000-deployment storm; steady state at CAP = 20,000.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from tests.support.fakes import FakeClock

from agentcron import ids
from agentcron.config import RetentionConfig
from agentcron.core.jitter import jitter_offset
from agentcron.core.models import AgentRef, Deployment, TriggerType
from agentcron.core.timeutil import to_micros
from agentcron.daemon import build_stack, fires_busy
from agentcron.journal import SqliteJournal
from agentcron.runtime.retention import Pruner
from bench.common import Row, Spread, render_rows
from bench.scheduler import (
    MAX_JITTER,
    InstantLauncher,
    OffsetClock,
    insert_all,
    make_deployment,
    quiet_logging,
)

LEAD = 25.0
"""Seconds from the scheduler's start to the storm's minute (start-up, and the pruner in full
swing before the minute)."""
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseResult:
    lag_ms: Spread
    fired: int
    pruned: int
    prune_s: float
    holds_ms: Spread
    batches: int


def seed(path: Path, deployments: Sequence[Deployment], runs: int, minute: datetime) -> None:
    """``runs`` completed runs, 100 to 130 days before ``minute``, round-robin."""
    start = to_micros(minute - 130 * DAY)
    step = (30 * 86_400 * 1_000_000) // runs
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA cache_size = -524288")
        batch = []
        for n in range(runs):
            deployment = deployments[n % len(deployments)]
            created = start + n * step
            batch.append(
                (
                    ids.new_id(ids.RUN),
                    deployment.id,
                    deployment.agent.id,
                    deployment.agent.version,
                    "schedule",
                    created - 1_000_000,
                    created - 500_000,
                    ids.new_id(ids.SESSION),
                    created,
                )
            )
            if len(batch) == 100_000:
                _insert(conn, batch)
                batch = []
        _insert(conn, batch)


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO runs (id, deployment_id, agent_id, agent_version, trigger_type, "
        "scheduled_at, claimed_at, session_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
        rows,
    )


async def storm_case(
    path: Path, deployments: Sequence[Deployment], minute: datetime, *, prune: bool
) -> CaseResult:
    n = len(deployments)
    clock = OffsetClock(minute - timedelta(seconds=LEAD) - datetime.now(UTC))
    async with SqliteJournal.open(path) as journal:
        launcher = InstantLauncher(clock)
        launcher.expected = n
        stack = build_stack(
            journal=journal,
            launcher=launcher,
            clock=clock,
            max_deployments=n,
            max_jitter=MAX_JITTER,
        )
        pruner = Pruner(
            journal=journal,
            clock=clock,
            config=RetentionConfig(),
            busy=fires_busy(stack, clock),
        )
        async with anyio.create_task_group() as tg:
            await tg.start(stack.scheduler.run)
            began = time.perf_counter()
            if prune:
                await anyio.sleep(max(0.0, LEAD - 15.0))  # start-up done; the minute in 15 s
                began = time.perf_counter()
                tg.start_soon(pruner.prune_once)
            with anyio.fail_after(LEAD + MAX_JITTER + 120):
                await launcher.all_called.wait()
                await stack.scheduler.idle()
            await anyio.sleep(5.0 if prune else 0.0)  # and a little after the storm
            pruned, prune_s = pruner.removed, time.perf_counter() - began
            tg.cancel_scope.cancel()
    due = {d.id: minute + timedelta(seconds=jitter_offset(d.id, MAX_JITTER)) for d in deployments}
    lags = [(at - due[d]).total_seconds() * 1000 for d, at in launcher.calls.items()]
    return CaseResult(
        lag_ms=Spread.of(lags),
        fired=len(launcher.calls),
        pruned=pruned,
        prune_s=prune_s,
        holds_ms=Spread.of([hold * 1000 for hold in pruner.holds]),
        batches=len(pruner.holds),
    )


def median_case(cases: Sequence[CaseResult]) -> CaseResult:
    """Per figure, the median over the repeats (p99 lag included: the median of p99s)."""

    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    return CaseResult(
        lag_ms=Spread(
            count=cases[0].lag_ms.count,
            p50=med([c.lag_ms.p50 for c in cases]),
            p99=med([c.lag_ms.p99 for c in cases]),
            max=med([c.lag_ms.max for c in cases]),
        ),
        fired=min(c.fired for c in cases),
        pruned=int(med([c.pruned for c in cases])),
        prune_s=med([c.prune_s for c in cases]),
        holds_ms=Spread(
            count=cases[0].holds_ms.count,
            p50=med([c.holds_ms.p50 for c in cases]),
            p99=med([c.holds_ms.p99 for c in cases]),
            max=max(c.holds_ms.max for c in cases),
        ),
        batches=int(med([c.batches for c in cases])),
    )


def _file_bytes(path: Path) -> int:
    return sum(
        os.stat(f"{path}{suffix}").st_size
        for suffix in ("", "-wal")
        if os.path.exists(f"{path}{suffix}")
    )


async def steady_state(directory: Path, cap: int) -> tuple[int, int, float]:
    """1,000 deployments a minute on a fake clock, a pass a minute pruning to ``cap``: (file
    bytes when the cap is reached, file bytes after twice as many runs more, bytes/kept run)."""
    quiet_logging()
    path = directory / "steady.db"
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    per_minute = 1000
    deployments = [
        make_deployment(clock.now(), "* * * * *", "UTC", index) for index in range(per_minute)
    ]
    agent = AgentRef(id="agent_bench", version=3)
    sizes: list[int] = []
    async with SqliteJournal.open(path, clock=clock) as journal:
        await insert_all(journal, deployments)
        pruner = Pruner(
            journal=journal,
            clock=clock,
            config=RetentionConfig(runs_max_count=cap),
            pause=0.0,
            rest_ratio=0.0,
        )
        minutes = 3 * cap // per_minute
        for minute in range(1, minutes + 1):
            scheduled = clock.now().replace(second=0, microsecond=0)

            async def fire(deployment: Deployment, at: datetime = scheduled) -> None:
                claim = await journal.claim_run(
                    deployment_id=deployment.id,
                    agent=agent,
                    trigger_type=TriggerType.SCHEDULE,
                    scheduled_at=at,
                    claimed_at=clock.now(),
                )
                assert claim is not None
                await journal.complete_run(
                    claim,
                    session_id=ids.new_id(ids.SESSION),
                    error=None,
                    completed_at=clock.now(),
                    last_run_at=at,
                )

            await asyncio.gather(*(fire(d) for d in deployments))
            await clock.advance(60)
            await pruner.prune_once()  # the default interval: one pass a minute
            if minute % 10 == 0:
                await journal.run_on_writer(
                    lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                )
                sizes.append(_file_bytes(path))
        kept = (await journal.counts())["runs"]
    reached = sizes[len(sizes) // 3 - 1]
    final = sizes[-1]
    return reached, final, final / kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention")
    parser.add_argument("--quick", action="store_true", help="100,000 runs, a 2,000 storm")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--n", type=int, default=None, help="storm size")
    parser.add_argument("--cap", type=int, default=None, help="steady-state runs_max_count")
    parser.add_argument("--repeats", type=int, default=3, help="storms per case (medians)")
    parser.add_argument("--only", choices=["storm", "steady"], help="run one of the two cases")
    args = parser.parse_args(argv)
    runs = args.runs or (100_000 if args.quick else 1_000_000)
    n = args.n or (2_000 if args.quick else 10_000)
    cap = args.cap or (20_000 if args.quick else 200_000)
    quiet_logging()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="agentcron-bench-") as tmp:
        directory = Path(tmp)
        if args.only in (None, "storm"):
            rows += storm_rows(directory, runs, n, args.repeats)
            print(render_rows(rows), flush=True)
        if args.only in (None, "steady"):
            rows += steady_rows(directory, cap)
    print(render_rows(rows))
    return 0


def storm_rows(directory: Path, runs: int, n: int, repeats: int) -> list[Row]:
    """The storms with and without the pruner (see the module docstring)."""
    seeded = directory / "seeded.db"
    real_now = datetime.now(UTC)
    created = real_now - timedelta(hours=1)
    minute = (real_now + timedelta(minutes=30)).replace(second=0, microsecond=0)
    expression = f"{minute.minute} {minute.hour} * * *"
    deployments = [make_deployment(created, expression, "UTC", i) for i in range(n)]

    async def prepare() -> None:
        async with SqliteJournal.open(seeded) as journal:
            await insert_all(journal, deployments)

    anyio.run(prepare)
    began = time.perf_counter()
    seed(seeded, deployments, runs, minute)
    seed_s = time.perf_counter() - began
    results: dict[bool, list[CaseResult]] = {False: [], True: []}
    for _ in range(repeats):
        for prune in (False, True):  # interleaved: the machine's noise hits both alike
            path = directory / f"case-{int(prune)}.db"
            shutil.copyfile(seeded, path)  # a closed file: a plain copy is exact here
            results[prune].append(
                anyio.run(functools.partial(storm_case, path, deployments, minute, prune=prune))
            )
            path.unlink()
    plain, pruning = median_case(results[False]), median_case(results[True])
    case = f"{runs:,} runs due, storm N={n:,}"
    return [
        Row(bench="retention", case=case, metric="seed (SQL insert)", value=seed_s, unit="s"),
        Row(
            bench="retention",
            case=case,
            metric="runs pruned",
            value=float(pruning.pruned),
        ),
        Row(
            bench="retention",
            case=case,
            metric="prune rate (storm included)",
            value=pruning.pruned / pruning.prune_s if pruning.prune_s else float("nan"),
            unit="runs/s",
        ),
        Row(
            bench="retention",
            case=case,
            metric="writer hold per batch p50 / p99 / max",
            value=f"{pruning.holds_ms.p50:.2f} / {pruning.holds_ms.p99:.2f} / "
            f"{pruning.holds_ms.max:.2f}",
            unit="ms",
            target="max ~10 ms",
        ),
        Row(bench="retention", case=case, metric="batches", value=float(pruning.batches)),
        Row(
            bench="retention",
            case=case,
            metric="fire lag p50 without / with pruning",
            value=f"{plain.lag_ms.p50:.2f} / {pruning.lag_ms.p50:.2f}",
            unit="ms",
        ),
        Row(
            bench="retention",
            case=case,
            metric="fire lag p99 without / with pruning",
            value=f"{plain.lag_ms.p99:.2f} / {pruning.lag_ms.p99:.2f}",
            unit="ms",
        ),
        Row(
            bench="retention",
            case=case,
            metric="fire lag p99 ratio with / without",
            value=pruning.lag_ms.p99 / plain.lag_ms.p99 if plain.lag_ms.p99 else float("nan"),
            unit="x",
            target="<= 1.2",
        ),
        Row(
            bench="retention",
            case=case,
            metric="fired (both cases)",
            value=f"{plain.fired:,} / {pruning.fired:,}",
        ),
    ]


def steady_rows(directory: Path, cap: int) -> list[Row]:
    """The journal's size at steady state (see the module docstring)."""
    reached, final, per_run = anyio.run(steady_state, directory, cap)
    steady = f"1,000 deployments/min, fake clock, runs_max_count={cap:,}"
    return [
        Row(
            bench="retention",
            case=steady,
            metric="file size at the cap / after 2x the cap more written",
            value=f"{reached / 2**20:.1f} / {final / 2**20:.1f}",
            unit="MiB",
        ),
        Row(bench="retention", case=steady, metric="bytes per kept run", value=per_run, unit="B"),
        Row(
            bench="retention",
            case="defaults (runs_max_count 1,000,000; 90 days)",
            metric="journal size, extrapolated",
            value=per_run * 1_000_000 / 2**30,
            unit="GiB",
        ),
        Row(
            bench="retention",
            case='90 days only (runs_max_count "off"), 129.6 M runs',
            metric="journal size, extrapolated",
            value=per_run * 129_600_000 / 2**30,
            unit="GiB",
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
