"""The session limit keys of an agent (``max_duration``, ``stop_grace``, ``overlap``) and
``[daemon] node_name`` (the host local sessions record): parsed, defaulted, and every bad
value named by ``--check-config``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentcron.config import parse_config
from agentcron.errors import ConfigError

ENVIRON = {"HOME": "/home/u"}


def agent(**keys: Any) -> dict[str, Any]:
    return {"agents": {"agent_a": {"argv": ["/bin/true"], **keys}}}


def test_the_limits_default_to_none_and_allow() -> None:
    config = parse_config(agent(), environ=ENVIRON)
    declared = config.declarations.agents["agent_a"]
    assert (declared.max_duration, declared.stop_grace, declared.overlap) == (None, None, "allow")
    assert config.daemon.node_name is None


def test_the_limits_are_read() -> None:
    document = agent(max_duration="1h", stop_grace="30s", overlap="skip")
    document["daemon"] = {"node_name": "edge-7.example"}
    config = parse_config(document, environ=ENVIRON)
    declared = config.declarations.agents["agent_a"]
    assert (declared.max_duration, declared.stop_grace, declared.overlap) == (3600.0, 30.0, "skip")
    assert config.daemon.node_name == "edge-7.example"


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            agent(max_duration="soon"),
            "agents.agent_a.max_duration: 'soon' is not a duration: use a number of seconds or "
            "'500ms', '10s', '2m', '1h'",
        ),
        (agent(max_duration="0s"), "agents.agent_a.max_duration: must be between 1s and "),
        (agent(max_duration=True), "agents.agent_a.max_duration: expected a duration"),
        (agent(stop_grace="2h"), "agents.agent_a.stop_grace: must be between 0s and 3600s, got"),
        (agent(stop_grace="-1s"), "agents.agent_a.stop_grace: '-1s' is not a duration"),
        (
            agent(overlap="queue"),
            "agents.agent_a.overlap: must be one of allow, skip, got 'queue'",
        ),
        (agent(overlap=1), "agents.agent_a.overlap: expected a string, got int"),
        ({"daemon": {"node_name": ""}}, "daemon.node_name: must be 1-100 characters"),
        ({"daemon": {"node_name": "two words"}}, "daemon.node_name: must be 1-100 characters"),
        ({"daemon": {"node_name": 7}}, "daemon.node_name: expected a string, got int"),
    ],
    ids=[
        "duration-word",
        "duration-zero",
        "duration-bool",
        "grace-too-long",
        "grace-negative",
        "overlap-unknown",
        "overlap-not-string",
        "node-name-empty",
        "node-name-space",
        "node-name-number",
    ],
)
def test_every_bad_value_is_named_by_its_key(document: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, environ=ENVIRON)
    assert any(found.startswith(problem) for found in caught.value.problems), caught.value.problems


def test_check_config_names_every_bad_session_key_and_shows_good_ones(tmp_path: Path) -> None:
    def check(text: str) -> subprocess.CompletedProcess[str]:
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
            env={k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"},
        )

    state = f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
    bad = check(
        state + 'node_name = "a b"\n\n[agents.agent_a]\nargv = ["/bin/true"]\n'
        'max_duration = "forever"\nstop_grace = "2h"\noverlap = "sometimes"\n'
    )
    assert bad.returncode == 2
    for key in (
        "daemon.node_name",
        "agents.agent_a.max_duration",
        "agents.agent_a.stop_grace",
        "agents.agent_a.overlap",
    ):
        assert f"  {key}: " in bad.stderr, bad.stderr
    good = check(
        state + 'node_name = "edge-1"\n\n[agents.agent_a]\nargv = ["/bin/true"]\n'
        'max_duration = "1h"\noverlap = "skip"\n'
    )
    assert good.returncode == 0, good.stderr
    settings = json.loads(good.stdout)
    assert settings["daemon"]["node_name"] == "edge-1"
    assert settings["agents"] == ["agent_a"]
