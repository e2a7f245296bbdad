"""The deployment service: every operation on deployments and runs that the API and the
scheduler perform, over the journal.

Request bodies are validated by ``agentcron.core.validation``; agents, environments and vaults
are resolved through the ``Launcher``. Changes to one deployment are serialised by one lock
(read, decide, write), and after each committed change every subscribed listener is called with
the new ``Deployment`` (the deployment copies and the scheduler re-plan from it).

Errors are the project's: ``InvalidRequest`` (400), ``NotFound`` (404), ``Conflict`` (409),
``ServiceUnavailable`` (503, from the journal).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import structlog

from agentcron import ids
from agentcron.clock import Clock
from agentcron.core.events import EventType
from agentcron.core.models import AgentRef, Deployment, DeploymentRun, PausedReason
from agentcron.core.pagination import (
    DEFAULT_LIMIT,
    DEPLOYMENTS_MAX_LIMIT,
    RUNS_MAX_LIMIT,
    CursorKind,
    Page,
    Position,
    decode_cursor,
    encode_cursor,
)
from agentcron.core.timeutil import to_micros
from agentcron.core.validation import (
    OMITTED,
    AgentSpec,
    check_metadata_limits,
    validate_create,
    validate_update,
)
from agentcron.errors import Conflict, InvalidRequest, NotFound
from agentcron.health import Reason, check_health
from agentcron.journal import DeploymentFilter, Journal, RunFilter
from agentcron.launchers.base import Launcher
from agentcron.runtime.outbox import Outbox

log = structlog.get_logger(__name__)

DeploymentListener = Callable[[Deployment], None]

_Item = TypeVar("_Item", Deployment, DeploymentRun)


class DeploymentService:
    """Create, read, update, pause, unpause and archive deployments; read runs."""

    def __init__(
        self,
        journal: Journal,
        launcher: Launcher,
        clock: Clock,
        *,
        max_deployments: int = 1000,
        outbox: Outbox | None = None,
    ) -> None:
        """``outbox``: pauses and archives write their webhook events with the change."""
        self._journal = journal
        self._launcher = launcher
        self._clock = clock
        self._outbox = outbox
        self._max_deployments = max_deployments
        self._listeners: list[DeploymentListener] = []
        self._lock = anyio.Lock()

    def subscribe(self, listener: DeploymentListener) -> None:
        """Call ``listener(deployment)`` synchronously after every committed change."""
        self._listeners.append(listener)

    def _notify(self, deployment: Deployment) -> None:
        for listener in self._listeners:
            try:
                listener(deployment)
            except Exception:  # the change is committed; a listener bug must not undo the reply
                log.exception("deployment_listener_failed", deployment_id=deployment.id)

    def _now(self) -> datetime:
        return self._clock.now()

    # --- deployments -------------------------------------------------------------------------

    async def create(self, body: Mapping[str, Any]) -> Deployment:
        """Validate ``body``, resolve its agent and environment, store the deployment."""
        request = validate_create(body)
        agent = await self._resolve_agent(request.agent)
        await self._launcher.validate_environment(request.environment_id)
        await self._validate_vaults(request.vault_ids)
        async with self._lock:
            if request.schedule is not None:
                await self._check_capacity()
            now = self._now()
            deployment = Deployment(
                id=ids.new_id(ids.DEPLOYMENT),
                name=request.name,
                description=request.description,
                agent=agent,
                environment_id=request.environment_id,
                initial_events=request.initial_events,
                metadata=request.metadata,
                resources=request.resources,
                vault_ids=request.vault_ids,
                budget=request.budget,
                schedule=request.schedule,
                created_at=now,
                updated_at=now,
            )
            await self._journal.insert_deployment(deployment)
            log.info("deployment_created", deployment_id=deployment.id)
            self._notify(deployment)
            return deployment

    async def get(self, deployment_id: str) -> Deployment:
        """The deployment, archived or not. Raises ``NotFound``."""
        deployment = await self._journal.get_deployment(deployment_id)
        if deployment is None:
            raise NotFound(f"deployment {deployment_id} not found")
        return deployment

    async def list(
        self,
        *,
        agent_id: str | None = None,
        status: str | None = None,
        include_archived: bool = False,
        created_at_gte: datetime | None = None,
        created_at_lte: datetime | None = None,
        limit: int = DEFAULT_LIMIT,
        page: str | None = None,
    ) -> Page[Deployment]:
        """One page of deployments, newest first (archived ones only with ``include_archived``)."""
        _check_limit(limit, DEPLOYMENTS_MAX_LIMIT)
        if status is not None and status not in ("active", "paused"):
            raise InvalidRequest(f"status: must be active or paused, got {status!r}")
        if status is not None and include_archived:
            raise InvalidRequest("status: cannot be combined with include_archived=true")
        after = None if page is None else decode_cursor(CursorKind.DEPLOYMENTS, page)
        flt = DeploymentFilter(
            agent_id=agent_id,
            paused=None if status is None else status == "paused",
            include_archived=include_archived,
            created_at_gte=_micros(created_at_gte),
            created_at_lte=_micros(created_at_lte),
        )
        items = await self._journal.list_deployments(flt, after=after, limit=limit + 1)
        return _page(items, limit, CursorKind.DEPLOYMENTS)

    async def update(self, deployment_id: str, body: Mapping[str, Any]) -> Deployment:
        """Apply an update body (omitted = kept, ``null`` clears, ``metadata`` is a patch).

        The agent and environment are resolved before the change lock is taken (a launcher
        may be slow); the deployment is then re-read under the lock and changed.
        """
        before = await self._mutable(deployment_id)  # 404 / 409 before any 400
        request = validate_update(body)
        agent = OMITTED if request.agent is OMITTED else await self._resolve_agent(request.agent)
        if request.environment_id is not OMITTED and (
            request.environment_id != before.environment_id
        ):
            await self._launcher.validate_environment(request.environment_id)
        if request.vault_ids is not OMITTED and request.vault_ids != before.vault_ids:
            await self._validate_vaults(request.vault_ids)
        async with self._lock:
            current = await self._mutable(deployment_id)
            changes: dict[str, Any] = {}
            if request.name is not OMITTED:
                changes["name"] = request.name
            if request.description is not OMITTED:
                changes["description"] = request.description
            if agent is not OMITTED:
                changes["agent"] = agent
            if request.environment_id is not OMITTED:
                changes["environment_id"] = request.environment_id
            if request.initial_events is not OMITTED:
                changes["initial_events"] = request.initial_events
            if request.metadata is not OMITTED:
                metadata = dict(current.metadata)
                for key, value in request.metadata.items():
                    if value is None:
                        metadata.pop(key, None)
                    else:
                        metadata[key] = value
                check_metadata_limits(metadata)
                changes["metadata"] = metadata
            if request.resources is not OMITTED:
                changes["resources"] = request.resources
            if request.vault_ids is not OMITTED:
                changes["vault_ids"] = request.vault_ids
            if request.budget is not OMITTED:
                changes["budget"] = request.budget
            if request.schedule is not OMITTED:
                if request.schedule is not None and current.schedule is None:
                    await self._check_capacity()
                changes["schedule"] = request.schedule
            updated = dataclasses.replace(current, **changes)
            if updated == current:
                return current
            updated = dataclasses.replace(updated, updated_at=self._later(current.updated_at))
            await self._journal.update_deployment(updated)
            log.info("deployment_updated", deployment_id=deployment_id, fields=sorted(changes))
            self._notify(updated)
            return updated

    async def pause(self, deployment_id: str) -> Deployment:
        """Pause (reason ``manual``); a paused deployment is returned unchanged."""
        async with self._lock:
            current = await self._mutable(deployment_id)
            if current.paused_reason is not None:
                return current
            return await self._store(
                current,
                "deployment_paused",
                webhook=EventType.DEPLOYMENT_PAUSED,
                paused_reason=PausedReason(type="manual"),
            )

    async def unpause(self, deployment_id: str) -> Deployment:
        """Clear a manual or error pause; an active deployment is returned unchanged."""
        async with self._lock:
            current = await self._mutable(deployment_id)
            if current.paused_reason is None:
                return current
            return await self._store(current, "deployment_unpaused", paused_reason=None)

    async def archive(self, deployment_id: str) -> Deployment:
        """Archive (terminal). Raises ``Conflict`` if it is already archived."""
        async with self._lock:
            current = await self._mutable(deployment_id)
            return await self._archive(current, "deployment_archived")

    async def pause_for_error(self, deployment_id: str, error_type: str) -> Deployment | None:
        """Auto-pause after a failed scheduled run; ``None`` if archived or already paused."""
        async with self._lock:
            current = await self.get(deployment_id)
            if current.is_archived or current.paused_reason is not None:
                return None
            reason = PausedReason(type="error", error_type=error_type)
            return await self._store(
                current,
                "deployment_paused",
                webhook=EventType.DEPLOYMENT_PAUSED,
                paused_reason=reason,
                error_type=error_type,
            )

    async def archive_for_agent(self, deployment_id: str) -> Deployment | None:
        """Archive because the agent is archived or gone; ``None`` if already archived."""
        async with self._lock:
            current = await self.get(deployment_id)
            if current.is_archived:
                return None
            return await self._archive(current, "deployment_archived_agent_gone")

    async def refresh(self, deployment_ids: Sequence[str]) -> None:
        """Re-read deployments another daemon changed and tell every subscriber, as for a
        change made here (under the change lock: a local change cannot interleave)."""
        async with self._lock:
            found = await self._journal.get_deployments(list(deployment_ids))
            for deployment in found.values():
                self._notify(deployment)

    async def counts(self) -> dict[str, int]:
        """``active``, ``paused``, ``archived``, ``scheduled`` deployments and ``runs``."""
        return await self._journal.counts()

    async def degraded_reasons(self) -> Sequence[Reason]:
        """Why the daemon is degraded right now; empty when it is ok (``agentcron.health``)."""
        return await check_health(self._journal, self._launcher)

    # --- runs --------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> DeploymentRun:
        """A completed run. Raises ``NotFound`` (also while it is only claimed)."""
        run = await self._journal.get_run(run_id)
        if run is None:
            raise NotFound(f"deployment run {run_id} not found")
        return run

    async def list_runs(
        self,
        *,
        deployment_id: str | None = None,
        has_error: bool | None = None,
        trigger_type: str | None = None,
        created_at_gt: datetime | None = None,
        created_at_gte: datetime | None = None,
        created_at_lt: datetime | None = None,
        created_at_lte: datetime | None = None,
        limit: int = DEFAULT_LIMIT,
        page: str | None = None,
    ) -> Page[DeploymentRun]:
        """One page of runs, newest first; an unknown ``deployment_id`` gives an empty page."""
        _check_limit(limit, RUNS_MAX_LIMIT)
        if trigger_type is not None and trigger_type not in ("schedule", "manual"):
            raise InvalidRequest(f"trigger_type: must be schedule or manual, got {trigger_type!r}")
        after = None if page is None else decode_cursor(CursorKind.RUNS, page)
        flt = RunFilter(
            deployment_id=deployment_id,
            has_error=has_error,
            trigger_type=trigger_type,
            created_at_gt=_micros(created_at_gt),
            created_at_gte=_micros(created_at_gte),
            created_at_lt=_micros(created_at_lt),
            created_at_lte=_micros(created_at_lte),
        )
        items = await self._journal.list_runs(flt, after=after, limit=limit + 1)
        return _page(items, limit, CursorKind.RUNS)

    # --- helpers -----------------------------------------------------------------------------

    async def _mutable(self, deployment_id: str) -> Deployment:
        deployment = await self.get(deployment_id)
        if deployment.is_archived:
            raise Conflict(f"deployment {deployment_id} is archived")
        return deployment

    async def _resolve_agent(self, spec: AgentSpec) -> AgentRef:
        return await self._launcher.resolve_agent(spec.id, spec.version)

    async def _validate_vaults(self, vault_ids: Sequence[str]) -> None:
        """Vault ids must exist (as the launcher sees them)."""
        if vault_ids:
            await self._launcher.validate_vaults(vault_ids)

    async def _check_capacity(self) -> None:
        scheduled = await self._journal.count_scheduled()
        if scheduled >= self._max_deployments:
            raise InvalidRequest(
                f"schedule: max_deployments reached ({self._max_deployments} non-archived "
                "deployments with a schedule); archive one or raise max_deployments"
            )

    def _later(self, previous: datetime) -> datetime:
        """Now, but never before ``previous`` (a clock step back must not reorder history)."""
        return max(self._now(), previous)

    async def _store(
        self,
        current: Deployment,
        event: str,
        *,
        error_type: str | None = None,
        webhook: EventType | None = None,
        **changes: Any,
    ) -> Deployment:
        updated = dataclasses.replace(
            current, updated_at=self._later(current.updated_at), **changes
        )
        outbox = self._outbox
        if webhook is not None and outbox is not None:
            events = outbox.deployment_events(webhook, updated)
            await self._journal.update_deployment(updated, events=events)
            outbox.committed(events)
        else:
            await self._journal.update_deployment(updated)
        if error_type is None:
            log.info(event, deployment_id=current.id)
        else:
            log.info(event, deployment_id=current.id, error_type=error_type)
        self._notify(updated)
        return updated

    async def _archive(self, current: Deployment, event: str) -> Deployment:
        if current.is_archived:
            raise Conflict(f"deployment {current.id} is archived")
        now = self._later(current.updated_at)
        return await self._store(
            current,
            event,
            webhook=EventType.DEPLOYMENT_ARCHIVED,
            archived_at=now,
            paused_reason=None,
        )


def _check_limit(limit: int, maximum: int) -> None:
    if isinstance(limit, bool) or not 1 <= limit <= maximum:
        raise InvalidRequest(f"limit: must be between 1 and {maximum}, got {limit}")


def _micros(value: datetime | None) -> int | None:
    return None if value is None else to_micros(value)


def _page(items: list[_Item], limit: int, kind: CursorKind) -> Page[_Item]:
    """Cut the ``limit + 1`` fetched items to a page; the extra one proves a next page."""
    if len(items) <= limit:
        return Page(data=items, next_page=None)
    data = items[:limit]
    last = data[-1]
    cursor = encode_cursor(kind, Position(created_at=to_micros(last.created_at), id=last.id))
    return Page(data=data, next_page=cursor)
