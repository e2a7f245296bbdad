"""The README's webhook receiver runs as written and accepts what the daemon signs: a real
request signed by the daemon's own signer is verified (and deduped on ``webhook-id``), an
altered one is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from agentcron.core.events import event_body
from agentcron.runtime.delivery import load_secret
from tests.support.readme_harness import readme_blocks
from tests.support.webhook_receiver import SECRET, free_port


def post(port: int, body: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/agentcron", data=body.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the README receiver did not start listening")


def test_the_readme_receiver_verifies_what_the_daemon_signs(tmp_path: Path) -> None:
    (block,) = readme_blocks("### Webhooks", "python")
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    port = free_port()
    env = {**os.environ, "WEBHOOK_SECRET_FILE": str(secret_file), "WEBHOOK_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-c", block],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
        signer = load_secret(secret_file, "secret")
        now = datetime.now(UTC)
        body = event_body("deployment.archived", now, {"type": "deployment", "id": "depl_x"})
        headers = {
            "content-type": "application/json",
            "webhook-id": "msg_readme",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign("msg_readme", now, body),
        }
        assert post(port, body, headers) == 204
        assert post(port, body, headers) == 204  # a repeat: accepted, not processed twice
        assert post(port, body.replace("depl_x", "depl_y"), headers) == 401
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert out.splitlines() == ["deployment.archived depl_x"], err
