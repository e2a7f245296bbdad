"""Shared fixtures: a journal on a real SQLite file, and the API stack on a real Unix socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentcron.journal import SqliteJournal
from tests.api_harness import ApiServer, running_api

# The throwaway PostgreSQL cluster (``postgres_cluster``, ``postgres_url``) for every test.
pytest_plugins = ("tests.support.postgres",)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    """A journal in ``<tmp_path>/state/journal.db`` (the directory is created by ``open``)."""
    async with SqliteJournal.open(tmp_path / "state" / "journal.db") as opened:
        yield opened


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ApiServer]:
    """The journal, service, scheduler and API served on a Unix socket in a background loop."""
    with running_api(tmp_path / "state") as server:
        yield server
