"""``[retention] session_log_max_bytes`` reaches the ``command`` launcher, at start and on
SIGHUP, and a session's log stops at that cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentcron.config import Config, parse_config
from agentcron.daemon import reload
from agentcron.launchers import create_launcher
from agentcron.launchers.command import CommandLauncher
from agentcron.launchers.spawner import cap_marker
from tests.launchers.test_command import START, Recorder, log_path, session_request
from tests.support.fakes import FakeClock


def config(tmp_path: Path, **retention: Any) -> Config:
    document: dict[str, Any] = {
        "daemon": {"state_dir": str(tmp_path / "state")},
        "agents": {"agent_chatty": {"argv": ["sh", "-c", "head -c 100000 /dev/zero"]}},
        "environments": {"env_local": {}},
        "retention": retention,
    }
    return parse_config(document, environ={"HOME": str(tmp_path)})


def launcher_for(cfg: Config, recorder: Recorder | None = None) -> CommandLauncher:
    launcher = create_launcher(cfg, recorder=recorder, clock=FakeClock(START))
    assert isinstance(launcher, CommandLauncher)
    return launcher


def test_the_default_cap_is_10_mib_and_off_means_none(tmp_path: Path) -> None:
    assert launcher_for(config(tmp_path)).log_max_bytes == 10 * 1024 * 1024
    assert launcher_for(config(tmp_path, session_log_max_bytes="off")).log_max_bytes is None


def test_sighup_applies_a_new_cap_to_sessions_started_after_it(tmp_path: Path) -> None:
    launcher = launcher_for(config(tmp_path, session_log_max_bytes="64KiB"))
    assert launcher.log_max_bytes == 64 * 1024
    reload(lambda: config(tmp_path, session_log_max_bytes="8KiB"), launcher, {})
    assert launcher.log_max_bytes == 8 * 1024


async def test_a_session_log_stops_at_the_configured_cap(tmp_path: Path) -> None:
    recorder = Recorder()
    cfg = config(tmp_path, session_log_max_bytes="8KiB")
    async with launcher_for(cfg, recorder) as launcher:
        session_id = await launcher.create_session(
            session_request("agent_chatty", environment_id="env_local")
        )
        ended = await recorder.wait_ended(session_id)
    content = log_path(tmp_path, session_id).read_bytes()
    assert len(content) == 8192 == ended["log_bytes"]
    assert content.endswith(cap_marker(8192))
