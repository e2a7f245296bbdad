"""The control socket: binding it safely, serving the API on it, and checking who connects.

Hygiene rules (SPEC §5, §9):

- the socket's directory is created ``0750`` when missing (and tightened if we created it);
- an existing socket file is probed: a live daemon answering on it is a refusal, a stale file
  (connection refused) is replaced; a path that is not a socket is never touched;
- the socket is ``0660`` and, when ``socket_group`` is configured, owned by that group;
- the file is removed on shutdown only when we created it and it is still the same file;
- with an allow-list, each request's peer (``SO_PEERCRED``) must be root, the daemon's own
  uid, a listed uid, or have a listed primary gid.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import structlog
from aiohttp import web

from agentcron.errors import StartupError

log = structlog.get_logger(__name__)

SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750
BACKLOG = 128
SHUTDOWN_TIMEOUT = 5.0
_PROBE_TIMEOUT = 1.0
_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerCred:
    """The credentials of the process at the other end of a Unix socket."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCred:
    """Read ``SO_PEERCRED`` of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return PeerCred(pid=pid, uid=uid, gid=gid)


def peer_allowed(
    peer: PeerCred,
    *,
    allowed_uids: Collection[int],
    allowed_gids: Collection[int],
    daemon_uid: int,
) -> bool:
    """Whether ``peer`` may use the API.

    Empty allow-lists admit everyone who can open the socket. Otherwise root, the daemon's own
    uid, any uid in ``allowed_uids`` and any peer whose primary gid is in ``allowed_gids`` may.
    """
    if not allowed_uids and not allowed_gids:
        return True
    if peer.uid in (0, daemon_uid):
        return True
    return peer.uid in allowed_uids or peer.gid in allowed_gids


class ControlSocket(socket.socket):
    """A listening socket bound by ``bind_control_socket``: it knows which file it created."""

    bound_path: Path | None = None
    bound_inode: tuple[int, int] | None = None


def bind_control_socket(path: Path, *, group: str | None = None) -> socket.socket:
    """Bind and listen on the control socket at ``path`` (see the module docstring).

    Raises ``StartupError`` when a live daemon already answers there, when ``path`` exists
    and is not a socket, when ``group`` does not exist, or when the OS refuses.
    """
    gid = _group_id(group) if group is not None else None
    _prepare_directory(path.parent)
    _clear_stale_socket(path)
    sock = ControlSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, SOCKET_MODE)
        if gid is not None:
            os.chown(path, -1, gid)
        sock.listen(BACKLOG)
        sock.setblocking(False)
        info = os.stat(path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind the control socket {path}: {exc.strerror}") from exc
    sock.bound_path = path
    sock.bound_inode = (info.st_dev, info.st_ino)
    return sock


async def serve(
    app: web.Application,
    sock: socket.socket,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> None:
    """Serve ``app`` on the listening ``sock`` until cancelled.

    Calls ``task_status.started()`` once connections are accepted. On cancellation, in-flight
    requests get up to ``shutdown_timeout`` seconds, then the socket file is removed if
    ``bind_control_socket`` created it.
    """
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        site = web.SockSite(runner, sock, backlog=BACKLOG)
        await site.start()
        log.info("control_api_listening", socket=site.name)
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(shutdown_timeout + 1.0):
            await runner.cleanup()
        _remove_if_ours(sock)


def _group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise StartupError(
            f"socket_group: group {group!r} does not exist (create it or unset socket_group)"
        ) from None


def _prepare_directory(directory: Path) -> None:
    if directory.is_dir():
        return
    try:
        directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        os.chmod(directory, DIRECTORY_MODE)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise StartupError(
            f"cannot create the socket directory {directory}: {exc.strerror}"
        ) from exc


def _clear_stale_socket(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"cannot inspect {path}: {exc.strerror}") from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise StartupError(f"{path} exists and is not a socket; refusing to replace it")
    if _answers(path):
        raise StartupError(f"another agentcron daemon is already listening on {path}")
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StartupError(f"cannot remove the stale socket {path}: {exc.strerror}") from exc
    log.info("stale_socket_removed", socket=str(path))


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        return True  # something is there, merely slow to accept: treat it as alive
    except OSError as exc:
        raise StartupError(f"cannot probe the existing socket {path}: {exc.strerror}") from exc
    finally:
        probe.close()
    return True


def _remove_if_ours(sock: socket.socket) -> None:
    if not isinstance(sock, ControlSocket) or sock.bound_path is None:
        return
    path = sock.bound_path
    with contextlib.suppress(OSError):
        info = path.lstat()
        if (info.st_dev, info.st_ino) == sock.bound_inode:
            path.unlink()
            log.info("control_socket_removed", socket=str(path))
