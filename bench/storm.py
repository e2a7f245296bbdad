"""The whole-daemon storm: N every-minute deployments fired by the real ``agentcrond``.

The daemon is a subprocess (``tests.support.daemon_harness.DaemonProcess``: temp config, systemd
``READY=1`` on a notify socket). The N deployments are created through the control API over the
Unix socket with 16 concurrent connections (aiohttp ``UnixConnector``), each with the schedule
``* * * * *`` in UTC. The measured minute is the first whole minute boundary at least two seconds
after the last create; every deployment fires in it at ``scheduled_at + jitter``.

Per launcher:

- ``command``: the agent is ``/bin/true``; a session is one child process.
- ``managed_agents``: the loopback stand-in of the hosted API (``tests.support.hosted_api``) in this
  process; the key reaches the daemon through ``ANTHROPIC_API_KEY``.

Measured from the daemon's own ``run_fired`` JSON log lines of that minute: fire lag
(``lag_ms`` = launcher call start minus ``scheduled_at + jitter``), and the time from the last
due instant (the largest ``scheduled_at + jitter``) until the last run of the minute was
completed (the line's timestamp, written after the completion is committed). Daemon RSS and
CPU come from ``/proc/<pid>``; CPU is counted from one second before the minute until the last
run completed. With ``command``, the session spawner (the daemon's helper process that starts
the children) is reported on its own rows: its whole CPU time, as it starts with the first fire.

``python -m bench.storm [--quick] [--n N ...] [--launcher command|managed_agents]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
import anyio
from tests.support.daemon_harness import DaemonProcess, child_processes, create_body
from tests.support.hosted_api import HostedApi

from agentcron.core.jitter import jitter_offset
from agentcron.core.timeutil import parse_ts
from bench.common import (
    ProcessUsage,
    Row,
    Spread,
    Stopwatch,
    file_create_us,
    host_steal_s,
    process_usage,
    render_rows,
    scratch_dir,
)

LauncherName = Literal["command", "managed_agents"]
CONNECTIONS = 16
MARGIN = 2.0  # seconds between the last create and the measured minute
SETTLE = 60.0  # how long after the last due instant we wait for stragglers


@dataclass(frozen=True, slots=True, kw_only=True)
class StormResult:
    launcher: LauncherName
    n: int
    create_s: float
    lag_ms: Spread
    completed_after_last_due_s: float
    runs: int
    errors: dict[str, int]
    missed: int
    rss_mb: float
    hwm_mb: float
    cpu_s: float
    spawner_cpu_s: float  # the command launcher's helper process (nan: none ran)
    spawner_hwm_mb: float
    minute: str
    file_create_us: float  # one new file in the sessions directory, just before the run
    steal_s: float  # CPU the hypervisor took from both cores over the same window as cpu_s


def write_storm_config(
    directory: Path,
    *,
    launcher: LauncherName,
    n: int,
    max_jitter: float,
    base_url: str = "",
) -> Path:
    """A daemon config for the storm; its paths are the ones ``DaemonProcess`` expects."""
    managed = (
        f'\n[launcher.managed_agents]\nbase_url = "{base_url}"\ntimeout = "30s"\n'
        if launcher == "managed_agents"
        else ""
    )
    config = directory / "agentcron.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{directory / "state"}"
socket = "{directory / "run" / "control.sock"}"
max_jitter = "{max_jitter}s"
max_deployments = {max(1000, n)}
log_format = "json"
log_level = "info"

[launcher]
type = "{launcher}"
max_concurrent_sessions = 4096
stop_grace = "2s"
{managed}
[agents.agent_rec]
version = 1
argv = ["/bin/true"]

[environments.env_local]
cwd = "{directory}"
"""
    )
    return config


async def create_deployments(socket_path: Path, n: int, *, prefix: str = "storm") -> list[str]:
    """Create ``n`` every-minute deployments over the socket with 16 connections; their ids."""
    ids: list[str] = [""] * n
    counter = iter(range(n))
    connector = aiohttp.UnixConnector(path=str(socket_path), limit=CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for index in counter:
                body = create_body(f"{prefix}-{index}")
                async with session.post("http://localhost/v1/deployments", json=body) as answer:
                    data = await answer.json()
                    if answer.status != 200:
                        raise RuntimeError(f"create #{index} failed: {answer.status} {data}")
                    ids[index] = data["id"]

        async with anyio.create_task_group() as tg:
            for _ in range(CONNECTIONS):
                tg.start_soon(worker)
    return ids


class LogTail:
    """Reads the daemon's JSON log as it grows, keeping the ``run_fired`` events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.fired: list[dict[str, Any]] = []

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if b'"run_fired"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "run_fired":
                self.fired.append(event)


@asynccontextmanager
async def _stand_in(launcher: LauncherName) -> AsyncIterator[HostedApi | None]:
    if launcher != "managed_agents":
        yield None
        return
    async with HostedApi(record=False) as api:
        api.add_agent("agent_rec")
        api.add_environment("env_local")
        yield api


def _next_minute(after: datetime) -> datetime:
    floor = after.replace(second=0, microsecond=0)
    return floor + timedelta(minutes=1)


async def run_storm(
    n: int, launcher: LauncherName, *, max_jitter: float = 10.0, profile: Path | None = None
) -> StormResult:
    """One storm of ``n`` deployments through ``launcher``; see the module docstring."""
    directory = scratch_dir("agentcron-storm-")
    create_us = file_create_us(directory / "state" / "sessions") if launcher == "command" else 0.0
    async with _stand_in(launcher) as api:
        config = write_storm_config(
            directory,
            launcher=launcher,
            n=n,
            max_jitter=max_jitter,
            base_url=api.base_url if api else "",
        )
        env = {"ANTHROPIC_API_KEY": api.api_key} if api else {}
        daemon = DaemonProcess(directory, config, env=env)
        try:
            try:
                await anyio.to_thread.run_sync(daemon.start)
            except AssertionError as exc:  # no READY=1: say why the daemon did not start
                raise RuntimeError(f"agentcrond did not start:\n{daemon.logs()[-3000:]}") from exc
            return await _measure(daemon, n, launcher, max_jitter, profile, create_us=create_us)
        finally:
            await anyio.to_thread.run_sync(daemon.close)


async def _measure(
    daemon: DaemonProcess,
    n: int,
    launcher: LauncherName,
    max_jitter: float,
    profile: Path | None,
    *,
    create_us: float,
) -> StormResult:
    with Stopwatch() as creating:
        ids = await create_deployments(daemon.socket_path, n)
    minute = _next_minute(datetime.now(UTC) + timedelta(seconds=MARGIN))
    last_due = max(minute + timedelta(seconds=jitter_offset(i, max_jitter)) for i in ids)
    await _sleep_until(minute - timedelta(seconds=1))
    before = process_usage(daemon.pid)
    steal_before = host_steal_s()
    profiler = _start_profiler(daemon.pid, profile, max_jitter + 10) if profile else None
    tail = LogTail(daemon.log_path)
    deadline = last_due + timedelta(seconds=SETTLE)
    mine: list[dict[str, Any]] = []
    while datetime.now(UTC) < deadline:
        await asyncio.sleep(0.25)
        tail.poll()
        mine = [e for e in tail.fired if _scheduled_at(e) == minute]
        if len(mine) >= n:
            break
    after = process_usage(daemon.pid)
    steal = host_steal_s() - steal_before
    spawner = _spawner_usage(daemon.pid)
    if profiler is not None:
        await anyio.to_thread.run_sync(profiler.wait)
    status, health = await anyio.to_thread.run_sync(daemon.request, "GET", "/v1/health")
    missed = int(health.get("missed", 0)) if status == 200 and isinstance(health, dict) else -1
    if not mine:
        completed = math.nan
    else:
        last_done = max(datetime.fromisoformat(e["timestamp"]) for e in mine)
        completed = (last_done - last_due).total_seconds()
    errors: dict[str, int] = {}
    for event in mine:
        outcome = str(event.get("outcome", ""))
        if not outcome.startswith("sesn_"):
            errors[outcome] = errors.get(outcome, 0) + 1
    return StormResult(
        launcher=launcher,
        n=n,
        create_s=creating.seconds,
        lag_ms=Spread.of([float(e["lag_ms"]) for e in mine]),
        completed_after_last_due_s=completed,
        runs=len(mine),
        errors=errors,
        missed=missed,
        rss_mb=after.rss_mb,
        hwm_mb=after.hwm_mb,
        cpu_s=after.cpu_s - before.cpu_s,
        steal_s=steal,
        file_create_us=create_us,
        spawner_cpu_s=spawner.cpu_s,
        spawner_hwm_mb=spawner.hwm_mb,
        minute=minute.isoformat(),
    )


def _spawner_usage(daemon_pid: int) -> ProcessUsage:
    """The session spawner's usage; it starts with the first fire, so all its CPU is the storm's."""
    pids = child_processes(daemon_pid, b"spawner.py")
    if not pids:
        return ProcessUsage(rss_mb=math.nan, hwm_mb=math.nan, cpu_s=math.nan)
    return process_usage(pids[0])


def _start_profiler(pid: int, output: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy (if installed) sampling the daemon through the storm, collapsed stacks to a file."""
    return subprocess.Popen(
        [
            *("py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(output)),
            *("--duration", str(round(seconds)), "--threads", "--nonblocking", "--rate", "100"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _scheduled_at(event: dict[str, Any]) -> datetime | None:
    value = event.get("scheduled_at")
    if event.get("trigger") != "schedule" or not isinstance(value, str):
        return None
    return parse_ts(value)


async def _sleep_until(instant: datetime) -> None:
    delay = (instant - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


def storm_rows(result: StormResult) -> list[Row]:
    case = f"{result.launcher} N={result.n:,}"

    def row(metric: str, value: float | str, unit: str = "", target: str = "") -> Row:
        return Row(bench="storm", case=case, metric=metric, value=value, unit=unit, target=target)

    lag = result.lag_ms
    errors = ", ".join(f"{k}={v}" for k, v in sorted(result.errors.items())) or "none"
    command = result.launcher == "command" and result.n == 10_000
    return [
        row("create N over the socket", result.create_s, "s"),
        row("creates/s", result.n / result.create_s, "/s"),
        row("fire lag p50", lag.p50, "ms"),
        row("fire lag p99", lag.p99, "ms", "< 50" if command else ""),
        row("fire lag max", lag.max, "ms"),
        row(
            "all done after last due",
            result.completed_after_last_due_s,
            "s",
            "< 2" if command else "",
        ),
        row("runs / missed", f"{result.runs}/{result.missed}", "", f"{result.n}/0"),
        row("run errors", errors),
        row("daemon RSS peak (VmHWM)", result.hwm_mb, "MB"),
        row("daemon CPU for the minute", result.cpu_s, "s"),
        row("host steal, both cores, same window", result.steal_s, "s"),
        *(
            [
                row("session log create, measured before", result.file_create_us, "µs"),
                row("spawner CPU for the minute", result.spawner_cpu_s, "s"),
                row("spawner RSS peak (VmHWM)", result.spawner_hwm_mb, "MB"),
            ]
            if result.launcher == "command"
            else []
        ),
    ]


def storm_sizes(quick: bool) -> list[int]:
    return [1_000] if quick else [1_000, 10_000, 100_000]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm")
    parser.add_argument("--quick", action="store_true", help="N=1,000 only")
    parser.add_argument("--n", type=int, action="append", help="storm size (repeatable)")
    parser.add_argument(
        "--launcher",
        choices=["command", "managed_agents"],
        action="append",
        help="launcher (repeatable; default both)",
    )
    parser.add_argument("--max-jitter", type=float, default=10.0)
    parser.add_argument(
        "--profile", type=Path, help="write py-spy collapsed stacks of the daemon to this file"
    )
    args = parser.parse_args(argv)
    sizes = args.n or storm_sizes(args.quick)
    launchers: list[LauncherName] = args.launcher or ["command", "managed_agents"]
    rows: list[Row] = []
    for launcher in launchers:
        for n in sizes:
            result = anyio.run(
                functools.partial(
                    run_storm, n, launcher, max_jitter=args.max_jitter, profile=args.profile
                )
            )
            rows += storm_rows(result)
            print(render_rows(storm_rows(result)), flush=True)
    print()
    print(render_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
