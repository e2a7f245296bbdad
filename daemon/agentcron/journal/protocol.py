"""The journal port: what the service, the scheduler, the fire path and the launchers need of
the store of deployments, runs and local sessions (SPEC §4).

A backend implements ``Journal`` (``agentcron.journal.sqlite`` is the embedded one). Its
contract, whatever the storage:

- **Claims.** ``claim_run`` durably writes an *open* run before a session is created and
  returns a ``Claim``; ``complete_run(claim, ...)`` gives it exactly one outcome afterwards.
  At most one run exists per ``(deployment_id, scheduled_at)``, enforced by the store itself
  (a second claim of an occurrence returns ``None``). Open claims are invisible to the reads.
  ``recover_open_claims`` completes every open claim as ``service_unavailable`` at start.
- **Durability.** An awaited write has committed when it returns. Concurrent writes share
  transactions (group commit). ``session_started`` / ``session_ended`` only queue their record;
  ``flush`` waits for everything queued.
- **Errors.** Every method raises ``ServiceUnavailable`` when the store cannot read or write
  now (disk full, I/O error, lock, connection lost), ``NotFound`` where documented, and
  ``JournalError`` for anything else; never a foreign exception.
- **Lists** are newest first by ``(created_at, id)``, filtered and paged by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from agentcron.core.models import AgentRef, Deployment, DeploymentRun, RunError, TriggerType
from agentcron.core.pagination import Position

__all__ = [
    "RECOVERED_MESSAGE",
    "Claim",
    "DeploymentFilter",
    "Journal",
    "RunFilter",
    "ScheduleRow",
]

RECOVERED_MESSAGE = "daemon stopped before session creation was confirmed"
"""The error message of a run whose session creation was never confirmed (SPEC §4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """An open run: written durably, waiting for its outcome (``Journal.complete_run``)."""

    run_id: str
    deployment_id: str
    agent: AgentRef
    trigger_type: TriggerType
    scheduled_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentFilter:
    """Filters of the deployments list (already validated; times in microseconds)."""

    agent_id: str | None = None
    paused: bool | None = None
    include_archived: bool = False
    created_at_gte: int | None = None
    created_at_lte: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """Filters of the runs list (already validated; times in microseconds)."""

    deployment_id: str | None = None
    has_error: bool | None = None
    trigger_type: str | None = None
    created_at_gt: int | None = None
    created_at_gte: int | None = None
    created_at_lt: int | None = None
    created_at_lte: int | None = None


class ScheduleRow(NamedTuple):
    """What the scheduler needs of one deployment that fires (``Journal.schedule_rows``).

    A tuple, not a dataclass: a start-up reads one per scheduled deployment (100,000 of them
    at the limit's far end), and nothing here is parsed.
    """

    deployment_id: str
    expression: str
    timezone: str
    updated_at: int
    """Microseconds since the epoch: when the schedule was last set, unpaused or changed."""
    latest_scheduled_at: int | None
    """Microseconds since the epoch: the latest occurrence that has a run row (open or not)."""


class Journal(Protocol):
    """The open journal. See the module docstring for the contract every method keeps."""

    @property
    def location(self) -> str:
        """Where the journal lives, for ``/v1/health`` (a file path; never a password)."""
        ...

    @property
    def transactions(self) -> int:
        """Write transactions committed since open (fewer than writes: group commit)."""
        ...

    @property
    def write_failure(self) -> str | None:
        """Why writes are failing right now (disk full, I/O error, lock, connection lost), or
        ``None`` once the latest write transaction committed (for ``/v1/health``)."""
        ...

    # --- runs ------------------------------------------------------------------------------

    async def claim_run(
        self,
        *,
        deployment_id: str,
        agent: AgentRef,
        trigger_type: TriggerType,
        scheduled_at: datetime | None,
        claimed_at: datetime,
    ) -> Claim | None:
        """Durably write an open run; ``None`` when ``(deployment_id, scheduled_at)`` already
        has a run. ``scheduled_at`` is given for, and only for, scheduled runs (else
        ``ValueError``). Raises ``NotFound`` for an unknown deployment."""
        ...

    async def complete_run(
        self,
        claim: Claim,
        *,
        session_id: str | None,
        error: RunError | None,
        completed_at: datetime,
        last_run_at: datetime | None = None,
    ) -> DeploymentRun:
        """Give ``claim`` its outcome (exactly one of ``session_id`` and ``error``, else
        ``ValueError``); the run becomes visible with ``created_at = completed_at``. With
        ``last_run_at``, the deployment's ``last_run_at`` moves to it (never backwards) in the
        same transaction. Raises ``JournalError`` if the claim is not open."""
        ...

    async def recover_open_claims(self, now: datetime) -> list[DeploymentRun]:
        """Complete every open claim as ``service_unavailable`` (``RECOVERED_MESSAGE``)."""
        ...

    async def get_run(self, run_id: str) -> DeploymentRun | None:
        """A completed run (open claims are not visible)."""
        ...

    async def recent_scheduled_errors(self, limit: int) -> list[str | None]:
        """The error types (``None``: a session was created) of the latest ``limit`` completed
        scheduled runs of deployments that still fire (scheduled, not paused, not archived),
        newest first."""
        ...

    async def list_runs(
        self, flt: RunFilter, *, after: Position | None, limit: int
    ) -> list[DeploymentRun]:
        """Completed runs matching ``flt``, newest first, strictly after ``after``."""
        ...

    # --- deployments -----------------------------------------------------------------------

    async def insert_deployment(self, deployment: Deployment) -> None:
        """Store a new deployment."""
        ...

    async def update_deployment(self, deployment: Deployment) -> None:
        """Write every service-owned field of ``deployment`` (never ``last_run_at``).

        Raises ``NotFound`` if it does not exist."""
        ...

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        """The deployment, archived or not, or ``None``."""
        ...

    async def get_deployments(self, deployment_ids: list[str]) -> dict[str, Deployment]:
        """The deployments among ``deployment_ids`` that exist, by id (batched reads)."""
        ...

    async def list_deployments(
        self, flt: DeploymentFilter, *, after: Position | None, limit: int
    ) -> list[Deployment]:
        """Deployments matching ``flt``, newest first, strictly after ``after``."""
        ...

    async def schedule_rows(self) -> list[ScheduleRow]:
        """Every deployment that fires (scheduled, not paused, not archived), oldest first."""
        ...

    async def count_scheduled(self) -> int:
        """Non-archived deployments with a schedule (what ``max_deployments`` limits)."""
        ...

    async def counts(self) -> dict[str, int]:
        """``active``, ``paused``, ``archived``, ``scheduled`` deployments and ``runs``."""
        ...

    # --- local sessions (the command launcher's ``SessionRecorder``) ----------------------

    def session_started(
        self, *, session_id: str, run_id: str, deployment_id: str, pid: int, started_at: datetime
    ) -> None:
        """Queue the record that local session ``session_id`` started as process ``pid``."""
        ...

    def session_ended(self, *, session_id: str, exit_status: int, ended_at: datetime) -> None:
        """Queue a local session's exit status (negative: killed by that signal)."""
        ...

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        """A local session's record: ``session_id``, ``run_id``, ``deployment_id``, ``pid``,
        ``exit_status``, ``started_at``, ``ended_at`` (datetimes or ``None``)."""
        ...

    async def flush(self) -> None:
        """Return once every write queued so far has committed (or failed)."""
        ...
