"""The journal: every deployment, claim, run and local session, durably (SPEC §4).

``Journal`` (``agentcron.journal.protocol``) is the port the rest of the daemon uses;
``SqliteJournal`` (``agentcron.journal.sqlite``) is the embedded backend and the default,
``PostgresJournal`` (``agentcron.journal.postgres``) the one for a PostgreSQL database.
``open_journal`` picks one from the configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from agentcron.clock import Clock
from agentcron.config import JournalConfig
from agentcron.journal.protocol import (
    RECOVERED_MESSAGE,
    Claim,
    Delivery,
    DeliveryStatus,
    DeploymentFilter,
    EndpointState,
    Journal,
    OutboxEvent,
    Pruned,
    RunFilter,
    ScheduleRow,
)
from agentcron.journal.sqlite.store import SqliteJournal

__all__ = [
    "RECOVERED_MESSAGE",
    "Claim",
    "Delivery",
    "DeliveryStatus",
    "DeploymentFilter",
    "EndpointState",
    "Journal",
    "OutboxEvent",
    "Pruned",
    "RunFilter",
    "ScheduleRow",
    "SqliteJournal",
    "open_journal",
]


@asynccontextmanager
async def open_journal(
    config: JournalConfig,
    *,
    state_dir: Path,
    environ: Mapping[str, str],
    clock: Clock | None = None,
    on_commit: Callable[[float], None] | None = None,
) -> AsyncIterator[Journal]:
    """The journal ``config`` names, open for the ``async with`` block: PostgreSQL when
    ``config.url`` is set, else the SQLite file ``journal.db`` in ``state_dir``.
    ``on_commit(seconds)`` hears the duration of each committed write transaction.

    Raises ``JournalError`` when it cannot be opened and ``ConfigError`` when its password
    cannot be read.
    """
    if config.url is None:
        path = state_dir / "journal.db"
        async with SqliteJournal.open(path, clock=clock, on_commit=on_commit) as journal:
            yield journal
        return
    # Imported here: asyncpg is loaded only by a daemon that uses it.
    from agentcron.journal.postgres.password import load_journal_password  # noqa: PLC0415
    from agentcron.journal.postgres.store import PostgresJournal  # noqa: PLC0415

    password = load_journal_password(config, environ)
    async with PostgresJournal.open(
        config.url, password=password, clock=clock, on_commit=on_commit
    ) as journal:
        yield journal
