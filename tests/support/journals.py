"""Both journal backends behind one handle, for the contract suite.

A ``Store`` is one place a journal lives (a SQLite file, a PostgreSQL database) and opens as
many journals on it as a test wants; ``schema_version`` and ``set_schema_version`` reach
past the journal to the stored version, as a newer agentcron would have left it.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from agentcron.journal import Journal, SqliteJournal
from agentcron.journal.postgres.store import PostgresJournal
from tests.support.postgres import PostgresCluster

BACKENDS = ("sqlite", "postgres")


@dataclass
class Store:
    backend: str
    path: Path | None = None
    cluster: PostgresCluster | None = None
    database: str | None = None

    def open(self) -> AbstractAsyncContextManager[Journal]:
        """A journal on this store (``async with store.open() as journal``)."""
        if self.path is not None:
            return SqliteJournal.open(self.path)
        return PostgresJournal.open(self.url)

    @property
    def url(self) -> str:
        assert self.cluster is not None
        assert self.database is not None
        return self.cluster.url(self.database)

    def schema_version(self) -> int:
        if self.path is not None:
            with sqlite3.connect(self.path) as conn:
                return int(conn.execute("PRAGMA user_version").fetchone()[0])
        assert self.cluster is not None
        assert self.database is not None
        exists = self.cluster.sql(
            "SELECT to_regclass('agentcron_schema') IS NOT NULL", database=self.database
        )
        if exists != "t":
            return 0
        text = self.cluster.sql("SELECT version FROM agentcron_schema", database=self.database)
        return int(text or 0)

    def set_schema_version(self, version: int) -> None:
        """Leave the store at ``version`` (creating the bare marker if there is no schema)."""
        if self.path is not None:
            with sqlite3.connect(self.path) as conn:
                conn.execute(f"PRAGMA user_version = {version}")
            return
        assert self.cluster is not None
        assert self.database is not None
        self.cluster.sql(
            "CREATE TABLE IF NOT EXISTS agentcron_schema (only_row boolean PRIMARY KEY "
            "DEFAULT true CHECK (only_row), version integer NOT NULL); "
            f"INSERT INTO agentcron_schema (version) VALUES ({version}) "
            "ON CONFLICT (only_row) DO UPDATE SET version = excluded.version",
            database=self.database,
        )

    def add_foreign_table(self) -> None:
        """A table of someone else's in the store, before agentcron ever opened it."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self.path) as conn:
                conn.execute("CREATE TABLE notes (x)")
            return
        assert self.cluster is not None
        assert self.database is not None
        self.cluster.sql("CREATE TABLE notes (x integer)", database=self.database)

    def tables(self) -> set[str]:
        if self.path is not None:
            with sqlite3.connect(self.path) as conn:
                return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert self.cluster is not None
        assert self.database is not None
        text = self.cluster.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=self.database
        )
        return set(text.split())
