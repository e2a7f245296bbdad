"""Backups and checks of a SQLite journal file (``agentcron journal backup|check``).

Both work on the file directly, with their own connection, whether or not a daemon has it
open: in WAL mode a reader never blocks the daemon's writer, nor waits for it.

``backup_file`` is ``VACUUM INTO`` a new file: one read transaction, so the copy is the
journal exactly as of one commit (every transaction committed before it began, none after),
compacted (no free pages), then verified with ``PRAGMA integrity_check`` before it takes its
name. Never a copy of the file's bytes, which could catch a half-written page or miss what
is still in the WAL.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcron.errors import JournalError
from agentcron.journal.sqlite.schema import SCHEMA_VERSION

BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """What ``PRAGMA integrity_check`` and the schema version say of one journal file."""

    path: Path
    integrity: tuple[str, ...]
    """``("ok",)``, or SQLite's problems (at most 100)."""
    schema_version: int
    runs: int | None
    """Completed runs, when the schema has them."""
    size_bytes: int

    @property
    def ok(self) -> bool:
        return self.integrity == ("ok",) and 0 < self.schema_version <= SCHEMA_VERSION

    def problems(self) -> list[str]:
        found = [] if self.integrity == ("ok",) else list(self.integrity)
        if self.schema_version == 0:
            found.append("schema version 0: not an agentcron journal (no tables)")
        elif self.schema_version > SCHEMA_VERSION:
            found.append(
                f"schema version {self.schema_version} is newer than this agentcron "
                f"understands ({SCHEMA_VERSION}): upgrade agentcron"
            )
        return found

    def to_wire(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "integrity": list(self.integrity),
            "schema_version": self.schema_version,
            "supported_schema_version": SCHEMA_VERSION,
            "runs": self.runs,
            "size_bytes": self.size_bytes,
            "problems": self.problems(),
        }


def _connect(path: Path, *, query_only: bool = True) -> sqlite3.Connection:
    """A reading connection to an existing journal file (never creates one). ``VACUUM
    INTO`` needs ``query_only`` off, though it writes only its target file."""
    if not path.is_file():
        raise JournalError(f"no journal file at {path}")
    try:
        uri = f"{path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if query_only:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc
    return conn


def _size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def check_file(path: Path) -> CheckResult:
    """``PRAGMA integrity_check`` and the schema version of the journal at ``path``.

    Raises ``JournalError`` when it is missing or not a SQLite database at all.
    """
    path = Path(path)
    conn = _connect(path)
    try:
        integrity = tuple(str(row[0]) for row in conn.execute("PRAGMA integrity_check(100)"))
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        runs: int | None = None
        has_runs = conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'runs'"
        ).fetchone()
        if has_runs:
            runs = int(
                conn.execute("SELECT count(*) FROM runs WHERE created_at IS NOT NULL").fetchone()[0]
            )
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"{path} is not a readable SQLite journal: {exc}") from exc
    finally:
        conn.close()
    return CheckResult(
        path=path, integrity=integrity, schema_version=version, runs=runs, size_bytes=_size(path)
    )


def backup_file(source: Path, target: Path) -> CheckResult:
    """A consistent, compacted copy of the journal ``source`` at the new file ``target``
    (mode 0600), verified by ``check_file``; returns that check.

    Raises ``JournalError`` when ``target`` exists (a backup never overwrites), when
    ``source`` cannot be read, or when the copy does not pass its check (it is removed then).
    """
    source, target = Path(source), Path(target)
    if target.exists() or target.is_symlink():
        raise JournalError(f"{target} already exists; a backup never overwrites a file")
    if not target.parent.is_dir():
        raise JournalError(f"the directory {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    conn = _connect(source, query_only=False)
    try:
        old_umask = os.umask(0o077)
        try:
            conn.execute("VACUUM INTO ?", (str(partial),))
        finally:
            os.umask(old_umask)
    except sqlite3.Error as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise JournalError(f"cannot back up {source}: {exc}") from exc
    finally:
        conn.close()
    try:
        os.chmod(partial, 0o600)
        result = check_file(partial)
        if not result.ok:
            raise JournalError(f"the copy of {source} failed its check: {result.problems()}")
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(partial, target)  # fails if target appeared meanwhile: never overwrite
    except FileExistsError as exc:
        raise JournalError(f"{target} already exists; a backup never overwrites a file") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return CheckResult(
        path=target,
        integrity=result.integrity,
        schema_version=result.schema_version,
        runs=result.runs,
        size_bytes=_size(target),
    )
