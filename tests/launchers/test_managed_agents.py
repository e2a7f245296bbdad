"""The ``managed_agents`` launcher against a real loopback stand-in of the hosted API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from agentcron import __version__
from agentcron.config import Config, DaemonConfig, LauncherConfig, ManagedAgentsConfig
from agentcron.core.models import AgentRef
from agentcron.errors import ConfigError, InvalidRequest, LaunchFailure, ServiceUnavailable
from agentcron.launchers import CommandLauncher, ManagedAgentsLauncher, create_launcher
from agentcron.launchers.api_key import load_api_key
from agentcron.launchers.base import SessionRequest
from tests.support.fakes import FakeClock, eventually
from tests.support.hosted_api import Fault, HostedApi, refused_url

SECRET_TOKEN = "ghp_resource-secret-token"
EVENTS = [{"type": "user.message", "content": [{"type": "text", "text": "run the report"}]}]
RESOURCES = [
    {
        "type": "github_repository",
        "url": "https://github.com/example/repo",
        "authorization_token": SECRET_TOKEN,
    }
]


def session_request(**changes: object) -> SessionRequest:
    values: dict[str, object] = {
        "deployment_id": "depl_1",
        "run_id": "drun_1",
        "agent": AgentRef(id="agent_a", version=2),
        "environment_id": "env_a",
        "initial_events": EVENTS,
        "metadata": {"team": "ops"},
        "resources": RESOURCES,
        "vault_ids": ["vlt_a", "vlt_b"],
        "title": "nightly report",
    }
    values.update(changes)
    return SessionRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
async def api() -> AsyncIterator[HostedApi]:
    async with HostedApi() as server:
        server.add_agent("agent_a", version=2)
        server.add_environment("env_a")
        server.add_vault("vlt_a")
        server.add_vault("vlt_b")
        yield server


@pytest.fixture
async def launcher(api: HostedApi) -> AsyncIterator[ManagedAgentsLauncher]:
    async with ManagedAgentsLauncher(
        base_url=api.base_url + "/", api_key=api.api_key, timeout=0.5
    ) as client:
        yield client


def session_posts(api: HostedApi) -> int:
    return len(api.requests_to("POST", "/v1/sessions"))


async def test_create_sends_the_exact_body_and_headers_once(
    api: HostedApi, launcher: ManagedAgentsLauncher
) -> None:
    """One POST /v1/sessions with the pinned agent, secrets in resources, no budget when unset."""
    session_id = await launcher.create_session(session_request())

    assert session_id.startswith("sesn_")
    [post] = api.requests_to("POST", "/v1/sessions")
    assert api.requests == [post]
    assert post.body == {
        "agent": {"type": "agent", "id": "agent_a", "version": 2},
        "environment_id": "env_a",
        "initial_events": EVENTS,
        "metadata": {"team": "ops"},
        "resources": RESOURCES,
        "vault_ids": ["vlt_a", "vlt_b"],
        "title": "nightly report",
    }
    assert post.headers["anthropic-version"] == "2023-06-01"
    assert post.headers["anthropic-beta"] == "managed-agents-2026-04-01"
    assert post.headers["x-api-key"] == api.api_key
    assert post.headers["content-type"] == "application/json"
    assert post.headers["user-agent"] == f"agentcron/{__version__}"


async def test_budget_is_sent_when_set(api: HostedApi, launcher: ManagedAgentsLauncher) -> None:
    budget = {"type": "usd", "max_usd": "2.50"}
    await launcher.create_session(session_request(budget=budget))
    [post] = api.requests_to("POST", "/v1/sessions")
    assert post.body["budget"] == budget


@pytest.mark.parametrize(
    ("fault", "error_type", "phrase"),
    [
        (Fault.RATE_LIMITED, "session_rate_limited", "429"),
        (Fault.INTERNAL_ERROR, "service_unavailable", "500"),
        (Fault.UNAVAILABLE, "service_unavailable", "503"),
        (Fault.SLOW, "service_unavailable", "no answer from the hosted API within 0.5 s"),
        (Fault.RESET, "service_unavailable", "connection to the hosted API"),
        (Fault.MALFORMED, "service_unavailable", "without a session id"),
        (Fault.BAD_REQUEST, "session_creation_rejected", "the request was rejected"),
    ],
    ids=str,
)
async def test_failures_map_to_run_error_types_without_retry(
    api: HostedApi,
    launcher: ManagedAgentsLauncher,
    fault: Fault,
    error_type: str,
    phrase: str,
) -> None:
    """Each fault of POST /v1/sessions becomes one run error type after exactly one POST."""
    api.session_fault = fault
    api.slow_seconds = 3.0
    with pytest.raises(LaunchFailure) as caught:
        await launcher.create_session(session_request())
    assert caught.value.error_type == error_type
    assert phrase in caught.value.message
    assert api.api_key not in caught.value.message
    assert SECRET_TOKEN not in caught.value.message
    assert session_posts(api) == 1


async def test_connection_refused_is_service_unavailable() -> None:
    async with ManagedAgentsLauncher(
        base_url=refused_url(), api_key="sk-refused-key", timeout=2.0
    ) as launcher:
        with pytest.raises(LaunchFailure) as caught:
            await launcher.create_session(session_request())
    assert caught.value.error_type == "service_unavailable"
    assert "Cannot connect" in caught.value.message
    assert "sk-refused-key" not in caught.value.message


@pytest.mark.parametrize(
    ("setup", "error_type", "phrase"),
    [
        ("archive_agent", "agent_archived", "agent `agent_a` is archived"),
        ("delete_agent", "agent_archived", "agent `agent_a` does not exist"),
        ("archive_environment", "environment_archived", "environment `env_a` is archived"),
        ("delete_environment", "environment_not_found", "environment `env_a` does not exist"),
        ("delete_vault", "vault_not_found", "vault `vlt_b` does not exist"),
        ("archive_vault", "vault_archived", "vault `vlt_b` is archived"),
    ],
)
async def test_rejections_are_explained_by_looking_up_the_references(
    api: HostedApi, launcher: ManagedAgentsLauncher, setup: str, error_type: str, phrase: str
) -> None:
    """A 4xx is followed by GETs of the agent, environment and vaults that name the cause."""
    match setup:
        case "archive_agent":
            api.add_agent("agent_a", version=2, archived=True)
        case "delete_agent":
            del api.agents["agent_a"]
        case "archive_environment":
            api.add_environment("env_a", archived=True)
        case "delete_environment":
            del api.environments["env_a"]
        case "delete_vault":
            del api.vaults["vlt_b"]
        case "archive_vault":
            api.add_vault("vlt_b", archived=True)
    with pytest.raises(LaunchFailure) as caught:
        await launcher.create_session(session_request())
    assert (caught.value.error_type, caught.value.message) == (error_type, phrase)
    assert session_posts(api) == 1
    looked_up = sorted(r.path for r in api.requests if r.method == "GET")
    assert looked_up == [
        "/v1/agents/agent_a",
        "/v1/environments/env_a",
        "/v1/vaults/vlt_a",
        "/v1/vaults/vlt_b",
    ]


async def test_a_400_with_everything_present_is_rejected_with_the_api_message(
    api: HostedApi, launcher: ManagedAgentsLauncher
) -> None:
    api.session_fault = Fault.BAD_REQUEST
    api.fault_message = "model_not_budgetable: this model has no list price"
    with pytest.raises(LaunchFailure) as caught:
        await launcher.create_session(session_request())
    assert caught.value.error_type == "session_creation_rejected"
    assert caught.value.message == (
        "the hosted API rejected the session (400): "
        "model_not_budgetable: this model has no list price"
    )


async def test_a_wrong_api_key_is_rejected_without_echoing_the_key(api: HostedApi) -> None:
    async with ManagedAgentsLauncher(
        base_url=api.base_url, api_key="sk-wrong-key-value", timeout=2.0
    ) as launcher:
        with pytest.raises(LaunchFailure) as caught:
            await launcher.create_session(session_request())
    assert caught.value.error_type == "session_creation_rejected"
    assert "401" in caught.value.message
    assert "sk-wrong-key-value" not in caught.value.message


async def test_ids_are_percent_encoded_in_paths(
    api: HostedApi, launcher: ManagedAgentsLauncher
) -> None:
    with pytest.raises(InvalidRequest):
        await launcher.resolve_agent("agent/../x?y=1", None)
    assert api.requests[-1].path == "/v1/agents/agent%2F..%2Fx%3Fy%3D1"


async def test_resolve_agent_pins_the_latest_or_the_given_version(
    api: HostedApi, launcher: ManagedAgentsLauncher
) -> None:
    assert await launcher.resolve_agent("agent_a", None) == AgentRef(id="agent_a", version=2)
    assert await launcher.resolve_agent("agent_a", 1) == AgentRef(id="agent_a", version=1)
    assert [r.path for r in api.requests] == ["/v1/agents/agent_a", "/v1/agents/agent_a?version=1"]


@pytest.mark.parametrize(
    ("agent_id", "version", "message"),
    [
        ("agent_gone", None, "agent: agent 'agent_gone' does not exist"),
        ("agent_a", 3, "agent: agent 'agent_a' does not exist or has no version 3"),
        ("agent_old", None, "agent: agent 'agent_old' is archived"),
        ("agent_a", 0, "agent: version must be >= 1, not 0"),
    ],
)
async def test_resolve_agent_rejects_missing_archived_and_unknown_versions(
    api: HostedApi,
    launcher: ManagedAgentsLauncher,
    agent_id: str,
    version: int | None,
    message: str,
) -> None:
    api.add_agent("agent_old", archived=True)
    with pytest.raises(InvalidRequest) as caught:
        await launcher.resolve_agent(agent_id, version)
    assert caught.value.message == message


async def test_resolve_agent_is_503_when_the_hosted_api_cannot_answer(
    api: HostedApi, launcher: ManagedAgentsLauncher
) -> None:
    api.lookup_fault = Fault.UNAVAILABLE
    with pytest.raises(ServiceUnavailable, match="agent: the hosted API answered 503"):
        await launcher.resolve_agent("agent_a", None)
    async with ManagedAgentsLauncher(base_url=refused_url(), api_key="k", timeout=2) as offline:
        with pytest.raises(ServiceUnavailable, match="agent: cannot look up agent 'agent_a'"):
            await offline.resolve_agent("agent_a", None)


async def test_validate_environment_checks_existence_and_archive(
    api: HostedApi, launcher: ManagedAgentsLauncher
) -> None:
    api.add_environment("env_old", archived=True)
    await launcher.validate_environment("env_a")
    with pytest.raises(InvalidRequest, match="environment_id: environment 'env_x' does not exist"):
        await launcher.validate_environment("env_x")
    with pytest.raises(InvalidRequest, match="environment_id: environment 'env_old' is archived"):
        await launcher.validate_environment("env_old")
    api.lookup_fault = Fault.INTERNAL_ERROR
    with pytest.raises(ServiceUnavailable, match="environment_id"):
        await launcher.validate_environment("env_a")


# -- the API key ------------------------------------------------------------------------------

KEY = "sk-ant-key-material-42"


def test_api_key_from_the_configured_file_wins(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(f"  {KEY}\n")
    config = ManagedAgentsConfig(api_key_file=key_file)
    environ = {"ANTHROPIC_API_KEY": "sk-from-env", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_api_key(config, environ) == KEY


def test_api_key_from_the_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "anthropic-api-key").write_text(KEY + "\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "ANTHROPIC_API_KEY": "sk-from-env"}
    assert load_api_key(ManagedAgentsConfig(), environ) == KEY


def test_api_key_from_the_environment_variable(tmp_path: Path) -> None:
    """Without a file or a credential (an empty credentials directory), the variable is used."""
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "ANTHROPIC_API_KEY": f"{KEY}\n"}
    assert load_api_key(ManagedAgentsConfig(), environ) == KEY


def test_no_api_key_anywhere_says_where_to_put_one() -> None:
    with pytest.raises(ConfigError) as caught:
        load_api_key(ManagedAgentsConfig(), {"ANTHROPIC_API_KEY": "  "})
    message = str(caught.value)
    assert "no API key found" in message
    assert "launcher.managed_agents.api_key_file" in message
    assert "anthropic-api-key" in message
    assert "ANTHROPIC_API_KEY" in message


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (None, "cannot read"),  # the path is a directory
        ("", "is empty"),
        ("   \n", "is empty"),
        (f"{KEY}\n{KEY}-second\n", "whitespace or control characters"),
    ],
    ids=["unreadable", "empty", "blank", "two-keys"],
)
def test_a_bad_api_key_file_names_the_setting_never_the_key(
    tmp_path: Path, content: str | None, phrase: str
) -> None:
    key_file = tmp_path / "api-key"
    if content is None:
        key_file.mkdir()
    else:
        key_file.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_api_key(ManagedAgentsConfig(api_key_file=key_file), {"ANTHROPIC_API_KEY": KEY})
    message = str(caught.value)
    assert message.startswith("launcher.managed_agents.api_key_file: ")
    assert phrase in message
    assert KEY not in message


def test_an_unreadable_credential_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    (tmp_path / "anthropic-api-key").mkdir()
    with pytest.raises(ConfigError, match="the systemd credential `anthropic-api-key`"):
        load_api_key(
            ManagedAgentsConfig(),
            {"CREDENTIALS_DIRECTORY": str(tmp_path), "ANTHROPIC_API_KEY": KEY},
        )


async def test_create_launcher_picks_the_configured_type(api: HostedApi, tmp_path: Path) -> None:
    """``managed_agents`` gets its key from the environment; ``command`` is the default."""
    daemon = DaemonConfig(state_dir=tmp_path, socket=tmp_path / "control.sock")
    managed = Config(
        daemon=daemon,
        launcher=LauncherConfig(
            type="managed_agents",
            managed_agents=ManagedAgentsConfig(base_url=api.base_url, timeout=2.0),
        ),
    )
    clock = FakeClock(datetime(2026, 5, 1, tzinfo=UTC))
    launcher = create_launcher(
        managed, recorder=None, clock=clock, environ={"ANTHROPIC_API_KEY": api.api_key}
    )
    assert isinstance(launcher, ManagedAgentsLauncher)
    async with launcher:
        assert await launcher.resolve_agent("agent_a", None) == AgentRef(id="agent_a", version=2)
    with pytest.raises(ConfigError, match="no API key found"):
        create_launcher(managed, recorder=None, clock=clock, environ={})
    local = create_launcher(Config(daemon=daemon), recorder=None, clock=clock, environ=os.environ)
    assert isinstance(local, CommandLauncher)


async def test_warm_opens_connections_that_the_next_creations_use(
    api: HostedApi, launcher: ManagedAgentsLauncher
) -> None:
    """``warm(n)`` opens n connections (at most ``max_connections``) before a burst, and the
    burst's session creations go over them: no connection is opened at the due instant."""
    await launcher.warm(3)
    await eventually(lambda: api.open_connections() == 3, "3 connections accepted")
    assert api.requests == []  # opening a connection sends nothing
    async with anyio.create_task_group() as tg:
        for index in range(3):
            tg.start_soon(launcher.create_session, session_request(run_id=f"drun_{index}"))
    assert session_posts(api) == 3
    assert api.open_connections() == 3
    async with ManagedAgentsLauncher(
        base_url=api.base_url, api_key=api.api_key, timeout=2.0, max_connections=2
    ) as small:
        await small.warm(10)
        await eventually(lambda: api.open_connections() == 3 + 2, "2 more accepted")
