"""Run the real ``agentcrond`` as a subprocess on a temporary state directory and socket.

``DaemonProcess`` writes a config, starts the daemon with a ``NOTIFY_SOCKET`` datagram listener
(as systemd would), waits for ``READY=1`` and talks to the control socket with a tiny HTTP
client. Used by the end-to-end and crash tests.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RECORDING_AGENT = """\
import json, os, sys
request = json.load(sys.stdin)
line = json.dumps({"session_id": os.environ["AGENTCRON_SESSION_ID"],
                   "run_id": os.environ["AGENTCRON_RUN_ID"],
                   "deployment_id": os.environ["AGENTCRON_DEPLOYMENT_ID"]})
with open(os.environ["SEEN_FILE"], "a") as seen:
    seen.write(line + "\\n")
print("session request:", json.dumps(request))
"""


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(
    socket_path: Path, method: str, path: str, body: Mapping[str, Any] | None = None
) -> tuple[int, Any]:
    """One HTTP request to the control socket; returns (status, parsed JSON body)."""
    conn = UnixHTTPConnection(socket_path)
    try:
        payload = json.dumps(body).encode() if body is not None else b""
        conn.request(method, path, body=payload, headers={"content-type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def drain(self, timeout: float = 0.0) -> list[dict[str, str]]:
        self.sock.settimeout(timeout if timeout > 0 else 0.001)
        try:
            while True:
                data = self.sock.recv(65536)
                fields = dict(
                    line.split("=", 1) for line in data.decode().splitlines() if "=" in line
                )
                self.messages.append(fields)
                self.sock.settimeout(0.001)
        except (TimeoutError, BlockingIOError):
            pass
        return self.messages

    def wait_for(self, key: str, value: str | None = None, timeout: float = 20.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.drain(0.2):
                if key in message and (value is None or message[key] == value):
                    return message
        raise AssertionError(f"no {key}={value} notification within {timeout}s: {self.messages}")

    def close(self) -> None:
        self.sock.close()


def write_config(
    directory: Path,
    *,
    max_jitter: str = "1s",
    extra_daemon: str = "",
    agent_argv: Sequence[str] | None = None,
    max_concurrent_sessions: int = 64,
) -> Path:
    """A config with a recording local agent; returns its path."""
    argv = list(agent_argv) if agent_argv else [sys.executable, "-c", RECORDING_AGENT]
    config = directory / "agentcron.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{directory / "state"}"
socket = "{directory / "run" / "control.sock"}"
max_jitter = "{max_jitter}"
log_format = "json"
{extra_daemon}

[launcher]
type = "command"
max_concurrent_sessions = {max_concurrent_sessions}
stop_grace = "2s"

[agents.agent_rec]
version = 1
argv = {json.dumps(argv)}

[environments.env_local]
cwd = "{directory}"
env = {{ SEEN_FILE = "{directory / "seen.jsonl"}" }}
"""
    )
    return config


REPO_ROOT = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """One ``agentcrond`` child process.

    With ``clock_offset`` (seconds) the daemon's wall clock runs that far ahead of the
    machine's (``tests.support.shifted_daemon``).
    """

    def __init__(
        self,
        directory: Path,
        config: Path,
        *,
        env: Mapping[str, str] | None = None,
        clock_offset: float | None = None,
    ):
        self.directory = directory
        self.config = config
        self.clock_offset = clock_offset
        self.socket_path = directory / "run" / "control.sock"
        self.state_dir = directory / "state"
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.notify: NotifyListener | None = None
        self.log_path = directory / "daemon.log"

    def start(
        self,
        *,
        wait_ready: bool = True,
        pass_fds: Sequence[int] = (),
        argv_prefix: Sequence[str] = (),
    ) -> None:
        notify_path = self.directory / f"notify-{time.monotonic_ns()}.sock"
        if self.notify is not None:
            self.notify.close()
        self.notify = NotifyListener(notify_path)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NOTIFY_", "LISTEN_", "WATCHDOG_"))
        }
        env.update({"NOTIFY_SOCKET": str(notify_path), **self.extra_env})
        if self.clock_offset is not None:  # ``-m tests.support...`` needs the repository root
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])
            )
        command = [*argv_prefix, *self.daemon_command()]
        log_handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, env=env, stdout=log_handle, stderr=log_handle, pass_fds=tuple(pass_fds)
        )
        log_handle.close()
        if wait_ready:
            self.notify.wait_for("READY", "1", timeout=30)

    def daemon_command(self) -> list[str]:
        if self.clock_offset is not None:
            shifted = ["-m", "tests.support.shifted_daemon", repr(self.clock_offset)]
            return [sys.executable, *shifted, "--config", str(self.config)]
        return [
            sys.executable,
            "-c",
            "from agentcron.daemon import main; raise SystemExit(main())",
            "--config",
            str(self.config),
        ]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        return request(self.socket_path, method, path, body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        if self.notify is not None:
            self.notify.drain(0.1)
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        if self.notify is not None:
            self.notify.close()


@contextmanager
def running_daemon(directory: Path, config: Path, **kwargs: Any) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(directory, config, **kwargs)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


def create_body(
    name: str, *, cron: str | None = "* * * * *", timezone: str = "UTC"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "agent": "agent_rec",
        "environment_id": "env_local",
        "initial_events": [
            {"type": "user.message", "content": [{"type": "text", "text": f"hello {name}"}]}
        ],
    }
    if cron is not None:
        body["schedule"] = {"type": "cron", "expression": cron, "timezone": timezone}
    return body


def list_all_runs(daemon: DaemonProcess, query: str = "") -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    page: str | None = None
    while True:
        suffix = f"&page={page}" if page else ""
        status, body = daemon.request("GET", f"/v1/deployment_runs?limit=1000{query}{suffix}")
        assert status == 200, body
        runs.extend(body["data"])
        page = body["next_page"]
        if not page:
            return runs


def process_exited(pid: int) -> bool:
    """The process is gone, or a zombie its parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def child_processes(parent: int, marker: bytes) -> list[int]:
    """Live (not zombie) processes whose parent is ``parent`` and whose argv holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # it ended while we looked
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and marker in cmdline:
            found.append(int(entry.name))
    return found
