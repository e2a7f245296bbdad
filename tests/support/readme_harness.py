"""The README's code blocks, run as written against the daemon of its quick start.

``readme_blocks(section, language)`` extracts the fenced blocks of one README section.
``quick_start_daemon`` runs ``agentcrond --config config.example.toml`` (the quick start's
command) with its state in a temporary ``XDG_STATE_HOME``, and sets up this process's
environment (inherited by the daemon and by the blocks) for one of the ways a user's shell
finds the socket (``SocketSetup``). The venv's ``bin`` directory goes first on ``PATH``, as
after ``. .venv/bin/activate``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest

from agentcron.paths import SYSTEM_SOCKET, default_socket_path
from tests.support.daemon_harness import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE_CONFIG = ROOT / "config.example.toml"


def readme_blocks(section: str, language: str) -> list[str]:
    """The ```language blocks of the README section whose heading is ``section``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{section}\n")
    end = text.find("\n## ", start + len(section) + 2)
    body = text[start : end if end != -1 else len(text)]
    blocks = re.findall(rf"^```{re.escape(language)}\n(.*?)^```$", body, re.DOTALL | re.MULTILINE)
    assert blocks, f"the README section {section!r} has no ```{language} block"
    return blocks


class SocketSetup(StrEnum):
    """How the user's shell finds the daemon's socket."""

    XDG_SET = "xdg-set"  # $XDG_RUNTIME_DIR/agentcron/control.sock (a desktop session)
    XDG_UNSET = "xdg-unset"  # the private directory in the temp root (su, cron, containers)
    AGENTCRON_SOCKET = "agentcron-socket"  # the daemon on --socket, the shell on $AGENTCRON_SOCKET


class _QuickStartDaemon(DaemonProcess):
    def __init__(self, directory: Path, extra_args: list[str]) -> None:
        super().__init__(directory, EXAMPLE_CONFIG)
        self.extra_args = extra_args

    def daemon_command(self) -> list[str]:
        return [*super().daemon_command(), *self.extra_args]


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _default_socket_to_ourselves() -> Iterator[Path]:
    """The socket path a daemon binds without ``XDG_RUNTIME_DIR``, held for this test alone.

    That path is one per uid on the host, so test runs side by side take turns (a lock on its
    directory); a daemon already answering there (someone's own) skips the test.
    """
    path = default_socket_path({})
    if path == SYSTEM_SOCKET:
        pytest.skip(f"a system daemon's socket {SYSTEM_SOCKET} is the default on this host")
    path.parent.mkdir(mode=0o750, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        if _answers(path):
            pytest.skip(f"a daemon already answers on the default socket {path}")
        yield path
    finally:
        os.close(directory)


def activate_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put this interpreter's ``bin`` directory (``agentcron``) first on ``PATH``."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


@dataclass(frozen=True, slots=True, kw_only=True)
class QuickStart:
    daemon: DaemonProcess
    socket: Path
    state_dir: Path


@contextlib.contextmanager
def quick_start_daemon(
    directory: Path, monkeypatch: pytest.MonkeyPatch, setup: SocketSetup
) -> Iterator[QuickStart]:
    """The quick start's daemon, running until the ``with`` ends (then stopped with SIGTERM)."""
    for name in ("AGENTCRON_SOCKET", "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(directory / "state-home"))
    activate_venv(monkeypatch)
    extra_args: list[str] = []
    with contextlib.ExitStack() as stack:
        if setup is SocketSetup.XDG_SET:
            runtime = directory / "xdg"
            runtime.mkdir(mode=0o700)
            monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
            socket_path = runtime / "agentcron" / "control.sock"
        elif setup is SocketSetup.XDG_UNSET:
            socket_path = stack.enter_context(_default_socket_to_ourselves())
        else:
            socket_path = directory / "custom" / "agentcron.sock"
            monkeypatch.setenv("AGENTCRON_SOCKET", str(socket_path))
            extra_args = ["--socket", str(socket_path)]
        daemon = _QuickStartDaemon(directory, extra_args)
        daemon.socket_path = socket_path
        try:
            daemon.start()
            yield QuickStart(
                daemon=daemon,
                socket=socket_path,
                state_dir=directory / "state-home" / "agentcron",
            )
            assert daemon.stop() == 0, daemon.logs()
        finally:
            daemon.close()
