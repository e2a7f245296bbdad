"""The ``Launcher`` contract (``agentcron.launchers.base``), run against every launcher.

Each test speaks only the Protocol and runs twice: against the ``command`` launcher (real child
processes through the spawner helper) and against ``managed_agents`` (the loopback stand-in of
the hosted API). Both serve the same objects under the same ids: ``agent_a`` at version 2,
``env_a``, ``vlt_a``, and archived ``agent_old``, ``env_old``, ``vlt_old``; ``*_x`` ids exist
nowhere. What only one launcher does is tested in its own module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentcron.config import AgentDecl, Declarations, EnvironmentDecl, VaultDecl
from agentcron.core.models import AgentRef, RunErrorType
from agentcron.errors import InvalidRequest, LaunchFailure
from agentcron.launchers import CommandLauncher, ManagedAgentsLauncher
from agentcron.launchers.base import Launcher, SessionRequest
from tests.support.daemon_harness import process_exited
from tests.support.fakes import FakeClock, eventually
from tests.support.hosted_api import HostedApi, refused_url

LATEST = AgentRef(id="agent_a", version=2)
EVENTS = [{"type": "user.message", "content": [{"type": "text", "text": "contract"}]}]
RUN_ERROR_TYPES = {member.value for member in RunErrorType}
LAUNCHERS = ["command", "managed_agents"]
# A local session that reads its request and then keeps running until it is stopped.
RUNNING_AGENT = ("/bin/sh", "-c", "cat > /dev/null; exec sleep 30")


def session_request(**changes: Any) -> SessionRequest:
    values: dict[str, Any] = {
        "deployment_id": "depl_contract",
        "run_id": "drun_contract",
        "agent": LATEST,
        "environment_id": "env_a",
        "initial_events": EVENTS,
        "metadata": {"suite": "contract"},
        "vault_ids": ["vlt_a"],
    }
    values.update(changes)
    return SessionRequest(**values)


@dataclass
class Subject:
    """A launcher under test and a probe of what it holds."""

    launcher: Launcher
    released: Callable[[], bool]
    """Nothing is held any more: no local session runs, no connection stays open."""


def declarations(tmp_path: Path, argv: tuple[str, ...]) -> Declarations:
    vault_file = tmp_path / "vault.env"
    vault_file.write_text("TOKEN=contract\n")
    return Declarations(
        agents={
            "agent_a": AgentDecl(id="agent_a", version=2, argv=argv),
            "agent_old": AgentDecl(id="agent_old", version=1, argv=argv, archived=True),
        },
        environments={
            "env_a": EnvironmentDecl(id="env_a", cwd=tmp_path),
            "env_old": EnvironmentDecl(id="env_old", archived=True),
        },
        vaults={
            "vlt_a": VaultDecl(id="vlt_a", env_file=vault_file),
            "vlt_old": VaultDecl(id="vlt_old", env_file=vault_file, archived=True),
        },
    )


@pytest.fixture(params=LAUNCHERS)
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    """Each launcher in turn, entered, serving the objects named in the module docstring."""
    if request.param == "command":
        command = CommandLauncher(
            declarations=declarations(tmp_path, RUNNING_AGENT),
            state_dir=tmp_path / "state",
            max_concurrent_sessions=16,
            stop_grace=2.0,
            clock=FakeClock(datetime(2026, 5, 1, tzinfo=UTC)),
        )
        helpers: list[int] = []

        def command_released() -> bool:
            if (pid := command.spawner_pid()) is not None:
                helpers.append(pid)
            return command.running_sessions() == 0 and all(map(process_exited, helpers))

        async with command:
            yield Subject(launcher=command, released=command_released)
        return
    async with HostedApi() as api:
        api.add_agent("agent_a", version=2)
        api.add_agent("agent_old", archived=True)
        api.add_environment("env_a")
        api.add_environment("env_old", archived=True)
        api.add_vault("vlt_a")
        api.add_vault("vlt_old", archived=True)
        managed = ManagedAgentsLauncher(base_url=api.base_url, api_key=api.api_key, timeout=5.0)
        async with managed:
            yield Subject(launcher=managed, released=lambda: api.open_connections() == 0)


@pytest.fixture(params=LAUNCHERS)
async def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Launcher]:
    """Each launcher with nothing behind it: no program to run, no hosted API listening."""
    if request.param == "command":
        missing = (str(tmp_path / "no-such-program"),)
        async with CommandLauncher(
            declarations=declarations(tmp_path, missing),
            state_dir=tmp_path / "state",
            max_concurrent_sessions=4,
            clock=FakeClock(datetime(2026, 5, 1, tzinfo=UTC)),
        ) as command:
            yield command
        return
    async with ManagedAgentsLauncher(
        base_url=refused_url(), api_key="sk-contract", timeout=2.0
    ) as managed:
        yield managed


# -- create_session -----------------------------------------------------------------------


async def test_create_session_returns_a_session_id(subject: Subject) -> None:
    session_id = await subject.launcher.create_session(session_request())
    assert session_id.startswith("sesn_")
    assert len(session_id) > len("sesn_")


async def test_concurrent_creations_each_get_their_own_session(subject: Subject) -> None:
    created: list[str] = []

    async def create(index: int) -> None:
        created.append(
            await subject.launcher.create_session(session_request(run_id=f"drun_{index}"))
        )

    async with anyio.create_task_group() as group:
        for index in range(8):
            group.start_soon(create, index)
    assert len(set(created)) == 8
    assert all(session_id.startswith("sesn_") for session_id in created)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"agent": AgentRef(id="agent_x", version=1)}, "agent_x"),
        ({"agent": AgentRef(id="agent_old", version=1)}, "agent_old"),
        ({"environment_id": "env_x"}, "env_x"),
        ({"environment_id": "env_old"}, "env_old"),
        ({"vault_ids": ["vlt_a", "vlt_x"]}, "vlt_x"),
        ({"vault_ids": ["vlt_old"]}, "vlt_old"),
    ],
    ids=[
        "unknown-agent",
        "archived-agent",
        "unknown-environment",
        "archived-environment",
        "unknown-vault",
        "archived-vault",
    ],
)
async def test_a_creation_that_cannot_succeed_is_a_launch_failure_with_a_run_error_type(
    subject: Subject, changes: dict[str, Any], named: str
) -> None:
    """The failure carries one of the run error types and names the object at fault."""
    with pytest.raises(LaunchFailure) as caught:
        await subject.launcher.create_session(session_request(**changes))
    assert caught.value.error_type in RUN_ERROR_TYPES
    assert named in caught.value.message


async def test_nothing_to_launch_with_is_service_unavailable(unreachable: Launcher) -> None:
    with pytest.raises(LaunchFailure) as caught:
        await unreachable.create_session(session_request())
    assert caught.value.error_type == RunErrorType.SERVICE_UNAVAILABLE


# -- resolve_agent and validate_environment -----------------------------------------------


async def test_resolve_agent_pins_the_latest_version_or_the_one_asked_for(
    subject: Subject,
) -> None:
    assert await subject.launcher.resolve_agent("agent_a", None) == LATEST
    assert await subject.launcher.resolve_agent("agent_a", 2) == LATEST


@pytest.mark.parametrize(
    ("agent_id", "version"),
    [("agent_x", None), ("agent_old", None), ("agent_a", 3)],
    ids=["unknown", "archived", "no-such-version"],
)
async def test_resolve_agent_rejects_what_cannot_be_run_naming_the_agent_field(
    subject: Subject, agent_id: str, version: int | None
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await subject.launcher.resolve_agent(agent_id, version)
    assert caught.value.message.startswith("agent: ")
    assert agent_id in caught.value.message


async def test_validate_environment_accepts_a_usable_environment(subject: Subject) -> None:
    await subject.launcher.validate_environment("env_a")


@pytest.mark.parametrize("environment_id", ["env_x", "env_old"], ids=["unknown", "archived"])
async def test_validate_environment_rejects_what_cannot_be_used_naming_the_field(
    subject: Subject, environment_id: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await subject.launcher.validate_environment(environment_id)
    assert caught.value.message.startswith("environment_id: ")
    assert environment_id in caught.value.message


# -- reload ------------------------------------------------------------------------------


async def test_reload_leaves_running_sessions_alone_and_keeps_serving(
    subject: Subject, tmp_path: Path
) -> None:
    """The re-read config of a SIGHUP (here: the same objects) touches no running session."""
    await subject.launcher.create_session(session_request())
    subject.launcher.reload(declarations(tmp_path, RUNNING_AGENT))
    assert not subject.released()
    assert await subject.launcher.resolve_agent("agent_a", None) == LATEST
    assert (await subject.launcher.create_session(session_request())).startswith("sesn_")


# -- aclose -------------------------------------------------------------------------------


async def test_aclose_releases_everything_and_may_be_called_again(subject: Subject) -> None:
    """A session still running is stopped, connections are closed; a second call is harmless
    (and leaving the fixture's ``async with`` makes a third)."""
    await subject.launcher.create_session(session_request())
    assert not subject.released()
    await subject.launcher.aclose()
    await eventually(subject.released, "everything released after aclose")
    await subject.launcher.aclose()
    assert subject.released()
