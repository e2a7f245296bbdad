"""Socket hygiene: modes, stale and live sockets, groups, peer credentials and the allow-list."""

from __future__ import annotations

import grp
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from agentcron.api.socket import (
    PeerCred,
    bind_control_socket,
    peer_allowed,
    peer_credentials,
    serve,
)
from agentcron.errors import AgentcronError
from tests.support.api_harness import running_api, short_socket_dir

NOBODY = 65534


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_socket_dir() as directory:
        yield directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bind_creates_a_0750_directory_and_a_0660_socket(sock_dir: Path) -> None:
    path = sock_dir / "run" / "agentcron" / "control.sock"
    sock = bind_control_socket(path)
    try:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert mode(path) == 0o660
        assert mode(path.parent) == 0o750
    finally:
        sock.close()


def test_an_existing_directory_keeps_its_mode(sock_dir: Path) -> None:
    sock_dir.chmod(0o755)
    sock = bind_control_socket(sock_dir / "control.sock")
    sock.close()
    assert mode(sock_dir) == 0o755


def test_a_stale_socket_file_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening: connecting is refused
    dead.close()
    with capture_logs() as logs:
        sock = bind_control_socket(path)
    try:
        assert [e["event"] for e in logs] == ["stale_socket_removed"]
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))
        probe.close()
    finally:
        sock.close()


def test_a_live_daemon_on_the_socket_is_refused(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    first = bind_control_socket(path)
    try:
        with pytest.raises(AgentcronError, match="another agentcron daemon is already listening"):
            bind_control_socket(path)
        assert stat.S_ISSOCK(path.stat().st_mode)  # the live socket is untouched
    finally:
        first.close()


def test_a_path_that_is_not_a_socket_is_never_replaced(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    path.write_text("precious")
    with pytest.raises(AgentcronError, match="not a socket"):
        bind_control_socket(path)
    assert path.read_text() == "precious"


def test_an_unknown_group_is_an_error_naming_socket_group(sock_dir: Path) -> None:
    with pytest.raises(AgentcronError, match=r"socket_group.*no-such-group-agentcron"):
        bind_control_socket(sock_dir / "control.sock", group="no-such-group-agentcron")
    assert not (sock_dir / "control.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group to another needs root")
def test_the_socket_gets_the_configured_group(sock_dir: Path) -> None:
    group = grp.getgrgid(NOBODY).gr_name
    path = sock_dir / "control.sock"
    sock = bind_control_socket(path, group=group)
    sock.close()
    assert path.stat().st_gid == NOBODY


def test_peer_credentials_are_read_from_the_connection() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_credentials(left) == PeerCred(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())


@pytest.mark.parametrize(
    ("peer", "uids", "gids", "allowed"),
    [
        (PeerCred(pid=1, uid=1000, gid=1000), (), (), True),
        (PeerCred(pid=1, uid=1000, gid=1000), (1000,), (), True),
        (PeerCred(pid=1, uid=1001, gid=1001), (1000,), (), False),
        (PeerCred(pid=1, uid=1001, gid=2000), (1000,), (2000,), True),
        (PeerCred(pid=1, uid=1001, gid=2001), (), (2000,), False),
        (PeerCred(pid=1, uid=0, gid=0), (1000,), (), True),
        (PeerCred(pid=1, uid=4242, gid=4242), (1000,), (), True),
    ],
    ids=[
        "empty-lists-admit-all", "listed-uid", "unlisted-uid", "listed-gid", "unlisted-gid",
        "root-always", "daemon-uid-always",
    ],
)  # fmt: skip
def test_allow_list_decision(
    peer: PeerCred, uids: tuple[int, ...], gids: tuple[int, ...], allowed: bool
) -> None:
    assert peer_allowed(peer, allowed_uids=uids, allowed_gids=gids, daemon_uid=4242) is allowed


async def test_serve_removes_its_socket_file_on_shutdown(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    app = web.Application()
    async with anyio.create_task_group() as tg:
        await tg.start(serve, app, bind_control_socket(path))
        assert path.exists()
        tg.cancel_scope.cancel()
    assert not path.exists()


async def test_serve_leaves_a_socket_file_it_did_not_create(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    app = web.Application()
    async with anyio.create_task_group() as tg:
        await tg.start(serve, app, bind_control_socket(path))
        path.unlink()  # someone else took over the path meanwhile
        path.write_text("someone else's")
        tg.cancel_scope.cancel()
    assert path.read_text() == "someone else's"


def _curl_as_nobody(socket_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-s", "--unix-socket", str(socket_path), "http://localhost/v1/health"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _open_to_nobody(socket_path: Path) -> None:
    """Let uid/gid 65534 reach the socket (its temporary directories are private)."""
    socket_path.parent.parent.chmod(0o711)
    os.chown(socket_path.parent, 0, NOBODY)
    os.chown(socket_path, 0, NOBODY)


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another uid needs root")
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_peer_outside_the_allow_list_gets_403_over_the_real_socket(tmp_path: Path) -> None:
    with running_api(tmp_path / "denied", allowed_uids=(12345,)) as server:
        _open_to_nobody(server.socket_path)
        result = _curl_as_nobody(server.socket_path)
        assert '"permission_error"' in result.stdout, result
        assert "uid 65534" in result.stdout
    with running_api(tmp_path / "allowed", allowed_gids=(NOBODY,)) as server:
        _open_to_nobody(server.socket_path)
        result = _curl_as_nobody(server.socket_path)
        assert '"status":"ok"' in result.stdout, result
