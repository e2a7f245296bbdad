"""Retention and backups with the real daemon: ``[retention]`` in ``--check-config``, the
journal size and last prune in ``agentcron status``, and a backup taken during a fire storm
that restores to a journal the daemon starts on, holding every committed run and firing
nothing twice."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from agentcron.journal.postgres.schema import SCHEMA_VERSION as PG_SCHEMA_VERSION
from agentcron.journal.postgres.store import PostgresJournal
from tests.support.daemon_harness import (
    DaemonProcess,
    create_body,
    list_all_runs,
    write_config,
)
from tests.support.postgres import PostgresCluster
from tests.support.shifted_daemon import offset_before_minute


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentcron", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "check.toml"
    config.write_text(text)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from agentcron.daemon import main; raise SystemExit(main())",
            "--config",
            str(config),
            "--check-config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
    )


BAD_RETENTION = {
    "runs": ("'forever'", "retention.runs: 'forever' is not a duration"),
    "sessions": ("'30s'", "retention.sessions: must be at least 1m"),
    "session_log_max_bytes": ("'10MB'", "retention.session_log_max_bytes: '10MB' is not a size"),
    "runs_max_count": ("10", "retention.runs_max_count: must be at least 1000"),
    "session_logs_max_bytes": ("'1KiB'", "retention.session_logs_max_bytes: must be at least"),
    "interval": ("'2d'", "retention.interval: must be between 1s and 86400s"),
    "colour": ("'blue'", "retention.colour: unknown key"),
}


def test_check_config_names_every_bad_retention_key(tmp_path: Path) -> None:
    text = "[retention]\n" + "".join(
        f"{key} = {value}\n" for key, (value, _) in BAD_RETENTION.items()
    )
    result = check_config(tmp_path, text)
    assert result.returncode == 2, result.stderr
    for _, named in BAD_RETENTION.values():
        assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_shows_retention_with_off_and_sizes(tmp_path: Path) -> None:
    result = check_config(
        tmp_path,
        "[retention]\nruns = '14d'\nsessions = 'off'\nsession_log_max_bytes = '512KiB'\n"
        "runs_max_count = 0\n",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["retention"] == {
        "runs": 14 * 86400.0,
        "sessions": None,
        "session_log_max_bytes": 512 * 1024,
        "runs_max_count": None,
        "session_logs_max_bytes": 1024**3,
        "interval": 60.0,
    }


DEPLOYMENTS = 40
BURST = 60


def post_runs(daemon: DaemonProcess, ids: list[str], answered: list[tuple[float, str]]) -> None:
    """Manual runs, one after another; each 200 answer is kept with when it came back."""
    for deployment_id in ids:
        status, body = daemon.request("POST", f"/v1/deployments/{deployment_id}/run")
        if status == 200:
            answered.append((time.monotonic(), body["id"]))


def journal_runs(path: Path) -> dict[str, tuple[str, int | None]]:
    with sqlite3.connect(path) as conn:
        return {
            row[0]: (row[1], row[2])
            for row in conn.execute(
                "SELECT id, deployment_id, scheduled_at FROM runs WHERE created_at IS NOT NULL"
            )
        }


def seen_sessions(directory: Path) -> list[dict[str, Any]]:
    seen = directory / "seen.jsonl"
    if not seen.exists():
        return []
    return [json.loads(line) for line in seen.read_text().splitlines() if line]


def test_backup_during_a_storm_restores_to_a_journal_that_fires_nothing_twice(
    tmp_path: Path,
) -> None:
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    for directory in (first_dir, second_dir):
        directory.mkdir()
    extra = 'misfire_grace = "5s"'
    config = write_config(first_dir, max_jitter="0s", extra_daemon=extra)
    offset = offset_before_minute(10.0)
    daemon = DaemonProcess(first_dir, config, clock_offset=offset)
    backup = tmp_path / "backups" / "journal-backup.db"
    backup.parent.mkdir()
    try:
        daemon.start()
        deployment_ids = []
        for n in range(DEPLOYMENTS):
            status, body = daemon.request("POST", "/v1/deployments", create_body(f"every-{n}"))
            assert status == 200, body
            deployment_ids.append(body["id"])
        # the status shows the journal's size and the latest prune (one ran at start)
        status_text = cli("status", "--socket", str(daemon.socket_path))
        assert status_text.returncode == 0, status_text.stderr
        assert "journal size: " in status_text.stdout
        assert "last prune:   " in status_text.stdout
        _, health = daemon.request("GET", "/v1/health")
        assert health["retention"]["journal_bytes"] > 0
        assert health["retention"]["last_prune"]["removed"]["runs"] == 0

        # a storm: the minute's scheduled fires, and manual runs from four clients
        answered: list[tuple[float, str]] = []
        clients = [
            threading.Thread(target=post_runs, args=(daemon, deployment_ids[k::4] * 6, answered))
            for k in range(4)
        ]
        until_minute = 60 - ((time.time() + offset) % 60)
        time.sleep(max(0.0, until_minute - 1.0))
        for client in clients:
            client.start()
        time.sleep(1.5)  # the minute's fires are under way, the clients mid-burst
        began = time.monotonic()
        result = cli("journal", "backup", "--config", str(config), str(backup))
        assert result.returncode == 0, result.stderr
        assert "integrity ok" in result.stdout
        for client in clients:
            client.join(timeout=120)
        committed_before_backup = {run_id for at, run_id in answered if at < began}
        assert committed_before_backup  # the backup did run during the storm:
        assert any(at > began for at, _ in answered)  # runs committed before and after it
        daemon.stop()
    finally:
        daemon.close()
    first_runs = journal_runs(first_dir / "state" / "journal.db")

    # the backup is a valid journal holding every run committed before it began
    check = cli("journal", "check", "--journal", str(backup), "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["integrity"] == ["ok"]
    backed_up = journal_runs(backup)
    assert committed_before_backup <= set(backed_up)
    assert set(backed_up) <= set(first_runs)
    assert any(scheduled is not None for _, scheduled in backed_up.values())

    # restore, as the README says: stopped daemon, file in place (0600), start after
    # misfire_grace has passed since the old daemon stopped
    time.sleep(5.5)
    restored_state = second_dir / "state"
    restored_state.mkdir(mode=0o700)
    shutil.copyfile(backup, restored_state / "journal.db")
    os.chmod(restored_state / "journal.db", 0o600)
    second_config = write_config(second_dir, max_jitter="0s", extra_daemon=extra)
    restored = DaemonProcess(second_dir, second_config, clock_offset=offset)
    try:
        restored.start()
        time.sleep(2.0)
        runs = {run["id"]: run for run in list_all_runs(restored)}
        _, health = restored.request("GET", "/v1/health")
        assert health["status"] == "ok", health
        restored.stop()
    finally:
        restored.close()
    assert set(backed_up) <= set(runs)
    # nothing fired again: no session started, no scheduled run the first daemon had
    assert seen_sessions(second_dir) == []
    new_runs = set(runs) - set(backed_up)
    assert all(runs[run_id]["error"] is not None for run_id in new_runs), new_runs
    occurrences = [(d, s) for d, s in journal_runs(restored_state / "journal.db").values() if s]
    assert len(occurrences) == len(set(occurrences))


def test_backup_of_a_postgresql_journal_points_to_pg_dump(tmp_path: Path) -> None:
    config = tmp_path / "pg.toml"
    config.write_text('[journal]\nurl = "postgresql://agentcron@127.0.0.1:1/agentcron"\n')
    result = cli("journal", "backup", "--config", str(config), str(tmp_path / "x.db"))
    assert result.returncode == 1
    assert "pg_dump" in result.stderr
    assert "pg_restore" in result.stderr
    assert not (tmp_path / "x.db").exists()


async def test_journal_check_reports_a_postgresql_journals_schema_version(
    tmp_path: Path, postgres_cluster: PostgresCluster, postgres_database: str
) -> None:
    url = postgres_cluster.url(postgres_database)
    async with PostgresJournal.open(url):
        pass
    config = tmp_path / "pg.toml"
    config.write_text(f'[journal]\nurl = "{url}"\n')
    result = await anyio.to_thread.run_sync(
        lambda: cli("journal", "check", "--config", str(config), "--json")
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "postgresql"
    assert report["schema_version"] == report["supported_schema_version"] == PG_SCHEMA_VERSION
    assert report["ok"] is True
