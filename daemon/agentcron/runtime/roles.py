"""This daemon's role and id, for ``/v1/health`` and the log (no database driver here).

``Standalone`` is the SQLite journal's daemon, alone on its journal and always the one that
fires; ``agentcron.runtime.leadership.Leadership`` is the lease loop of a daemon on a
PostgreSQL journal, leader or follower.
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    STANDALONE = "standalone"


def node_id(node_name: str | None) -> str:
    """This daemon's id among daemons sharing a journal: ``<node_name or host name>:<pid>``."""
    return f"{node_name or socket.gethostname()}:{os.getpid()}"


class Standalone:
    """The SQLite journal's daemon: alone on its journal, always the one that fires."""

    role = Role.STANDALONE

    def __init__(self, node: str) -> None:
        self.node_id = node

    def status(self) -> dict[str, Any]:
        """``/v1/health``'s ``leadership`` object."""
        return {
            "role": self.role.value,
            "node_id": self.node_id,
            "leader_id": self.node_id,
            "epoch": None,
            "lease_expires_at": None,
        }
