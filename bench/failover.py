"""Failover: SIGKILL the leader of two real daemons on one PostgreSQL journal, again and again.

Two ``agentcrond`` processes (``tests.support.failover``) share a database of a throwaway
cluster (``tests.support.postgres``: Unix socket only, ``fsync`` on) with the default lease
(``lease_ttl = "10s"``) and sessions created on the loopback stand-in of the hosted API (in
this process; it counts every session it creates). Twenty every-minute deployments run on a
fast wall clock (speed 60: each fires every real second), so an occurrence is always due while
the leader is dead; ``misfire_grace`` is 15 fast minutes (15 real seconds, beyond a lease), so
every occurrence that came due during a failover must still be fired.

Each round waits a random 0.5-3.5 s (any phase of the renewal cycle), SIGKILLs the leader and
polls the database every 10 ms for the first run claimed at a newer epoch: the **failover
time** is from the kill to that claim's commit being visible. The killed daemon is started
again (it follows) before the next round. At the end both stop cleanly and the database is
read: duplicate occurrences, open claims, occurrences missing between each deployment's first
and last run (lost), runs per epoch, sessions created against runs recorded.

``python -m bench.failover [--quick] [--kills N] [--lease SECONDS]``; ``--quick`` is 3 kills
with a 2 s lease.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import anyio
import anyio.to_thread
import asyncpg
from tests.support.daemon_harness import create_body
from tests.support.failover import FastDaemon, journal_facts, start_daemons, wait_for_leader
from tests.support.hosted_api import HostedApi
from tests.support.postgres import start_cluster

from bench.common import Row, Spread, render_rows, scratch_dir

DEPLOYMENTS = 20
GRACE = "15m"


async def first_claim_after(url: str, epoch: int) -> float:
    """Poll until a run of an epoch above ``epoch`` is visible; the monotonic time then."""
    conn = await asyncpg.connect(url)
    try:
        # Polling another process's commits: there is no event to wait for.
        while not await conn.fetchval("SELECT 1 FROM runs WHERE epoch > $1 LIMIT 1", epoch):  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return time.monotonic()
    finally:
        await conn.close()


async def current_epoch(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT epoch FROM leases WHERE name = 'scheduler'"))
    finally:
        await conn.close()


async def run(kills: int, lease: float, seed: int) -> list[Row]:
    rng = random.Random(seed)
    base = scratch_dir("agentcron-failover-")
    cluster = await anyio.to_thread.run_sync(start_cluster)
    daemons: list[FastDaemon] = []
    times: list[float] = []
    delays: list[float] = []
    try:
        url = cluster.url(await anyio.to_thread.run_sync(cluster.create_database))
        async with HostedApi(record=False) as api:
            api.add_agent("agent_rec")
            api.add_environment("env_local")
            origin = time.time()

            def start(count: int) -> list[FastDaemon]:
                return start_daemons(
                    base,
                    count,
                    url=url,
                    base_url=api.base_url,
                    api_key=api.api_key,
                    origin=origin,
                    lease_ttl=f"{lease:g}s",
                    misfire_grace=GRACE,
                )

            daemons = await anyio.to_thread.run_sync(start, 2)
            leader, _ = await anyio.to_thread.run_sync(
                lambda: wait_for_leader(daemons, timeout=60.0)
            )
            for index in range(DEPLOYMENTS):
                status, body = await anyio.to_thread.run_sync(
                    daemons[0].request, "POST", "/v1/deployments", create_body(f"f{index}")
                )
                if status != 200:
                    raise RuntimeError(f"create failed: {status} {body}")
            follower = next(d for d in daemons if d is not leader)
            delays = await anyio.to_thread.run_sync(propagation, leader, follower)
            for round_index in range(kills):
                await anyio.sleep(rng.uniform(0.5, 3.5))
                leader, view = await anyio.to_thread.run_sync(
                    lambda: wait_for_leader(daemons, timeout=60.0)
                )
                epoch = int(view["epoch"])
                killed_at = time.monotonic()
                await anyio.to_thread.run_sync(leader.kill)
                with anyio.fail_after(lease * 3 + 30):
                    fired_at = await first_claim_after(url, epoch)
                took = fired_at - killed_at
                times.append(took)
                print(f"kill {round_index + 1}/{kills}: first fire after {took:.3f} s", flush=True)
                await anyio.to_thread.run_sync(restart, leader)
            await anyio.sleep(2.0)
            for daemon in daemons:
                await anyio.to_thread.run_sync(daemon.stop)
            facts = await journal_facts(url)
            epochs = await current_epoch(url)
            created = api.sessions_created
    finally:
        for daemon in daemons:
            await anyio.to_thread.run_sync(daemon.close)
        await anyio.to_thread.run_sync(cluster.remove)
    spread = Spread.of(times)
    case = f"2 daemons, lease_ttl={lease:g}s, {kills} SIGKILLs of the leader"

    def row(metric: str, value: float | str, unit: str = "", target: str = "") -> Row:
        return Row(
            bench="failover", case=case, metric=metric, value=value, unit=unit, target=target
        )

    pauses = Spread.of([delay * 1000 for delay in delays])
    return [
        row(
            f"pause on the follower -> off the leader's heap, median of {pauses.count}",
            pauses.p50,
            "ms",
            "< 100",
        ),
        row("pause on the follower -> off the leader's heap, max", pauses.max, "ms"),
        row(
            "kill -> first fire by the new leader, median",
            statistics.median(times),
            "s",
            f"< {lease + 1:g}",
        ),
        row("kill -> first fire, min", min(times), "s"),
        row("kill -> first fire, p99", spread.p99, "s"),
        row("kill -> first fire, max", spread.max, "s"),
        row("occurrences lost (within misfire_grace)", facts.gaps, "", "0"),
        row("duplicate occurrences", facts.duplicates, "", "0"),
        row("open claims after the last stop", facts.open_claims, "", "0"),
        row("scheduled runs / epochs", f"{sum(facts.by_epoch.values())}/{epochs}"),
        row(
            "sessions created / runs with a session / runs",
            f"{created}/{facts.runs_with_session}/{facts.runs}",
            "",
            "created <= runs",
        ),
    ]


def propagation(leader: FastDaemon, follower: FastDaemon) -> list[float]:
    """Pause (then unpause) each deployment on the follower; seconds from the follower's 200
    until the leader's ``/v1/health`` shows one deployment fewer scheduled (the leader heard
    the notification, re-read the deployment and took it off its heap)."""
    status, page = follower.request("GET", "/v1/deployments?limit=100")
    assert status == 200, page
    delays = []
    for deployment in page["data"]:
        before = leader.health()["scheduler"]["scheduled"]
        status, body = follower.request("POST", f"/v1/deployments/{deployment['id']}/pause")
        assert status == 200, body
        answered = time.monotonic()
        while leader.health()["scheduler"]["scheduled"] != before - 1:
            if time.monotonic() - answered > 10:
                raise RuntimeError("the leader never heard of the pause")
        delays.append(time.monotonic() - answered)
        status, body = follower.request("POST", f"/v1/deployments/{deployment['id']}/unpause")
        assert status == 200, body
        while leader.health()["scheduler"]["scheduled"] != before:
            time.sleep(0.001)
    return delays


def restart(daemon: FastDaemon) -> None:
    if daemon.notify is not None:
        daemon.notify.close()
    daemon.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover")
    parser.add_argument("--quick", action="store_true", help="3 kills with a 2 s lease")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", type=float, default=10.0, help="lease_ttl in seconds")
    args = parser.parse_args(argv)
    kills, lease = (3, 2.0) if args.quick else (args.kills, args.lease)
    rows = anyio.run(run, kills, lease, kills)
    print()
    print(render_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
