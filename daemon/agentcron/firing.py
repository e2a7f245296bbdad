"""The fire path: claim a run durably, create one session, complete the run.

``Firing`` is what the scheduler loop hands each due occurrence to (one task per fire) and what
manual runs go through. The order is the crash-safety contract of SPEC §4: the run row is
committed *before* the launcher is called, and completed after, so a daemon killed in between
leaves an open claim that the next start completes as ``service_unavailable`` instead of
creating the session a second time.

Fires take their deployments from a bounded in-memory copy of the journal's (``_known``,
oldest-used evicted first): every committed change of a deployment replaces its copy
(``remember``, called by the scheduler's change listener with the committed object, also for
changes that land while a read is in flight), so a deployment created or changed since start,
or fired once, fires again without a read. For the others the loop announces fires a moment
before they are due (``read_ahead``): their deployments are read in one query per batch, so a
due fire goes straight to its claim; a fire whose copy is missing reads the journal itself.
Either way the copy a fire uses is the journal's current one, re-checked before the claim.

Shutdown (``drain``): no new claims; session creations already started get ``grace`` seconds to
finish; the rest are cancelled and their runs completed as ``service_unavailable``. The part of a
fire after its claim is shielded from cancellation, so the journal never keeps an open claim of
a run whose task was torn down.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import anyio
import anyio.abc
import structlog

from agentcron.clock import Clock
from agentcron.errors import AgentcronError, Conflict, LaunchFailure, ServiceUnavailable
from agentcron.journal import Journal
from agentcron.launcher import Launcher, SessionRequest
from agentcron.models import Deployment, DeploymentRun, RunError, RunErrorType, TriggerType
from agentcron.service import DeploymentService
from agentcron.timeutil import format_ts

log = structlog.get_logger("agentcron.scheduler")

STOPPED_MESSAGE = "daemon stopped before session creation was confirmed"
_READ_BATCH = 500  # deployments read ahead per query
_KNOWN_MAX = 16_384  # deployment copies kept at most (about 1-2 kB each)


@dataclass(frozen=True, slots=True, kw_only=True)
class DueFire:
    """One occurrence the loop found due, and how to re-check that it is still wanted."""

    deployment_id: str
    expression: str
    timezone: str
    scheduled_at: datetime
    fire_at: datetime
    is_live: Callable[[], bool]
    """False once the loop's entry for this deployment was removed or replaced."""

    def still_fires(self, deployment: Deployment | None) -> bool:
        """The journal's copy agrees: scheduled on this schedule, not paused, not archived."""
        return (
            deployment is not None
            and deployment.fires
            and deployment.schedule is not None
            and deployment.schedule.expression == self.expression
            and deployment.schedule.timezone == self.timezone
            and self.is_live()
        )


class Changes:
    """A level-triggered notification: waiters re-check their condition after every change."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None  # made lazily: needs a running event loop

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()


class FireStats:
    """The counters ``Scheduler.health()`` reports."""

    __slots__ = ("duplicates", "failed", "fired", "in_flight", "missed", "succeeded")

    def __init__(self) -> None:
        self.fired = 0
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
        self.missed = 0
        self.duplicates = 0
        self.in_flight = 0


class Firing:
    """Claims, launches and completes runs; counts them; drains on shutdown."""

    def __init__(
        self,
        *,
        journal: Journal,
        service: DeploymentService,
        launcher: Launcher,
        clock: Clock,
        auto_pause_on: Iterable[str],
        max_concurrent_fires: int,
        changes: Changes,
    ) -> None:
        if max_concurrent_fires < 1:
            raise ValueError("max_concurrent_fires must be at least 1")
        self._journal = journal
        self._service = service
        self._launcher = launcher
        self._clock = clock
        self._auto_pause_on = frozenset(auto_pause_on)
        self._max_workers = max_concurrent_fires
        self._queue: deque[DueFire] = deque()
        self._workers = 0
        self._parked: deque[anyio.Event] = deque()  # one per idle worker, oldest first
        self._to_read: list[str] = []
        self._reading = False
        self._known: dict[str, Deployment] = {}  # insertion order = least recently used first
        self._changes_seen = 0  # ``remember`` calls so far
        self._changed_while_reading: set[str] | None = None
        self._changes = changes
        self._launches: set[anyio.CancelScope] = set()
        self._stopping = False
        self._cutoff = False
        self.stats = FireStats()

    # --- bookkeeping ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Count a fire (or manual run) as in flight."""
        self.stats.in_flight += 1

    def _end(self) -> None:
        self.stats.in_flight -= 1
        self._changes.notify()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # --- scheduled fires -----------------------------------------------------------------------

    def submit(self, due: DueFire, tg: anyio.abc.TaskGroup) -> None:
        """Queue a due occurrence (sync, for the loop); a pool of at most
        ``max_concurrent_fires`` workers claims, launches and completes queued fires.

        A burst costs the loop one append per fire; workers stay parked between bursts (no
        task per fire), and concurrent claims of the workers are group-committed by the journal.
        """
        self.begin()
        self._queue.append(due)
        if self._parked:
            self._parked.popleft().set()
        elif self._workers < self._max_workers:
            self._workers += 1
            tg.start_soon(self._worker)

    async def _worker(self) -> None:
        try:
            while not self._stopping:
                if not self._queue:
                    wake = anyio.Event()
                    self._parked.append(wake)
                    await wake.wait()
                    continue
                await self._fire_scheduled(self._queue.popleft())
        finally:
            self._workers -= 1

    # --- reading ahead -------------------------------------------------------------------------

    def read_ahead(self, deployment_ids: list[str], tg: anyio.abc.TaskGroup) -> None:
        """Read these deployments (soon due) in the background, batched (sync, for the loop)."""
        self._to_read.extend(deployment_ids)
        if not self._reading:
            self._reading = True
            tg.start_soon(self._read_batches)

    def remember(self, deployment: Deployment) -> None:
        """Keep the committed copy of a deployment that changed (sync)."""
        self._mark_changed(deployment.id)
        self._keep(deployment)

    def _mark_changed(self, deployment_id: str) -> None:
        self._changes_seen += 1
        if self._changed_while_reading is not None:
            self._changed_while_reading.add(deployment_id)

    def _keep(self, deployment: Deployment) -> None:
        """Store ``deployment`` as the most recently used copy; evict the oldest beyond the cap."""
        known = self._known
        known.pop(deployment.id, None)
        known[deployment.id] = deployment
        while len(known) > _KNOWN_MAX:
            del known[next(iter(known))]

    async def _read_batches(self) -> None:
        try:
            while self._to_read and not self._stopping:
                batch = [i for i in self._to_read[:_READ_BATCH] if i not in self._known]
                del self._to_read[:_READ_BATCH]
                if not batch:
                    continue
                changed: set[str] = set()
                self._changed_while_reading = changed
                try:
                    found = await self._journal.get_deployments(batch)
                except AgentcronError as exc:  # the fires read for themselves
                    log.warning("read_ahead_failed", deployments=len(batch), error=str(exc))
                    continue
                finally:
                    self._changed_while_reading = None
                for deployment_id, deployment in found.items():
                    if deployment_id not in changed:
                        self._keep(deployment)
        finally:
            self._reading = False

    async def _deployment(self, deployment_id: str) -> Deployment | None:
        """The journal's current copy: the one kept if there is one, else read now."""
        deployment = self._known.pop(deployment_id, None)
        if deployment is not None:
            self._keep(deployment)  # now the most recently used
            return deployment
        changes = self._changes_seen
        deployment = await self._journal.get_deployment(deployment_id)
        if deployment is not None and self._changes_seen == changes:
            self._keep(deployment)  # no change landed during the read: it is current
        return deployment

    async def _fire_scheduled(self, due: DueFire) -> None:
        try:
            if self._stopping or not due.is_live():
                return
            with structlog.contextvars.bound_contextvars(deployment_id=due.deployment_id):
                try:
                    deployment = await self._deployment(due.deployment_id)
                except AgentcronError as exc:
                    log.error("fire_skipped", reason="journal", error=str(exc))
                    return
                # Re-check: an update, pause or archive may have raced with this fire.
                if self._stopping or deployment is None or not due.still_fires(deployment):
                    return
                with anyio.CancelScope(shield=True):
                    await self._fire_claimed(deployment, due)
        finally:
            self._end()

    async def _fire_claimed(self, deployment: Deployment, due: DueFire) -> None:
        try:
            run_id = await self._journal.claim_run(
                deployment_id=deployment.id,
                agent=deployment.agent,
                trigger_type=TriggerType.SCHEDULE,
                scheduled_at=due.scheduled_at,
                claimed_at=self._clock.now(),
            )
        except AgentcronError as exc:
            log.error("run_claim_failed", scheduled_at=format_ts(due.scheduled_at), error=str(exc))
            return
        if run_id is None:
            self.stats.duplicates += 1
            log.info("run_duplicate_suppressed", scheduled_at=format_ts(due.scheduled_at))
            return
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            started_at, session_id, error = await self._launch(deployment, run_id)
            try:
                run = await self._complete(run_id, session_id, error, last_run_at=started_at)
            except AgentcronError:
                return  # logged; the claim stays open and the next start completes it
            lag_ms = round((started_at - due.fire_at).total_seconds() * 1000, 3)
            self._record(run, session_id, error, lag_ms=lag_ms)
            if error is not None:
                await self._after_failure(deployment.id, error.type, scheduled=True)

    # --- manual runs ---------------------------------------------------------------------------

    async def run_manual(self, deployment_id: str) -> DeploymentRun:
        """Claim, launch and complete a manual run now; see ``Scheduler.run_manual``."""
        deployment = await self._service.get(deployment_id)  # NotFound
        if deployment.is_archived:
            raise Conflict(f"deployment {deployment_id} is archived")
        if self._stopping:
            raise ServiceUnavailable("the daemon is shutting down; try again after it restarts")
        self.begin()
        try:
            with structlog.contextvars.bound_contextvars(deployment_id=deployment_id):
                with anyio.CancelScope(shield=True):
                    return await self._run_manual_claimed(deployment)
            # Unreachable: nothing cancels that shielded scope (mypy cannot know it).
            raise ServiceUnavailable("the manual run was cancelled")
        finally:
            self._end()

    async def _run_manual_claimed(self, deployment: Deployment) -> DeploymentRun:
        run_id = await self._journal.claim_run(
            deployment_id=deployment.id,
            agent=deployment.agent,
            trigger_type=TriggerType.MANUAL,
            scheduled_at=None,
            claimed_at=self._clock.now(),
        )
        if run_id is None:  # pragma: no cover - manual claims have no unique key
            raise ServiceUnavailable("the journal refused the manual run's claim")
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            _, session_id, error = await self._launch(deployment, run_id)
            run = await self._complete(run_id, session_id, error, last_run_at=None)
            self._record(run, session_id, error, lag_ms=0.0)
            if error is not None:
                await self._after_failure(deployment.id, error.type, scheduled=False)
        return run

    # --- the shared steps ----------------------------------------------------------------------

    async def _launch(
        self, deployment: Deployment, run_id: str
    ) -> tuple[datetime, str | None, RunError | None]:
        """Call the launcher; returns (when the call began, session id, error)."""
        started_at = self._clock.now()
        if self._cutoff:
            return (
                started_at,
                None,
                RunError(type=RunErrorType.SERVICE_UNAVAILABLE, message=STOPPED_MESSAGE),
            )
        request = SessionRequest.for_deployment(deployment, run_id)
        scope = anyio.CancelScope()
        self._launches.add(scope)
        session_id: str | None = None
        error: RunError | None = None
        try:
            with scope:
                try:
                    session_id = await self._launcher.create_session(request)
                except LaunchFailure as exc:
                    error = RunError(type=exc.error_type, message=exc.message)
                except Exception as exc:  # the run records every failure
                    log.exception("session_creation_crashed")
                    error = RunError(
                        type=RunErrorType.SERVICE_UNAVAILABLE,
                        message=f"session creation failed unexpectedly ({type(exc).__name__})",
                    )
        finally:
            self._launches.discard(scope)
            self._changes.notify()
        if scope.cancelled_caught or (session_id is None and error is None):
            session_id = None
            error = RunError(type=RunErrorType.SERVICE_UNAVAILABLE, message=STOPPED_MESSAGE)
        return started_at, session_id, error

    async def _complete(
        self,
        run_id: str,
        session_id: str | None,
        error: RunError | None,
        *,
        last_run_at: datetime | None,
    ) -> DeploymentRun:
        try:
            return await self._journal.complete_run(
                run_id,
                session_id=session_id,
                error=error,
                completed_at=self._clock.now(),
                last_run_at=last_run_at,
            )
        except AgentcronError as exc:
            # The claim stays open; the next start completes it as service_unavailable.
            log.error("run_completion_failed", session_id=session_id, error=str(exc))
            raise

    def _record(
        self,
        run: DeploymentRun,
        session_id: str | None,
        error: RunError | None,
        *,
        lag_ms: float,
    ) -> None:
        self.stats.fired += 1
        fields = {
            "trigger": run.trigger_type.value,
            "scheduled_at": format_ts(run.scheduled_at) if run.scheduled_at else None,
            "lag_ms": lag_ms,
        }
        if error is None:
            self.stats.succeeded += 1
            log.info("run_fired", **fields, outcome=session_id)
        else:  # a failed run is a warning: it is what an operator watches the log for
            self.stats.failed[error.type] += 1
            log.warning(
                "run_fired",
                **fields,
                outcome=error.type,
                error_type=error.type,
                error_message=error.message,
            )

    async def _after_failure(self, deployment_id: str, error_type: str, *, scheduled: bool) -> None:
        """Agent gone -> archive (any trigger); ``auto_pause_on`` -> pause (scheduled only)."""
        try:
            if error_type == RunErrorType.AGENT_ARCHIVED:
                if await self._service.archive_for_agent(deployment_id) is not None:
                    log.warning("deployment_auto_archived", reason=error_type)
            elif (
                scheduled
                and error_type in self._auto_pause_on
                and await self._service.pause_for_error(deployment_id, error_type) is not None
            ):
                log.warning("deployment_auto_paused", reason=error_type)
        except AgentcronError as exc:
            log.error("deployment_update_after_failure_failed", reason=error_type, error=str(exc))

    # --- shutdown ------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop claiming; give running creations ``grace`` seconds; cancel the rest."""
        self._stopping = True
        while self._queue:  # queued fires have not claimed anything: drop them
            self._queue.popleft()
            self._end()
        if self._launches:
            log.info("scheduler_draining", in_flight=self.stats.in_flight, grace_s=grace)
            async with anyio.create_task_group() as tg:

                async def deadline() -> None:
                    await self._clock.sleep(grace)
                    tg.cancel_scope.cancel()

                tg.start_soon(deadline)
                await self._changes.wait_until(lambda: not self._launches)
                tg.cancel_scope.cancel()
        self._cutoff = True
        for scope in list(self._launches):
            scope.cancel()
