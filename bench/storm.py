"""The whole-daemon storm: N every-minute deployments fired by the real ``agentcrond``.

The daemon is a subprocess (``tests.support.daemon_harness.DaemonProcess``: temp config, systemd
``READY=1`` on a notify socket). The N deployments are created through the control API over the
Unix socket with 16 concurrent connections (aiohttp ``UnixConnector``), each with the schedule
``* * * * *`` in UTC. The measured minute is the first whole minute boundary at least two seconds
after the last create; every deployment fires in it at ``scheduled_at + jitter``.

Per launcher:

- ``command``: the agent is ``/bin/true``; a session is one child process.
- ``managed_agents``: the loopback stand-in of the hosted API
  (``python -m tests.support.hosted_api``, its own process, no delay); the key reaches the
  daemon through ``ANTHROPIC_API_KEY``.

Measured from the daemon's own ``run_fired`` JSON log lines of that minute: fire lag
(``lag_ms`` = launcher call start minus ``scheduled_at + jitter``), and the time from the last
due instant (the largest ``scheduled_at + jitter``) until the last run of the minute was
completed (the line's timestamp, written after the completion is committed). Daemon RSS and
CPU come from ``/proc/<pid>``; CPU is counted from one second before the minute until the last
run completed. With ``command``, the session spawner (the daemon's helper process that starts
the children) is reported on its own rows: its whole CPU time, as it starts with the first fire.
With ``managed_agents``, the stand-in's CPU over the same window has a row too. Every storm
also reports what every other process on the machine used over that window (the machine is
shared: this is the noise).

Beside the fire lag, the figure a user sees: each run of the minute read back through the
official ``anthropic`` SDK (``client.beta.deployment_runs.list`` over the socket, SPEC §5), its
``created_at`` (when the outcome was recorded) minus its ``trigger_context.scheduled_at``. With
``--max-jitter 0`` every deployment is due at the minute boundary itself, so this is how long the
last of N simultaneous runs waits for its record. A zero-jitter ``managed_agents`` storm is
followed by the same burst against the stand-in alone (``bench.stand_in``) and the ratio of the
two: how far above the stand-in's own floor the daemon is.

``--stand-in lean`` has the ``managed_agents`` storm (and its floor) run against the lean
stand-in of ``bench.stand_in`` instead of the test suite's aiohttp one (see there).

Beside the launcher's lag, each storm reports the CPU of each daemon thread over the window
(``/proc/<pid>/task``) and, from the daemon's own ``/metrics`` read before and after the minute,
the journal write transactions committed, their mean duration and the mean session creation.

``python -m bench.storm [--quick] [--n N ...] [--launcher command|managed_agents]
[--max-jitter SECONDS] [--stand-in aiohttp|lean]``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import functools
import itertools
import json
import math
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
import anthropic
import anyio
import httpx2
from tests.support.daemon_harness import (
    DaemonProcess,
    UnixHTTPConnection,
    child_processes,
    create_body,
)

from agentcron.config import DEFAULT_MAX_CONCURRENT_CREATIONS
from agentcron.core.jitter import jitter_offset
from agentcron.core.timeutil import parse_ts
from bench.common import (
    ProcessUsage,
    Row,
    Spread,
    Stopwatch,
    file_create_us,
    host_busy_s,
    host_steal_s,
    process_usage,
    render_rows,
    scratch_dir,
)
from bench.stand_in import (
    ServerKind,
    StandIn,
    run_stand_in,
    stand_in_process,
    stand_in_rows,
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
    others_cpu_s: float  # CPU every other process on the machine used over that window
    max_jitter: float
    recorded_ms: Spread  # created_at - scheduled_at of the minute's runs, read through the SDK
    stand_in_cpu_s: float  # the managed_agents stand-in's process over the window; nan: none
    in_flight: int | None = None  # [launcher] max_concurrent_creations; None: the default
    threads_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)  # per thread name
    phases: Phases | None = None  # the daemon's own histograms over the minute (/metrics)
    stand_in: ServerKind = "aiohttp"  # which server played the hosted API (managed_agents)
    journal: str = "sqlite"  # or "postgresql" (``--journal``)
    transactions: float = math.nan  # journal write transactions committed over the window


@dataclass(frozen=True, slots=True, kw_only=True)
class Phases:
    """Where a fire's time went, from the daemon's ``/metrics`` before and after the minute."""

    transactions: int  # journal write transactions committed (claims and completions batched)
    commit_ms: float  # mean duration of one of them
    create_ms: float  # mean session creation (the launcher call)
    creations: int


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid``, summed by thread name (``/proc``)."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        name = "main" if task.name == str(pid) else name.rstrip("0123456789_")
        found[name] = found.get(name, 0.0) + cpu
    return found


def metrics_sample(socket_path: Path) -> dict[str, float]:
    """The daemon's ``GET /metrics`` over the socket: each unlabelled or summed sample."""
    conn = UnixHTTPConnection(socket_path, timeout=600.0)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        key = name.split("{", 1)[0]
        if key.endswith(("_sum", "_count")):
            samples[key] = samples.get(key, 0.0) + float(value)
    return samples


def phases_between(before: dict[str, float], after: dict[str, float]) -> Phases:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    commits = delta("agentcron_journal_commit_duration_seconds_count")
    creations = delta("agentcron_session_create_duration_seconds_count")
    return Phases(
        transactions=round(commits),
        commit_ms=delta("agentcron_journal_commit_duration_seconds_sum") / commits * 1000
        if commits
        else math.nan,
        create_ms=delta("agentcron_session_create_duration_seconds_sum") / creations * 1000
        if creations
        else math.nan,
        creations=round(creations),
    )


def write_storm_config(
    directory: Path,
    *,
    launcher: LauncherName,
    n: int,
    max_jitter: float,
    base_url: str = "",
    in_flight: int | None = None,
    journal_url: str | None = None,
) -> Path:
    """A daemon config for the storm; its paths are the ones ``DaemonProcess`` expects.

    ``in_flight`` sets ``[launcher] max_concurrent_creations`` (``None``: the default);
    ``journal_url`` a PostgreSQL journal (``None``: the SQLite file)."""
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
{"" if in_flight is None else f"max_concurrent_creations = {in_flight}"}
{managed}
[agents.agent_rec]
version = 1
argv = ["/bin/true"]

[environments.env_local]
cwd = "{directory}"
"""
    )
    if journal_url is not None:
        with config.open("a") as handle:
            handle.write(f'\n[journal]\nurl = "{journal_url}"\n')
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
async def _stand_in(launcher: LauncherName, kind: ServerKind) -> AsyncIterator[StandIn | None]:
    if launcher != "managed_agents":
        yield None
        return
    async with stand_in_process(kind) as api:
        yield api


async def _drain_notifications(daemon: DaemonProcess) -> None:
    """Read the daemon's systemd notifications (``STATUS=`` every 10 s) as systemd would.

    The notify socket is a datagram socket whose queue holds only
    ``/proc/sys/net/unix/max_dgram_qlen`` messages (10 by default): left unread, a daemon that
    runs longer than about 100 s, as a storm of 10,000 does, would block on its next status."""
    while True:
        if daemon.notify is not None:
            daemon.notify.drain()
        await anyio.sleep(1.0)


def _next_minute(after: datetime) -> datetime:
    floor = after.replace(second=0, microsecond=0)
    return floor + timedelta(minutes=1)


async def run_storm(
    n: int,
    launcher: LauncherName,
    *,
    max_jitter: float = 10.0,
    profile: Path | None = None,
    in_flight: int | None = None,
    stand_in: ServerKind = "aiohttp",
    journal_url: str | None = None,
) -> StormResult:
    """One storm of ``n`` deployments through ``launcher``; see the module docstring.
    ``journal_url``: on that PostgreSQL database instead of the SQLite file."""
    directory = scratch_dir("agentcron-storm-")
    create_us = file_create_us(directory / "state" / "sessions") if launcher == "command" else 0.0
    async with _stand_in(launcher, stand_in) as api:
        config = write_storm_config(
            directory,
            launcher=launcher,
            n=n,
            max_jitter=max_jitter,
            base_url=api.base_url if api else "",
            in_flight=in_flight,
            journal_url=journal_url,
        )
        env = {"ANTHROPIC_API_KEY": api.api_key} if api else {}
        daemon = DaemonProcess(directory, config, env=env)
        try:
            try:
                await anyio.to_thread.run_sync(daemon.start)
            except AssertionError as exc:  # no READY=1: say why the daemon did not start
                raise RuntimeError(f"agentcrond did not start:\n{daemon.logs()[-3000:]}") from exc
            async with anyio.create_task_group() as tg:
                tg.start_soon(_drain_notifications, daemon)
                result = await _measure(
                    daemon,
                    n,
                    launcher,
                    max_jitter,
                    profile,
                    create_us=create_us,
                    stand_in_pid=api.pid if api else None,
                )
                tg.cancel_scope.cancel()
            journal = "sqlite" if journal_url is None else "postgresql"
            return dataclasses.replace(
                result, in_flight=in_flight, stand_in=stand_in, journal=journal
            )
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
    stand_in_pid: int | None,
) -> StormResult:
    with Stopwatch() as creating:
        ids = await create_deployments(daemon.socket_path, n)
    minute = _next_minute(datetime.now(UTC) + timedelta(seconds=MARGIN))
    last_due = max(minute + timedelta(seconds=jitter_offset(i, max_jitter)) for i in ids)
    await _sleep_until(minute - timedelta(seconds=3))
    metrics_before = await anyio.to_thread.run_sync(metrics_sample, daemon.socket_path)
    await _sleep_until(minute - timedelta(seconds=1))
    commits_before = await anyio.to_thread.run_sync(_commits, daemon.socket_path)
    before = process_usage(daemon.pid)
    threads_before = thread_cpu_s(daemon.pid)
    own_before = _own_cpu_s()
    stand_in_before = process_usage(stand_in_pid).cpu_s if stand_in_pid else math.nan
    steal_before = host_steal_s()
    busy_before = host_busy_s()
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
    threads_after = thread_cpu_s(daemon.pid)
    own_cpu = _own_cpu_s() - own_before
    stand_in_cpu = process_usage(stand_in_pid).cpu_s - stand_in_before if stand_in_pid else 0.0
    steal = host_steal_s() - steal_before
    busy = host_busy_s() - busy_before
    spawner = _spawner_usage(daemon.pid)
    spawner_cpu = 0.0 if math.isnan(spawner.cpu_s) else spawner.cpu_s
    ours = after.cpu_s - before.cpu_s + own_cpu + stand_in_cpu + spawner_cpu
    if profiler is not None:
        await anyio.to_thread.run_sync(profiler.wait)
    transactions = await anyio.to_thread.run_sync(_commits, daemon.socket_path) - commits_before
    status, health = await anyio.to_thread.run_sync(_health, daemon.socket_path)
    metrics_after = await anyio.to_thread.run_sync(metrics_sample, daemon.socket_path)
    missed = int(health.get("missed", 0)) if status == 200 and isinstance(health, dict) else -1
    if not mine:
        completed = math.nan
    else:
        last_done = max(datetime.fromisoformat(e["timestamp"]) for e in mine)
        completed = (last_done - last_due).total_seconds()
    recorded = await anyio.to_thread.run_sync(read_back_ms, daemon.socket_path, minute, set(ids))
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
        others_cpu_s=max(0.0, busy - ours),
        max_jitter=max_jitter,
        recorded_ms=Spread.of(recorded),
        stand_in_cpu_s=stand_in_cpu if stand_in_pid else math.nan,
        file_create_us=create_us,
        spawner_cpu_s=spawner.cpu_s,
        spawner_hwm_mb=spawner.hwm_mb,
        minute=minute.isoformat(),
        threads_cpu_s={
            name: cpu - threads_before.get(name, 0.0) for name, cpu in threads_after.items()
        },
        phases=phases_between(metrics_before, metrics_after),
        transactions=transactions,
    )


def read_back_ms(socket_path: Path, minute: datetime, deployment_ids: set[str]) -> list[float]:
    """``created_at - scheduled_at`` (ms) of every scheduled run of ``minute`` among
    ``deployment_ids``, read through the official SDK over the socket, all pages.

    The deployments fire every minute: on a loaded machine a slow storm's read-back can meet
    the next minute's storm, so a page may take long (the SDK's own default timeout)."""
    with anthropic.Anthropic(
        api_key="local",
        base_url="http://localhost",
        http_client=httpx2.Client(transport=httpx2.HTTPTransport(uds=str(socket_path))),
        timeout=600.0,
    ) as client:
        delays: list[float] = []
        for run in client.beta.deployment_runs.list(trigger_type="schedule", limit=1000):
            scheduled_at = getattr(run.trigger_context, "scheduled_at", None)
            if run.deployment_id in deployment_ids and scheduled_at == minute:
                delays.append((run.created_at - scheduled_at).total_seconds() * 1000)
        return delays


def _health(socket_path: Path) -> tuple[int, Any]:
    """``GET /v1/health`` with a long timeout: on a loaded machine a storm may still be firing."""
    conn = UnixHTTPConnection(socket_path, timeout=600.0)
    try:
        conn.request("GET", "/v1/health")
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _commits(socket_path: Path) -> float:
    """Journal write transactions committed so far (``/metrics``: the commit histogram)."""
    conn = UnixHTTPConnection(socket_path, timeout=600.0)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith("agentcron_journal_commit_duration_seconds_count"):
            return float(line.rsplit(" ", 1)[1])
    return math.nan


def _own_cpu_s() -> float:
    """This process's CPU time so far (user + system, all threads)."""
    times = os.times()
    return times.user + times.system


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
            *("--duration", str(round(seconds)), "--threads", "--nonblocking", "--rate", "500"),
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
    case = f"{result.launcher} N={result.n:,} jitter<{result.max_jitter:g}s"
    if result.in_flight is not None:
        case += f" in-flight={result.in_flight}"
    if result.launcher == "managed_agents" and result.stand_in != "aiohttp":
        case += f" {result.stand_in} stand-in"
    if result.journal != "sqlite":
        case += f" journal={result.journal}"

    def row(metric: str, value: float | str, unit: str = "", target: str = "") -> Row:
        return Row(bench="storm", case=case, metric=metric, value=value, unit=unit, target=target)

    lag = result.lag_ms
    recorded = result.recorded_ms
    errors = ", ".join(f"{k}={v}" for k, v in sorted(result.errors.items())) or "none"
    jittered = result.max_jitter > 0
    command = result.launcher == "command" and result.n == 10_000 and jittered
    return [
        row("create N over the socket", result.create_s, "s"),
        row("creates/s", result.n / result.create_s, "/s"),
        row("fire lag p50", lag.p50, "ms"),
        row("fire lag p99", lag.p99, "ms", "< 50" if command else ""),
        row("fire lag max", lag.max, "ms"),
        row("created_at - scheduled_at p50 (SDK)", recorded.p50, "ms"),
        row(
            "created_at - scheduled_at p99 (SDK)",
            recorded.p99,
            "ms",
            _recorded_target(result),
        ),
        row("created_at - scheduled_at max (SDK)", recorded.max, "ms"),
        row("runs read back through the SDK", recorded.count, "", f"{result.n}"),
        row(
            "all done after last due",
            result.completed_after_last_due_s,
            "s",
            "< 2" if command else "",
        ),
        row("runs / missed", f"{result.runs}/{result.missed}", "", f"{result.n}/0"),
        row("journal write transactions, same window", result.transactions),
        row("run errors", errors),
        row("daemon RSS peak (VmHWM)", result.hwm_mb, "MB"),
        row("daemon CPU for the minute", result.cpu_s, "s"),
        *(
            row(f"daemon thread {name!r} CPU", cpu, "s")
            for name, cpu in sorted(result.threads_cpu_s.items(), key=lambda item: -item[1])
            if cpu >= 0.005
        ),
        *(_phase_rows(result.phases, row) if result.phases is not None else []),
        row("host steal, both cores, same window", result.steal_s, "s"),
        row("other processes' CPU, same window", result.others_cpu_s, "s"),
        *(
            [row("stand-in CPU, same window", result.stand_in_cpu_s, "s")]
            if result.launcher == "managed_agents"
            else []
        ),
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


def _phase_rows(phases: Phases, row: Any) -> list[Row]:
    return [
        row("journal write transactions in the minute", phases.transactions, ""),
        row("journal transaction, mean", phases.commit_ms, "ms"),
        row("session creation (launcher call), mean", phases.create_ms, "ms"),
    ]


def wants_floor(result: StormResult) -> bool:
    """A zero-jitter ``managed_agents`` storm is compared with the stand-in alone."""
    return result.launcher == "managed_agents" and result.max_jitter == 0


def floor_rows(storm: StormResult) -> list[Row]:
    """The same burst against the stand-in alone (``bench.stand_in``), and our ratio to it."""
    in_flight = storm.in_flight or DEFAULT_MAX_CONCURRENT_CREATIONS
    floor = anyio.run(run_stand_in, storm.n, in_flight, storm.stand_in)
    case = f"storm / {storm.stand_in} stand-in alone, N={storm.n:,} in-flight={in_flight}"
    pairs = [
        ("created_at - scheduled_at p50", storm.recorded_ms.p50, floor.done_ms.p50),
        ("created_at - scheduled_at p99", storm.recorded_ms.p99, floor.done_ms.p99),
        ("created_at - scheduled_at max", storm.recorded_ms.max, floor.done_ms.max),
    ]
    ratios = [
        Row(bench="ratio", case=case, metric=metric, value=ours / alone, unit="x")
        for metric, ours, alone in pairs
    ]
    return stand_in_rows(floor) + ratios


def _recorded_target(result: StormResult) -> str:
    """The issue's line for the user-visible figure: zero jitter, ``managed_agents``."""
    if result.max_jitter > 0 or result.launcher != "managed_agents":
        return ""
    return {2_000: "< 400", 10_000: "< 2,000"}.get(result.n, "")


def storm_sizes(quick: bool) -> list[int]:
    return [1_000] if quick else [1_000, 10_000, 100_000]


def journal_urls(journals: list[str]) -> list[str | None]:
    """Per ``--journal``: None (the SQLite file) or a fresh database of a throwaway cluster
    (``tests.support.postgres``, Unix socket only), removed when the process exits."""
    if "postgresql" not in journals:
        return [None for _ in journals]
    from tests.support.postgres import start_cluster  # noqa: PLC0415

    cluster = start_cluster()
    atexit.register(cluster.remove)
    return [
        None if journal == "sqlite" else cluster.url(cluster.create_database())
        for journal in journals
    ]


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
        "--in-flight",
        type=int,
        action="append",
        help="[launcher] max_concurrent_creations (repeatable; default: the daemon's)",
    )
    parser.add_argument(
        "--profile", type=Path, help="write py-spy collapsed stacks of the daemon to this file"
    )
    parser.add_argument(
        "--stand-in",
        choices=["aiohttp", "lean"],
        action="append",
        help="the hosted API's stand-in for managed_agents (repeatable; default aiohttp)",
    )
    parser.add_argument(
        "--journal",
        choices=["sqlite", "postgresql"],
        action="append",
        help="journal backend (repeatable; default sqlite); postgresql runs a throwaway cluster",
    )
    args = parser.parse_args(argv)
    sizes = args.n or storm_sizes(args.quick)
    launchers: list[LauncherName] = args.launcher or ["command", "managed_agents"]
    rows: list[Row] = []
    urls = journal_urls(args.journal or ["sqlite"])
    for launcher in launchers:
        for n in sizes:
            for in_flight, url in itertools.product(args.in_flight or [None], urls):
                kinds: list[ServerKind] = ["aiohttp"]
                if launcher == "managed_agents" and args.stand_in:
                    kinds = args.stand_in
                for kind in kinds:
                    storm = functools.partial(
                        run_storm,
                        n,
                        launcher,
                        max_jitter=args.max_jitter,
                        profile=args.profile,
                        in_flight=in_flight,
                        stand_in=kind,
                        journal_url=url,
                    )
                    result = anyio.run(storm)
                    shown = storm_rows(result) + (floor_rows(result) if wants_floor(result) else [])
                    rows += shown
                    print(render_rows(shown), flush=True)
    print()
    print(render_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
