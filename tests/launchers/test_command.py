"""The ``command`` launcher with real child processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from agentcron.config import AgentDecl, Declarations, EnvironmentDecl, VaultDecl
from agentcron.core.models import AgentRef
from agentcron.errors import InvalidRequest, LaunchFailure
from agentcron.launchers.base import SessionRequest
from agentcron.launchers.command import CommandLauncher, EnvFileError, parse_env_file
from agentcron.launchers.spawner import FrameReader, encode_frame
from tests.support.daemon_harness import process_exited
from tests.support.fakes import FakeClock, eventually

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
VAULT_SECRET = "vault-secret-value-7f3a"
EVENTS = [{"type": "user.message", "content": [{"type": "text", "text": "hello"}]}]


@dataclass
class Recorder:
    """A ``SessionRecorder`` that keeps every call and lets a test wait for a session's end."""

    started: list[dict[str, Any]] = field(default_factory=list)
    ended: list[dict[str, Any]] = field(default_factory=list)
    _events: defaultdict[str, anyio.Event] = field(default_factory=lambda: defaultdict(anyio.Event))

    def session_started(
        self,
        *,
        session_id: str,
        run_id: str,
        deployment_id: str,
        pid: int,
        started_at: datetime,
        host: str | None = None,
    ) -> None:
        self.started.append(
            {
                "session_id": session_id,
                "run_id": run_id,
                "deployment_id": deployment_id,
                "pid": pid,
                "started_at": started_at,
                "host": host,
            }
        )

    def session_ended(
        self,
        *,
        session_id: str,
        exit_status: int | None,
        ended_at: datetime,
        end_reason: str = "exited",
        log_bytes: int | None = None,
    ) -> None:
        self.ended.append(
            {
                "session_id": session_id,
                "exit_status": exit_status,
                "ended_at": ended_at,
                "end_reason": end_reason,
                "log_bytes": log_bytes,
            }
        )
        self._events[session_id].set()

    async def wait_ended(self, session_id: str) -> dict[str, Any]:
        with anyio.fail_after(10):
            await self._events[session_id].wait()
        return next(e for e in self.ended if e["session_id"] == session_id)


def sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


def declarations(tmp_path: Path, **agents: tuple[str, ...]) -> Declarations:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    vault_file = tmp_path / "vault.env"
    vault_file.write_text(f'# credentials\n\nexport TOKEN="{VAULT_SECRET}"\nREGION=eu\n')
    return Declarations(
        agents={
            name: AgentDecl(id=name, version=1, argv=argv)
            for name, argv in {"agent_a": sh("cat"), **agents}.items()
        }
        | {"agent_old": AgentDecl(id="agent_old", version=1, argv=sh("true"), archived=True)},
        environments={
            "env_a": EnvironmentDecl(id="env_a", cwd=workdir, env={"EXAMPLE": "1"}),
            "env_old": EnvironmentDecl(id="env_old", archived=True),
        },
        vaults={
            "vlt_a": VaultDecl(id="vlt_a", env_file=vault_file),
            "vlt_old": VaultDecl(id="vlt_old", env_file=vault_file, archived=True),
        },
    )


def session_request(agent: str | AgentRef = "agent_a", **changes: Any) -> SessionRequest:
    values: dict[str, Any] = {
        "deployment_id": "depl_1",
        "run_id": "drun_1",
        "agent": agent if isinstance(agent, AgentRef) else AgentRef(id=agent, version=1),
        "environment_id": "env_a",
        "initial_events": EVENTS,
        "metadata": {"team": "ops"},
    }
    values.update(changes)
    return SessionRequest(**values)


Factory = Callable[..., CommandLauncher]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_launcher(tmp_path: Path, recorder: Recorder) -> Factory:
    def make(stop_grace: float = 5.0, max_concurrent: int = 4, **agents: Any) -> CommandLauncher:
        return CommandLauncher(
            declarations=declarations(tmp_path, **agents),
            state_dir=tmp_path / "state",
            max_concurrent_sessions=max_concurrent,
            stop_grace=stop_grace,
            recorder=recorder,
            clock=FakeClock(START),
        )

    return make


@pytest.fixture
async def launcher(make_launcher: Factory) -> AsyncIterator[CommandLauncher]:
    async with make_launcher() as running:
        yield running


def log_path(tmp_path: Path, session_id: str) -> Path:
    return tmp_path / "state" / "sessions" / f"{session_id}.log"


def has_text(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text()


async def wait_for_text(path: Path, text: str) -> None:
    await eventually(lambda: has_text(path, text), f"{text!r} in {path}")


async def test_stdin_holds_the_request_and_the_log_holds_stdout_and_stderr(
    tmp_path: Path, make_launcher: Factory, recorder: Recorder
) -> None:
    async with make_launcher(agent_echo=sh("cat; echo to-stderr >&2; echo to-stdout")) as launcher:
        request = session_request("agent_echo", vault_ids=["vlt_a"], budget={"max_usd": "1"})
        session_id = await launcher.create_session(request)
        await recorder.wait_ended(session_id)

    first, *rest = log_path(tmp_path, session_id).read_text().splitlines()
    assert json.loads(first) == request.session_body() | {
        "session_id": session_id,
        "deployment_id": "depl_1",
        "run_id": "drun_1",
    }
    assert sorted(rest) == ["to-stderr", "to-stdout"]


async def test_the_child_gets_its_ids_environment_and_cwd_but_not_the_daemon_environment(
    tmp_path: Path, make_launcher: Factory, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAEMON_ONLY_VARIABLE", "must-not-leak")
    async with make_launcher(agent_env=sh("pwd; env")) as launcher:
        session_id = await launcher.create_session(session_request("agent_env"))
        await recorder.wait_ended(session_id)

    cwd, *env_lines = log_path(tmp_path, session_id).read_text().splitlines()
    env = dict(line.split("=", 1) for line in env_lines if "=" in line)
    assert Path(cwd) == tmp_path / "work"
    assert env["AGENTCRON_SESSION_ID"] == session_id
    assert env["AGENTCRON_DEPLOYMENT_ID"] == "depl_1"
    assert env["AGENTCRON_RUN_ID"] == "drun_1"
    assert env["EXAMPLE"] == "1"
    assert env["PATH"]
    assert "DAEMON_ONLY_VARIABLE" not in env


async def test_vault_values_reach_the_child_and_nowhere_else(
    tmp_path: Path, make_launcher: Factory, recorder: Recorder
) -> None:
    """The value is in the child's environment; not in logs, stdin, errors or records."""
    script = 'cat > stdin.json; printf %s "$TOKEN" > token.out; echo "region=$REGION"'
    with capture_logs() as logs:
        async with make_launcher(agent_vault=sh(script)) as launcher:
            request = session_request("agent_vault", vault_ids=["vlt_a"])
            session_id = await launcher.create_session(request)
            await recorder.wait_ended(session_id)
            (tmp_path / "bad.env").write_text(f"TOKEN {VAULT_SECRET}\n")
            bad_vault = VaultDecl(id="vlt_a", env_file=tmp_path / "bad.env")
            launcher.reload(
                replace(declarations(tmp_path, agent_vault=sh(script)), vaults={"vlt_a": bad_vault})
            )
            with pytest.raises(LaunchFailure) as caught:
                await launcher.create_session(request)

    workdir = tmp_path / "work"
    assert (workdir / "token.out").read_text() == VAULT_SECRET
    assert log_path(tmp_path, session_id).read_text() == "region=eu\n"
    assert VAULT_SECRET not in (workdir / "stdin.json").read_text()
    assert caught.value.error_type == "vault_not_found"
    assert VAULT_SECRET not in caught.value.message
    assert VAULT_SECRET not in repr(logs)
    assert VAULT_SECRET not in repr(recorder.started + recorder.ended)
    assert any(entry["event"] == "session_started" for entry in logs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two words\n", {"A": "1", "B": "two words"}),
        ("# comment\n\n  export A=1  \n", {"A": "1"}),
        ('A="x y"\nB=\'z\'\nC=""\n', {"A": "x y", "B": "z", "C": ""}),
        ("A=1 # not a comment\n", {"A": "1 # not a comment"}),
        ("A=x=y\nA=last\r\n", {"A": "last"}),
    ],
    ids=["plain", "comments-export", "quotes", "hash-in-value", "equals-and-crlf"],
)
def test_env_file_lines_are_parsed(text: str, expected: dict[str, str]) -> None:
    assert parse_env_file(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nnot an assignment\n", "line 2 is not KEY=VALUE"),
        ("1A=1\n", "line 1 is not KEY=VALUE"),
        ('A="open\n', "line 1 has an unterminated quote"),
        ("A='mixed\"\n", "line 1 has an unterminated quote"),
    ],
    ids=["no-equals", "bad-key", "open-quote", "mismatched-quotes"],
)
def test_bad_env_file_lines_are_named_by_number_only(text: str, message: str) -> None:
    with pytest.raises(EnvFileError) as caught:
        parse_env_file(text)
    assert str(caught.value) == message


async def test_the_recorder_gets_pid_start_exit_status_and_end(
    tmp_path: Path, make_launcher: Factory, recorder: Recorder
) -> None:
    async with make_launcher(agent_exit=sh("echo $$; exit 3")) as launcher:
        session_id = await launcher.create_session(session_request("agent_exit"))
        ended = await recorder.wait_ended(session_id)

    [started] = recorder.started
    assert started["session_id"] == session_id
    assert (started["run_id"], started["deployment_id"]) == ("drun_1", "depl_1")
    assert str(started["pid"]) == log_path(tmp_path, session_id).read_text().strip()
    assert started["started_at"] == START
    pid_line = log_path(tmp_path, session_id).read_bytes()
    assert ended == {
        "session_id": session_id,
        "exit_status": 3,
        "ended_at": START,
        "end_reason": "exited",
        "log_bytes": len(pid_line),
    }
    assert started["host"] == socket.gethostname()
    assert launcher.running_sessions() == 0


async def test_many_children_ending_together_each_get_their_own_exit_status(
    make_launcher: Factory, recorder: Recorder
) -> None:
    """Children ending together are told apart, and a child killed by a signal is negative."""
    agents = {f"agent_{code}": sh(f"exit {code}") for code in range(12)}
    agents["agent_killed"] = sh("kill -9 $$")
    async with make_launcher(max_concurrent=len(agents), **agents) as launcher:
        async with anyio.create_task_group() as group:
            created: dict[str, str] = {}

            async def create(agent: str) -> None:
                created[agent] = await launcher.create_session(session_request(agent))

            for agent in agents:
                group.start_soon(create, agent)
        statuses = {
            agent: (await recorder.wait_ended(session_id))["exit_status"]
            for agent, session_id in created.items()
        }
        assert launcher.running_sessions() == 0

    assert statuses == {**{f"agent_{code}": code for code in range(12)}, "agent_killed": -9}


async def test_the_concurrency_cap_rate_limits_further_sessions(
    make_launcher: Factory, recorder: Recorder
) -> None:
    async with make_launcher(max_concurrent=2, agent_sleep=sh("exec sleep 30")) as launcher:
        first = await launcher.create_session(session_request("agent_sleep"))
        await launcher.create_session(session_request("agent_sleep"))
        with pytest.raises(LaunchFailure) as caught:
            await launcher.create_session(session_request("agent_sleep"))
        assert caught.value.error_type == "session_rate_limited"
        assert "launcher.max_concurrent_sessions" in caught.value.message
        assert launcher.running_sessions() == 2
        os.killpg(recorder.started[0]["pid"], 9)
        await recorder.wait_ended(first)
        await launcher.create_session(session_request("agent_sleep"))
        assert launcher.running_sessions() == 2
    assert launcher.running_sessions() == 0


@pytest.mark.parametrize(
    ("change", "error_type", "message"),
    [
        ({"agent": AgentRef(id="agent_x", version=1)}, "agent_archived", "agent `agent_x` is not"),
        ({"agent": AgentRef(id="agent_old", version=1)}, "agent_archived", "agent `agent_old` is"),
        ({"environment_id": "env_x"}, "environment_archived", "environment `env_x` is not"),
        ({"environment_id": "env_old"}, "environment_archived", "environment `env_old` is"),
        ({"vault_ids": ["vlt_x"]}, "vault_not_found", "vault `vlt_x` is not declared"),
        ({"vault_ids": ["vlt_a", "vlt_old"]}, "vault_archived", "vault `vlt_old` is archived"),
    ],
    ids=[
        "unknown-agent",
        "archived-agent",
        "unknown-environment",
        "archived-environment",
        "undeclared-vault",
        "archived-vault",
    ],
)
async def test_declaration_failures_map_to_run_error_types(
    launcher: CommandLauncher, change: dict[str, Any], error_type: str, message: str
) -> None:
    with pytest.raises(LaunchFailure) as caught:
        await launcher.create_session(session_request(**change))
    assert caught.value.error_type == error_type
    assert caught.value.message.startswith(message)
    assert launcher.running_sessions() == 0


@pytest.mark.parametrize(
    ("env_file", "phrase"),
    [
        ("missing.env", "cannot read its env_file"),
        ("directory.env", "cannot read its env_file"),
        ("garbage.env", "is invalid: line 1 is not KEY=VALUE"),
        ("binary.env", "is not UTF-8 text"),
    ],
)
async def test_an_unusable_vault_file_is_vault_not_found(
    tmp_path: Path, launcher: CommandLauncher, env_file: str, phrase: str
) -> None:
    (tmp_path / "directory.env").mkdir()
    (tmp_path / "garbage.env").write_text("this is not an env file\n")
    (tmp_path / "binary.env").write_bytes(b"A=\xff\xfe\n")
    vault = VaultDecl(id="vlt_a", env_file=tmp_path / env_file)
    launcher.reload(replace(declarations(tmp_path), vaults={"vlt_a": vault}))
    with pytest.raises(LaunchFailure) as caught:
        await launcher.create_session(session_request(vault_ids=["vlt_a"]))
    assert caught.value.error_type == "vault_not_found"
    assert caught.value.message.startswith("vault `vlt_a`: ")
    assert phrase in caught.value.message


async def test_spawn_failures_are_service_unavailable_with_the_os_error(
    tmp_path: Path, make_launcher: Factory
) -> None:
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    async with make_launcher(
        agent_missing=(str(tmp_path / "no-such-program"),),
        agent_noexec=(str(not_executable),),
    ) as launcher:
        failures = {}
        for agent in ("agent_missing", "agent_noexec"):
            with pytest.raises(LaunchFailure) as caught:
                await launcher.create_session(session_request(agent))
            failures[agent] = caught.value
        gone = EnvironmentDecl(id="env_a", cwd=tmp_path / "gone")
        launcher.reload(replace(declarations(tmp_path), environments={"env_a": gone}))
        with pytest.raises(LaunchFailure) as caught:
            await launcher.create_session(session_request())
        failures["bad-cwd"] = caught.value

    assert {f.error_type for f in failures.values()} == {"service_unavailable"}
    assert "No such file or directory" in failures["agent_missing"].message
    assert "no-such-program" in failures["agent_missing"].message
    assert "Permission denied" in failures["agent_noexec"].message
    assert "No such file or directory" in failures["bad-cwd"].message
    assert list((tmp_path / "state" / "sessions").iterdir()) == []
    assert launcher.running_sessions() == 0


async def test_a_child_that_never_reads_stdin_does_not_block_creation(
    make_launcher: Factory, recorder: Recorder
) -> None:
    """A request far larger than a pipe buffer is fed in the background."""
    big = [{"type": "user.message", "content": [{"type": "text", "text": "x" * 300_000}]}]
    async with make_launcher(agent_deaf=sh("exec sleep 30"), agent_quick=sh("exit 0")) as launcher:
        with anyio.fail_after(5):
            deaf = await launcher.create_session(session_request("agent_deaf", initial_events=big))
            quick = await launcher.create_session(
                session_request("agent_quick", initial_events=big)
            )
        assert (await recorder.wait_ended(quick))["exit_status"] == 0
        assert launcher.running_sessions() == 1
    assert (await recorder.wait_ended(deaf))["exit_status"] == -15


async def test_session_logs_are_private(tmp_path: Path, launcher: CommandLauncher) -> None:
    session_id = await launcher.create_session(session_request())
    directory = tmp_path / "state" / "sessions"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(log_path(tmp_path, session_id).stat().st_mode) == 0o600


async def test_leaving_the_context_stops_a_running_session_with_sigterm(
    tmp_path: Path, make_launcher: Factory, recorder: Recorder
) -> None:
    async with make_launcher(agent_sleep=sh("echo started; sleep 30")) as launcher:
        session_id = await launcher.create_session(session_request("agent_sleep"))
        await wait_for_text(log_path(tmp_path, session_id), "started")
        begun = anyio.current_time()
    assert anyio.current_time() - begun < 3
    assert recorder.ended == [
        {
            "session_id": session_id,
            "exit_status": -15,
            "ended_at": START,
            "end_reason": "daemon_shutdown",
            "log_bytes": len(b"started\n"),
        }
    ]


async def test_a_session_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, make_launcher: Factory, recorder: Recorder
) -> None:
    stubborn = (
        sys.executable,
        "-c",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n",
    )
    async with make_launcher(stop_grace=0.3, agent_stubborn=stubborn) as launcher:
        session_id = await launcher.create_session(session_request("agent_stubborn"))
        await wait_for_text(log_path(tmp_path, session_id), "ready")
        await launcher.aclose()
        assert (await recorder.wait_ended(session_id))["exit_status"] == -9
        with pytest.raises(LaunchFailure) as caught:
            await launcher.create_session(session_request())
    assert caught.value.error_type == "service_unavailable"


async def test_a_launcher_that_was_not_entered_refuses_to_create(make_launcher: Factory) -> None:
    with pytest.raises(LaunchFailure) as caught:
        await make_launcher().create_session(session_request())
    assert caught.value.error_type == "service_unavailable"


async def test_resolve_agent_and_environment_list_what_is_declared(
    launcher: CommandLauncher,
) -> None:
    assert await launcher.resolve_agent("agent_a", None) == AgentRef(id="agent_a", version=1)
    assert await launcher.resolve_agent("agent_a", 1) == AgentRef(id="agent_a", version=1)
    with pytest.raises(InvalidRequest) as caught:
        await launcher.resolve_agent("agent_old", None)
    assert caught.value.message == (
        "agent: agent 'agent_old' is archived; declared agents: agent_a"
    )
    with pytest.raises(InvalidRequest, match="declared at version 1, not version 2"):
        await launcher.resolve_agent("agent_a", 2)
    await launcher.validate_environment("env_a")
    with pytest.raises(InvalidRequest) as caught:
        await launcher.validate_environment("env_x")
    assert caught.value.message == (
        "environment_id: environment 'env_x' is not declared; declared environments: env_a"
    )


async def test_reload_replaces_the_declarations(launcher: CommandLauncher, tmp_path: Path) -> None:
    launcher.reload(
        Declarations(
            agents={"agent_new": AgentDecl(id="agent_new", version=4, argv=sh("true"))},
            environments={"env_new": EnvironmentDecl(id="env_new", cwd=tmp_path)},
        )
    )
    assert await launcher.resolve_agent("agent_new", None) == AgentRef(id="agent_new", version=4)
    await launcher.validate_environment("env_new")
    with pytest.raises(InvalidRequest, match="agent 'agent_a' is not declared"):
        await launcher.resolve_agent("agent_a", None)
    with pytest.raises(LaunchFailure) as caught:
        await launcher.create_session(session_request())
    assert caught.value.error_type == "agent_archived"
    session_id = await launcher.create_session(
        session_request(agent=AgentRef(id="agent_new", version=4), environment_id="env_new")
    )
    assert session_id.startswith("sesn_")


# -- the spawner helper process ----------------------------------------------------------


def test_frames_survive_any_split_of_the_stream() -> None:
    frames: list[tuple[dict[str, Any], bytes]] = [
        ({"id": 1, "argv": ["/bin/true"], "env": {"K": "é"}}, b""),
        ({"id": 2}, b"\xff\x00 raw bytes \xfe"),
        ({"exit": 42, "status": -9}, b"x" * 100_000),
    ]
    stream = b"".join(encode_frame(message, payload) for message, payload in frames)
    whole = FrameReader().feed(stream)
    reader = FrameReader()
    pieces = [
        frame
        for offset in range(0, len(stream), 7)
        for frame in reader.feed(stream[offset : offset + 7])
    ]
    assert whole == pieces == frames


async def test_one_helper_starts_every_session_and_leaves_with_the_launcher(
    make_launcher: Factory, recorder: Recorder
) -> None:
    async with make_launcher(agent_exit=sh("exit 0")) as launcher:
        assert launcher.spawner_pid() is None  # started on the first session, not before
        first = await launcher.create_session(session_request("agent_exit"))
        helper = launcher.spawner_pid()
        assert helper is not None
        second = await launcher.create_session(session_request("agent_exit"))
        assert launcher.spawner_pid() == helper
        for session_id in (first, second):
            assert (await recorder.wait_ended(session_id))["exit_status"] == 0
    await eventually(lambda: process_exited(helper), "the spawner exited")


async def test_the_helper_ignores_stop_signals_and_children_get_default_ones(
    tmp_path: Path, make_launcher: Factory, recorder: Recorder
) -> None:
    async with make_launcher(agent_sleep=sh("echo ready; exec sleep 30")) as launcher:
        await launcher.create_session(session_request("agent_sleep"))
        helper = launcher.spawner_pid()
        assert helper is not None
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(helper, signum)
        session_id = await launcher.create_session(session_request("agent_sleep"))
        await wait_for_text(log_path(tmp_path, session_id), "ready")
        assert launcher.spawner_pid() == helper
        await eventually(lambda: len(recorder.started) == 2, "second start recorded")
        os.killpg(recorder.started[1]["pid"], signal.SIGTERM)
        assert (await recorder.wait_ended(session_id))["exit_status"] == -signal.SIGTERM


async def test_a_killed_helper_is_replaced_and_its_sessions_are_reported_unknown(
    make_launcher: Factory, recorder: Recorder
) -> None:
    async with make_launcher(agent_sleep=sh("exec sleep 30"), agent_exit=sh("exit 4")) as launcher:
        orphan = await launcher.create_session(session_request("agent_sleep"))
        await eventually(lambda: len(recorder.started) == 1, "start recorded")
        orphan_pid = recorder.started[0]["pid"]
        helper = launcher.spawner_pid()
        assert helper is not None
        try:
            with capture_logs() as logs:
                os.kill(helper, signal.SIGKILL)
                await eventually(lambda: launcher.running_sessions() == 0, "orphan released")
                await eventually(  # logged once the dead helper is reaped (in a thread)
                    lambda: any(e["event"] == "session_spawner_exited" for e in logs),
                    "the spawner's exit logged",
                )
            events = {entry["event"]: entry for entry in logs}
            assert events["session_spawner_exited"]["sessions_lost"] == 1
            assert events["session_exit_unknown"]["session_id"] == orphan
            assert [
                (e["session_id"], e["exit_status"], e["end_reason"]) for e in recorder.ended
            ] == [(orphan, None, "spawner_lost")]

            session_id = await launcher.create_session(session_request("agent_exit"))
            assert launcher.spawner_pid() not in {None, helper}
            assert (await recorder.wait_ended(session_id))["exit_status"] == 4
        finally:
            os.killpg(orphan_pid, signal.SIGKILL)


@pytest.mark.parametrize("size", [10, 1_000_000])
async def test_requests_of_any_size_reach_stdin_whole(
    tmp_path: Path, make_launcher: Factory, recorder: Recorder, size: int
) -> None:
    events = [{"type": "user.message", "content": [{"type": "text", "text": "y" * size}]}]
    async with make_launcher(agent_count=sh("wc -c")) as launcher:
        session_id = await launcher.create_session(
            session_request("agent_count", initial_events=events)
        )
        assert (await recorder.wait_ended(session_id))["exit_status"] == 0
    assert int(log_path(tmp_path, session_id).read_text()) > size


def test_the_helper_answers_a_start_without_descriptors_with_a_failure(tmp_path: Path) -> None:
    """No descriptors left for the stdin pipe: that start fails; the helper leaks none, lives on.

    The real helper process, spoken to over its socket; its descriptor limit is lowered from
    outside (``prlimit``) so that the session log still opens but the pipe does not.
    """
    import errno
    import resource
    import subprocess

    from agentcron.launchers import spawner

    ours, theirs = socket.socketpair()
    helper = subprocess.Popen(
        [sys.executable, "-I", "-S", spawner.__file__],
        stdin=theirs.fileno(),
        stdout=subprocess.DEVNULL,
    )
    theirs.close()
    ours.settimeout(10)
    reader = FrameReader()
    pending: list[dict[str, Any]] = []

    def next_message() -> dict[str, Any]:
        while not pending:
            data = ours.recv(65536)
            assert data, "the helper closed its socket"
            pending.extend(message for message, _ in reader.feed(data))
        return pending.pop(0)

    def start(request_id: int) -> dict[str, Any]:
        log = tmp_path / f"sesn_{request_id}.log"
        request = {"id": request_id, "argv": ["/bin/true"], "cwd": None, "env": {}, "log": str(log)}
        ours.sendall(encode_frame(request, b"{}\n"))
        return next_message()

    def descriptors() -> set[int]:
        return {int(name) for name in os.listdir(f"/proc/{helper.pid}/fd")}

    try:
        assert set(start(1)) == {"id", "pid"}
        assert set(next_message()) == {"exit", "status", "log_bytes"}  # at rest: nothing in flight
        open_before = descriptors()
        free = [fd for fd in range(len(open_before) + 2) if fd not in open_before]
        limits = resource.prlimit(helper.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(helper.pid, resource.RLIMIT_NOFILE, (free[1], limits[1]))

        answer = start(2)  # the log takes the one free descriptor, the pipe finds none

        assert answer == {"id": 2, "stage": "exec", "reason": os.strerror(errno.EMFILE)}
        assert not (tmp_path / "sesn_2.log").exists()
        assert descriptors() == open_before
        resource.prlimit(helper.pid, resource.RLIMIT_NOFILE, limits)
        assert set(start(3)) == {"id", "pid"}
        assert next_message()["status"] == 0
    finally:
        ours.close()
        assert helper.wait(timeout=10) == 0
