"""sd_notify never blocks the daemon, even when nobody reads the notify socket."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from agentcron.systemd import Notifier


def test_an_unread_notify_socket_never_blocks_a_status(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))  # bound, never read: its queue fills after a few messages
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        started = time.monotonic()
        try:
            for index in range(200):  # far more than max_dgram_qlen (10 by default)
                notifier.status(f"status {index}")
        finally:
            notifier.close()
        assert time.monotonic() - started < 5.0  # a blocking send would hang here for good
        listener.settimeout(1.0)
        assert listener.recv(1024) == b"STATUS=status 0"  # the first ones were delivered
