"""The README's `curl --unix-socket` block runs, as written, against the quick start's daemon,
however the user's shell finds the socket; without a daemon it fails in plain words."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.readme_harness import (
    SocketSetup,
    activate_venv,
    quick_start_daemon,
    readme_blocks,
)

SECTION = "## Control API with curl"


def readme_curl_script() -> str:
    [script] = readme_blocks(SECTION, "sh")
    return script


def run_script(script: str, *, strict: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with bash in this process's environment (what the user's shell has)."""
    flags = ["-euo", "pipefail"] if strict else []
    return subprocess.run(
        ["bash", *flags, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.mark.parametrize("setup", list(SocketSetup), ids=[s.value for s in SocketSetup])
def test_readme_curl_examples_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: SocketSetup
) -> None:
    with quick_start_daemon(tmp_path, monkeypatch, setup) as quick_start:
        result = run_script(readme_curl_script())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    outputs = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    health, got, page, updated, paused, run, runs, archived, conflict = outputs
    assert health["status"] == "ok"
    assert got["type"] == "deployment"
    assert got["metadata"] == {"team": "ops"}
    assert [d["id"] for d in page["data"]] == [got["id"]]
    assert updated["description"] == "weekly"
    assert updated["metadata"] == {}
    assert paused["status"] == "paused"
    assert run["type"] == "deployment_run"
    assert run["error"] is None, run
    assert run["session_id"].startswith("sesn_")
    assert (quick_start.state_dir / "sessions" / f"{run['session_id']}.log").exists()
    assert [r["id"] for r in runs["data"]] == [run["id"]]
    assert archived["archived_at"] is not None
    assert conflict["type"] == "error"
    assert conflict["error"]["type"] == "invalid_request_error"


def test_readme_curl_block_without_a_daemon_says_so_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run line by line, as pasted into a shell: every failure is one plain line."""
    socket_path = tmp_path / "nobody" / "control.sock"
    monkeypatch.setenv("AGENTCRON_SOCKET", str(socket_path))
    activate_venv(monkeypatch)
    result = run_script(readme_curl_script(), strict=False)
    assert "Traceback" not in result.stderr, result.stderr
    assert f"no daemon socket at {socket_path}" in result.stderr
    assert "field: no 'id' in the response" in result.stderr
