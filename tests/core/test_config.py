"""The configuration file: defaults, overrides, and a clear message for every bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentcron.config import DEFAULT_MAX_CONCURRENT_CREATIONS, load_config, parse_config
from agentcron.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def problems_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, environ={"HOME": "/home/u"})
    return caught.value.problems


def test_the_example_config_is_valid_and_declares_a_local_agent() -> None:
    config = load_config(ROOT / "config.example.toml", environ={"HOME": "/home/u"})
    assert config.launcher.type == "command"
    assert config.declarations.agents["agent_hello"].argv[0] == "/bin/sh"
    vault = config.declarations.vaults["vlt_example"]
    assert vault.env_file.is_file(), "relative paths resolve against the config file's directory"


def test_defaults_follow_xdg_without_systemd() -> None:
    config = parse_config({}, environ={"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7"})
    assert config.daemon.state_dir == Path("/home/u/.local/state/agentcron")
    assert config.daemon.socket == Path("/run/user/7/agentcron/control.sock")
    assert config.daemon.max_jitter == 10.0
    assert config.daemon.misfire_grace == 60.0
    assert config.launcher.max_concurrent_sessions == 16
    assert config.launcher.max_concurrent_creations == DEFAULT_MAX_CONCURRENT_CREATIONS


def test_max_concurrent_creations_is_read_for_either_launcher() -> None:
    for launcher_type in ("command", "managed_agents"):
        document = {"launcher": {"type": launcher_type, "max_concurrent_creations": 7}}
        assert parse_config(document, environ={}).launcher.max_concurrent_creations == 7


def test_defaults_follow_systemd_directories() -> None:
    config = parse_config(
        {},
        environ={"STATE_DIRECTORY": "/var/lib/agentcron", "RUNTIME_DIRECTORY": "/run/agentcron"},
    )
    assert config.daemon.state_dir == Path("/var/lib/agentcron")
    assert config.daemon.socket == Path("/run/agentcron/control.sock")


def test_flags_override_the_file() -> None:
    config = parse_config(
        {"daemon": {"log_level": "info", "socket": "/a.sock"}},
        environ={},
        overrides={"log_level": "debug", "socket": None},
    )
    assert config.daemon.log_level == "debug"
    assert config.daemon.socket == Path("/a.sock")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"daemon": {"colour": "blue"}}, "daemon.colour: unknown key"),
        ({"deamon": {}}, "deamon: unknown key"),
        ({"daemon": {"max_deployments": "many"}}, "daemon.max_deployments: expected an integer"),
        ({"daemon": {"max_deployments": True}}, "daemon.max_deployments: expected an integer"),
        ({"daemon": {"max_deployments": 0}}, "daemon.max_deployments: must be at least 1"),
        ({"daemon": {"max_jitter": "ten seconds"}}, "daemon.max_jitter: 'ten seconds' is not"),
        ({"daemon": {"max_jitter": "11s"}}, "daemon.max_jitter: must be between 0s and 10s"),
        ({"daemon": {"misfire_grace": "-5s"}}, "daemon.misfire_grace: '-5s' is not a duration"),
        ({"daemon": {"log_format": "xml"}}, "daemon.log_format: must be one of auto, json"),
        ({"daemon": {"auto_pause_on": ["oops"]}}, "daemon.auto_pause_on: 'oops' is not a run"),
        ({"daemon": {"allowed_uids": ["root"]}}, "daemon.allowed_uids: expected a list of non-neg"),
        ({"launcher": {"type": "docker"}}, "launcher.type: must be one of command, managed_agents"),
        (
            {"launcher": {"max_concurrent_creations": 0}},
            "launcher.max_concurrent_creations: must be between 1 and 10000, got 0",
        ),
        (
            {"launcher": {"max_concurrent_creations": 10_001}},
            "launcher.max_concurrent_creations: must be between 1 and 10000, got 10001",
        ),
        (
            {"launcher": {"max_concurrent_creations": "many"}},
            "launcher.max_concurrent_creations: expected an integer, got str",
        ),
        (
            {"launcher": {"max_concurrent_creations": 2.5}},
            "launcher.max_concurrent_creations: expected an integer, got float",
        ),
        (
            {"launcher": {"managed_agents": {"base_url": "ftp://x"}}},
            "launcher.managed_agents.base_url: must start with http",
        ),
        (
            {"launcher": {"managed_agents": {"timeout": "soon"}}},
            "launcher.managed_agents.timeout: 'soon' is not a duration",
        ),
        ({"agents": {"a": {"version": 1}}}, "agents.a.argv: is required"),
        ({"agents": {"a": {"argv": [], "version": 1}}}, "agents.a.argv: must not be empty"),
        ({"agents": {"a": {"argv": ["x"], "image": "y"}}}, "agents.a.image: unknown key"),
        ({"environments": {"e": {"env": {"A": 1}}}}, "environments.e.env: expected a table of str"),
        ({"vaults": {"v": {}}}, "vaults.v.env_file: is required"),
        ({"agents": {"a": "x"}}, "agents.a: expected a table"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, str) else None,
)
def test_bad_keys_are_named(document: dict[str, Any], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems_of(document)), problems_of(document)


def test_every_problem_is_listed_at_once() -> None:
    problems = problems_of({"daemon": {"colour": 1, "max_jitter": "x"}, "launcher": {"type": 3}})
    assert len(problems) == 3


def test_unreadable_and_malformed_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
