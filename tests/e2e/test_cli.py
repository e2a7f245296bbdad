"""The `agentcron` CLI against a real daemon socket: commands, output and exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agentcron.cli import main
from agentcron.logs import configure_logging
from agentcron.paths import default_socket_path, resolve_socket_path
from tests.support.api_harness import ApiServer, deployment_body, short_socket_dir
from tests.support.fakes import wait_until

CREATE_FLAGS = [
    "--name", "hello", "--agent", "agent_test", "--environment", "env_test",
    "--message", "Say hello.", "--cron", "0 9 * * 1-5", "--timezone", "Europe/Paris",
]  # fmt: skip


@pytest.fixture(autouse=True)
def quiet_daemon_logs() -> Iterator[None]:
    """The daemon under test shares this process: keep its log lines out of the CLI's output."""
    configure_logging("warning", "json")
    yield
    structlog.reset_defaults()


def cli(
    server: ApiServer | None, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    args = list(argv)
    if server is not None:
        args += ["--socket", str(server.socket_path)]
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(server: ApiServer, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = cli(server, capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_no_daemon_is_exit_3_with_the_socket_and_how_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.sock"
    code = main(["status", "--socket", str(missing)])
    err = capsys.readouterr().err
    assert code == 3
    assert str(missing) in err
    assert "does not exist" in err
    assert "agentcrond --config" in err
    assert "systemctl start agentcron" in err


def test_a_stale_socket_is_exit_3_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with short_socket_dir() as directory:
        path = directory / "control.sock"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(path))
        dead.close()
        code = main(["deployments", "list", "--socket", str(path)])
    assert code == 3
    assert "connection refused" in capsys.readouterr().err


def test_create_from_flags(api_server: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    created = cli_json(
        api_server, capsys, "deployments", "create", *CREATE_FLAGS,
        "--description", "greets", "--metadata", "team=ops", "--metadata", "tier=1",
    )  # fmt: skip
    assert created["name"] == "hello"
    assert created["agent"] == {"type": "agent", "id": "agent_test", "version": 1}
    assert created["schedule"]["expression"] == "0 9 * * 1-5"
    assert created["schedule"]["timezone"] == "Europe/Paris"
    assert created["metadata"] == {"team": "ops", "tier": "1"}
    assert created["initial_events"][0]["content"][0]["text"] == "Say hello."


def test_create_shows_a_readable_summary_by_default(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(api_server, capsys, "deployments", "create", *CREATE_FLAGS)
    assert code == 0
    assert "name:" in out
    assert "0 9 * * 1-5 (Europe/Paris)" in out
    assert "agent_test v1" in out


def test_create_from_a_file_with_flags_overriding(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps(deployment_body(name="from file")))
    created = cli_json(api_server, capsys, "deployments", "create", "--file", str(body_file))
    assert created["name"] == "from file"
    renamed = cli_json(
        api_server, capsys, "deployments", "create", "--file", str(body_file), "--name", "flag"
    )
    assert renamed["name"] == "flag"


def test_create_reads_the_body_from_stdin(api_server: ApiServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentcron", "deployments", "create", "--file", "-", "--json"],
        input=json.dumps(deployment_body(name="from stdin")),
        env={**os.environ, "AGENTCRON_SOCKET": str(api_server.socket_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "from stdin"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["deployments", "create", "--name", "x"], ["--agent", "--environment", "--message"]),
        (["deployments", "create", *CREATE_FLAGS, "--metadata", "novalue"], ["KEY=VALUE"]),
        (["deployments", "create", "--file", "/nonexistent/body.json"], ["--file"]),
        (["deployments", "update", "depl_x"], ["at least one field"]),
        (["deployments", "update", "depl_x", "--no-schedule", "--cron", "* * * * *"], ["--no-"]),
    ],
    ids=["missing-flags", "bad-metadata", "missing-file", "empty-update", "no-schedule-and-cron"],
)
def test_inconsistent_command_lines_are_exit_2(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    code, _, err = cli(api_server, capsys, *argv)
    assert code == 2
    for word in words:
        assert word in err


def test_argparse_usage_errors_are_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["deployments", "list", "--limit", "0"])
    assert caught.value.code == 2
    assert main(["deployments"]) == 2
    capsys.readouterr()


def test_api_errors_are_exit_1_with_type_and_message(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(api_server, capsys, "deployments", "get", "depl_missing")
    assert code == 1
    assert err.startswith("error: not_found_error: ")
    assert "depl_missing" in err
    code, _, err = cli(
        api_server, capsys, "deployments", "create", *CREATE_FLAGS[:-2], "--timezone", "Mars/Base"
    )
    assert code == 1
    assert "error: invalid_request_error: schedule.timezone" in err


def test_lifecycle_commands(api_server: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    deployment_id = cli_json(api_server, capsys, "deployments", "create", *CREATE_FLAGS)["id"]
    paused = cli_json(api_server, capsys, "deployments", "pause", deployment_id)
    assert paused["status"] == "paused"
    code, out, _ = cli(api_server, capsys, "deployments", "get", deployment_id)
    assert code == 0
    assert "paused (manual)" in out
    run = cli_json(api_server, capsys, "deployments", "run", deployment_id)
    assert run["trigger_context"] == {"type": "manual"}
    assert cli_json(api_server, capsys, "deployments", "unpause", deployment_id)["status"] == (
        "active"
    )
    archived = cli_json(api_server, capsys, "deployments", "archive", deployment_id)
    assert archived["archived_at"] is not None
    code, _, err = cli(api_server, capsys, "deployments", "archive", deployment_id)
    assert code == 1
    assert "error: invalid_request_error:" in err


def test_update_sends_only_the_given_fields(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    created = cli_json(
        api_server, capsys, "deployments", "create", *CREATE_FLAGS, "--metadata", "a=1",
        "--metadata", "b=2", "--description", "kept",
    )  # fmt: skip
    deployment_id = created["id"]
    updated = cli_json(
        api_server, capsys, "deployments", "update", deployment_id, "--name", "renamed",
        "--metadata", "c=3", "--remove-metadata", "a",
    )  # fmt: skip
    assert updated["name"] == "renamed"
    assert updated["description"] == "kept"
    assert updated["metadata"] == {"b": "2", "c": "3"}
    recron = cli_json(
        api_server, capsys, "deployments", "update", deployment_id, "--cron", "5 * * * *"
    )
    assert recron["schedule"]["expression"] == "5 * * * *"
    assert recron["schedule"]["timezone"] == "Europe/Paris"  # the other half is kept
    cleared = cli_json(api_server, capsys, "deployments", "update", deployment_id, "--no-schedule")
    assert cleared["schedule"] is None


def test_list_follows_pages_with_all_and_stops_at_limit(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with api_server.http() as http:
        for index in range(25):
            http.post("/v1/deployments", json=deployment_body(name=f"d{index:02}"))
    before = api_server.count("GET", "/v1/deployments")
    everything = cli_json(api_server, capsys, "deployments", "list", "--all")
    assert len(everything) == 25
    assert api_server.count("GET", "/v1/deployments") - before == 2  # pages of 20 and 5
    assert len(cli_json(api_server, capsys, "deployments", "list", "--limit", "3")) == 3
    code, out, _ = cli(api_server, capsys, "deployments", "list", "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert len(lines) == 3
    assert "d24" in lines[1]  # newest first


def test_runs_list_and_get(api_server: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    first = cli_json(api_server, capsys, "deployments", "create", *CREATE_FLAGS)["id"]
    second = cli_json(api_server, capsys, "deployments", "create", *CREATE_FLAGS)["id"]
    ok = cli_json(api_server, capsys, "deployments", "run", first)
    failed = api_server.add_run(second, error_type="vault_not_found")
    all_runs = cli_json(api_server, capsys, "runs", "list")
    assert [r["id"] for r in all_runs] == [failed.id, ok["id"]]
    only_first = cli_json(api_server, capsys, "runs", "list", "--deployment", first)
    assert [r["id"] for r in only_first] == [ok["id"]]
    errors = cli_json(api_server, capsys, "runs", "list", "--errors")
    assert [r["id"] for r in errors] == [failed.id]
    code, out, _ = cli(api_server, capsys, "runs", "list")
    assert code == 0
    assert "error vault_not_found" in out
    assert cli_json(api_server, capsys, "runs", "get", ok["id"]) == ok
    code, out, _ = cli(api_server, capsys, "runs", "get", failed.id)
    assert "vault_not_found" in out


def test_status_shows_the_daemon_health(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_json(api_server, capsys, "deployments", "create", *CREATE_FLAGS)
    code, out, _ = cli(api_server, capsys, "status")
    assert code == 0
    assert str(api_server.journal_path) in out
    assert "active 1" in out
    health = cli_json(api_server, capsys, "status")
    assert health["status"] == "ok"


def _read_line(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            return line
    raise AssertionError("no output from runs list --follow")


def test_runs_follow_prints_each_new_run_once_until_ctrl_c(api_server: ApiServer) -> None:
    with api_server.http() as http:
        deployment_id = http.post("/v1/deployments", json=deployment_body()).json()["id"]
        existing = http.post(f"/v1/deployments/{deployment_id}/run").json()
        process = subprocess.Popen(
            [sys.executable, "-m", "agentcron", "runs", "list", "--follow", "--json"],
            env={**os.environ, "AGENTCRON_SOCKET": str(api_server.socket_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            assert json.loads(_read_line(process, deadline))["id"] == existing["id"]
            fresh = http.post(f"/v1/deployments/{deployment_id}/run").json()
            assert json.loads(_read_line(process, deadline))["id"] == fresh["id"]
            polls = api_server.count("GET", "/v1/deployment_runs")
            wait_until(  # two more polls answered, and nothing printed twice
                lambda: api_server.count("GET", "/v1/deployment_runs") >= polls + 2,
                "two more polls of the run list",
            )
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert out.strip() == ""
    assert process.returncode == 0


def test_default_socket_path_order(tmp_path: Path) -> None:
    system = tmp_path / "system.sock"
    runtime = {"RUNTIME_DIRECTORY": "/run/agentcron:/run/other", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert default_socket_path(runtime, system_socket=system) == Path("/run/agentcron/control.sock")
    xdg = {"XDG_RUNTIME_DIR": "/run/user/7"}
    assert default_socket_path(xdg, system_socket=system) == Path(
        "/run/user/7/agentcron/control.sock"
    )
    assert default_socket_path({}, system_socket=system) == Path(
        f"/tmp/agentcron-{os.getuid()}/control.sock"
    )
    with short_socket_dir() as directory:
        live = directory / "control.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(live))
        with listener:
            assert default_socket_path(xdg, system_socket=live) == live  # systemd's socket wins


def test_socket_flag_beats_environment_beats_default() -> None:
    env = {"AGENTCRON_SOCKET": "/from/env.sock", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert resolve_socket_path("/from/flag.sock", env) == Path("/from/flag.sock")
    assert resolve_socket_path(None, env) == Path("/from/env.sock")
    assert resolve_socket_path(None, {"XDG_RUNTIME_DIR": "/run/user/7"}) == Path(
        "/run/user/7/agentcron/control.sock"
    )
