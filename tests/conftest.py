"""Shared fixtures: the API stack on a real Unix socket (see ``tests.api_harness``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_harness import ApiServer, running_api


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ApiServer]:
    """The journal, service, scheduler and API served on a Unix socket in a background loop."""
    with running_api(tmp_path / "state") as server:
        yield server
