"""The session spawner: a small helper process that starts the ``command`` launcher's children.

Starting a process costs its parent a few hundred microseconds of Python and kernel work. Done
in the daemon, a storm of local sessions made the event loop wait for the interpreter lock
behind the threads that were forking, and fires started late. The daemon therefore hands every
spawn to this helper: one process, standard library only, started lazily by the launcher as
``python -I -S spawner.py`` with one end of a socket pair as its stdin. It runs on its own
core, and the daemon's share of a session is one message out and two messages in.

The helper is the children's parent: it starts each one (``os.posix_spawn``, a vfork-style
start that costs a fraction of ``subprocess.Popen``: its own session, the given argv, cwd,
environment, stdout and stderr one pipe, the request written to stdin and stdin closed), reaps
it through a pidfd and reports its exit status and its log's size.

The helper relays every child's output pipe into its session log in this same loop (no thread
per child): at ``cap`` bytes a marker line is written and the rest is read and discarded, so a
log never grows past its cap and a chatty child never blocks on a full pipe. Before a child's
exit is reported, what its pipe holds is read, so the log is complete when the daemon hears of
the exit (a grandchild that keeps the pipe open is relayed until it closes it). The helper is single
threaded, so it changes its own working directory to the child's before each start (the
child inherits it); a bare program name is looked up on the child's ``PATH``, as ``execvpe``
would. Every descriptor of the helper is close-on-exec; the child gets only stdin, stdout and
stderr, and ``SIGPIPE``/``SIGXFSZ`` back at their defaults (Python ignores both).

It never signals a child; the daemon stops sessions with ``killpg`` itself. When the daemon
closes its end of the socket (also when the daemon is killed) it exits as soon as no child of
its own runs: children left running by a killed daemon keep their capped log until they exit.
It raises its own soft descriptor limit to the hard one (each running child holds a pidfd, its
output pipe and its log). SIGTERM, SIGINT and SIGHUP are caught and
ignored here (a handler, not ``SIG_IGN``, so children start with the default dispositions).

The protocol, both directions, is a stream of frames: a header of two big-endian 32-bit lengths,
a JSON object of the first length and a raw payload of the second.

- daemon -> helper: ``{"id": n, "argv": [...], "cwd": str|null, "env": {...}, "log": path,
  "cap": bytes|null}`` with the request bytes (the child's stdin) as the payload (``cap``
  absent: ``DEFAULT_LOG_CAP``; null: no cap);
- helper -> daemon: ``{"id": n, "pid": p}`` once the child runs, or
  ``{"id": n, "stage": "log"|"exec", "reason": str}`` when its log could not be created or
  the program could not be started; later ``{"exit": p, "status": s, "log_bytes": n}`` (a
  negative status: killed by that signal). A child's exit is always reported after its start.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
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
_RELAY_READS = 16  # reads of one pipe per wake-up, so that one chatty child cannot starve others
DEFAULT_LOG_CAP = 10 * 1024 * 1024


def cap_marker(cap: int) -> bytes:
    """The line that ends a session log which reached its cap of ``cap`` bytes."""
    line = f"[agentcron: session log reached its cap of {cap} bytes; the rest is discarded]"
    return f"\n{line}\n".encode()


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
    __slots__ = (
        "cap",
        "exited",
        "log",
        "marker",
        "out",
        "pid",
        "pidfd",
        "stdin",
        "unsent",
        "written",
    )

    def __init__(
        self, pid: int, pidfd: int | None, stdin: int, *, out: int, log: int, cap: int | None
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.stdin = stdin  # the write end of the child's stdin pipe; -1 once closed
        self.unsent = memoryview(b"")
        self.out = out  # the read end of its output pipe; -1 once closed
        self.log = log  # its session log (append); -1 once closed
        self.cap = cap  # None: no cap
        self.marker = b"" if cap is None else cap_marker(cap)
        self.written = 0  # bytes in the log, the marker included
        self.exited = False

    def close_stdin(self) -> None:
        if self.stdin >= 0:
            with contextlib.suppress(OSError):
                os.close(self.stdin)
            self.stdin = -1

    def keep(self, data: bytes) -> None:
        """Append ``data`` to the log, up to the cap (then the marker, once)."""
        if self.cap is None:
            self.written += len(data)
            with contextlib.suppress(OSError):
                os.write(self.log, data)
            return
        room = self.cap - len(self.marker) - self.written
        if room < 0:  # capped already: discard
            return
        chunk = data if len(data) <= room else data[:room] + self.marker
        if len(data) > room:
            self.written = self.cap  # nothing more is written, even if this write falls short
        else:
            self.written += len(chunk)
        with contextlib.suppress(OSError):  # a full disk loses output, never the child
            os.write(self.log, chunk)

    def close_output(self) -> None:
        for fd in (self.out, self.log):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.out = self.log = -1


def _program(argv0: str, env: dict[str, str]) -> str:
    """The file to execute for ``argv0``: itself if it names a path, else found on ``PATH``."""
    if "/" in argv0:
        return argv0
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", argv0)
    return found


class Spawner:
    """The helper's loop: spawn on request, feed stdin, relay output, report exits."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._control_open = True
        self._selector = selectors.DefaultSelector()
        self._reader = FrameReader()
        self._outgoing: list[bytes] = []
        self._polled: list[_Child] = []  # children without a pidfd
        self._running = 0  # children started and not reaped yet
        self._home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cwd: str | None = None  # where the helper is now (None: its own directory)

    def serve(self) -> None:
        """Run until the daemon closes its end of the socket and no child of ours runs."""
        self._selector.register(self._control, selectors.EVENT_READ, None)
        while self._control_open or self._running:
            timeout = _POLL_INTERVAL if self._polled else None
            for key, _events in self._selector.select(timeout):
                if key.data is None:
                    if not self._read_requests():
                        self._control_open = False
                        self._selector.unregister(self._control)
                        self._outgoing.clear()
                    continue
                kind, child = key.data
                if kind == "out":
                    self._relay(child)
                elif kind == "exit":
                    self._reap(child, os.waitpid(child.pid, 0)[1])
                else:
                    self._feed(child)
            if self._polled:
                for child in list(self._polled):
                    pid, status = os.waitpid(child.pid, os.WNOHANG)
                    if pid:
                        self._polled.remove(child)
                        self._reap(child, status)
            self._flush()

    def _flush(self) -> None:
        if self._outgoing and self._control_open:
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
        stdin_read = stdin_write = out_read = out_write = -1
        try:  # out of descriptors is a failed start, never the helper's end
            stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
            out_read, out_write = os.pipe2(os.O_CLOEXEC)
            pid = self._start(
                request["argv"], request["cwd"], request["env"], stdin_read, out_write
            )
        except (OSError, ValueError, TypeError) as exc:
            for fd in (stdin_write, out_read, log_fd):
                if fd >= 0:
                    os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(log_path)
            reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            return {"id": request_id, "stage": "exec", "reason": reason}
        finally:
            for fd in (stdin_read, out_write):
                if fd >= 0:
                    os.close(fd)
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
            pidfd = None
        cap = request.get("cap", DEFAULT_LOG_CAP)
        cap = None if cap is None else int(cap)
        child = _Child(pid, pidfd, stdin_write, out=out_read, log=log_fd, cap=cap)
        self._running += 1
        if pidfd is None:
            self._polled.append(child)
        else:
            self._selector.register(pidfd, selectors.EVENT_READ, ("exit", child))
        os.set_blocking(out_read, False)
        self._selector.register(out_read, selectors.EVENT_READ, ("out", child))
        os.set_blocking(stdin_write, False)
        child.unsent = memoryview(stdin)
        self._feed(child, first=True)
        return {"id": request_id, "pid": pid}

    def _start(
        self, argv: list[str], cwd: str | None, env: dict[str, str], stdin: int, output: int
    ) -> int:
        """Start the child in ``cwd`` with the pipes as stdin and as stdout/stderr."""
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
                self._selector.register(child.stdin, selectors.EVENT_WRITE, ("stdin", child))
            return
        except OSError:  # EPIPE: the child exited or closed its stdin
            child.unsent = memoryview(b"")
        if not first:
            self._selector.unregister(child.stdin)
        child.close_stdin()

    def _relay(self, child: _Child) -> None:
        """Move what the output pipe holds now into the log (capped); at its end, close it."""
        if child.out < 0:  # closed by the reap earlier in the same batch of events
            return
        for _ in range(_RELAY_READS):
            try:
                data = os.read(child.out, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # every writer closed it: the child and anything it left behind
                self._selector.unregister(child.out)
                child.close_output()
                return
            child.keep(data)
            if len(data) < _READ_SIZE:
                return

    def _reap(self, child: _Child, status: int) -> None:
        if child.pidfd is not None:
            self._selector.unregister(child.pidfd)
            os.close(child.pidfd)
        if child.unsent and child.stdin >= 0:  # exited before reading all of its request
            self._selector.unregister(child.stdin)
            child.unsent = memoryview(b"")
        child.close_stdin()
        child.exited = True
        self._running -= 1
        while child.out >= 0:  # the log is complete before the exit is reported
            written = child.written
            self._relay(child)
            if child.written == written:
                break
        code = os.waitstatus_to_exitcode(status)
        self._outgoing.append(
            encode_frame({"exit": child.pid, "status": code, "log_bytes": child.written})
        )


def _raise_descriptor_limit() -> None:
    """Every running child holds three of our descriptors: allow as many as the hard limit."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = max(soft, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _ignore(signum: int, frame: object) -> None:
    """Stopping is the daemon's business; the helper leaves when its socket closes."""


def main() -> int:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _ignore)
    _raise_descriptor_limit()
    control = socket.socket(fileno=sys.stdin.fileno())
    with contextlib.suppress(BrokenPipeError):  # the daemon is gone
        Spawner(control).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
