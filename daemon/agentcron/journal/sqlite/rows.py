"""Mapping between journal rows and the domain objects. Pure."""

from __future__ import annotations

import json
import sqlite3
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
from agentcron.core.timeutil import from_micros, to_micros

DEPLOYMENT_COLUMNS = (
    "id, name, description, agent_id, agent_version, environment_id, initial_events, metadata, "
    "resources, vault_ids, budget, schedule_expression, schedule_timezone, paused_type, "
    "paused_error_type, archived_at, last_run_at, created_at, updated_at"
)
RUN_COLUMNS = (
    "id, deployment_id, agent_id, agent_version, trigger_type, scheduled_at, session_id, "
    "error_type, error_message, created_at"
)

# Every column of a deployment a service change may write (never last_run_at or created_at:
# last_run_at belongs to the scheduler and is written with the run that sets it).
DEPLOYMENT_MUTABLE = (
    "name",
    "description",
    "agent_id",
    "agent_version",
    "environment_id",
    "initial_events",
    "metadata",
    "resources",
    "vault_ids",
    "budget",
    "schedule_expression",
    "schedule_timezone",
    "paused_type",
    "paused_error_type",
    "archived_at",
    "updated_at",
)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load(text: str) -> Any:
    """``json.loads``, with the empty list and object (most resources, vault ids, metadata)
    answered without the parser."""
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def _micros(value: Any) -> int | None:
    return None if value is None else to_micros(value)


def deployment_params(deployment: Deployment) -> dict[str, Any]:
    """Named parameters for every column of ``deployment``."""
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
        "archived_at": _micros(deployment.archived_at),
        "last_run_at": _micros(deployment.last_run_at),
        "created_at": to_micros(deployment.created_at),
        "updated_at": to_micros(deployment.updated_at),
    }


def deployment_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Deployment:
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
        archived_at=None if archived_at is None else from_micros(archived_at),
        last_run_at=None if last_run_at is None else from_micros(last_run_at),
        created_at=from_micros(created_at),
        updated_at=from_micros(updated_at),
    )


def run_from_row(row: sqlite3.Row | tuple[Any, ...]) -> DeploymentRun:
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
        scheduled_at=None if scheduled_at is None else from_micros(scheduled_at),
        session_id=session_id,
        error=None if error_type is None else RunError(type=error_type, message=error_message),
        created_at=from_micros(created_at),
    )


def session_from_row(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    """A ``sessions`` row (session_id, run_id, deployment_id, pid, exit_status, started_at,
    ended_at) as ``Journal.get_session`` returns it."""
    session_id, run_id, deployment_id, pid, exit_status, started_at, ended_at = row
    return {
        "session_id": session_id,
        "run_id": run_id,
        "deployment_id": deployment_id,
        "pid": pid,
        "exit_status": exit_status,
        "started_at": from_micros(started_at),
        "ended_at": None if ended_at is None else from_micros(ended_at),
    }
