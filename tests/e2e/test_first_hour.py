"""The traps a new user hits in the first hour, each tried the way a new user would hit it.

- ``agentcrond --check-config`` finds the programs, directories and env-files a fire would fail
  on; the daemon warns about them at start and on SIGHUP but still starts.
- Undeclared (or archived) vaults are a 400 at create and update, like agents and environments.
- A failed run is a warning in the log, with its error type.
- ``/v1/health`` and ``agentcron status`` say ``degraded``, with the reason.
- ``deployments list`` shows ``paused`` for a paused deployment instead of a next run.
- A deployment name has a length limit.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import structlog
from structlog.testing import capture_logs

from agentcron.cli import main as cli_main
from agentcron.core.models import AgentRef
from agentcron.daemon import build_stack
from agentcron.errors import InvalidRequest, LaunchFailure, ServiceUnavailable
from agentcron.health import RECENT_SCHEDULED_RUNS, ReasonType
from agentcron.journal import SqliteJournal
from agentcron.launchers import ManagedAgentsLauncher
from agentcron.launchers.base import SessionRequest
from agentcron.logs import configure_logging
from agentcron.runtime.firing import Firing
from agentcron.runtime.scheduler import Scheduler
from agentcron.runtime.service import DeploymentService
from tests.support.api_harness import ApiServer, deployment_body
from tests.support.daemon_harness import DaemonProcess
from tests.support.fakes import FakeClock, RecordingLauncher
from tests.support.hosted_api import Fault, HostedApi

EVENTS = [{"type": "user.message", "content": [{"type": "text", "text": "Say hello."}]}]
LOG_WAIT = 20.0


# --- a real daemon on a config of our own ---------------------------------------------------------


def write_config(directory: Path, declarations: str) -> Path:
    """A config for ``DaemonProcess`` (its state and socket paths) with these declarations."""
    config = directory / "agentcron.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{directory / "state"}"
socket = "{directory / "run" / "control.sock"}"
max_jitter = "0s"
log_format = "json"

[launcher]
type = "command"
stop_grace = "2s"

{declarations}
"""
    )
    return config


def log_lines(daemon: DaemonProcess) -> list[dict[str, Any]]:
    lines = []
    for line in daemon.logs().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def events(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(daemon) if line.get("event") == event]


def wait_for_events(daemon: DaemonProcess, event: str, count: int) -> list[dict[str, Any]]:
    """Read the daemon's log until ``count`` lines of ``event`` are there (it writes them)."""
    deadline = time.monotonic() + LOG_WAIT
    while time.monotonic() < deadline:
        found = events(daemon, event)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} {event} lines within {LOG_WAIT} s:\n{daemon.logs()}")


@contextmanager
def started(directory: Path, config: Path) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(directory, config)
    try:
        daemon.start()
        yield daemon
        assert daemon.stop() == 0, daemon.logs()
    finally:
        daemon.close()


def body(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "hello",
        "agent": "agent_ok",
        "environment_id": "env_ok",
        "initial_events": EVENTS,
    }
    values.update(overrides)
    return values


# --- --check-config finds what fails at fire time ------------------------------------------------


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DaemonProcess(config.parent, config).daemon_command(), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_names_each_program_directory_and_env_file_a_fire_would_fail_on(
    tmp_path: Path,
) -> None:
    """Exit 2 and one line per problem, by key; usable and archived declarations pass (so does
    the example config); an env-file's content is never printed."""
    not_executable = tmp_path / "agent.sh"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    (tmp_path / "vault-dir.env").mkdir()
    (tmp_path / "malformed.env").write_text("GOOD=1\nsecret-value-9d1c\n")
    (tmp_path / "binary.env").write_bytes(b"A=\xff\xfe\n")
    (tmp_path / "good.env").write_text("TOKEN=x\n")
    config = write_config(
        tmp_path,
        f"""
[agents.agent_ok]
argv = ["/bin/sh", "-c", "true"]
[agents.agent_on_path]
argv = ["sh", "-c", "true"]
[agents.agent_missing]
argv = ["{tmp_path / "no-such-program"}"]
[agents.agent_not_executable]
argv = ["{not_executable}"]
[agents.agent_directory]
argv = ["{tmp_path}"]
[agents.agent_not_on_path]
argv = ["agentcron-no-such-program-4f2a"]
[agents.agent_archived]
argv = ["{tmp_path / "also-missing"}"]
archived = true

[environments.env_ok]
cwd = "{tmp_path}"
[environments.env_missing]
cwd = "{tmp_path / "no-such-directory"}"
[environments.env_file]
cwd = "{a_file}"

[vaults.vlt_ok]
env_file = "good.env"
[vaults.vlt_missing]
env_file = "missing.env"
[vaults.vlt_directory]
env_file = "vault-dir.env"
[vaults.vlt_malformed]
env_file = "malformed.env"
[vaults.vlt_binary]
env_file = "binary.env"
""",
    )

    result = check_config(config)

    assert result.returncode == 2, result
    assert result.stdout == ""
    problems = sorted(line.strip() for line in result.stderr.splitlines()[1:])
    assert problems == sorted(
        [
            f"agents.agent_missing.argv[0]: program {tmp_path / 'no-such-program'} does not exist",
            f"agents.agent_not_executable.argv[0]: program {not_executable} is not executable",
            f"agents.agent_directory.argv[0]: program {tmp_path} is a directory",
            "agents.agent_not_on_path.argv[0]: program 'agentcron-no-such-program-4f2a' is not "
            f"found on PATH ({os.environ['PATH']})",
            f"environments.env_missing.cwd: directory {tmp_path / 'no-such-directory'} "
            "does not exist",
            f"environments.env_file.cwd: {a_file} is not a directory",
            f"vaults.vlt_missing.env_file: cannot read its env_file {tmp_path / 'missing.env'}: "
            "No such file or directory",
            f"vaults.vlt_directory.env_file: cannot read its env_file "
            f"{tmp_path / 'vault-dir.env'}: Is a directory",
            f"vaults.vlt_malformed.env_file: its env_file {tmp_path / 'malformed.env'} is "
            "invalid: line 2 is not KEY=VALUE",
            f"vaults.vlt_binary.env_file: its env_file {tmp_path / 'binary.env'} is not UTF-8 text",
        ]
    ), result.stderr
    assert "secret-value-9d1c" not in result.stderr

    example = check_config(Path(__file__).resolve().parents[2] / "config.example.toml")
    assert example.returncode == 0, example.stderr
    assert json.loads(example.stdout)["vaults"] == ["vlt_example"]


def test_unusable_declarations_are_warnings_at_start_and_on_sighup_and_the_daemon_runs(
    tmp_path: Path,
) -> None:
    """The daemon starts anyway (the file may appear later); SIGHUP checks again."""
    late = tmp_path / "late.env"
    config = write_config(
        tmp_path,
        f"""
[agents.agent_ok]
argv = ["/bin/true"]
[environments.env_ok]
cwd = "{tmp_path}"
[environments.env_gone]
cwd = "{tmp_path / "gone"}"
[vaults.vlt_late]
env_file = "{late}"
""",
    )
    with started(tmp_path, config) as daemon:
        warned = events(daemon, "declaration_unusable")
        assert {(w["level"], w["key"]) for w in warned} == {
            ("warning", "environments.env_gone.cwd"),
            ("warning", "vaults.vlt_late.env_file"),
        }
        assert f"cannot read its env_file {late}" in next(
            w["problem"] for w in warned if w["key"] == "vaults.vlt_late.env_file"
        )
        status, created = daemon.request("POST", "/v1/deployments", body(vault_ids=["vlt_late"]))
        assert status == 200, created

        late.write_text("TOKEN=now-here\n")
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for_events(daemon, "daemon_reloaded", 1)
        warned = events(daemon, "declaration_unusable")
        assert [w["key"] for w in warned[2:]] == ["environments.env_gone.cwd"]
        status, run = daemon.request("POST", f"/v1/deployments/{created['id']}/run")
        assert status == 200, run
        assert run["error"] is None, run


# --- undeclared vaults are a 400 at create and update --------------------------------------------


def test_undeclared_or_archived_vaults_are_rejected_at_create_and_update(tmp_path: Path) -> None:
    """400 naming ``vault_ids[i]`` and the declared ids, like an undeclared environment; a vault
    removed later still fails the run with ``vault_not_found``."""
    vault_file = tmp_path / "a.env"
    vault_file.write_text("TOKEN=vault-secret-31c7\n")
    declarations = f"""
[agents.agent_ok]
argv = ["/bin/true"]
[environments.env_ok]
cwd = "{tmp_path}"
[vaults.vlt_a]
env_file = "{vault_file}"
[vaults.vlt_b]
env_file = "{vault_file}"
[vaults.vlt_old]
env_file = "{vault_file}"
archived = true
"""
    config = write_config(tmp_path, declarations)
    with started(tmp_path, config) as daemon:
        status, error = daemon.request(
            "POST", "/v1/deployments", body(vault_ids=["vlt_a", "vlt_nope"])
        )
        assert status == 400, error
        assert error["error"] == {
            "type": "invalid_request_error",
            "message": "vault_ids[1]: vault 'vlt_nope' is not declared; "
            "declared vaults: vlt_a, vlt_b",
        }
        status, error = daemon.request("POST", "/v1/deployments", body(vault_ids=["vlt_old"]))
        assert status == 400, error
        assert error["error"]["message"] == (
            "vault_ids[0]: vault 'vlt_old' is archived; declared vaults: vlt_a, vlt_b"
        )
        status, error = daemon.request("POST", "/v1/deployments", body(environment_id="env_x"))
        assert status == 400, error
        assert error["error"]["message"] == (
            "environment_id: environment 'env_x' is not declared; declared environments: env_ok"
        )
        status, created = daemon.request(
            "POST", "/v1/deployments", body(vault_ids=["vlt_a", "vlt_b"])
        )
        assert status == 200, created
        path = f"/v1/deployments/{created['id']}"
        status, error = daemon.request("POST", path, {"vault_ids": ["vlt_b", "vlt_gone"]})
        assert status == 400, error
        assert error["error"]["message"].startswith("vault_ids[1]: vault 'vlt_gone' is not")
        assert "vault-secret-31c7" not in json.dumps(error)
        status, unchanged = daemon.request("GET", path)
        assert unchanged["vault_ids"] == ["vlt_a", "vlt_b"]

        config.write_text(config.read_text().replace("[vaults.vlt_b]", "[vaults.vlt_c]"))
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for_events(daemon, "daemon_reloaded", 1)
        status, run = daemon.request("POST", f"{path}/run")
        assert status == 200, run
        assert run["error"]["type"] == "vault_not_found", run
        assert "vlt_b" in run["error"]["message"]


@pytest.fixture
async def hosted() -> AsyncIterator[HostedApi]:
    async with HostedApi() as server:
        server.add_agent("agent_a", version=2)
        server.add_environment("env_a")
        server.add_vault("vlt_a")
        server.add_vault("vlt_old", archived=True)
        yield server


async def test_the_hosted_launcher_looks_up_vaults_at_create(
    tmp_path: Path, hosted: HostedApi
) -> None:
    async with (
        SqliteJournal.open(tmp_path / "journal.db") as journal,
        ManagedAgentsLauncher(
            base_url=hosted.base_url, api_key=hosted.api_key, timeout=2.0
        ) as launcher,
    ):
        service = DeploymentService(journal, launcher, FakeClock(datetime.now(UTC)))
        ok = body(agent="agent_a", environment_id="env_a", vault_ids=["vlt_a"])
        assert (await service.create(ok)).vault_ids == ["vlt_a"]
        with pytest.raises(InvalidRequest, match=r"^vault_ids\[1\]: vault 'vlt_x' does not"):
            await service.create({**ok, "vault_ids": ["vlt_a", "vlt_x"]})
        with pytest.raises(InvalidRequest, match=r"^vault_ids\[0\]: vault 'vlt_old' is arch"):
            await service.create({**ok, "vault_ids": ["vlt_old"]})
        created = await service.create({**ok, "vault_ids": []})
        hosted.lookup_fault = Fault.UNAVAILABLE
        with pytest.raises(ServiceUnavailable, match=r"^vault_ids\[0\]: "):
            await service.update(created.id, {"vault_ids": ["vlt_a"]})
        assert len(hosted.requests_to("GET", "/v1/vaults/")) == 5


# --- a failed run is a warning -------------------------------------------------------------------


@dataclass
class Rig:
    clock: FakeClock
    launcher: RecordingLauncher
    service: DeploymentService
    scheduler: Scheduler
    firing: Firing

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)
        await self.scheduler.idle()


@asynccontextmanager
async def rig(path: Path, launcher: RecordingLauncher) -> AsyncIterator[Rig]:
    """A journal file, the service and a running scheduler on a fake clock at 12:00:00."""
    async with SqliteJournal.open(path) as journal:
        clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
        stack = build_stack(
            journal=journal, launcher=launcher, clock=clock, max_jitter=0.0, max_sleep=3600.0
        )
        service, scheduler = stack.service, stack.scheduler
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            await scheduler.idle()
            yield Rig(clock, launcher, service, scheduler, stack.firing)
            tg.cancel_scope.cancel()


async def test_a_failed_run_is_logged_as_a_warning_with_its_error_type(tmp_path: Path) -> None:
    launcher = RecordingLauncher()
    async with rig(tmp_path / "journal.db", launcher) as r:
        deployment = await r.service.create(deployment_body(schedule=None))
        with capture_logs() as logs:
            await r.firing.run_manual(deployment.id)
            launcher.fail_with = "environment_archived"
            await r.firing.run_manual(deployment.id)
    fired = [line for line in logs if line["event"] == "run_fired"]
    assert [(line["log_level"], line.get("error_type")) for line in fired] == [
        ("info", None),
        ("warning", "environment_archived"),
    ]
    assert fired[1]["error_message"] == "scripted failure: environment_archived"


# --- health says degraded, with the reason -------------------------------------------------------


async def test_health_is_degraded_once_the_last_scheduled_runs_all_failed(tmp_path: Path) -> None:
    """Five failed scheduled runs in a row (of deployments that still fire) say degraded; a
    pause, or one successful scheduled run, says ok again. Manual runs do not count."""
    launcher = RecordingLauncher(fail_with="service_unavailable")
    async with rig(tmp_path / "journal.db", launcher) as r:
        every_minute = {"type": "cron", "expression": "* * * * *", "timezone": "UTC"}
        deployment = await r.service.create(deployment_body(schedule=every_minute))
        for _ in range(RECENT_SCHEDULED_RUNS - 1):
            await r.advance(60)
            await r.firing.run_manual(deployment.id)
        assert await r.service.degraded_reasons() == []
        await r.advance(60)
        [reason] = await r.service.degraded_reasons()
        assert reason.type is ReasonType.SCHEDULED_RUNS_FAILING
        assert reason.message == "the last 5 scheduled runs all failed (service_unavailable x5)"

        await r.service.pause(deployment.id)
        assert await r.service.degraded_reasons() == []
        await r.service.unpause(deployment.id)
        assert len(await r.service.degraded_reasons()) == 1
        launcher.fail_with = None
        await r.advance(60)
        assert await r.service.degraded_reasons() == []


async def test_the_hosted_launcher_is_unavailable_until_a_session_is_created(
    hosted: HostedApi,
) -> None:
    request = SessionRequest(
        deployment_id="depl_1",
        run_id="drun_1",
        agent=AgentRef(id="agent_a", version=2),
        environment_id="env_a",
        initial_events=EVENTS,
    )
    async with ManagedAgentsLauncher(
        base_url=hosted.base_url, api_key=hosted.api_key, timeout=2.0
    ) as launcher:
        assert launcher.unavailable_reason() is None
        hosted.session_fault = Fault.UNAVAILABLE
        with pytest.raises(LaunchFailure):
            await launcher.create_session(request)
        reason = launcher.unavailable_reason()
        assert reason is not None
        assert reason.startswith("the hosted API answered 503 to session creation")
        assert hosted.api_key not in reason
        hosted.session_fault = Fault.RATE_LIMITED
        with pytest.raises(LaunchFailure):
            await launcher.create_session(request)
        assert launcher.unavailable_reason() == reason, "a 429 says nothing new about it"
        hosted.session_fault = None
        await launcher.create_session(request)
        assert launcher.unavailable_reason() is None


def status_of(daemon: DaemonProcess) -> tuple[dict[str, Any], str]:
    """``/v1/health`` and what ``agentcron status`` prints."""
    status, health = daemon.request("GET", "/v1/health")
    assert status == 200, health
    shown = subprocess.run(
        [sys.executable, "-m", "agentcron", "status", "--socket", str(daemon.socket_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    return health, shown.stdout


def daemon_declarations(directory: Path) -> str:
    return f"""
[agents.agent_ok]
argv = ["/bin/true"]
[environments.env_ok]
cwd = "{directory}"
"""


def test_health_is_degraded_while_session_logs_cannot_be_created(tmp_path: Path) -> None:
    """The command launcher cannot start any session: ``launcher_unavailable`` until one starts."""
    config = write_config(tmp_path, daemon_declarations(tmp_path))
    sessions = tmp_path / "state" / "sessions"
    sessions.parent.mkdir()
    sessions.write_text("a file where the session logs' directory should be\n")
    with started(tmp_path, config) as daemon:
        health, shown = status_of(daemon)
        assert (health["status"], health["reasons"]) == ("ok", [])
        status, created = daemon.request("POST", "/v1/deployments", body())
        assert status == 200, created
        status, run = daemon.request("POST", f"/v1/deployments/{created['id']}/run")
        assert run["error"]["type"] == "service_unavailable", run

        health, shown = status_of(daemon)
        assert health["status"] == "degraded"
        [reason] = health["reasons"]
        assert reason["type"] == "launcher_unavailable"
        assert reason["message"].startswith(
            f"the launcher cannot start sessions: cannot create the session log in {sessions}"
        )
        assert "(degraded)" in shown.splitlines()[0]
        assert f"degraded:     launcher_unavailable: {reason['message']}" in shown

        sessions.unlink()
        status, run = daemon.request("POST", f"/v1/deployments/{created['id']}/run")
        assert run["error"] is None, run
        health, shown = status_of(daemon)
        assert (health["status"], health["reasons"]) == ("ok", [])
        assert "(ok)" in shown.splitlines()[0]
        assert "degraded:" not in shown


def test_health_is_degraded_while_the_journal_cannot_be_written(tmp_path: Path) -> None:
    """Another process holding the journal's write lock: writes answer 503 and health says
    ``journal_writes_failing`` until a write commits again."""
    config = write_config(tmp_path, daemon_declarations(tmp_path))
    with started(tmp_path, config) as daemon:
        holder = sqlite3.connect(tmp_path / "state" / "journal.db", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            status, refused = daemon.request("POST", "/v1/deployments", body())
            assert status == 503, refused
            health, shown = status_of(daemon)
            assert health["status"] == "degraded"
            assert health["reasons"] == [
                {
                    "type": "journal_writes_failing",
                    "message": "the journal cannot be written: journal unavailable: the "
                    "database is locked by another process (SQLITE_BUSY)",
                }
            ]
            assert "degraded:     journal_writes_failing: " in shown
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        status, created = daemon.request("POST", "/v1/deployments", body())
        assert status == 200, created
        health, _ = status_of(daemon)
        assert (health["status"], health["reasons"]) == ("ok", [])


# --- a paused deployment shows paused, not a next run --------------------------------------------


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """The API under test shares this process: keep its log lines out of the CLI's output."""
    configure_logging("warning", "json")
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("quiet_logs")
def test_deployments_list_shows_paused_instead_of_a_next_run(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    http = api_server.http()
    paused = http.post("/v1/deployments", json=deployment_body(name="paused one")).json()
    http.post(f"/v1/deployments/{paused['id']}/pause")
    active = http.post("/v1/deployments", json=deployment_body(name="active one")).json()
    manual = http.post("/v1/deployments", json=deployment_body(name="manual", schedule=None))
    assert manual.status_code == 200

    code = cli_main(["deployments", "list", "--socket", str(api_server.socket_path)])

    out = capsys.readouterr().out
    assert code == 0
    header, *rows = out.splitlines()
    column = header.index("NEXT RUN (UTC)")
    next_runs = {row.split()[0]: row[column:].split()[0] for row in rows}
    assert next_runs[paused["id"]] == "paused"
    assert next_runs[active["id"]] == active["schedule"]["upcoming_runs_at"][0]
    assert next_runs[manual.json()["id"]] == "-"


# --- names have a length limit -------------------------------------------------------------------


def test_a_deployment_name_is_at_most_256_characters(api_server: ApiServer) -> None:
    http = api_server.http()
    longest = http.post("/v1/deployments", json=deployment_body(name="n" * 256))
    assert longest.status_code == 200, longest.text
    too_long = http.post("/v1/deployments", json=deployment_body(name="n" * 10_000))
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"] == "name: at most 256 characters, got 10000"
    renamed = http.post(f"/v1/deployments/{longest.json()['id']}", json={"name": "é" * 257})
    assert renamed.status_code == 400
    assert renamed.json()["error"]["message"] == "name: at most 256 characters, got 257"
