"""PostgreSQL journal rows: the shared mapping (``agentcron.journal.rows``); ``timestamptz``
arrives and leaves as an aware ``datetime``, ``json`` as its text. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from agentcron.core.models import Deployment, DeploymentRun
from agentcron.journal import rows
from agentcron.journal.rows import (
    DEPLOYMENT_COLUMNS,
    DEPLOYMENT_MUTABLE,
    DEPLOYMENT_NAMES,
    RUN_COLUMNS,
)

__all__ = [
    "DEPLOYMENT_COLUMNS",
    "DEPLOYMENT_MUTABLE",
    "DEPLOYMENT_NAMES",
    "RUN_COLUMNS",
    "deployment_from_row",
    "deployment_values",
    "run_from_row",
    "session_from_row",
]


def _as_is(value: datetime) -> datetime:
    return value


def deployment_values(deployment: Deployment) -> dict[str, Any]:
    """Every column of ``deployment`` by name (``DEPLOYMENT_NAMES``)."""
    return rows.deployment_values(deployment, _as_is)


def deployment_from_row(row: Iterable[Any]) -> Deployment:
    """A ``Deployment`` from a row selected with ``DEPLOYMENT_COLUMNS``."""
    return rows.deployment_from_row(row, _as_is)


def run_from_row(row: Iterable[Any]) -> DeploymentRun:
    """A completed ``DeploymentRun`` from a row selected with ``RUN_COLUMNS``."""
    return rows.run_from_row(row, _as_is)


def session_from_row(row: Iterable[Any]) -> dict[str, Any]:
    """A ``sessions`` row as ``Journal.get_session`` returns it."""
    return rows.session_from_row(row, _as_is)
