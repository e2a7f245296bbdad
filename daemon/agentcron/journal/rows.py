"""Journal rows and the domain objects, for every backend. Pure (but for new run ids).

Both backends store the same columns; they differ only in how an instant is kept (SQLite:
integer microseconds; PostgreSQL: ``timestamptz``). Each backend's ``rows`` module binds these
functions to its own instant codec. JSON-shaped fields are stored as compact JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from agentcron import ids
from agentcron.core.models import (
    AgentRef,
    Deployment,
    DeploymentRun,
    PausedReason,
    RunError,
    RunErrorType,
    Schedule,
    TriggerType,
)
from agentcron.journal.protocol import RECOVERED_MESSAGE, Claim

DEPLOYMENT_COLUMNS = (
    "id, name, description, agent_id, agent_version, environment_id, initial_events, metadata, "
    "resources, vault_ids, budget, schedule_expression, schedule_timezone, paused_type, "
    "paused_error_type, archived_at, last_run_at, created_at, updated_at"
)
DEPLOYMENT_NAMES = tuple(name.strip() for name in DEPLOYMENT_COLUMNS.split(","))
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

Decode = Callable[[Any], datetime]
"""A stored instant (never ``None``) as an aware UTC ``datetime``."""
Encode = Callable[[datetime], Any]
"""An aware ``datetime`` as the backend stores it."""


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load_json(text: str) -> Any:
    """``json.loads``, with the empty list and object (most resources, vault ids, metadata)
    answered without the parser."""
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def deployment_values(deployment: Deployment, encode: Encode) -> dict[str, Any]:
    """Every column of ``deployment`` by name (``DEPLOYMENT_NAMES``)."""
    schedule = deployment.schedule
    paused = deployment.paused_reason
    archived_at, last_run_at = deployment.archived_at, deployment.last_run_at
    return {
        "id": deployment.id,
        "name": deployment.name,
        "description": deployment.description,
        "agent_id": deployment.agent.id,
        "agent_version": deployment.agent.version,
        "environment_id": deployment.environment_id,
        "initial_events": dump_json(deployment.initial_events),
        "metadata": dump_json(deployment.metadata),
        "resources": dump_json(deployment.resources),
        "vault_ids": dump_json(deployment.vault_ids),
        "budget": None if deployment.budget is None else dump_json(deployment.budget),
        "schedule_expression": schedule.expression if schedule else None,
        "schedule_timezone": schedule.timezone if schedule else None,
        "paused_type": paused.type if paused else None,
        "paused_error_type": paused.error_type if paused else None,
        "archived_at": None if archived_at is None else encode(archived_at),
        "last_run_at": None if last_run_at is None else encode(last_run_at),
        "created_at": encode(deployment.created_at),
        "updated_at": encode(deployment.updated_at),
    }


def deployment_from_row(row: Iterable[Any], decode: Decode) -> Deployment:
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
        initial_events=load_json(initial_events),
        metadata=load_json(metadata),
        resources=load_json(resources),
        vault_ids=load_json(vault_ids),
        budget=None if budget is None else load_json(budget),
        schedule=None if expression is None else Schedule(expression=expression, timezone=timezone),
        paused_reason=(
            None
            if paused_type is None
            else PausedReason(type=paused_type, error_type=paused_error_type)
        ),
        archived_at=None if archived_at is None else decode(archived_at),
        last_run_at=None if last_run_at is None else decode(last_run_at),
        created_at=decode(created_at),
        updated_at=decode(updated_at),
    )


def run_from_row(row: Iterable[Any], decode: Decode) -> DeploymentRun:
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
        scheduled_at=None if scheduled_at is None else decode(scheduled_at),
        session_id=session_id,
        error=None if error_type is None else RunError(type=error_type, message=error_message),
        created_at=decode(created_at),
    )


SESSION_COLUMNS = (
    "session_id, run_id, deployment_id, pid, exit_status, started_at, ended_at, "
    "end_reason, signal, log_bytes, host"
)
"""The ``sessions`` columns ``session_from_row`` reads, in its order."""


def session_from_row(row: Iterable[Any], decode: Decode) -> dict[str, Any]:
    """A ``sessions`` row (``SESSION_COLUMNS``) as ``Journal.get_session`` returns it."""
    (
        session_id,
        run_id,
        deployment_id,
        pid,
        exit_status,
        started_at,
        ended_at,
        end_reason,
        signal,
        log_bytes,
        host,
    ) = tuple(row)
    return {
        "session_id": session_id,
        "run_id": run_id,
        "deployment_id": deployment_id,
        "pid": pid,
        "exit_status": exit_status,
        "started_at": decode(started_at),
        "ended_at": None if ended_at is None else decode(ended_at),
        "end_reason": end_reason,
        "signal": signal,
        "log_bytes": log_bytes,
        "host": host,
    }


def exit_signal(exit_status: int | None) -> int | None:
    """The number of the signal that killed a process whose exit status is ``exit_status``."""
    return -exit_status if exit_status is not None and exit_status < 0 else None


RECOVERED_ERROR = RunError(type=RunErrorType.SERVICE_UNAVAILABLE.value, message=RECOVERED_MESSAGE)
"""The outcome ``recover_open_claims`` gives every open claim."""


def new_claim(
    *,
    deployment_id: str,
    agent: AgentRef,
    trigger_type: TriggerType,
    scheduled_at: datetime | None,
) -> Claim:
    """The claim ``claim_run`` tries to write, with a new run id.

    Raises ``ValueError`` unless ``scheduled_at`` is given for, and only for, scheduled runs.
    """
    if (trigger_type == TriggerType.SCHEDULE) != (scheduled_at is not None):
        raise ValueError("scheduled_at is required for, and only for, scheduled runs")
    return Claim(
        run_id=ids.new_id(ids.RUN),
        deployment_id=deployment_id,
        agent=agent,
        trigger_type=TriggerType(trigger_type),
        scheduled_at=scheduled_at,
    )


def check_outcome(session_id: str | None, error: RunError | None) -> None:
    """Raise ``ValueError`` unless exactly one of ``session_id`` and ``error`` is given."""
    if (session_id is None) == (error is None):
        raise ValueError("exactly one of session_id and error must be given")


def completed_run(
    claim: Claim, *, session_id: str | None, error: RunError | None, completed_at: datetime
) -> DeploymentRun:
    """The run a completed ``claim`` is (what ``complete_run`` returns without a read)."""
    return DeploymentRun(
        id=claim.run_id,
        deployment_id=claim.deployment_id,
        agent=claim.agent,
        trigger_type=claim.trigger_type,
        scheduled_at=claim.scheduled_at,
        session_id=session_id,
        error=error,
        created_at=completed_at,
    )
