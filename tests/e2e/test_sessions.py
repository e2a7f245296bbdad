"""Sessions you can inspect, end to end: a real daemon, real children, the socket and the CLI.

``GET /v1/sessions/{id}`` and its log (offsets, ``Range``, ``follow``), ``POST .../stop``,
``max_duration`` and ``overlap = "skip"`` through the daemon, ``agentcron sessions ...`` and
``runs get``, a restart that finds a session still recorded as running, and the
``managed_agents`` launcher's 404 that says where its sessions live.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.daemon_harness import (
    DaemonProcess,
    UnixHTTPConnection,
    create_body,
    process_exited,
)
from tests.support.fakes import wait_until
from tests.support.hosted_api import HostedApi

TALKER = "echo line-1; sleep 0.6; echo line-2; sleep 0.6; echo line-3"


def sessions_config(directory: Path, *, host: str = "edge-e2e", extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "agentcron.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{directory / "state"}"
socket = "{directory / "run" / "control.sock"}"
log_format = "json"
node_name = "{host}"

[launcher]
type = "command"
stop_grace = "2s"

[agents.agent_long]
argv = ["/bin/sh", "-c", "echo started; exec sleep 3600"]
overlap = "skip"

[agents.agent_limited]
argv = ["/bin/sh", "-c", "sleep 3600 & echo grandchild=$!; wait"]
max_duration = "1s"
stop_grace = "1s"

[agents.agent_talk]
argv = ["/bin/sh", "-c", "{TALKER}"]

[environments.env_local]
cwd = "{directory}"
{extra}
"""
    )
    return config


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path, sessions_config(tmp_path))
    try:
        process.start()
        yield process
    finally:
        process.close()


def deploy(daemon: DaemonProcess, agent: str) -> str:
    body = {**create_body(agent, cron=None), "agent": agent}
    status, created = daemon.request("POST", "/v1/deployments", body)
    assert status == 200, created
    return str(created["id"])


def run_now(daemon: DaemonProcess, deployment_id: str) -> dict[str, Any]:
    status, run = daemon.request("POST", f"/v1/deployments/{deployment_id}/run")
    assert status == 200, run
    return dict(run)


def raw_get(
    daemon: DaemonProcess, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = UnixHTTPConnection(daemon.socket_path)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def session(daemon: DaemonProcess, session_id: str) -> dict[str, Any]:
    status, body = daemon.request("GET", f"/v1/sessions/{session_id}")
    assert status == 200, body
    return dict(body)


def cli(daemon: DaemonProcess, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentcron", *argv, "--socket", str(daemon.socket_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_running_session_is_shown_stopped_and_stays_stopped(daemon: DaemonProcess) -> None:
    run = run_now(daemon, deploy(daemon, "agent_long"))
    session_id = run["session_id"]
    wait_until(lambda: b"started" in raw_get(daemon, f"/v1/sessions/{session_id}/log")[2], "log")
    shown = session(daemon, session_id)
    assert {k: shown[k] for k in ("status", "run_id", "host", "end_reason", "exit_code")} == {
        "status": "running",
        "run_id": run["id"],
        "host": "edge-e2e",
        "end_reason": None,
        "exit_code": None,
    }
    assert shown["log_bytes"] == len(b"started\n")
    pid = shown["pid"]
    assert not process_exited(pid)
    follower = UnixHTTPConnection(daemon.socket_path)  # a follower that leaves early
    follower.request("GET", f"/v1/sessions/{session_id}/log?follow=true")
    answer = follower.getresponse()
    assert (answer.status, answer.readline()) == (200, b"started\n")
    follower.close()

    status, stopped = daemon.request("POST", f"/v1/sessions/{session_id}/stop")
    assert status == 200, stopped
    assert (stopped["status"], stopped["signal"], stopped["end_reason"]) == (
        "killed",
        "SIGTERM",
        "stopped",
    )
    assert stopped["ended_at"] is not None
    assert process_exited(pid)
    status, again = daemon.request("POST", f"/v1/sessions/{session_id}/stop")
    assert (status, again) == (200, stopped)  # an ended session: idempotent

    text = cli(daemon, "sessions", "get", session_id)
    assert text.returncode == 0, text.stderr
    assert f"○ {session_id} - killed" in text.stdout
    assert "killed (signal=SIGTERM)" in text.stdout
    assert "Reason: stopped" in text.stdout
    shown_run = cli(daemon, "runs", "get", run["id"])
    assert shown_run.returncode == 0, shown_run.stderr
    assert f"session {session_id}" in shown_run.stdout
    assert "Reason: stopped" in shown_run.stdout
    as_json = json.loads(cli(daemon, "runs", "get", run["id"], "--json").stdout)
    assert as_json["session"]["status"] == "killed"
    assert "api_request_failed" not in daemon.logs()


def test_overlap_skip_records_one_refused_run_per_manual_trigger(daemon: DaemonProcess) -> None:
    deployment_id = deploy(daemon, "agent_long")
    first = run_now(daemon, deployment_id)
    assert first["session_id"]
    refused = [run_now(daemon, deployment_id) for _ in range(3)]
    assert [r["error"]["type"] for r in refused] == ["session_already_running"] * 3
    assert all(first["session_id"] in r["error"]["message"] for r in refused)
    status, page = daemon.request(
        "GET", f"/v1/deployment_runs?deployment_id={deployment_id}&limit=100"
    )
    assert status == 200
    assert sorted(r["id"] for r in page["data"] if r["error"]) == sorted(r["id"] for r in refused)
    stopped = cli(daemon, "sessions", "stop", first["session_id"])
    assert stopped.returncode == 0, stopped.stderr
    assert f"○ {first['session_id']} - killed" in stopped.stdout
    shown = json.loads(cli(daemon, "sessions", "get", first["session_id"], "--json").stdout)
    assert (shown["end_reason"], shown["signal"]) == ("stopped", "SIGTERM")
    assert run_now(daemon, deployment_id)["session_id"]  # the previous one ended: allowed


def test_max_duration_ends_the_session_and_its_grandchild(daemon: DaemonProcess) -> None:
    run = run_now(daemon, deploy(daemon, "agent_limited"))
    session_id = run["session_id"]

    def log() -> bytes:
        return raw_get(daemon, f"/v1/sessions/{session_id}/log")[2]

    wait_until(lambda: b"grandchild=" in log(), "the grandchild's pid in the log")
    grandchild = int(log().split(b"grandchild=")[1].split()[0])
    wait_until(lambda: session(daemon, session_id)["status"] != "running", "the session ended")
    ended = session(daemon, session_id)
    assert (ended["status"], ended["signal"], ended["end_reason"]) == (
        "killed",
        "SIGTERM",
        "max_duration",
    )
    wait_until(lambda: process_exited(grandchild), "the grandchild is gone too")


def test_logs_follow_ends_when_the_child_exits_and_offsets_are_honoured(
    daemon: DaemonProcess,
) -> None:
    run = run_now(daemon, deploy(daemon, "agent_talk"))
    session_id = run["session_id"]
    followed = cli(daemon, "sessions", "logs", "--follow", session_id)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "line-1\nline-2\nline-3\n"
    assert session(daemon, session_id)["status"] == "exited"  # it had ended when follow did

    whole = b"line-1\nline-2\nline-3\n"
    status, headers, body = raw_get(daemon, f"/v1/sessions/{session_id}/log?offset=7")
    assert (status, body, headers["x-log-size"]) == (200, whole[7:], str(len(whole)))
    assert headers["request-id"].startswith("req_")
    status, headers, body = raw_get(
        daemon, f"/v1/sessions/{session_id}/log", {"Range": "bytes=7-12"}
    )
    assert (status, body, headers["Content-Range"]) == (206, b"line-2", f"bytes 7-12/{len(whole)}")
    status, _, body = raw_get(daemon, f"/v1/sessions/{session_id}/log", {"Range": "bytes=999-"})
    assert status == 416
    assert b"holds 21 bytes" in body
    status, _, body = raw_get(daemon, f"/v1/sessions/{session_id}/log?offset=-1")
    assert status == 400
    assert json.loads(body)["error"]["message"].startswith("offset: must be a non-negative")
    status, _, body = raw_get(daemon, f"/v1/sessions/{session_id}/log?follow=maybe")
    assert (status, json.loads(body)["error"]["message"]) == (
        400,
        "follow: must be true or false, got 'maybe'",
    )
    tail = cli(daemon, "sessions", "logs", "--offset", "14", session_id)
    assert tail.stdout == "line-3\n"


def test_unknown_sessions_are_404_everywhere(daemon: DaemonProcess) -> None:
    for method, path in (
        ("GET", "/v1/sessions/sesn_nope"),
        ("GET", "/v1/sessions/sesn_nope/log"),
        ("POST", "/v1/sessions/sesn_nope/stop"),
    ):
        status, body = daemon.request(method, path)
        assert status == 404, (method, path, body)
        assert body["error"] == {
            "type": "not_found_error",
            "message": "session sesn_nope not found",
        }
    failed = cli(daemon, "sessions", "get", "sesn_nope")
    assert failed.returncode == 1
    assert "not_found_error: session sesn_nope not found" in failed.stderr


def test_a_session_running_when_the_daemon_was_killed_is_recovered_at_restart(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path, sessions_config(tmp_path))
    pid = None
    try:
        daemon.start()
        run = run_now(daemon, deploy(daemon, "agent_long"))
        session_id = run["session_id"]
        wait_until(lambda: session(daemon, session_id)["log_bytes"] == 8, "started")
        pid = session(daemon, session_id)["pid"]
        daemon.kill()
        assert not process_exited(pid)  # a killed daemon leaves its sessions running
        daemon.start()
        shown = session(daemon, session_id)
        assert (shown["status"], shown["end_reason"], shown["exit_code"]) == (
            "unknown",
            "recovered",
            None,
        )
        assert "sessions_recovered" in daemon.logs()
    finally:
        daemon.close()
        if pid is not None and not process_exited(pid):
            os.killpg(pid, signal.SIGKILL)


async def test_managed_agents_sessions_answer_404_naming_the_hosted_api(tmp_path: Path) -> None:
    async with HostedApi(record=False) as api:
        api.add_agent("agent_rec")
        api.add_environment("env_local")
        config = tmp_path / "agentcron.toml"
        config.write_text(
            f"""
[daemon]
state_dir = "{tmp_path / "state"}"
socket = "{tmp_path / "run" / "control.sock"}"
log_format = "json"

[launcher]
type = "managed_agents"

[launcher.managed_agents]
base_url = "{api.base_url}"
"""
        )
        daemon = DaemonProcess(tmp_path, config, env={"ANTHROPIC_API_KEY": api.api_key})
        try:
            await anyio.to_thread.run_sync(daemon.start)
            status, created = await anyio.to_thread.run_sync(
                daemon.request, "POST", "/v1/deployments", create_body("hosted", cron=None)
            )
            assert status == 200, created
            run = await anyio.to_thread.run_sync(run_now, daemon, created["id"])
            session_id = run["session_id"]
            for method, path in (
                ("GET", f"/v1/sessions/{session_id}"),
                ("GET", f"/v1/sessions/{session_id}/log"),
                ("POST", f"/v1/sessions/{session_id}/stop"),
            ):
                status, body = await anyio.to_thread.run_sync(daemon.request, method, path)
                assert status == 404, body
                message = body["error"]["message"]
                assert "sessions live in the hosted API" in message
                assert f"{api.base_url}/v1/sessions/{session_id}" in message
            shown = await anyio.to_thread.run_sync(cli, daemon, "runs", "get", run["id"])
            assert shown.returncode == 0, shown.stderr
            assert f"session {session_id}" in shown.stdout
            assert "sessions live in the hosted API" in shown.stdout
        finally:
            await anyio.to_thread.run_sync(daemon.close)
