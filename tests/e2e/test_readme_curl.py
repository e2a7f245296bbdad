"""The README's `curl --unix-socket` examples run, unchanged, against a real daemon socket."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.api_harness import running_api
from tests.support.fakes import RecordingLauncher

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Control API with curl"


def readme_curl_script() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the curl section has no ```sh block"
    return match.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_work(tmp_path: Path) -> None:
    launcher = RecordingLauncher(agents={"agent_hello": 1}, environments=frozenset({"env_local"}))
    with running_api(tmp_path / "state", launcher=launcher) as server:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", readme_curl_script()],
            env={**os.environ, "AGENTCRON_SOCKET": str(server.socket_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
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
    assert run["session_id"] == launcher.session_ids[0]
    assert [r["id"] for r in runs["data"]] == [run["id"]]
    assert archived["archived_at"] is not None
    assert conflict["type"] == "error"
    assert conflict["error"]["type"] == "invalid_request_error"
