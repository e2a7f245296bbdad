"""Benchmark: group commit on PostgreSQL beside SQLite (``python -m bench.journal_pg``).

1,000 concurrent callers each claim a scheduled run and complete it (with ``last_run_at``),
over and over, through ``Journal.claim_run`` / ``Journal.complete_run``; every ``await``
returns once its transaction is durable. In one run, interleaved, each repeat on a fresh
store:

- ``SqliteJournal`` (WAL, ``synchronous=FULL``) on a file in a temporary directory;
- ``PostgresJournal`` (one writer connection, ``unnest`` batches) on a local server over its
  Unix socket, ``fsync`` and ``synchronous_commit`` on;
- for scale, the same writes with no group commit of ours: an asyncpg pool of 16 connections,
  one transaction per claim and one per completion (the server still shares WAL flushes
  between concurrent commits).

The server is a throwaway cluster (``initdb`` in a temporary directory, Unix socket only, as
in the tests: ``tests/support/postgres.py``), removed at the end, with a fresh database per
repeat. ``--quick`` runs 10,000 runs, 3 repeats; the full run 50,000 runs, 5 repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
from tests.support.postgres import PostgresCluster, start_cluster

from agentcron.core.models import TriggerType
from agentcron.journal import Journal, SqliteJournal
from agentcron.journal.postgres.store import PostgresJournal
from bench.common import render_table
from bench.journal import AGENT, CALLERS, DEPLOYMENTS, T0, make_deployment

POOL = 16


async def journal_path(journal: Journal, runs: int) -> dict[str, float]:
    """The 1,000 callers through ``journal``; runs, seconds and transactions."""
    deployments = [make_deployment(i) for i in range(DEPLOYMENTS)]
    await asyncio.gather(*(journal.insert_deployment(d) for d in deployments))
    per_caller = runs // CALLERS
    before = journal.transactions

    async def caller(index: int) -> None:
        deployment = deployments[index % len(deployments)]
        for round_ in range(per_caller):
            at = T0 + timedelta(minutes=round_ * CALLERS + index)
            claim = await journal.claim_run(
                deployment_id=deployment.id,
                agent=AGENT,
                trigger_type=TriggerType.SCHEDULE,
                scheduled_at=at,
                claimed_at=at,
            )
            assert claim is not None
            await journal.complete_run(
                claim, session_id="sesn_bench", error=None, completed_at=at, last_run_at=at
            )

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    seconds = time.perf_counter() - started
    return {
        "runs": per_caller * CALLERS,
        "seconds": seconds,
        "transactions": journal.transactions - before,
    }


async def pool_path(url: str, runs: int) -> dict[str, float]:
    """The same writes on the same (migrated) schema, one transaction each, from a pool."""
    async with PostgresJournal.open(url) as journal:
        deployments = [make_deployment(i) for i in range(DEPLOYMENTS)]
        await asyncio.gather(*(journal.insert_deployment(d) for d in deployments))
    pool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL)
    per_caller = runs // CALLERS
    transactions = 0

    async def caller(index: int) -> None:
        nonlocal transactions
        deployment = deployments[index % len(deployments)]
        for round_ in range(per_caller):
            at = T0 + timedelta(minutes=round_ * CALLERS + index)
            run_id = f"drun_pool_{index}_{round_}"
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO runs (id, deployment_id, agent_id, agent_version, "
                    "trigger_type, scheduled_at, claimed_at) "
                    "VALUES ($1, $2, $3, $4, 'schedule', $5, $5) "
                    "ON CONFLICT ON CONSTRAINT runs_occurrence DO NOTHING",
                    run_id,
                    deployment.id,
                    AGENT.id,
                    AGENT.version,
                    at,
                )
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE runs SET session_id = 'sesn_bench', created_at = $2 "
                    "WHERE id = $1 AND created_at IS NULL",
                    run_id,
                    at,
                )
                await conn.execute(
                    "UPDATE deployments SET last_run_at = greatest(last_run_at, $2) WHERE id = $1",
                    deployment.id,
                    at,
                )
            transactions += 2

    started = time.perf_counter()
    try:
        await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    finally:
        await pool.close()
    seconds = time.perf_counter() - started
    return {"runs": per_caller * CALLERS, "seconds": seconds, "transactions": transactions}


async def measure(cluster: PostgresCluster, runs: int, repeats: int) -> list[list[str]]:
    results: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": [], "pool": []}

    async def sqlite_run(repeat: int, directory: Path) -> dict[str, float]:
        async with SqliteJournal.open(directory / f"journal-{repeat}.db") as journal:
            return await journal_path(journal, runs)

    async def postgres_run(repeat: int, directory: Path) -> dict[str, float]:
        async with PostgresJournal.open(cluster.url(cluster.create_database())) as journal:
            return await journal_path(journal, runs)

    async def pool_run(repeat: int, directory: Path) -> dict[str, float]:
        return await pool_path(cluster.url(cluster.create_database()), runs)

    paths: dict[str, Callable[[int, Path], Awaitable[dict[str, float]]]] = {
        "sqlite": sqlite_run,
        "postgres": postgres_run,
        "pool": pool_run,
    }
    with tempfile.TemporaryDirectory(prefix="agentcron-bench-journal-pg-") as name:
        for repeat in range(repeats):
            for kind, run in paths.items():
                results[kind].append(await run(repeat, Path(name)))
    labels = {
        "sqlite": "SqliteJournal (WAL, synchronous=FULL)",
        "postgres": "PostgresJournal (one writer, unnest batches)",
        "pool": f"asyncpg pool of {POOL}, a transaction per write",
    }
    sqlite_rate = statistics.median(r["runs"] / r["seconds"] for r in results["sqlite"])
    rows = []
    for kind, label in labels.items():
        rates = [r["runs"] / r["seconds"] for r in results[kind]]
        rate = statistics.median(rates)
        rows.append(
            [
                label,
                f"{int(results[kind][0]['runs']):,}",
                f"{rate:,.0f}",
                f"{min(rates):,.0f} - {max(rates):,.0f}",
                f"{statistics.median(r['transactions'] for r in results[kind]):,.0f}",
                f"{rate / sqlite_rate:.0%}",
            ]
        )
    return rows


async def main(quick: bool) -> None:
    runs = 10_000 if quick else 50_000
    repeats = 3 if quick else 5
    cluster = start_cluster()
    try:
        print(
            f"group commit: {runs:,} runs (claim + completion) from {CALLERS:,} callers, "
            f"median of {repeats} interleaved repeats"
        )
        print(
            render_table(
                ["path", "runs", "median runs/s", "range runs/s", "transactions", "vs SQLite"],
                await measure(cluster, runs, repeats),
            )
        )
    finally:
        cluster.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    asyncio.run(main(parser.parse_args().quick))
