"""Faults from outside: the hosted API misbehaving under load, a full disk, a stepped clock.

- Hosted-API faults run the real daemon (``managed_agents`` launcher) against the loopback
  stand-in switched to each fault class, with bursts of concurrent manual runs.
- The full disk is a size-limited tmpfs mounted as the daemon's state directory (needs root and
  ``mount``; skipped with the reason otherwise).
- Clock steps use the in-process scheduler on a real journal file with ``FakeClock.step_wall``:
  stepping the machine's real clock is not something a test may do.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from agentcron.daemon import build_stack
from agentcron.journal import SqliteJournal
from agentcron.runtime.scheduler import Scheduler
from agentcron.runtime.service import DeploymentService
from tests.support.daemon_harness import DaemonProcess, create_body, list_all_runs, write_config
from tests.support.fakes import FakeClock, RecordingLauncher
from tests.support.hosted_api import Fault, HostedApi

BURST = 40

# --- hosted-API faults under load ----------------------------------------------------------------


def managed_config(directory: Path, base_url: str, *, timeout: str = "1s") -> Path:
    config = directory / "agentcron.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{directory / "state"}"
socket = "{directory / "run" / "control.sock"}"
log_format = "json"

[launcher]
type = "managed_agents"
max_concurrent_sessions = 256

[launcher.managed_agents]
base_url = "{base_url}"
timeout = "{timeout}"
"""
    )
    return config


@asynccontextmanager
async def managed_daemon(directory: Path) -> AsyncIterator[tuple[DaemonProcess, HostedApi]]:
    async with HostedApi(record=False, slow_seconds=3.0) as api:
        api.add_agent("agent_rec")
        api.add_environment("env_local")
        daemon = DaemonProcess(
            directory,
            managed_config(directory, api.base_url),
            env={"ANTHROPIC_API_KEY": api.api_key},
        )
        try:
            await anyio.to_thread.run_sync(daemon.start)
            yield daemon, api
        finally:
            await anyio.to_thread.run_sync(daemon.close)


async def call(
    daemon: DaemonProcess, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """A control-API request from a worker thread, so the stand-in in this loop keeps serving."""
    return await anyio.to_thread.run_sync(daemon.request, method, path, body)


async def post_all(socket_path: Path, paths: list[str]) -> list[tuple[int, Any]]:
    """POST each path (empty body) concurrently over 16 connections; (status, JSON) in order."""
    results: list[tuple[int, Any]] = [(0, None)] * len(paths)
    connector = aiohttp.UnixConnector(path=str(socket_path), limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int, path: str) -> None:
            async with session.post(f"http://localhost{path}", data=b"") as answer:
                results[index] = (answer.status, await answer.json())

        async with anyio.create_task_group() as tg:
            for index, path in enumerate(paths):
                tg.start_soon(one, index, path)
    return results


FAULT_CASES = [
    (Fault.RATE_LIMITED, "session_rate_limited"),
    (Fault.INTERNAL_ERROR, "service_unavailable"),
    (Fault.UNAVAILABLE, "service_unavailable"),
    (Fault.SLOW, "service_unavailable"),
    (Fault.RESET, "service_unavailable"),
]


async def test_each_hosted_api_fault_under_load_is_recorded_with_its_type_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """Bursts of concurrent runs against 429s, 5xx, timeouts and resets: every run is recorded
    once with the right error type, none is lost, and the daemon stays healthy throughout."""
    async with managed_daemon(tmp_path) as (daemon, api):
        deployments = []
        for index in range(4):
            status, body = await call(
                daemon, "POST", "/v1/deployments", create_body(f"f{index}", cron=None)
            )
            assert status == 200, body
            deployments.append(body["id"])
        answered: dict[str, str] = {}
        cases: list[tuple[Fault | None, str | None]] = [*FAULT_CASES, (None, None)]
        for fault, expected in cases:
            api.session_fault = fault
            paths = [f"/v1/deployments/{deployments[i % 4]}/run" for i in range(BURST)]
            results = await post_all(daemon.socket_path, paths)
            statuses = [status for status, _ in results]
            assert statuses == [200] * BURST, (fault, results[:3])
            for _, run in results:
                if expected is None:
                    assert run["error"] is None, run
                    assert run["session_id"], run
                else:
                    assert run["session_id"] is None, run
                    assert run["error"]["type"] == expected, (fault, run)
                answered[run["id"]] = str(
                    run["error"]["type"] if run["error"] else run["session_id"]
                )
            status, health = await call(daemon, "GET", "/v1/health")
            assert status == 200, health
        api.session_fault = None
        stored = {
            run["id"]: run["error"]["type"] if run["error"] else run["session_id"]
            for run in await anyio.to_thread.run_sync(list_all_runs, daemon)
        }
        assert stored == answered
        assert api.sessions_created == BURST
        assert daemon.process is not None
        assert daemon.process.poll() is None  # still running


# --- the journal's disk fills up -----------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs at ``mount_point``; skips the test when mounting is not permitted."""
    mount_point.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"mounting a size-limited tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=10)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    # Unbuffered: a buffered file would retry its unwritten rest when closed and raise again.
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    with contextlib.suppress(OSError), filler.open("ab", buffering=0) as handle:
        for _ in range(64):  # the last partial chunk's worth, in small pieces
            handle.write(b"\0" * 1024)
    return filler


def test_full_disk_refuses_writes_with_503_serves_reads_keeps_commits_and_recovers(
    tmp_path: Path,
) -> None:
    """With the journal's file system full, writes answer 503 naming the cause, reads still
    work, nothing committed is lost, and writes succeed again once space returns."""
    with small_tmpfs(tmp_path / "state", "4m"):
        config = write_config(tmp_path, agent_argv=["/bin/true"])
        daemon = DaemonProcess(tmp_path, config)
        try:
            daemon.start()
            created = []
            for index in range(5):
                status, body = daemon.request("POST", "/v1/deployments", create_body(f"d{index}"))
                assert status == 200, body
                created.append(body["id"])
            filler = fill(tmp_path / "state")
            refused: tuple[int, Any] | None = None
            for index in range(200):  # the WAL may still have room for a few pages
                status, body = daemon.request("POST", "/v1/deployments", create_body(f"x{index}"))
                if status == 200:
                    created.append(body["id"])
                    continue
                refused = (status, body)
                break
            assert refused is not None, "writes never failed on a full disk"
            status, body = refused
            assert status == 503, body
            assert body["type"] == "error", body
            for deployment_id in created:
                status, body = daemon.request("GET", f"/v1/deployments/{deployment_id}")
                assert status == 200, body
            status, body = daemon.request("GET", "/v1/health")
            assert status == 200, body
            filler.unlink()
            status, body = daemon.request("POST", "/v1/deployments", create_body("after"))
            assert status == 200, body
            created.append(body["id"])
            status, body = daemon.request("GET", "/v1/deployments?limit=100")
            assert status == 200, body
            assert {d["id"] for d in body["data"]} == set(created)
            assert daemon.stop() == 0
        finally:
            daemon.close()
        journal = sqlite3.connect(tmp_path / "state" / "journal.db")
        try:
            assert journal.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            stored = {row[0] for row in journal.execute("SELECT id FROM deployments")}
        finally:
            journal.close()
        assert stored == set(created)


# --- the wall clock is stepped -------------------------------------------------------------------

START = datetime(2026, 6, 1, 11, 59, 30, tzinfo=UTC)
NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@asynccontextmanager
async def in_process(path: Path) -> AsyncIterator[tuple[FakeClock, DeploymentService, Scheduler]]:
    """A real journal file, the service and a running scheduler on a fake clock."""
    async with SqliteJournal.open(path) as journal:
        clock = FakeClock(START)
        launcher = RecordingLauncher()
        stack = build_stack(
            journal=journal,
            launcher=launcher,
            clock=clock,
            max_jitter=0.0,
            misfire_grace=60.0,
            max_sleep=30.0,
        )
        service, scheduler = stack.service, stack.scheduler
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            await scheduler.idle()
            yield clock, service, scheduler
            tg.cancel_scope.cancel()


async def advance(clock: FakeClock, scheduler: Scheduler, seconds: float) -> None:
    for _ in range(int(seconds // 10)):
        await clock.advance(10)
        await scheduler.idle()


def every_minute() -> dict[str, Any]:
    body = create_body("stepped")
    body["agent"], body["environment_id"] = "agent_test", "env_test"
    return body


async def scheduled_ats(service: DeploymentService, deployment_id: str) -> list[datetime]:
    page = await service.list_runs(deployment_id=deployment_id, limit=1000)
    return sorted(run.scheduled_at for run in page.data if run.scheduled_at is not None)


async def test_backward_clock_step_never_fires_an_occurrence_twice(tmp_path: Path) -> None:
    """After 12:00 and 12:01 fired, stepping the wall clock back 5 minutes replays no
    occurrence: the next run is 12:02, once, when the wall clock reaches it again."""
    async with in_process(tmp_path / "journal.db") as (clock, service, scheduler):
        deployment = await service.create(every_minute())
        await advance(clock, scheduler, 100)  # wall 12:01:10
        assert await scheduled_ats(service, deployment.id) == [NOON, NOON + timedelta(minutes=1)]
        clock.step_wall(timedelta(minutes=-5))  # wall 11:56:10
        await advance(clock, scheduler, 360)  # wall 12:02:10
        assert await scheduled_ats(service, deployment.id) == [
            NOON + timedelta(minutes=m) for m in range(3)
        ]
        assert scheduler.health()["duplicates"] == 0
        assert scheduler.health()["missed"] == 0


async def test_forward_clock_step_counts_skipped_occurrences_as_missed(tmp_path: Path) -> None:
    """Stepping the wall clock 10 minutes ahead skips the occurrences more than misfire_grace
    late: they are counted as missed, never written as runs, and firing resumes after them."""
    async with in_process(tmp_path / "journal.db") as (clock, service, scheduler):
        deployment = await service.create(every_minute())
        await advance(clock, scheduler, 40)  # wall 12:00:10: 12:00 fired
        clock.step_wall(timedelta(minutes=10))  # wall 12:10:10
        await advance(clock, scheduler, 60)  # wall 12:11:10
        fired = await scheduled_ats(service, deployment.id)
        assert fired[0] == NOON
        assert fired[-1] == NOON + timedelta(minutes=11)
        late = [NOON + timedelta(minutes=m) for m in range(1, 9)]  # > 60 s late at 12:10:10
        assert not set(late) & set(fired)
        assert scheduler.health()["missed"] >= len(late)
        assert len(fired) == len(set(fired))
