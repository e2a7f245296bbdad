"""Benchmark: the journal (``python -m bench.journal [--quick]``).

1. **Group commit.** 1,000 concurrent callers each claim a scheduled run and complete it, over
   and over, through ``Journal.claim_run`` / ``Journal.complete_run`` (every ``await`` returns
   after its transaction is durable: WAL, ``synchronous=FULL``). Side by side, in the same run
   and on the same schema, the ceiling: plain ``sqlite3`` ``executemany`` of the same rows, in
   batches of 1,000, one transaction for the claims and one for the completions of a batch
   (claims must be durable before sessions are created), at the same durability.
2. **List latency.** A journal filled with 1,000,000 completed runs (bulk insert), then pages of
   100 through ``DeploymentService.list_runs``: the first page, a later page (cursor), and
   filtered by ``deployment_id``, ``has_error``, ``trigger_type`` and a combination. Median of
   repeats.

``--quick`` uses 20,000 runs for the throughput and 200,000 for the list latency.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.fakes import FakeClock, RecordingLauncher

from agentcron import ids
from agentcron.core.models import AgentRef, Deployment, Schedule, TriggerType
from agentcron.core.timeutil import to_micros
from agentcron.journal import SqliteJournal
from agentcron.runtime.service import DeploymentService
from bench.common import render_table

T0 = datetime(2026, 5, 1, tzinfo=UTC)
CALLERS = 1_000
BATCH = 1_000
DEPLOYMENTS = 1_000
AGENT = AgentRef(id="agent_bench", version=1)


def make_deployment(index: int) -> Deployment:
    return Deployment(
        id=ids.new_id(ids.DEPLOYMENT),
        name=f"bench {index}",
        description=None,
        agent=AGENT,
        environment_id="env_bench",
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
        schedule=Schedule(expression="* * * * *", timezone="UTC"),
        created_at=T0,
        updated_at=T0,
    )


@asynccontextmanager
async def prepared_journal(
    path: Path, count: int
) -> AsyncIterator[tuple[SqliteJournal, list[Deployment]]]:
    """A journal at ``path`` holding ``count`` deployments, open for the ``async with``."""
    async with SqliteJournal.open(path) as journal:
        deployments = [make_deployment(i) for i in range(count)]
        await asyncio.gather(*(journal.insert_deployment(d) for d in deployments))
        yield journal, deployments


# --- 1. group commit -----------------------------------------------------------------------


async def group_commit(path: Path, runs: int) -> dict[str, float]:
    async with prepared_journal(path, DEPLOYMENTS) as (journal, deployments):
        return await _group_commit(journal, deployments, runs)


async def _group_commit(
    journal: SqliteJournal, deployments: list[Deployment], runs: int
) -> dict[str, float]:
    per_caller = runs // CALLERS
    transactions_before = journal.transactions

    async def caller(index: int) -> None:
        deployment = deployments[index % len(deployments)]
        for round_ in range(per_caller):
            scheduled_at = T0 + timedelta(minutes=round_ * CALLERS + index)
            claim = await journal.claim_run(
                deployment_id=deployment.id,
                agent=AGENT,
                trigger_type=TriggerType.SCHEDULE,
                scheduled_at=scheduled_at,
                claimed_at=scheduled_at,
            )
            assert claim is not None
            await journal.complete_run(
                claim,
                session_id="sesn_bench",
                error=None,
                completed_at=scheduled_at,
                last_run_at=scheduled_at,
            )

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    seconds = time.perf_counter() - started
    transactions = journal.transactions - transactions_before
    done = per_caller * CALLERS
    return {"runs": done, "seconds": seconds, "transactions": transactions}


def ceiling(path: Path, deployment_ids: list[str], runs: int) -> dict[str, float]:
    """Plain sqlite3: the same rows, batches of 1,000, claim and completion transactions."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    started = time.perf_counter()
    transactions = 0
    for start in range(0, runs, BATCH):
        claims = []
        completions = []
        last_runs = []
        for number in range(start, min(start + BATCH, runs)):
            run_id = ids.new_id(ids.RUN)
            at = to_micros(T0 + timedelta(minutes=number))
            deployment_id = deployment_ids[number % len(deployment_ids)]
            claims.append((run_id, deployment_id, AGENT.id, AGENT.version, "schedule", at, at))
            completions.append(("sesn_bench", None, None, at, run_id))
            last_runs.append((at, run_id))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO runs (id, deployment_id, agent_id, agent_version, trigger_type, "
            "scheduled_at, claimed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            claims,
        )
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "UPDATE runs SET session_id = ?, error_type = ?, error_message = ?, created_at = ? "
            "WHERE id = ? AND created_at IS NULL",
            completions,
        )
        conn.executemany(
            "UPDATE deployments SET last_run_at = max(coalesce(last_run_at, 0), ?) "
            "WHERE id = (SELECT deployment_id FROM runs WHERE id = ?)",
            last_runs,
        )
        conn.execute("COMMIT")
        transactions += 2
    seconds = time.perf_counter() - started
    conn.close()
    return {"runs": runs, "seconds": seconds, "transactions": transactions}


async def throughput(directory: Path, runs: int, repeats: int) -> list[list[str]]:
    """Both paths ``repeats`` times, interleaved, each on a fresh file; medians."""
    ours_rates: list[float] = []
    plain_rates: list[float] = []
    ratios: list[float] = []
    transactions = {"ours": 0.0, "plain": 0.0}
    for repeat in range(repeats):
        ours = await group_commit(directory / f"group-{repeat}.db", runs)
        async with prepared_journal(directory / f"plain-{repeat}.db", DEPLOYMENTS) as prepared:
            deployments = prepared[1]
        plain = ceiling(directory / f"plain-{repeat}.db", [d.id for d in deployments], runs)
        ours_rates.append(ours["runs"] / ours["seconds"])
        plain_rates.append(plain["runs"] / plain["seconds"])
        ratios.append(ours_rates[-1] / plain_rates[-1])
        transactions = {"ours": ours["transactions"], "plain": plain["transactions"]}
    ours_rate = statistics.median(ours_rates)
    plain_rate = statistics.median(plain_rates)
    return [
        [
            "Journal.claim_run + complete_run, 1,000 callers",
            f"{runs:,}",
            f"{ours_rate:,.0f}",
            f"{min(ours_rates):,.0f} - {max(ours_rates):,.0f}",
            f"{transactions['ours']:,.0f}",
            f"{statistics.median(ratios):.0%}",
        ],
        [
            "ceiling: sqlite3 executemany, batches of 1,000",
            f"{runs:,}",
            f"{plain_rate:,.0f}",
            f"{min(plain_rates):,.0f} - {max(plain_rates):,.0f}",
            f"{transactions['plain']:,.0f}",
            "100%",
        ],
    ]


# --- 2. list latency -----------------------------------------------------------------------


def bulk_fill(path: Path, deployments: list[Deployment], runs: int) -> None:
    """Completed runs, one per second, spread over the deployments; 10% errors, 20% manual."""
    rng = random.Random(42)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # filling only; the measured reads do not care
    conn.execute("BEGIN")
    base = to_micros(T0)
    chunk: list[tuple[Any, ...]] = []
    for number in range(runs):
        deployment = deployments[rng.randrange(len(deployments))]
        created_at = base + number * 1_000_000
        manual = rng.random() < 0.2
        failed = rng.random() < 0.1
        chunk.append(
            (
                ids.new_id(ids.RUN),
                deployment.id,
                AGENT.id,
                AGENT.version,
                "manual" if manual else "schedule",
                None if manual else created_at,
                created_at,
                None if failed else "sesn_bench",
                "session_rate_limited" if failed else None,
                "rate limited" if failed else None,
                created_at,
            )
        )
        if len(chunk) == 50_000:
            _insert_runs(conn, chunk)
            chunk = []
    _insert_runs(conn, chunk)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _insert_runs(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO runs (id, deployment_id, agent_id, agent_version, trigger_type, "
        "scheduled_at, claimed_at, session_id, error_type, error_message, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


async def list_latency(directory: Path, runs: int, repeats: int) -> list[list[str]]:
    path = directory / "list.db"
    async with prepared_journal(path, DEPLOYMENTS) as (_, deployments):
        pass
    fill_started = time.perf_counter()
    bulk_fill(path, deployments, runs)
    fill_seconds = time.perf_counter() - fill_started
    async with SqliteJournal.open(path) as journal:
        return await _list_latency(journal, deployments, runs, repeats, fill_seconds)


async def _list_latency(
    journal: SqliteJournal,
    deployments: list[Deployment],
    runs: int,
    repeats: int,
    fill_seconds: float,
) -> list[list[str]]:
    service = DeploymentService(journal, RecordingLauncher(), FakeClock(T0))
    second_page = (await service.list_runs(limit=100)).next_page
    target = deployments[0].id
    cases: list[tuple[str, dict[str, Any]]] = [
        ("first page, no filter", {}),
        ("second page (cursor)", {"page": second_page}),
        ("deployment_id", {"deployment_id": target}),
        ("has_error=true", {"has_error": True}),
        ("trigger_type=manual", {"trigger_type": "manual"}),
        ("deployment_id + has_error=true", {"deployment_id": target, "has_error": True}),
        (
            "created_at[lt] half-way back",
            {"created_at_lt": T0 + timedelta(seconds=runs // 2)},
        ),
    ]
    rows = []
    for name, filters in cases:
        samples = []
        count = 0
        for _ in range(repeats):
            started = time.perf_counter()
            page = await service.list_runs(limit=100, **filters)
            samples.append((time.perf_counter() - started) * 1000)
            count = len(page.data)
        rows.append(
            [
                name,
                f"{count}",
                f"{statistics.median(samples):.2f}",
                f"{min(samples):.2f}",
                f"{max(samples):.2f}",
            ]
        )
    counting = time.perf_counter()
    total = (await service.counts())["runs"]
    counts_ms = (time.perf_counter() - counting) * 1000
    rows.append(["(bulk fill of the journal, s)", f"{total:,}", f"{fill_seconds:.1f}", "", ""])
    rows.append(["(service.counts(), ms)", "", f"{counts_ms:.1f}", "", ""])
    return rows


async def main(quick: bool) -> None:
    runs = 20_000 if quick else 100_000
    list_runs = 200_000 if quick else 1_000_000
    repeats = 21 if quick else 51
    throughput_repeats = 3 if quick else 5
    with tempfile.TemporaryDirectory(prefix="agentcron-bench-journal-") as name:
        directory = Path(name)
        print(
            f"group commit: {runs:,} runs (claim + completion), WAL, synchronous=FULL, "
            f"median of {throughput_repeats} interleaved repeats"
        )
        print(
            render_table(
                [
                    "path",
                    "runs",
                    "median runs/s",
                    "range runs/s",
                    "transactions",
                    "median ratio to ceiling",
                ],
                await throughput(directory, runs, throughput_repeats),
            )
        )
        print()
        print(f"list latency: page of 100 out of {list_runs:,} runs, median of {repeats}")
        print(
            render_table(
                ["filter", "items", "median ms", "min ms", "max ms"],
                await list_latency(directory, list_runs, repeats),
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    asyncio.run(main(parser.parse_args().quick))
