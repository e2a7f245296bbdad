"""The ``command`` launcher's session limits with real processes: ``max_duration`` (the whole
process group, a grandchild too), ``overlap = "skip"``, stopping a session, the log cap."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentcron.config import AgentDecl
from agentcron.errors import LaunchFailure
from agentcron.launchers.command import CommandLauncher
from agentcron.launchers.spawner import cap_marker
from tests.launchers.test_command import (
    START,
    Recorder,
    declarations,
    log_path,
    session_request,
    sh,
    wait_for_text,
)
from tests.support.daemon_harness import process_exited
from tests.support.fakes import FakeClock, eventually

Make = Callable[..., CommandLauncher]

# A session whose shell starts a grandchild (in the same process group) and waits for it;
# both write their pids to the log first.
TREE = "sleep 3600 & echo grandchild=$!; echo child=$$; wait"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make(tmp_path: Path, recorder: Recorder) -> Make:
    def build(*, log_max_bytes: int | None = 1 << 20, **agents: AgentDecl) -> CommandLauncher:
        base = declarations(tmp_path)
        return CommandLauncher(
            declarations=replace(base, agents={**base.agents, **agents}),
            state_dir=tmp_path / "state",
            max_concurrent_sessions=8,
            stop_grace=5.0,
            recorder=recorder,
            clock=FakeClock(START),
            log_max_bytes=log_max_bytes,
            host="edge-test",
        )

    return build


def agent(name: str, script: str, **limits: Any) -> AgentDecl:
    return AgentDecl(id=name, version=1, argv=sh(script), **limits)


def pids_in_log(path: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and value.isdigit():
            found[key] = int(value)
    return found


async def test_max_duration_stops_the_whole_process_group_and_records_why(
    tmp_path: Path, make: Make, recorder: Recorder
) -> None:
    limited = agent("agent_tree", TREE, max_duration=1.0)
    async with make(agent_tree=limited) as launcher:
        session_id = await launcher.create_session(session_request("agent_tree"))
        path = log_path(tmp_path, session_id)
        await wait_for_text(path, "\nchild=")  # not the "grandchild=" line before it
        pids = pids_in_log(path)
        assert not process_exited(pids["grandchild"])
        with anyio.fail_after(10):
            ended = await recorder.wait_ended(session_id)
        assert (ended["end_reason"], ended["exit_status"]) == ("max_duration", -signal.SIGTERM)
        await eventually(lambda: process_exited(pids["grandchild"]), "the grandchild is gone")
        assert launcher.running_session(session_id) is None
    assert recorder.started[0]["host"] == "edge-test"


async def test_a_session_ignoring_sigterm_past_max_duration_is_killed_after_its_grace(
    tmp_path: Path, make: Make, recorder: Recorder
) -> None:
    stubborn = agent(
        "agent_stubborn", "trap '' TERM; echo ready; sleep 3600", max_duration=1.0, stop_grace=0.5
    )
    async with make(agent_stubborn=stubborn) as launcher:
        session_id = await launcher.create_session(session_request("agent_stubborn"))
        await wait_for_text(log_path(tmp_path, session_id), "ready")
        with anyio.fail_after(10):
            ended = await recorder.wait_ended(session_id)
    assert (ended["end_reason"], ended["exit_status"]) == ("max_duration", -signal.SIGKILL)


async def test_overlap_skip_refuses_a_second_session_of_the_same_deployment_only(
    tmp_path: Path, make: Make, recorder: Recorder
) -> None:
    single = agent("agent_single", "echo ready; sleep 3600", overlap="skip")
    async with make(agent_single=single) as launcher:
        first = await launcher.create_session(session_request("agent_single"))
        with pytest.raises(LaunchFailure) as caught:
            await launcher.create_session(session_request("agent_single", run_id="drun_2"))
        assert caught.value.error_type == "session_already_running"
        assert first in caught.value.message
        assert 'agents.agent_single.overlap = "skip"' in caught.value.message
        other = await launcher.create_session(
            session_request("agent_single", deployment_id="depl_2", run_id="drun_3")
        )
        assert launcher.running_sessions() == 2
        assert await launcher.stop_session(first)
        third = await launcher.create_session(session_request("agent_single", run_id="drun_4"))
        assert {first, other, third} == {e["session_id"] for e in recorder.started}


async def test_overlap_allow_is_the_default(make: Make) -> None:
    free = agent("agent_free", "sleep 3600")
    async with make(agent_free=free) as launcher:
        await launcher.create_session(session_request("agent_free"))
        await launcher.create_session(session_request("agent_free", run_id="drun_2"))
        assert launcher.running_sessions() == 2


async def test_stop_session_terminates_the_group_and_records_stopped(
    tmp_path: Path, make: Make, recorder: Recorder
) -> None:
    async with make(agent_tree=agent("agent_tree", TREE)) as launcher:
        session_id = await launcher.create_session(session_request("agent_tree"))
        path = log_path(tmp_path, session_id)
        await wait_for_text(path, "\nchild=")  # not the "grandchild=" line before it
        running = launcher.running_session(session_id)
        assert running is not None
        assert (running.pid, running.stopping) == (pids_in_log(path)["child"], None)
        assert await launcher.stop_session(session_id)
        ended = await recorder.wait_ended(session_id)
        assert (ended["end_reason"], ended["exit_status"]) == ("stopped", -signal.SIGTERM)
        await eventually(lambda: process_exited(pids_in_log(path)["grandchild"]), "grandchild")
        assert not await launcher.stop_session(session_id)  # not running: nothing to stop
        assert not await launcher.stop_session("sesn_unknown")


async def test_the_log_stops_at_its_cap_with_a_marker_while_the_child_runs_on(
    tmp_path: Path, make: Make, recorder: Recorder
) -> None:
    """8 MiB of output into a 64 KiB cap: the child is never blocked, finishes its work and
    says so on stdout, which is past the cap (discarded), and in a file (kept)."""
    cap = 64 * 1024
    done = tmp_path / "done"
    chatty = agent(
        "agent_chatty",
        f"head -c 8388608 /dev/zero | tr '\\0' x; echo finished > {done}; echo after-cap",
    )
    async with make(agent_chatty=chatty, log_max_bytes=cap) as launcher:
        session_id = await launcher.create_session(session_request("agent_chatty"))
        with anyio.fail_after(20):
            ended = await recorder.wait_ended(session_id)
    content = log_path(tmp_path, session_id).read_bytes()
    marker = cap_marker(cap)
    assert len(content) == cap == ended["log_bytes"]
    assert content.endswith(marker)
    assert content[: cap - len(marker)] == b"x" * (cap - len(marker))
    assert b"after-cap" not in content
    assert done.read_text() == "finished\n"
    assert (ended["exit_status"], ended["end_reason"]) == (0, "exited")


async def test_output_under_the_cap_is_kept_whole(
    tmp_path: Path, make: Make, recorder: Recorder
) -> None:
    quiet = agent("agent_quiet", "printf 'a%.0s' $(seq 1 5000); echo; echo err >&2")
    async with make(agent_quiet=quiet, log_max_bytes=8192) as launcher:
        session_id = await launcher.create_session(session_request("agent_quiet"))
        ended = await recorder.wait_ended(session_id)
    content = log_path(tmp_path, session_id).read_bytes()
    assert content == b"a" * 5000 + b"\nerr\n"
    assert ended["log_bytes"] == len(content)


async def test_without_a_cap_the_whole_output_is_kept(
    tmp_path: Path, make: Make, recorder: Recorder
) -> None:
    chatty = agent("agent_chatty", "head -c 300000 /dev/zero | tr '\\0' y")
    async with make(agent_chatty=chatty, log_max_bytes=None) as launcher:
        session_id = await launcher.create_session(session_request("agent_chatty"))
        ended = await recorder.wait_ended(session_id)
    assert log_path(tmp_path, session_id).read_bytes() == b"y" * 300000
    assert ended["log_bytes"] == 300000


def test_a_cap_below_the_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log_max_bytes must be at least 4096"):
        CommandLauncher(
            declarations=declarations(tmp_path),
            state_dir=tmp_path,
            max_concurrent_sessions=1,
            clock=FakeClock(START),
            log_max_bytes=100,
        )


async def test_a_grandchild_keeping_the_pipe_is_relayed_after_the_child_exits(
    tmp_path: Path, make: Make, recorder: Recorder
) -> None:
    leaver = agent("agent_leaver", "(sleep 0.5; echo late-line) & echo early; exit 0")
    async with make(agent_leaver=leaver) as launcher:
        session_id = await launcher.create_session(session_request("agent_leaver"))
        ended = await recorder.wait_ended(session_id)
        assert ended["exit_status"] == 0
        await wait_for_text(log_path(tmp_path, session_id), "late-line")
    assert log_path(tmp_path, session_id).read_bytes() == b"early\nlate-line\n"
