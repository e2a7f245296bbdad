"""The webhook outbox in the SQLite journal: its schema step and its size on disk.

What the outbox does on every backend (events commit with their cause, deliveries settle,
retries, pages) is in the contract suite, ``tests/journal/test_contract.py``."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from agentcron import ids
from agentcron.journal import OutboxEvent, SqliteJournal
from agentcron.journal.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def event(event_type: str = "deployment_run.failed", *endpoints: str) -> OutboxEvent:
    return OutboxEvent(
        id=ids.new_id(ids.WEBHOOK_MESSAGE),
        type=event_type,
        body=json.dumps({"type": event_type}),
        created_at=T0,
        endpoints=endpoints or ("hooks",),
    )


async def test_a_version_1_journal_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.execute(
        "INSERT INTO sessions (session_id, run_id, deployment_id, pid, started_at) "
        "VALUES ('sesn_old', 'drun_old', 'depl_old', 42, 1)"
    )
    conn.close()
    async with SqliteJournal.open(path) as journal:
        assert (await journal.get_session("sesn_old") or {})["pid"] == 42
        await journal.add_events([event()])
        assert len(await journal.list_deliveries(limit=10)) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()


async def test_storage_bytes_counts_the_file_and_its_wal(journal: SqliteJournal) -> None:
    before = await journal.storage_bytes()
    await journal.add_events([event() for _ in range(200)])
    assert await journal.storage_bytes() > before > 0
