"""Several real ``agentcrond`` processes on one PostgreSQL journal, for failover tests and the
failover benchmark.

Every daemon runs on the same fast wall clock (``tests.support.fast_daemon``: at speed 60 a
``* * * * *`` schedule fires every real second), uses the ``managed_agents`` launcher against
one loopback stand-in of the hosted API (``tests.support.hosted_api``, which counts the
sessions it creates) and has its own state directory and control socket.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.daemon_harness import REPO_ROOT, DaemonProcess

SPEED = 60.0
"""How much faster than the machine's the daemons' wall clock runs."""


class FastDaemon(DaemonProcess):
    """A ``DaemonProcess`` on the shared fast clock."""

    def __init__(
        self, directory: Path, config: Path, *, origin: float, speed: float, api_key: str
    ) -> None:
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        super().__init__(
            directory, config, env={"ANTHROPIC_API_KEY": api_key, "PYTHONPATH": pythonpath}
        )
        self.origin = origin
        self.speed = speed

    def daemon_command(self) -> list[str]:
        import sys

        return [
            sys.executable,
            "-m",
            "tests.support.fast_daemon",
            repr(self.origin),
            repr(self.speed),
            "--config",
            str(self.config),
        ]

    def health(self) -> dict[str, Any]:
        status, body = self.request("GET", "/v1/health")
        assert status == 200, body
        return dict(body)

    def leadership(self) -> dict[str, Any] | None:
        """``/v1/health``'s leadership object, or None when it cannot answer (stopped, 503)."""
        if self.process is None or self.process.poll() is not None:
            return None
        try:
            status, body = self.request("GET", "/v1/health")
        except OSError:
            return None
        if status != 200:
            return None
        return dict(body["leadership"])


def failover_config(
    directory: Path,
    *,
    url: str,
    base_url: str,
    node_name: str,
    lease_ttl: str = "2s",
    misfire_grace: str = "1h",
    max_jitter: str = "0s",
) -> Path:
    """A managed_agents config on the PostgreSQL journal ``url``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "agentcron.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{directory / "state"}"
socket = "{directory / "run" / "control.sock"}"
log_format = "json"
node_name = "{node_name}"
misfire_grace = "{misfire_grace}"
max_jitter = "{max_jitter}"

[launcher]
type = "managed_agents"
max_concurrent_sessions = 1024

[launcher.managed_agents]
base_url = "{base_url}"
timeout = "5s"

[journal]
url = "{url}"
lease_ttl = "{lease_ttl}"
"""
    )
    return config


def start_daemons(
    base: Path,
    count: int,
    *,
    url: str,
    base_url: str,
    api_key: str,
    origin: float,
    speed: float = SPEED,
    lease_ttl: str = "2s",
    misfire_grace: str = "1h",
) -> list[FastDaemon]:
    """``count`` daemons on one journal (started one after the other, READY each)."""
    daemons = []
    for index in range(count):
        directory = base / f"node{index}"
        config = failover_config(
            directory,
            url=url,
            base_url=base_url,
            node_name=f"node{index}",
            lease_ttl=lease_ttl,
            misfire_grace=misfire_grace,
        )
        daemon = FastDaemon(directory, config, origin=origin, speed=speed, api_key=api_key)
        daemon.start()
        daemons.append(daemon)
    return daemons


def leaders(daemons: Sequence[FastDaemon]) -> list[tuple[FastDaemon, dict[str, Any]]]:
    """The daemons that say they lead right now, with their leadership objects."""
    found = []
    for daemon in daemons:
        view = daemon.leadership()
        if view is not None and view["role"] == "leader":
            found.append((daemon, view))
    return found


def wait_for_leader(
    daemons: Sequence[FastDaemon], *, timeout: float = 30.0, newer_than: int = 0
) -> tuple[FastDaemon, dict[str, Any]]:
    """The one leader (at an epoch above ``newer_than``), once there is exactly one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [(d, v) for d, v in leaders(daemons) if v["epoch"] > newer_than]
        if len(found) == 1:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no single leader after epoch {newer_than} within {timeout}s")


@dataclass(frozen=True, slots=True)
class JournalFacts:
    """What the database itself says after a run of the daemons."""

    duplicates: int
    open_claims: int
    runs: int
    runs_with_session: int
    by_epoch: dict[int | None, int]
    gaps: int
    """Occurrences of a ``* * * * *`` deployment between its first and its last run that
    have no run (a lost occurrence)."""
    deployments: int


async def journal_facts(url: str) -> JournalFacts:
    conn = await asyncpg.connect(url)
    try:
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM runs WHERE scheduled_at IS NOT NULL "
            "GROUP BY deployment_id, scheduled_at HAVING count(*) > 1) AS d"
        )
        open_claims = await conn.fetchval("SELECT count(*) FROM runs WHERE created_at IS NULL")
        runs = await conn.fetchval("SELECT count(*) FROM runs")
        with_session = await conn.fetchval("SELECT count(*) FROM runs WHERE session_id IS NOT NULL")
        rows = await conn.fetch(
            "SELECT epoch, count(*) FROM runs WHERE trigger_type = 'schedule' GROUP BY epoch"
        )
        gaps = await conn.fetchval(
            "SELECT coalesce(sum(expected - got), 0) FROM ("
            " SELECT deployment_id, count(*) AS got,"
            " (extract(epoch FROM max(scheduled_at) - min(scheduled_at)) / 60)::bigint + 1"
            " AS expected FROM runs WHERE trigger_type = 'schedule' GROUP BY deployment_id) AS g"
        )
        deployments = await conn.fetchval("SELECT count(*) FROM deployments")
    finally:
        await conn.close()
    return JournalFacts(
        duplicates=int(duplicates),
        open_claims=int(open_claims),
        runs=int(runs),
        runs_with_session=int(with_session),
        by_epoch={row[0]: int(row[1]) for row in rows},
        gaps=int(gaps),
        deployments=int(deployments),
    )


async def claims_of_epoch(url: str, epoch: int) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM runs WHERE epoch = $1", epoch))
    finally:
        await conn.close()
