"""The systemd edges: ``sd_notify`` datagrams and socket activation (``LISTEN_FDS``).

Both are plain protocols over file descriptors and environment variables, so no library is
needed: ``NOTIFY_SOCKET`` names a datagram socket (``@`` = abstract namespace) that receives
``KEY=VALUE`` lines; ``LISTEN_PID``/``LISTEN_FDS`` hand over listening sockets from fd 3 on.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends ``sd_notify`` messages; does nothing when not started by systemd."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        self._socket: socket.socket | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            # Non-blocking: a notify socket nobody reads must never stall the event loop.
            kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            self._socket = socket.socket(socket.AF_UNIX, kind)
        self.watchdog_interval = _watchdog_interval(environ)
        self._last_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, **fields: str) -> None:
        """Send ``KEY=VALUE`` lines, e.g. ``notify(READY="1", STATUS="...")``."""
        if self._socket is None or self._address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            # MSG_DONTWAIT: a datagram queue holds few messages (max_dgram_qlen, 10 by default);
            # when nobody reads them, a blocking send would stop the whole event loop.
            self._socket.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)
        except OSError:
            # systemd gone or the socket full: the daemon keeps running; systemd will notice.
            return

    def ready(self, status: str) -> None:
        self.notify(READY="1", STATUS=status)

    def status(self, status: str) -> None:
        self.notify(STATUS=status)

    def stopping(self) -> None:
        self.notify(STOPPING="1", STATUS="stopping")

    def watchdog(self) -> None:
        """``WATCHDOG=1`` from the scheduler loop, which wakes at least every half interval.

        Rate-limited to one ping per quarter interval, so a loop that wakes on every change
        does not flood systemd, while pings stay at most half an interval apart.
        """
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog >= self.watchdog_interval / 4:
            self._last_watchdog = now
            self.notify(WATCHDOG="1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds of ``WATCHDOG_USEC`` when it is meant for this process, else ``None``."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


def listen_fds(environ: MutableMapping[str, str]) -> list[socket.socket]:
    """Sockets passed by systemd socket activation (and unset the variables, as sd_listen_fds)."""
    pid = environ.pop("LISTEN_PID", None)
    count = environ.pop("LISTEN_FDS", None)
    environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or pid != str(os.getpid()):
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets
