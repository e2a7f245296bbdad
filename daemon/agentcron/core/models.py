"""The domain objects: deployments, their schedules and their runs.

Values are frozen dataclasses. JSON-shaped parts that are stored and echoed as given
(initial events, resources, budget) stay plain ``dict``/``list`` values; ``resources`` here
always hold the write-only secrets, which only ``agentcron.core.wire`` strips for output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

JSONObject = dict[str, Any]


class RunErrorType(StrEnum):
    """Why a run did not create a session (the seed's names, kept exactly)."""

    ENVIRONMENT_ARCHIVED = "environment_archived"
    ENVIRONMENT_NOT_FOUND = "environment_not_found"
    AGENT_ARCHIVED = "agent_archived"
    VAULT_NOT_FOUND = "vault_not_found"
    VAULT_ARCHIVED = "vault_archived"
    SESSION_RATE_LIMITED = "session_rate_limited"
    SESSION_CREATION_REJECTED = "session_creation_rejected"
    SERVICE_UNAVAILABLE = "service_unavailable"
    SESSION_ALREADY_RUNNING = "session_already_running"
    """``overlap = "skip"``: the deployment's previous local session still runs (agentcron's)."""


class TriggerType(StrEnum):
    """What started a run."""

    SCHEDULE = "schedule"
    MANUAL = "manual"


class DeploymentStatus(StrEnum):
    """A deployment's status on the wire (archived deployments report ``active``)."""

    ACTIVE = "active"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRef:
    """An agent pinned to a concrete version."""

    id: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A cron schedule: a 5-field expression matched in an IANA timezone."""

    expression: str
    timezone: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PausedReason:
    """Why a deployment is paused: ``manual``, or ``error`` with the run error type."""

    type: str
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """A deployment as stored in the journal (secrets included)."""

    id: str
    name: str
    description: str | None
    agent: AgentRef
    environment_id: str
    initial_events: list[JSONObject]
    metadata: dict[str, str] = field(default_factory=dict)
    resources: list[JSONObject] = field(default_factory=list)
    vault_ids: list[str] = field(default_factory=list)
    budget: JSONObject | None = None
    schedule: Schedule | None = None
    paused_reason: PausedReason | None = None
    archived_at: datetime | None = None
    last_run_at: datetime | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def status(self) -> DeploymentStatus:
        return DeploymentStatus.PAUSED if self.paused_reason else DeploymentStatus.ACTIVE

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def fires(self) -> bool:
        """True when the schedule should fire: scheduled, not paused, not archived."""
        return self.schedule is not None and self.paused_reason is None and not self.is_archived


@dataclass(frozen=True, slots=True, kw_only=True)
class RunError:
    """Why one run failed: a run error type and a message without secrets."""

    type: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentRun:
    """One trigger attempt. Once completed, exactly one of ``session_id``/``error`` is set."""

    id: str
    deployment_id: str
    agent: AgentRef
    trigger_type: TriggerType
    scheduled_at: datetime | None
    session_id: str | None
    error: RunError | None
    created_at: datetime
