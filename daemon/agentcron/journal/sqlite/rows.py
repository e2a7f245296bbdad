"""SQLite journal rows: the shared mapping (``agentcron.journal.rows``) with instants stored as
integer microseconds since the Unix epoch. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agentcron.core.models import Deployment, DeploymentRun
from agentcron.core.timeutil import from_micros, to_micros
from agentcron.journal import rows
from agentcron.journal.rows import DEPLOYMENT_COLUMNS, DEPLOYMENT_MUTABLE, RUN_COLUMNS

__all__ = [
    "DEPLOYMENT_COLUMNS",
    "DEPLOYMENT_MUTABLE",
    "RUN_COLUMNS",
    "deployment_from_row",
    "deployment_params",
    "run_from_row",
    "session_from_row",
]


def deployment_params(deployment: Deployment) -> dict[str, Any]:
    """Named parameters for every column of ``deployment``."""
    return rows.deployment_values(deployment, to_micros)


def deployment_from_row(row: Iterable[Any]) -> Deployment:
    """A ``Deployment`` from a row selected with ``DEPLOYMENT_COLUMNS``."""
    return rows.deployment_from_row(row, from_micros)


def run_from_row(row: Iterable[Any]) -> DeploymentRun:
    """A completed ``DeploymentRun`` from a row selected with ``RUN_COLUMNS``."""
    return rows.run_from_row(row, from_micros)


def session_from_row(row: Iterable[Any]) -> dict[str, Any]:
    """A ``sessions`` row as ``Journal.get_session`` returns it."""
    return rows.session_from_row(row, from_micros)
