"""Mapping between PostgreSQL journal rows and the domain objects. Pure.

The column lists are the SQLite backend's (``agentcron.journal.sqlite.rows``); the values
differ only in type: ``timestamptz`` arrives as an aware ``datetime``, ``json`` as its text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from agentcron.core.models import (
    AgentRef,
    Deployment,
    DeploymentRun,
    PausedReason,
    RunError,
    Schedule,
    TriggerType,
)
from agentcron.journal.sqlite.rows import DEPLOYMENT_COLUMNS, DEPLOYMENT_MUTABLE, RUN_COLUMNS

__all__ = [
    "DEPLOYMENT_COLUMNS",
    "DEPLOYMENT_MUTABLE",
    "RUN_COLUMNS",
    "deployment_from_row",
    "deployment_values",
    "run_from_row",
    "session_from_row",
]

DEPLOYMENT_NAMES = tuple(name.strip() for name in DEPLOYMENT_COLUMNS.split(","))


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load(text: str) -> Any:
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def deployment_values(deployment: Deployment) -> dict[str, Any]:
    """Every column of ``deployment`` by name (``DEPLOYMENT_NAMES``)."""
    schedule = deployment.schedule
    paused = deployment.paused_reason
    return {
        "id": deployment.id,
        "name": deployment.name,
        "description": deployment.description,
        "agent_id": deployment.agent.id,
        "agent_version": deployment.agent.version,
        "environment_id": deployment.environment_id,
        "initial_events": _dump(deployment.initial_events),
        "metadata": _dump(deployment.metadata),
        "resources": _dump(deployment.resources),
        "vault_ids": _dump(deployment.vault_ids),
        "budget": None if deployment.budget is None else _dump(deployment.budget),
        "schedule_expression": schedule.expression if schedule else None,
        "schedule_timezone": schedule.timezone if schedule else None,
        "paused_type": paused.type if paused else None,
        "paused_error_type": paused.error_type if paused else None,
        "archived_at": deployment.archived_at,
        "last_run_at": deployment.last_run_at,
        "created_at": deployment.created_at,
        "updated_at": deployment.updated_at,
    }


def deployment_from_row(row: Iterable[Any]) -> Deployment:
    """A ``Deployment`` from a row selected with ``DEPLOYMENT_COLUMNS``."""
    (
        deployment_id,
        name,
        description,
        agent_id,
        agent_version,
        environment_id,
        initial_events,
        metadata,
        resources,
        vault_ids,
        budget,
        expression,
        timezone,
        paused_type,
        paused_error_type,
        archived_at,
        last_run_at,
        created_at,
        updated_at,
    ) = tuple(row)
    return Deployment(
        id=deployment_id,
        name=name,
        description=description,
        agent=AgentRef(id=agent_id, version=agent_version),
        environment_id=environment_id,
        initial_events=_load(initial_events),
        metadata=_load(metadata),
        resources=_load(resources),
        vault_ids=_load(vault_ids),
        budget=None if budget is None else _load(budget),
        schedule=None if expression is None else Schedule(expression=expression, timezone=timezone),
        paused_reason=(
            None
            if paused_type is None
            else PausedReason(type=paused_type, error_type=paused_error_type)
        ),
        archived_at=archived_at,
        last_run_at=last_run_at,
        created_at=created_at,
        updated_at=updated_at,
    )


def run_from_row(row: Iterable[Any]) -> DeploymentRun:
    """A completed ``DeploymentRun`` from a row selected with ``RUN_COLUMNS``."""
    (
        run_id,
        deployment_id,
        agent_id,
        agent_version,
        trigger_type,
        scheduled_at,
        session_id,
        error_type,
        error_message,
        created_at,
    ) = tuple(row)
    return DeploymentRun(
        id=run_id,
        deployment_id=deployment_id,
        agent=AgentRef(id=agent_id, version=agent_version),
        trigger_type=TriggerType(trigger_type),
        scheduled_at=scheduled_at,
        session_id=session_id,
        error=None if error_type is None else RunError(type=error_type, message=error_message),
        created_at=created_at,
    )


def session_from_row(row: Iterable[Any]) -> dict[str, Any]:
    """A ``sessions`` row as ``Journal.get_session`` returns it."""
    session_id, run_id, deployment_id, pid, exit_status, started_at, ended_at = tuple(row)
    return {
        "session_id": session_id,
        "run_id": run_id,
        "deployment_id": deployment_id,
        "pid": pid,
        "exit_status": exit_status,
        "started_at": started_at,
        "ended_at": ended_at,
    }
