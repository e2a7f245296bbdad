"""Domain objects as the API's JSON (SPEC §2). Pure.

This is the one place that removes write-only secrets: a ``github_repository`` resource's
``authorization_token`` is stored with the deployment but never leaves through the API.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from agentcron.core.models import AgentRef, Deployment, DeploymentRun, JSONObject, TriggerType
from agentcron.core.schedule import upcoming
from agentcron.core.timeutil import format_ts

UPCOMING_RUNS = 5
WRITE_ONLY_FIELDS: dict[str, frozenset[str]] = {
    "github_repository": frozenset({"authorization_token"}),
}


# Upcoming instants repeat across deployments and requests (whole minutes of shared schedules).
_format_instant = functools.lru_cache(maxsize=8192)(format_ts)


def agent_to_wire(agent: AgentRef) -> dict[str, Any]:
    return {"type": "agent", "id": agent.id, "version": agent.version}


def resource_to_wire(resource: JSONObject) -> JSONObject:
    """A resource as echoed: a copy without its write-only fields."""
    hidden = WRITE_ONLY_FIELDS.get(str(resource.get("type")), frozenset())
    return {key: value for key, value in resource.items() if key not in hidden}


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def deployment_to_wire(deployment: Deployment, now: datetime) -> dict[str, Any]:
    """The ``deployment`` object; ``upcoming_runs_at`` lists the next fires after ``now``."""
    schedule: dict[str, Any] | None = None
    if deployment.schedule is not None:
        expression, timezone = deployment.schedule.expression, deployment.schedule.timezone
        instants = (
            [] if deployment.is_archived else upcoming(expression, timezone, now, UPCOMING_RUNS)
        )
        schedule = {
            "type": "cron",
            "expression": expression,
            "timezone": timezone,
            "last_run_at": _ts(deployment.last_run_at),
            "upcoming_runs_at": [_format_instant(instant) for instant in instants],
        }
    reason = None if deployment.is_archived else deployment.paused_reason
    paused_reason: dict[str, Any] | None = None
    if reason is not None:
        paused_reason = {"type": reason.type}
        if reason.type == "error":
            paused_reason["error"] = {"type": reason.error_type}
    wire: dict[str, Any] = {
        "type": "deployment",
        "id": deployment.id,
        "name": deployment.name,
        "description": deployment.description,
        "agent": agent_to_wire(deployment.agent),
        "environment_id": deployment.environment_id,
        "initial_events": deployment.initial_events,
        "metadata": dict(deployment.metadata),
        "resources": [resource_to_wire(resource) for resource in deployment.resources],
        "vault_ids": list(deployment.vault_ids),
        "schedule": schedule,
        "status": "paused" if paused_reason is not None else "active",
        "paused_reason": paused_reason,
        "archived_at": _ts(deployment.archived_at),
        "created_at": format_ts(deployment.created_at),
        "updated_at": format_ts(deployment.updated_at),
    }
    if deployment.budget is not None:
        wire["budget"] = deployment.budget
    return wire


def run_to_wire(run: DeploymentRun) -> dict[str, Any]:
    """The ``deployment_run`` object."""
    trigger: dict[str, Any] = {"type": run.trigger_type.value}
    if run.trigger_type == TriggerType.SCHEDULE and run.scheduled_at is not None:
        trigger["scheduled_at"] = format_ts(run.scheduled_at)
    return {
        "type": "deployment_run",
        "id": run.id,
        "deployment_id": run.deployment_id,
        "agent": agent_to_wire(run.agent),
        "trigger_context": trigger,
        "session_id": run.session_id,
        "error": None
        if run.error is None
        else {"type": run.error.type, "message": run.error.message},
        "created_at": format_ts(run.created_at),
    }
