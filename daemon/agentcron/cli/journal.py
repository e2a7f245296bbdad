"""`agentcron journal backup|check`: a consistent copy of the journal, and its check.

Both read the journal file themselves (the daemon need not run, and is not disturbed when it
does: see ``agentcron.journal.sqlite.maintenance``), found from ``--journal FILE``, or the
``[journal]`` and ``state_dir`` of ``--config FILE`` (or ``--state-dir DIR``), or the default
state directory. A PostgreSQL journal is backed up with PostgreSQL's own tools; ``check``
reports its schema version.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from agentcron.cli.output import human_bytes, print_json
from agentcron.config import Config, JournalConfig, default_state_dir, load_config
from agentcron.errors import AgentcronError, ConfigError
from agentcron.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agentcron.journal.sqlite.maintenance import CheckResult, backup_file, check_file
from agentcron.journal.sqlite.schema import SCHEMA_VERSION

PG_BACKUP_HINT = (
    "the journal is a PostgreSQL database ({location}): back it up with PostgreSQL's tools, "
    "e.g. `pg_dump --format=custom --file=agentcron.dump DBNAME`, and restore it with "
    "`pg_restore --clean --if-exists --dbname=DBNAME agentcron.dump` while agentcrond is stopped"
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `journal backup` and `journal check` to the CLI."""
    journal = subparsers.add_parser(
        "journal",
        help="back up or check the journal",
        description="Back up or check the journal (the SQLite file, or PostgreSQL's version).",
    )
    commands = journal.add_subparsers(dest="journal_command", metavar="COMMAND")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--journal", metavar="FILE", type=Path, help="the journal.db file")
    where.add_argument(
        "--config", metavar="FILE", type=Path, help="agentcrond's config (its [journal])"
    )
    where.add_argument("--state-dir", metavar="DIR", type=Path, help="override state_dir")
    where.add_argument("--json", action="store_true", help="print JSON")
    backup = commands.add_parser(
        "backup",
        parents=[where],
        help="write a consistent copy of the journal to PATH (the daemon may run)",
        description="Write a consistent, compacted copy of the SQLite journal to the new file "
        "PATH (VACUUM INTO, then PRAGMA integrity_check on the copy). Safe while agentcrond "
        "runs; never overwrites PATH.",
    )
    backup.add_argument("path", metavar="PATH", type=Path)
    backup.set_defaults(handler=_backup)
    check = commands.add_parser(
        "check",
        parents=[where],
        help="check the journal: PRAGMA integrity_check and its schema version",
        description="Run PRAGMA integrity_check on the SQLite journal and report its schema "
        "version (exit 0 ok, 1 problems). On PostgreSQL: the schema version.",
    )
    check.set_defaults(handler=_check)
    journal.set_defaults(handler=lambda _args: _usage(journal))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _locate(args: argparse.Namespace) -> tuple[Path | None, JournalConfig | None]:
    """The SQLite file, or the PostgreSQL ``[journal]``, the arguments name."""
    if args.journal is not None:
        return args.journal, None
    overrides = {"state_dir": str(args.state_dir) if args.state_dir else None}
    config: Config = load_config(args.config, environ=os.environ, overrides=overrides)
    if config.journal.url is not None:
        return None, config.journal
    state_dir = config.daemon.state_dir or default_state_dir(os.environ)
    return state_dir / "journal.db", None


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        path, postgres = _locate(args)
        return int(action(path, postgres))
    except ConfigError as exc:
        print("error: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except AgentcronError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _backup(args: argparse.Namespace) -> int:
    def action(path: Path | None, postgres: JournalConfig | None) -> int:
        if postgres is not None:
            print(f"error: {PG_BACKUP_HINT.format(location=postgres.location)}", file=sys.stderr)
            return EXIT_FAILURE
        assert path is not None
        result = backup_file(path, args.path)
        if args.json:
            print_json({"source": str(path), **result.to_wire()})
        else:
            print(
                f"backed up {path} to {result.path}: {result.runs} runs, "
                f"{human_bytes(result.size_bytes)}, integrity ok, schema version "
                f"{result.schema_version}"
            )
        return EXIT_OK

    return _run(args, action)


def _check(args: argparse.Namespace) -> int:
    def action(path: Path | None, postgres: JournalConfig | None) -> int:
        if postgres is not None:
            return _check_postgres(args, postgres)
        assert path is not None
        result = check_file(path)
        if args.json:
            print_json(result.to_wire())
        else:
            print(_check_text(result))
        return EXIT_OK if result.ok else EXIT_FAILURE

    return _run(args, action)


def _check_text(result: CheckResult) -> str:
    status = "ok" if result.ok else "PROBLEMS"
    lines = [
        f"{result.path}: {status}",
        f"integrity:      {'ok' if result.integrity == ('ok',) else 'FAILED'}",
        f"schema version: {result.schema_version} (this agentcron: {SCHEMA_VERSION})",
        f"runs:           {'-' if result.runs is None else result.runs}",
        f"size:           {human_bytes(result.size_bytes)}",
    ]
    lines.extend(f"problem:        {problem}" for problem in result.problems())
    return "\n".join(lines)


def _check_postgres(args: argparse.Namespace, journal: JournalConfig) -> int:
    # Imported here: asyncpg is loaded only for a PostgreSQL journal.
    import asyncpg  # noqa: PLC0415

    from agentcron.journal.postgres.password import load_journal_password  # noqa: PLC0415
    from agentcron.journal.postgres.schema import SCHEMA_VERSION as PG_VERSION  # noqa: PLC0415
    from agentcron.journal.postgres.schema import schema_version  # noqa: PLC0415

    password = load_journal_password(journal, os.environ)
    assert journal.url is not None
    url = journal.url

    async def read() -> int:
        conn = await asyncpg.connect(url, password=password, timeout=10)
        try:
            return await schema_version(conn)
        finally:
            await conn.close()

    try:
        version = anyio.run(read)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: cannot connect to the journal {journal.location}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    ok = 0 < version <= PG_VERSION
    payload = {
        "location": journal.location,
        "backend": "postgresql",
        "ok": ok,
        "schema_version": version,
        "supported_schema_version": PG_VERSION,
        "integrity": None,
        "note": "PRAGMA integrity_check is SQLite's; PostgreSQL checks its own pages "
        "(amcheck, pg_dump to a file reads every row)",
    }
    if args.json:
        print_json(payload)
    else:
        print(
            f"{journal.location}: {'ok' if ok else 'PROBLEMS'}\n"
            f"schema version: {version} (this agentcron: {PG_VERSION})\n"
            f"integrity:      not a SQLite file; use PostgreSQL's amcheck, or pg_dump"
        )
    return EXIT_OK if ok else EXIT_FAILURE
