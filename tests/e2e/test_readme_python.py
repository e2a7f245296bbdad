"""The README's Python (official SDK) blocks run, as written, against the quick start's daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon_harness import request
from tests.support.readme_harness import SocketSetup, quick_start_daemon, readme_blocks

SECTION = "## Control API from Python (the official SDK)"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_readme_shows_a_sync_and_an_async_client() -> None:
    sync_block, async_block = readme_blocks(SECTION, "python")
    assert "anthropic.Anthropic(" in sync_block
    assert "anthropic.AsyncAnthropic(" in async_block
    for block in (sync_block, async_block):
        assert '["agentcron", "socket-path"]' in block
        assert "has_error=" in block


@pytest.mark.parametrize("setup", [SocketSetup.XDG_SET, SocketSetup.XDG_UNSET], ids=str)
def test_readme_python_examples_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: SocketSetup
) -> None:
    sync_block, async_block = readme_blocks(SECTION, "python")
    with quick_start_daemon(tmp_path, monkeypatch, setup) as quick_start:
        sync_run = run_python(sync_block)
        async_run = run_python(async_block)
        status, page = request(
            quick_start.socket, "GET", "/v1/deployments?include_archived=true&limit=10"
        )
    assert sync_run.returncode == 0, sync_run.stderr
    assert async_run.returncode == 0, async_run.stderr
    assert (sync_run.stderr, async_run.stderr) == ("", "")
    sync_lines = sync_run.stdout.splitlines()
    assert sync_lines[0].startswith("created depl_")
    assert sync_lines[1].startswith("run drun_")
    assert sync_lines[1].endswith(" error None")
    assert sync_lines[2] == "1 ok, 0 failed"
    async_lines = async_run.stdout.splitlines()
    assert async_lines[0].endswith(" error None")
    assert async_lines[1].startswith("ok drun_")
    assert status == 200, page
    names = {d["name"]: d for d in page["data"]}
    assert set(names) == {"nightly report", "hourly check"}, json.dumps(page)
    assert all(d["archived_at"] is not None for d in names.values())
