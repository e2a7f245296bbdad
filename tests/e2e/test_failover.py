"""Leadership and failover between real daemons on one real PostgreSQL journal (issue 13).

Two or three ``agentcrond`` processes share the test's database, each with its own socket and
state directory, all on one fast wall clock (a ``* * * * *`` schedule fires every real second)
and with a short lease (``lease_ttl = "2s"``). Sessions go to the loopback stand-in of the
hosted API, which counts what it creates. The database is read directly at the end: no
occurrence has two runs, no claim is left open, no occurrence between a deployment's first
and last run is missing, and the claims of each epoch are counted through ``runs.epoch``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agentcron.core.timeutil import parse_ts
from tests.support.daemon_harness import DaemonProcess, create_body, running_daemon, write_config
from tests.support.failover import (
    FastDaemon,
    claims_of_epoch,
    journal_facts,
    leaders,
    start_daemons,
    wait_for_leader,
)
from tests.support.fakes import wait_until
from tests.support.hosted_api import HostedApi
from tests.support.postgres import start_cluster

DEPLOYMENTS = 20


@pytest.fixture
async def hosted() -> AsyncIterator[HostedApi]:
    async with HostedApi(record=False) as api:
        api.add_agent("agent_rec")
        api.add_environment("env_local")
        yield api


def stop_all(daemons: list[FastDaemon]) -> None:
    """Stop every daemon still running, the leader last: a leader that stops cleanly
    releases its lease, and a follower still running would take it over at a new epoch."""
    running = [d for d in daemons if d.process is not None and d.process.poll() is None]
    for daemon in running:
        with_cont(daemon)
    daemons = sorted(running, key=lambda d: (d.leadership() or {}).get("role") == "leader")
    for daemon in daemons:
        if daemon.process is not None and daemon.process.poll() is None:
            with_cont(daemon)
            assert daemon.stop() == 0, daemon.logs()[-3000:]


def with_cont(daemon: FastDaemon) -> None:
    if daemon.process is not None and daemon.process.poll() is None:
        os.kill(daemon.pid, signal.SIGCONT)


def close_all(daemons: list[FastDaemon]) -> None:
    for daemon in daemons:
        with_cont(daemon)
        daemon.close()


async def call(daemon: FastDaemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await anyio.to_thread.run_sync(daemon.request, method, path, body)


async def create_deployments(daemon: FastDaemon, count: int) -> list[str]:
    created = []
    for index in range(count):
        status, body = await call(daemon, "POST", "/v1/deployments", create_body(f"d{index}"))
        assert status == 200, body
        created.append(body["id"])
    return created


async def runs_of(daemon: FastDaemon, deployment_id: str) -> list[dict[str, Any]]:
    status, body = await call(
        daemon, "GET", f"/v1/deployment_runs?deployment_id={deployment_id}&limit=1000"
    )
    assert status == 200, body
    return list(body["data"])


def in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    return anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


@pytest.fixture
def pool() -> Iterator[list[FastDaemon]]:
    daemons: list[FastDaemon] = []
    try:
        yield daemons
    finally:
        close_all(daemons)


async def test_two_daemons_elect_one_leader_and_a_followers_changes_reach_it_at_once(
    tmp_path: Path, postgres_url: str, hosted: HostedApi, pool: list[FastDaemon]
) -> None:
    """One leader, one follower, both serve the API; a deployment created, paused, unpaused
    and archived on the follower is fired, stopped, fired again and stopped by the leader."""
    pool.extend(
        await in_thread(
            start_daemons,
            tmp_path,
            2,
            url=postgres_url,
            base_url=hosted.base_url,
            api_key=hosted.api_key,
            origin=time.time(),
        )
    )
    leader, view = await in_thread(wait_for_leader, pool)
    follower = next(d for d in pool if d is not leader)
    seen = follower.leadership()
    assert seen is not None
    assert seen["role"] == "follower"
    assert seen["leader_id"] == view["node_id"] == view["leader_id"]
    assert seen["epoch"] == view["epoch"] >= 1
    assert parse_ts(view["lease_expires_at"]) > parse_ts(leader.health()["now"]) - timedelta(
        hours=1
    )

    shown = await in_thread(status_text, follower)
    assert f"role:         follower (this daemon: {seen['node_id']})" in shown
    assert f"leader:       {view['node_id']}, epoch {view['epoch']}, lease expires " in shown

    [deployment_id] = await create_deployments(follower, 1)
    await in_thread(
        wait_until, lambda: len(leader_runs(follower, deployment_id)) >= 2, "the leader fires it"
    )
    status, paused = await call(follower, "POST", f"/v1/deployments/{deployment_id}/pause")
    assert status == 200, paused
    paused_at = parse_ts(paused["updated_at"])
    await anyio.sleep(3.5)  # three more occurrences of the fast clock
    after_pause = [
        run
        for run in await runs_of(follower, deployment_id)
        if parse_ts(run["trigger_context"]["scheduled_at"]) > paused_at + timedelta(seconds=120)
    ]
    # The leader heard of the pause before the third next occurrence (about 2 s of real time
    # after it at the fast clock's speed, a generous bound: the notification takes
    # milliseconds, measured in bench.failover), and fired nothing later.
    assert after_pause == []
    before = len(await runs_of(follower, deployment_id))
    status, body = await call(follower, "POST", f"/v1/deployments/{deployment_id}/unpause")
    assert status == 200, body
    await in_thread(
        wait_until,
        lambda: len(leader_runs(follower, deployment_id)) >= before + 2,
        "fired again after the unpause",
    )
    status, body = await call(follower, "POST", f"/v1/deployments/{deployment_id}/archive")
    assert status == 200, body
    archived_at = parse_ts(body["archived_at"])
    await anyio.sleep(3.5)
    late = [
        run
        for run in await runs_of(follower, deployment_id)
        if parse_ts(run["trigger_context"]["scheduled_at"]) > archived_at + timedelta(seconds=120)
    ]
    assert late == []
    # A manual run works on the follower too.
    [other] = await create_deployments(follower, 1)
    status, run = await call(follower, "POST", f"/v1/deployments/{other}/run")
    assert status == 200, run
    assert run["session_id"], run

    await in_thread(stop_all, pool)
    facts = await journal_facts(postgres_url)
    print("failover facts:", facts)
    assert facts.duplicates == 0
    assert facts.open_claims == 0
    assert set(facts.by_epoch) == {view["epoch"]}  # every scheduled claim by the one leader
    assert hosted.sessions_created == facts.runs_with_session


def status_text(daemon: DaemonProcess) -> str:
    """``agentcron status`` against ``daemon``, as a user runs it."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from agentcron.cli import main; raise SystemExit(main())",
            "status",
            "--socket",
            str(daemon.socket_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_sqlite_daemon_is_standalone(tmp_path: Path) -> None:
    """SQLite behaves as before: one daemon, always the one that fires, no lease."""
    with running_daemon(tmp_path, write_config(tmp_path)) as daemon:
        status, health = daemon.request("GET", "/v1/health")
        assert status == 200, health
        assert health["leadership"] == {
            "role": "standalone",
            "node_id": f"{socket.gethostname()}:{daemon.pid}",
            "leader_id": f"{socket.gethostname()}:{daemon.pid}",
            "epoch": None,
            "lease_expires_at": None,
        }
        shown = status_text(daemon)
    assert f"role:         standalone (this daemon: {socket.gethostname()}:" in shown
    assert "leader:" not in shown


def leader_runs(daemon: FastDaemon, deployment_id: str) -> list[dict[str, Any]]:
    status, body = daemon.request(
        "GET", f"/v1/deployment_runs?deployment_id={deployment_id}&limit=1000"
    )
    assert status == 200, body
    return list(body["data"])


async def test_sigkill_of_the_leader_during_a_storm_a_follower_fires_on_losing_nothing(
    tmp_path: Path, postgres_url: str, hosted: HostedApi, pool: list[FastDaemon]
) -> None:
    """Three daemons, twenty every-minute deployments on the fast clock; SIGKILL the leader
    twice: each time another daemon takes over within the lease and fires what came due
    meanwhile (misfire_grace covers the gap). No occurrence twice, none lost, no open claim,
    no session created without its run."""
    pool.extend(
        await in_thread(
            start_daemons,
            tmp_path,
            3,
            url=postgres_url,
            base_url=hosted.base_url,
            api_key=hosted.api_key,
            origin=time.time(),
        )
    )
    leader, view = await in_thread(wait_for_leader, pool)
    await create_deployments(pool[-1], DEPLOYMENTS)
    epochs = [view["epoch"]]
    for _ in range(2):
        await anyio.sleep(1.5)
        assert await claims_of_epoch(postgres_url, epochs[-1]) > 0
        killed_at = time.monotonic()
        await in_thread(leader.kill)
        survivors = [d for d in pool if d.process is not None and d.process.poll() is None]
        leader, view = await in_thread(wait_for_leader, survivors, newer_than=epochs[-1])
        took_over = time.monotonic() - killed_at
        print(f"takeover {took_over:.2f} s after the kill")  # timed in bench.failover, not here
        epochs.append(view["epoch"])
        await in_thread(
            wait_until,
            lambda epoch=view["epoch"]: claims_of_epoch_sync(postgres_url, epoch) > 0,
            "the new leader fires",
        )
    await anyio.sleep(1.5)
    await in_thread(stop_all, pool)
    facts = await journal_facts(postgres_url)
    print("failover facts:", facts)
    assert facts.duplicates == 0
    assert facts.open_claims == 0  # the killed leaders' claims were completed at takeover
    assert facts.gaps == 0  # every occurrence between a deployment's first and last run
    assert epochs == sorted(set(epochs))
    assert all(facts.by_epoch.get(epoch, 0) > 0 for epoch in epochs), facts.by_epoch
    assert set(facts.by_epoch) <= set(epochs)
    # Each created session belongs to a run (claimed first); a run recovered after a kill
    # may have created its session before its completion was lost, never twice.
    assert facts.runs_with_session <= hosted.sessions_created <= facts.runs


def claims_of_epoch_sync(url: str, epoch: int) -> int:
    return anyio.run(claims_of_epoch, url, epoch)


async def test_a_paused_leader_is_deposed_and_claims_nothing_when_it_wakes_up(
    tmp_path: Path, postgres_url: str, hosted: HostedApi, pool: list[FastDaemon]
) -> None:
    """SIGSTOP the leader past its lease: the follower takes over at the next epoch. SIGCONT:
    the old leader's due fires meet the fence (its epoch is gone), it steps down and not one
    claim of its epoch is written after it woke."""
    pool.extend(
        await in_thread(
            start_daemons,
            tmp_path,
            2,
            url=postgres_url,
            base_url=hosted.base_url,
            api_key=hosted.api_key,
            origin=time.time(),
        )
    )
    old, view = await in_thread(wait_for_leader, pool)
    old_epoch = view["epoch"]
    await create_deployments(pool[0], DEPLOYMENTS)
    await anyio.sleep(1.5)
    os.kill(old.pid, signal.SIGSTOP)
    try:
        stopped_claims = await claims_of_epoch(postgres_url, old_epoch)
        assert stopped_claims > 0
        others = [d for d in pool if d is not old]
        new, new_view = await in_thread(wait_for_leader, others, newer_than=old_epoch)
        assert new_view["epoch"] == old_epoch + 1
        await anyio.sleep(1.5)  # the paused daemon's fires are long due now
    finally:
        os.kill(old.pid, signal.SIGCONT)
    await in_thread(
        wait_until,
        lambda: (old.leadership() or {}).get("role") == "follower",
        "the old leader steps down",
    )
    await anyio.sleep(1.0)
    assert await claims_of_epoch(postgres_url, old_epoch) == stopped_claims
    assert [d for d, _ in await in_thread(leaders, pool)] == [new]
    await in_thread(stop_all, pool)
    logs = old.logs()
    assert "leadership_stepped_down" in logs
    facts = await journal_facts(postgres_url)
    print("failover facts:", facts)
    assert facts.duplicates == 0
    assert facts.open_claims == 0
    assert facts.gaps == 0
    assert facts.by_epoch[old_epoch] == stopped_claims


async def test_a_database_restart_mid_storm_steps_down_answers_503_and_recovers(
    tmp_path: Path, hosted: HostedApi, pool: list[FastDaemon]
) -> None:
    """A dedicated cluster (the shared one stays up for the other tests), two daemons, a
    storm; the server stops: the API answers 503 in the error shape and the leader steps
    down; the server starts again: one daemon leads at a new epoch and the storm goes on,
    with no duplicate, no lost occurrence, no open claim."""
    cluster = await in_thread(start_cluster)
    try:
        database = await in_thread(cluster.create_database)
        url = cluster.url(database)
        pool.extend(
            await in_thread(
                start_daemons,
                tmp_path,
                2,
                url=url,
                base_url=hosted.base_url,
                api_key=hosted.api_key,
                origin=time.time(),
            )
        )
        leader, view = await in_thread(wait_for_leader, pool)
        await create_deployments(pool[1], DEPLOYMENTS)
        await anyio.sleep(1.5)
        await in_thread(cluster.stop)
        for daemon in pool:
            status, body = await call(daemon, "GET", "/v1/deployments")
            assert status == 503, body
            assert body["type"] == "error"
            assert body["error"]["type"] == "api_error"
            assert "Traceback" not in body["error"]["message"]
        await in_thread(
            wait_until,
            lambda: "leadership_stepped_down" in leader.logs(),
            "the leader steps down without its database",
        )
        await anyio.sleep(1.0)
        await in_thread(cluster.start)
        _, again = await in_thread(wait_for_leader, pool, newer_than=view["epoch"])
        await in_thread(
            wait_until, lambda: claims_of_epoch_sync(url, again["epoch"]) > 0, "the storm goes on"
        )
        await anyio.sleep(1.5)
        await in_thread(stop_all, pool)
        facts = await journal_facts(url)
        print("failover facts:", facts)
        assert facts.duplicates == 0
        assert facts.open_claims == 0
        assert facts.gaps == 0
        assert facts.runs_with_session <= hosted.sessions_created <= facts.runs
    finally:
        await in_thread(close_all, pool)
        await in_thread(cluster.remove)
