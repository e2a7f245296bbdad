"""End to end against the real ``agentcrond`` process: systemd protocol, CLI, firing, crashes."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentcron.daemon import GC_THRESHOLDS
from tests.support.daemon_harness import (
    DaemonProcess,
    child_processes,
    create_body,
    list_all_runs,
    process_exited,
    request,
    running_daemon,
    write_config,
)
from tests.support.fakes import wait_until
from tests.support.hosted_api import Fault, HostedApi
from tests.support.shifted_daemon import offset_before_minute

pytestmark = pytest.mark.timeout(240)


def run_cli(*args: str, socket_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentcron", *args, "--socket", str(socket_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "check.toml"
    config.write_text(text)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from agentcron.daemon import main; raise SystemExit(main())",
            "--config",
            str(config),
            "--check-config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[daemon]\nflavour = 'x'\n", "daemon.flavour: unknown key"),
        ("[daemon]\nmax_deployments = 'lots'\n", "daemon.max_deployments: expected an integer"),
        ("[daemon]\nmisfire_grace = 'a while'\n", "daemon.misfire_grace:"),
        ("[launcher]\nmax_concurrent_creations = 0\n", "launcher.max_concurrent_creations:"),
        (
            "[launcher]\ntype = 'managed_agents'\n[launcher.managed_agents]\n"
            "api_key_file = '/nonexistent/agentcron-key'\n",
            "launcher.managed_agents.api_key_file",
        ),
    ],
    ids=["unknown-key", "wrong-type", "bad-duration", "zero-creations", "unreadable-api-key-file"],
)
def test_check_config_rejects_bad_configs_naming_the_key(
    tmp_path: Path, text: str, named: str
) -> None:
    result = check_config(tmp_path, text)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_prints_the_effective_settings(tmp_path: Path) -> None:
    result = check_config(
        tmp_path,
        "[daemon]\nmax_jitter = '3s'\nlog_level = 'debug'\n"
        "[launcher]\nmax_concurrent_creations = 32\n",
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["daemon"]["max_jitter"] == 3.0
    assert settings["daemon"]["log_level"] == "debug"
    assert settings["launcher"]["type"] == "command"
    assert settings["launcher"]["max_concurrent_creations"] == 32


def test_ready_status_watchdog_and_stopping_reach_systemd(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    daemon = DaemonProcess(tmp_path, config, env={"WATCHDOG_USEC": "1000000"})
    try:
        daemon.start()
        assert daemon.notify is not None
        ready = daemon.notify.wait_for("READY", "1")
        assert "active" in ready.get("STATUS", ""), ready
        assert daemon.socket_path.exists()
        assert oct(daemon.socket_path.stat().st_mode & 0o777) == oct(0o660)
        daemon.notify.wait_for("WATCHDOG", "1", timeout=5)
        status, health = daemon.request("GET", "/v1/health")
        assert status == 200
        assert health["status"] == "ok"
        assert daemon.stop(signal.SIGTERM) == 0
        daemon.notify.wait_for("STOPPING", "1", timeout=1)
        assert not daemon.socket_path.exists()
    finally:
        daemon.close()


def test_a_second_daemon_on_the_same_state_directory_refuses(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running_daemon(tmp_path, config) as first:
        second = DaemonProcess(tmp_path, config)
        second.log_path = tmp_path / "second.log"
        try:
            second.start(wait_ready=False)
            assert second.process is not None
            assert second.process.wait(timeout=30) == 1
            assert "already running" in second.logs()
        finally:
            second.close()
        status, _ = first.request("GET", "/v1/health")
        assert status == 200, "the first daemon keeps serving"


def test_socket_activation_uses_the_inherited_listening_socket(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    activated = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(activated))
    listener.listen(16)
    daemon = DaemonProcess(tmp_path, config)
    fd = listener.fileno()
    # What systemd does: the listening socket as fd 3, LISTEN_PID = the daemon's own pid.
    activate = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid());"
        " os.environ['LISTEN_FDS'] = '1'; os.execv(sys.argv[2], sys.argv[2:])"
    )
    try:
        daemon.start(pass_fds=[fd], argv_prefix=[sys.executable, "-c", activate, str(fd)])
        listener.close()
        status, health = request(activated, "GET", "/v1/health")
        assert status == 200
        assert health["status"] == "ok"
        assert not daemon.socket_path.exists(), "the configured socket path was not bound"
        assert daemon.stop() == 0
    finally:
        listener.close()
        daemon.close()


def _wait_for_runs(
    daemon: DaemonProcess, query: str, count: int, timeout: float
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []

    def enough() -> bool:
        runs[:] = list_all_runs(daemon, query)
        return len(runs) >= count

    wait_until(enough, f"{count} runs for {query!r}", timeout=timeout)
    return runs


def test_a_cli_created_deployment_fires_on_schedule_and_runs_manually(tmp_path: Path) -> None:
    """The daemon's wall clock starts 5 s before a whole minute, so its first fire is near."""
    config = write_config(tmp_path, max_jitter="1s")
    with running_daemon(tmp_path, config, clock_offset=offset_before_minute(5.0)) as daemon:
        created = run_cli(
            "deployments",
            "create",
            "--name",
            "every minute",
            "--agent",
            "agent_rec",
            "--environment",
            "env_local",
            "--message",
            "tick",
            "--cron",
            "* * * * *",
            "--timezone",
            "UTC",
            "--json",
            socket_path=daemon.socket_path,
        )
        assert created.returncode == 0, created.stderr
        deployment = json.loads(created.stdout)
        assert deployment["schedule"]["upcoming_runs_at"]

        manual = run_cli(
            "deployments", "run", deployment["id"], "--json", socket_path=daemon.socket_path
        )
        assert manual.returncode == 0, manual.stderr
        manual_run = json.loads(manual.stdout)
        assert manual_run["trigger_context"] == {"type": "manual"}
        assert manual_run["session_id"], manual_run

        first_due = deployment["schedule"]["upcoming_runs_at"][0]
        runs = _wait_for_runs(
            daemon, f"&deployment_id={deployment['id']}&trigger_type=schedule", 1, timeout=80
        )
        scheduled = runs[0]
        assert scheduled["trigger_context"]["scheduled_at"] == first_due
        assert scheduled["session_id"], scheduled

        log_file = daemon.state_dir / "sessions" / f"{scheduled['session_id']}.log"
        wait_until(
            lambda: log_file.exists() and "session request" in log_file.read_text(),
            "the scheduled session's request in its log",
        )
        assert "tick" in log_file.read_text()
        status, body = daemon.request("GET", f"/v1/deployments/{deployment['id']}")
        assert status == 200
        assert body["schedule"]["last_run_at"] is not None


def test_sigkill_during_a_burst_then_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """150 deployments fire in one jittered minute; the daemon is killed once a third of them
    fired and restarted. (Its wall clock starts 6 s before a whole minute.)"""
    count = 150
    config = write_config(tmp_path, max_jitter="10s")
    daemon = DaemonProcess(tmp_path, config, clock_offset=offset_before_minute(6.0))
    try:
        daemon.start()
        ids = []
        first_fires = set()
        for index in range(count):
            status, body = daemon.request("POST", "/v1/deployments", create_body(f"burst {index}"))
            assert status == 200, body
            ids.append(body["id"])
            first_fires.add(body["schedule"]["upcoming_runs_at"][0])
        # Every minute: all of them fire at the latest first fire (+ jitter < 10 s), even if
        # the creations straddled a minute.
        scheduled_at = max(first_fires)

        def burst_runs() -> list[dict[str, Any]]:
            return [
                r
                for r in list_all_runs(daemon, "&trigger_type=schedule")
                if r["trigger_context"]["scheduled_at"] == scheduled_at
            ]

        fired_before_kill: list[int] = []

        def a_third_fired() -> bool:
            fired_before_kill.append(len(burst_runs()))
            return fired_before_kill[-1] >= count // 3

        wait_until(a_third_fired, "a third of the burst fired", timeout=75)
        daemon.kill()
        assert fired_before_kill[-1] < count, "killed in the middle of the burst"
        daemon.start()
        runs: list[dict[str, Any]] = []

        def all_fired() -> bool:
            runs[:] = burst_runs()
            return len(runs) >= count

        wait_until(all_fired, f"all {count} runs of the burst", timeout=40)
        per_deployment = Counter(r["deployment_id"] for r in runs)
        assert set(per_deployment) == set(ids), "no lost claim: every deployment has its run"
        assert max(per_deployment.values()) == 1, "no (deployment_id, scheduled_at) twice"
        for run in runs:
            assert (run["session_id"] is None) != (run["error"] is None), run
        seen: list[dict[str, str]] = []

        def every_session_wrote_its_line() -> bool:  # an agent writes just after it started
            lines = (tmp_path / "seen.jsonl").read_text().splitlines()
            seen[:] = [json.loads(line) for line in lines]
            started = {s["session_id"] for s in seen}
            return all(r["session_id"] in started for r in runs if r["session_id"])

        wait_until(every_session_wrote_its_line, "a line from every session a run names")
        assert len({s["run_id"] for s in seen}) == len(seen), "no session started twice for a run"
        assert daemon.stop() == 0
    finally:
        daemon.close()
    with sqlite3.connect(tmp_path / "state" / "journal.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_session_spawner_leaves_with_a_killed_daemon(tmp_path: Path) -> None:
    """SIGKILL gives the daemon no chance to stop its helper: the helper sees the socket close."""
    config = write_config(tmp_path)
    daemon = DaemonProcess(tmp_path, config)
    try:
        daemon.start()
        status, deployment = daemon.request("POST", "/v1/deployments", create_body("spawned"))
        assert status == 200, deployment
        status, run = daemon.request("POST", f"/v1/deployments/{deployment['id']}/run")
        assert status == 200, run
        assert run["session_id"], run
        [helper] = child_processes(daemon.pid, b"spawner.py")
        daemon.kill()
        wait_until(lambda: process_exited(helper), "the spawner left with its daemon")
    finally:
        daemon.close()


async def test_a_burst_keeps_at_most_max_concurrent_creations_in_flight(tmp_path: Path) -> None:
    """``[launcher] max_concurrent_creations`` bounds the scheduled session creations that run
    at once: eight deployments due at one instant reach a slow hosted API three at a time."""
    count, limit = 8, 3
    async with HostedApi(record=False, session_fault=Fault.SLOW, slow_seconds=0.5) as api:
        api.add_agent("agent_rec")
        api.add_environment("env_local")
        config = tmp_path / "agentcron.toml"
        config.write_text(
            f"""
[daemon]
state_dir = "{tmp_path / "state"}"
socket = "{tmp_path / "run" / "control.sock"}"
max_jitter = "0s"
log_format = "json"

[launcher]
type = "managed_agents"
max_concurrent_creations = {limit}

[launcher.managed_agents]
base_url = "{api.base_url}"
"""
        )
        daemon = DaemonProcess(
            tmp_path,
            config,
            env={"ANTHROPIC_API_KEY": api.api_key},
            clock_offset=offset_before_minute(8.0),
        )
        try:
            await anyio.to_thread.run_sync(daemon.start)
            for index in range(count):
                body = create_body(f"burst {index}")
                status, created = await anyio.to_thread.run_sync(
                    daemon.request, "POST", "/v1/deployments", body
                )
                assert status == 200, created
            runs: list[dict[str, Any]] = []
            with anyio.move_on_after(40):  # the shifted minute boundary is 8 s away
                while len(runs) < count:
                    await anyio.sleep(0.5)
                    runs = await anyio.to_thread.run_sync(
                        list_all_runs, daemon, "&trigger_type=schedule"
                    )
            assert len(runs) >= count, daemon.logs()[-3000:]
            assert all(run["session_id"] for run in runs), runs
            assert api.max_sessions_in_flight == limit
        finally:
            await anyio.to_thread.run_sync(daemon.close)


class _GcReportingDaemon(DaemonProcess):
    """The daemon with an exit hook that logs the cyclic collector's thresholds."""

    def daemon_command(self) -> list[str]:
        script = (
            "import atexit, gc, sys; atexit.register(lambda: print("
            "'gc_threshold', *gc.get_threshold(), file=sys.stderr, flush=True)); "
            "from agentcron.daemon import main; raise SystemExit(main())"
        )
        return [sys.executable, "-c", script, "--config", str(self.config)]


def test_the_daemon_runs_with_the_young_collection_threshold_raised(tmp_path: Path) -> None:
    """``GC_THRESHOLDS`` is in force in the running daemon (why: docs/benchmarks.md)."""
    assert GC_THRESHOLDS[0] > gc.get_threshold()[0], "higher than this test process's"
    daemon = _GcReportingDaemon(tmp_path, write_config(tmp_path))
    try:
        daemon.start()
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert "gc_threshold " + " ".join(map(str, GC_THRESHOLDS)) in daemon.logs()
