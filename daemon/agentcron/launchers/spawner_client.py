"""The daemon's side of the session spawner (the helper process in ``launchers.spawner``).

``SpawnerClient.spawn`` sends one request and waits for the helper's answer. The helper's
socket has a standing reader callback on the event loop, which dispatches answers and exit
reports as they arrive, straight to the ``ChildListener`` each spawn names (no task per child).
The helper is started on the first spawn. If it dies (someone killed it), requests waiting for
an answer fail with ``SpawnError``, the exits of its children are reported as unknown
(``status`` None), and the next spawn starts a new helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskGroup

from agentcron.launchers import spawner
from agentcron.launchers.spawner import FrameReader, describe_os_error, encode_frame

log = structlog.get_logger(__name__)

_READ_SIZE = 1 << 16
_EXIT_WAIT = 5.0  # seconds a helper whose socket closed gets to exit before it is killed


class SpawnError(Exception):
    """The helper could not start a child; ``stage`` is ``log`` or ``exec``."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


class ChildListener(Protocol):
    """Told, from the event loop, what becomes of one spawned child (in this order)."""

    def child_started(self, pid: int) -> None:
        """The child runs as ``pid`` (called before ``spawn`` returns)."""
        ...

    def child_exited(self, status: int | None, log_bytes: int | None) -> None:
        """It exited with ``status`` (negative: killed by that signal) and its log holds
        ``log_bytes``; ``None``: unknown, the helper died first."""
        ...


class _Pending:
    __slots__ = ("done", "error", "listener", "pid")

    def __init__(self, listener: ChildListener) -> None:
        self.done = anyio.Event()
        self.listener = listener
        self.pid = 0
        self.error: SpawnError | None = None


class _Helper:
    """One helper process, its socket and what is waiting on it."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.reader = FrameReader()
        self.pending: dict[int, _Pending] = {}
        self.children: dict[int, ChildListener] = {}
        self.outgoing = bytearray()
        self.closed = anyio.Event()  # its socket reached the end (or failed)
        self.finished = anyio.Event()

    def readable(self) -> None:
        """The loop's reader callback: take what arrived and dispatch it."""
        try:
            data = self.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # stop at once: a socket at its end stays readable
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.closed.set()
            return
        self.dispatch(data)

    def dispatch(self, data: bytes) -> None:
        for message, _payload in self.reader.feed(data):
            if "exit" in message:
                listener = self.children.pop(message["exit"], None)
                if listener is not None:
                    _tell(listener.child_exited, message["status"], message.get("log_bytes"))
                continue
            pending = self.pending.pop(message["id"], None)
            if pending is None:
                continue
            if "pid" in message:
                pending.pid = message["pid"]
                self.children[pending.pid] = pending.listener
                _tell(pending.listener.child_started, pending.pid)
            else:
                pending.error = SpawnError(message["stage"], message["reason"])
            pending.done.set()

    def lost(self) -> int:
        """Fail what waits on this helper; the number of children whose exit is now unknown."""
        for pending in self.pending.values():
            pending.error = SpawnError("exec", "the session spawner exited")
            pending.done.set()
        self.pending.clear()
        orphans = list(self.children.values())
        self.children.clear()
        for listener in orphans:
            _tell(listener.child_exited, None, None)
        self.sock.close()
        return len(orphans)


def _tell(callback: Callable[..., None], *values: object) -> None:
    """Call a listener; its failure is logged, so the frames after it are still dispatched."""
    try:
        callback(*values)
    except Exception:
        log.exception("spawn_listener_failed")


class SpawnerClient:
    """Starts children through the helper process; runs its reader tasks in ``task_group``."""

    def __init__(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        self._helper: _Helper | None = None
        self._ids = itertools.count(1)
        self._closing = False

    async def spawn(
        self,
        *,
        argv: Sequence[str],
        cwd: str | None,
        env: Mapping[str, str],
        log_path: Path,
        stdin: bytes,
        listener: ChildListener,
        log_cap: int | None = spawner.DEFAULT_LOG_CAP,
    ) -> int:
        """Start ``argv`` and return its pid; raise ``SpawnError`` when its log or the program
        cannot be started. ``listener`` hears of its start and, later, of its exit. The log
        never grows past ``log_cap`` bytes (``None``: no cap; see ``launchers.spawner``)."""
        if self._closing:
            raise SpawnError("exec", "the session spawner is stopping")
        helper = self._helper or self._start()
        request_id = next(self._ids)
        pending = _Pending(listener)
        helper.pending[request_id] = pending
        request = {"id": request_id, "argv": list(argv), "cwd": cwd, "env": dict(env)}
        request["log"] = str(log_path)
        request["cap"] = log_cap
        self._send(helper, encode_frame(request, stdin))
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.pid

    async def aclose(self) -> None:
        """Close the helper's socket and wait for it to exit (killed after a grace)."""
        self._closing = True
        helper = self._helper
        if helper is None:
            return
        with contextlib.suppress(OSError):
            helper.sock.shutdown(socket.SHUT_WR)
        with anyio.CancelScope(shield=True):
            await helper.finished.wait()

    def helper_pid(self) -> int | None:
        """The helper's pid while one runs (for diagnostics and tests)."""
        return None if self._helper is None else self._helper.process.pid

    def _start(self) -> _Helper:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", spawner.__file__],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise SpawnError(
                "exec", f"cannot start the session spawner: {describe_os_error(exc)}"
            ) from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        helper = _Helper(process, ours)
        self._helper = helper
        self._task_group.start_soon(self._read, helper)
        log.debug("session_spawner_started", pid=process.pid)
        return helper

    def _send(self, helper: _Helper, frame: bytes) -> None:
        if helper.outgoing:  # a flush is under way: keep the order
            helper.outgoing += frame
            return
        try:
            sent = helper.sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:  # the helper is gone: its reader fails what waits
            return
        if sent < len(frame):
            helper.outgoing += frame[sent:]
            self._task_group.start_soon(self._flush, helper)

    async def _flush(self, helper: _Helper) -> None:
        try:
            while helper.outgoing:
                await anyio.wait_writable(helper.sock)
                try:
                    sent = helper.sock.send(helper.outgoing)
                except BlockingIOError:
                    continue
                del helper.outgoing[:sent]
        except OSError:  # the helper is gone (or its socket was closed)
            helper.outgoing.clear()

    async def _read(self, helper: _Helper) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(helper.sock.fileno(), helper.readable)
        try:
            await helper.closed.wait()
        finally:
            loop.remove_reader(helper.sock.fileno())  # when cancelled before the end
            if self._helper is helper:
                self._helper = None
            orphans = helper.lost()
            with anyio.CancelScope(shield=True):
                status = await anyio.to_thread.run_sync(
                    functools.partial(_wait_or_kill, helper.process, _EXIT_WAIT)
                )
            if not self._closing:
                log.error("session_spawner_exited", status=status, sessions_lost=orphans)
            helper.finished.set()


def _wait_or_kill(process: subprocess.Popen[bytes], grace: float) -> int:
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
