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
- **Outbox** (webhooks). A write that causes an event takes ``events``: each ``OutboxEvent``
  is stored, with one *pending* delivery per endpoint it names, in the **same transaction** as
  the change (``complete_run``, ``update_deployment``, ``recover_open_claims``); an event with
  no change of its own (a missed occurrence) goes through ``add_events``. The delivery worker
  reads ``pending_deliveries`` and settles each attempt with ``record_attempt`` (which also
  writes the endpoint's ``EndpointState``, in one transaction); ``retry_deliveries`` makes an
  endpoint's failed deliveries pending again and re-enables it. A delivery is ``pending``
  until it is ``delivered`` or given up (``failed``); nothing here decides when to retry.
- **Retention** (``prune_*``). Each call removes at most ``limit`` rows in one short write
  transaction (the candidates are found on the reading side first, and every condition is
  checked again as they are deleted). Never removed: an open claim, the newest run of a
  deployment (by ``created_at``) and its latest scheduled run (what the scheduler resumes
  from), a session still running (``ended_at`` NULL), an outbox event with a pending delivery.
  ``last_run_at`` lives on the deployment and cursors are positions, so neither moves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from agentcron.core.models import AgentRef, Deployment, DeploymentRun, RunError, TriggerType
from agentcron.core.pagination import Position

__all__ = [
    "RECOVERED_MESSAGE",
    "Claim",
    "Delivery",
    "DeliveryStatus",
    "DeploymentFilter",
    "EndpointState",
    "Journal",
    "OutboxEvent",
    "Pruned",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEvent:
    """One webhook event, stored with the change that caused it (see the module docstring)."""

    id: str
    """``msg_...``: the ``webhook-id`` every attempt of every endpoint sends."""
    type: str
    """``deployment_run.failed``, ``deployment.paused``, ..."""
    body: str
    """The JSON body, exactly as it is sent (and signed)."""
    created_at: datetime
    endpoints: tuple[str, ...]
    """The names of the endpoints that get it: one pending delivery each."""


DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One event on its way to one endpoint."""

    event_id: str
    event_type: str
    endpoint: str
    body: str
    created_at: datetime
    status: DeliveryStatus
    attempts: int
    retry_from: datetime
    """Since when it has been retried: ``created_at``, or the latest ``retry_deliveries``."""
    next_attempt_at: datetime | None
    """When it is due (``pending`` only)."""
    last_attempt_at: datetime | None = None
    last_status: int | None = None
    """The HTTP status of the latest attempt (``None``: no answer)."""
    last_error: str | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointState:
    """What the journal keeps of one webhook endpoint (by name) across restarts."""

    name: str
    failing_since: datetime | None = None
    """The first failed attempt since the latest success (``None``: not failing)."""
    disabled_at: datetime | None = None
    """When it was disabled for failing too long (``None``: enabled)."""
    last_success_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Pruned:
    """What one ``prune_*`` call removed."""

    removed: int
    """Rows removed (runs, sessions, or outbox events with their deliveries)."""
    held: float
    """Seconds the delete statements took inside their write transaction (the writer hold)."""
    session_ids: tuple[str, ...] = ()
    """The sessions removed (``prune_sessions``): their log files may go too."""


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
        events: Sequence[OutboxEvent] = (),
    ) -> DeploymentRun:
        """Give ``claim`` its outcome (exactly one of ``session_id`` and ``error``, else
        ``ValueError``); the run becomes visible with ``created_at = completed_at``. With
        ``last_run_at``, the deployment's ``last_run_at`` moves to it (never backwards) in the
        same transaction, as do ``events`` (the outbox). Raises ``JournalError`` if the claim
        is not open."""
        ...

    async def recover_open_claims(
        self,
        now: datetime,
        *,
        events_for: Callable[[DeploymentRun], Sequence[OutboxEvent]] | None = None,
    ) -> list[DeploymentRun]:
        """Complete every open claim as ``service_unavailable`` (``RECOVERED_MESSAGE``);
        ``events_for(run)`` (pure, called inside the transaction) gives each run's events."""
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

    async def update_deployment(
        self, deployment: Deployment, *, events: Sequence[OutboxEvent] = ()
    ) -> None:
        """Write every service-owned field of ``deployment`` (never ``last_run_at``), and
        ``events``, in one transaction.

        Raises ``NotFound`` if it does not exist (and then stores no event)."""
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

    async def storage_bytes(self) -> int:
        """The journal's size on disk, in bytes (for the ``agentcron_journal_bytes`` metric)."""
        ...

    # --- the webhook outbox ----------------------------------------------------------------

    async def add_events(self, events: Sequence[OutboxEvent]) -> None:
        """Store ``events`` (and their pending deliveries) that no other write carries."""
        ...

    async def pending_deliveries(self, endpoint: str, *, limit: int) -> list[Delivery]:
        """The endpoint's pending deliveries, earliest ``next_attempt_at`` first (ties by
        event id), due or not: at most ``limit``."""
        ...

    async def record_attempt(
        self,
        delivery: Delivery,
        *,
        attempted_at: datetime,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
        endpoint_state: EndpointState,
    ) -> None:
        """Settle one attempt of a pending delivery and store ``endpoint_state``, in one
        transaction: ``error`` ``None`` means delivered; otherwise the delivery stays pending
        until ``next_attempt_at``, or is given up (``failed``) when that is ``None``. A
        delivery that is no longer pending (retried meanwhile) is left alone."""
        ...

    async def endpoint_states(self) -> dict[str, EndpointState]:
        """Every endpoint the journal has a state for, by name."""
        ...

    async def list_deliveries(
        self,
        *,
        endpoint: str | None = None,
        status: DeliveryStatus | None = None,
        after: tuple[str, str] | None = None,
        limit: int,
    ) -> list[Delivery]:
        """Deliveries newest event first (event id descending, then endpoint name ascending),
        strictly after the position ``after`` = ``(event_id, endpoint)`` when given; filtered
        by ``endpoint`` and ``status``."""
        ...

    async def retry_deliveries(
        self, endpoint: str, *, now: datetime, event_id: str | None = None
    ) -> int:
        """Make the endpoint's failed and pending deliveries (or only ``event_id``'s) due at
        ``now`` with ``retry_from = now``, and re-enable the endpoint (its state cleared of
        ``failing_since`` and ``disabled_at``); returns how many deliveries that made due."""
        ...

    # --- retention (see the module docstring) ---------------------------------------------

    async def prune_runs(self, before: datetime, limit: int) -> Pruned:
        """Remove up to ``limit`` completed runs created before ``before``, oldest first."""
        ...

    async def run_created_at_rank(self, rank: int) -> datetime | None:
        """The ``created_at`` of the ``rank``-th newest completed run (1: the newest), or
        ``None`` when there are fewer (what ``runs_max_count`` prunes below)."""
        ...

    async def prune_sessions(
        self, before: datetime, limit: int, *, session_ids: Sequence[str] | None = None
    ) -> Pruned:
        """Remove up to ``limit`` local sessions that ended before ``before`` (oldest first);
        with ``session_ids``, only those of them. ``Pruned.session_ids`` names them."""
        ...

    async def prune_outbox(self, before: datetime, limit: int) -> Pruned:
        """Remove up to ``limit`` outbox events created before ``before`` whose deliveries
        are all settled (delivered or failed), with those deliveries."""
        ...

    # --- local sessions (the command launcher's ``SessionRecorder``) ----------------------

    def session_started(
        self,
        *,
        session_id: str,
        run_id: str,
        deployment_id: str,
        pid: int,
        started_at: datetime,
        host: str | None = None,
    ) -> None:
        """Queue the record that local session ``session_id`` started as process ``pid`` on
        ``host`` (the daemon's host name)."""
        ...

    def session_ended(
        self,
        *,
        session_id: str,
        exit_status: int | None,
        ended_at: datetime,
        end_reason: str = "exited",
        log_bytes: int | None = None,
    ) -> None:
        """Queue a local session's end: its exit status (negative: killed by that signal, which
        is also stored as ``signal``; ``None``: unknown), why it ended (``end_reason``) and its
        log's size then."""
        ...

    async def recover_sessions(self, *, host: str, ended_at: datetime) -> list[str]:
        """End every session of ``host`` still recorded as running (a daemon on that host
        stopped without seeing it end): ``end_reason`` ``recovered``, exit status unknown.
        Sessions recorded before hosts were (``host`` unknown) are ended too. Returns their
        ids, in no particular order. Sessions of other hosts are left alone."""
        ...

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        """A local session's record: ``session_id``, ``run_id``, ``deployment_id``, ``pid``,
        ``exit_status``, ``started_at``, ``ended_at`` (datetimes or ``None``), ``end_reason``,
        ``signal``, ``log_bytes`` and ``host`` (``None`` until known)."""
        ...

    async def flush(self) -> None:
        """Return once every write queued so far has committed (or failed)."""
        ...
