"""The session spawner: a small helper process that starts the ``command`` launcher's children.

Starting a process costs its parent a few hundred microseconds of Python and kernel work. Done
in the daemon, a storm of local sessions made the event loop wait for the interpreter lock
behind the threads that were forking, and fires started late. The daemon therefore hands every
spawn to this helper: one process, standard library only, started lazily by the launcher as
``python -I -S spawner.py`` with one end of a socket pair as its stdin. It runs on its own
core, and the daemon's share of a session is one message out and two messages in.

The helper is the children's parent: it starts each one (``os.posix_spawn``, a vfork-style
start that costs a fraction of ``subprocess.Popen``: its own session, the given argv, cwd,
environment, stdout and stderr appended to the session log, the request written to stdin and
stdin closed), reaps it through a pidfd and reports its exit status. The helper is single
threaded, so it changes its own working directory to the child's before each start (the
child inherits it); a bare program name is looked up on the child's ``PATH``, as ``execvpe``
would. Every descriptor of the helper is close-on-exec; the child gets only stdin, stdout and
stderr, and ``SIGPIPE``/``SIGXFSZ`` back at their defaults (Python ignores both).

It never signals a child; the daemon stops sessions with ``killpg`` itself. It exits when the
daemon closes its end of the socket (also when the daemon is killed), leaving children still
running alone, as a killed daemon always has. SIGTERM, SIGINT and SIGHUP are caught and
ignored here (a handler, not ``SIG_IGN``, so children start with the default dispositions).

The protocol, both directions, is a stream of frames: a header of two big-endian 32-bit lengths,
a JSON object of the first length and a raw payload of the second.

- daemon -> helper: ``{"id": n, "argv": [...], "cwd": str|null, "env": {...}, "log": path}``
  with the request bytes (the child's stdin) as the payload;
- helper -> daemon: ``{"id": n, "pid": p}`` once the child runs, or
  ``{"id": n, "stage": "log"|"exec", "reason": str}`` when its log could not be created or
  the program could not be started; later ``{"exit": p, "status": s}`` (a negative status:
  killed by that signal). A child's exit is always reported after its start.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import sys
from typing import Any

HEADER = struct.Struct(">II")
_READ_SIZE = 1 << 16
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
_POLL_INTERVAL = 0.05  # how often children without a pidfd are polled
_UNKNOWN = "\0"  # no directory's name: the helper's directory after a failed change
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name)
)


def encode_frame(message: dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame: header, JSON message, payload."""
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(body), len(payload)) + body + payload


class FrameReader:
    """Splits a byte stream into ``(message, payload)`` frames as the bytes arrive."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        """Append ``data``; every frame now complete, in order."""
        buffer = self._buffer
        buffer += data
        frames: list[tuple[dict[str, Any], bytes]] = []
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            body_size, payload_size = HEADER.unpack_from(buffer, offset)
            start = offset + HEADER.size
            end = start + body_size + payload_size
            if len(buffer) < end:
                break
            message = json.loads(buffer[start : start + body_size])
            frames.append((message, bytes(buffer[start + body_size : end])))
            offset = end
        del buffer[:offset]
        return frames


def describe_os_error(exc: OSError) -> str:
    """``strerror: filename`` — what a spawn failure message says about the OS error."""
    reason = exc.strerror or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


class _Child:
    __slots__ = ("pid", "pidfd", "stdin", "unsent")

    def __init__(self, pid: int, pidfd: int | None, stdin: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.stdin = stdin  # the write end of the child's stdin pipe; -1 once closed
        self.unsent = memoryview(b"")

    def close_stdin(self) -> None:
        if self.stdin >= 0:
            with contextlib.suppress(OSError):
                os.close(self.stdin)
            self.stdin = -1


def _program(argv0: str, env: dict[str, str]) -> str:
    """The file to execute for ``argv0``: itself if it names a path, else found on ``PATH``."""
    if "/" in argv0:
        return argv0
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", argv0)
    return found


class Spawner:
    """The helper's loop: spawn on request, feed stdin, report exits."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._selector = selectors.DefaultSelector()
        self._reader = FrameReader()
        self._outgoing: list[bytes] = []
        self._polled: list[_Child] = []  # children without a pidfd
        self._home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cwd: str | None = None  # where the helper is now (None: its own directory)

    def serve(self) -> None:
        """Run until the daemon closes its end of the socket."""
        self._selector.register(self._control, selectors.EVENT_READ, None)
        while True:
            timeout = _POLL_INTERVAL if self._polled else None
            for key, events in self._selector.select(timeout):
                if key.data is None:
                    if not self._read_requests():
                        return
                elif events & selectors.EVENT_READ:
                    self._reap(key.data, os.waitpid(key.data.pid, 0)[1])
                else:
                    self._feed(key.data)
            if self._polled:
                for child in list(self._polled):
                    pid, status = os.waitpid(child.pid, os.WNOHANG)
                    if pid:
                        self._polled.remove(child)
                        self._reap(child, status)
            self._flush()

    def _flush(self) -> None:
        if self._outgoing:
            self._control.sendall(b"".join(self._outgoing))
            self._outgoing.clear()

    def _read_requests(self) -> bool:
        try:
            data = self._control.recv(_READ_SIZE)
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        for message, payload in self._reader.feed(data):
            self._outgoing.append(encode_frame(self._spawn(message, payload)))
            self._flush()  # the daemon's fire waits for this answer; exits can wait
        return True

    def _spawn(self, request: dict[str, Any], stdin: bytes) -> dict[str, Any]:
        request_id = request["id"]
        log_path = request["log"]
        try:
            log_fd = os.open(log_path, _LOG_FLAGS, 0o600)
        except OSError as exc:
            return {"id": request_id, "stage": "log", "reason": exc.strerror or type(exc).__name__}
        stdin_read = stdin_write = -1
        try:  # out of descriptors is a failed start, never the helper's end
            stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
            pid = self._start(request["argv"], request["cwd"], request["env"], stdin_read, log_fd)
        except (OSError, ValueError, TypeError) as exc:
            if stdin_write >= 0:
                os.close(stdin_write)
            with contextlib.suppress(OSError):
                os.unlink(log_path)
            reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            return {"id": request_id, "stage": "exec", "reason": reason}
        finally:
            if stdin_read >= 0:
                os.close(stdin_read)
            os.close(log_fd)
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
            pidfd = None
        child = _Child(pid, pidfd, stdin_write)
        if pidfd is None:
            self._polled.append(child)
        else:
            self._selector.register(pidfd, selectors.EVENT_READ, child)
        os.set_blocking(stdin_write, False)
        child.unsent = memoryview(stdin)
        self._feed(child, first=True)
        return {"id": request_id, "pid": pid}

    def _start(
        self, argv: list[str], cwd: str | None, env: dict[str, str], stdin: int, output: int
    ) -> int:
        """Start the child in ``cwd`` with the pipe as stdin and the log as stdout/stderr."""
        if cwd != self._cwd:
            self._cwd = _UNKNOWN  # until the change succeeds
            if cwd is None:
                os.fchdir(self._home)
            else:
                os.chdir(cwd)
            self._cwd = cwd
        return os.posix_spawn(
            _program(argv[0], env),
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin, 0),
                (os.POSIX_SPAWN_DUP2, output, 1),
                (os.POSIX_SPAWN_DUP2, output, 2),
            ],
            setsid=True,
            setsigdef=_DEFAULT_SIGNALS,
        )

    def _feed(self, child: _Child, *, first: bool = False) -> None:
        """Write what the pipe takes now; the rest when it is writable (a selector event)."""
        try:
            while child.unsent:
                child.unsent = child.unsent[os.write(child.stdin, child.unsent) :]
        except BlockingIOError:
            if first:
                self._selector.register(child.stdin, selectors.EVENT_WRITE, child)
            return
        except OSError:  # EPIPE: the child exited or closed its stdin
            child.unsent = memoryview(b"")
        if not first:
            self._selector.unregister(child.stdin)
        child.close_stdin()

    def _reap(self, child: _Child, status: int) -> None:
        if child.pidfd is not None:
            self._selector.unregister(child.pidfd)
            os.close(child.pidfd)
        if child.unsent and child.stdin >= 0:  # exited before reading all of its request
            self._selector.unregister(child.stdin)
            child.unsent = memoryview(b"")
        child.close_stdin()
        code = os.waitstatus_to_exitcode(status)
        self._outgoing.append(encode_frame({"exit": child.pid, "status": code}))


def _ignore(signum: int, frame: object) -> None:
    """Stopping is the daemon's business; the helper leaves when its socket closes."""


def main() -> int:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _ignore)
    control = socket.socket(fileno=sys.stdin.fileno())
    with contextlib.suppress(BrokenPipeError):  # the daemon is gone
        Spawner(control).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
