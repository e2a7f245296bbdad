"""The fire path: claim a run durably, create one session, complete the run.

``Firing`` is what the scheduler loop hands each due occurrence to (``submit``) and what manual
runs go through (``run_manual``). The order is the crash-safety contract of SPEC §4: the run
row is committed *before* the launcher is called, and completed after, so a daemon killed in
between leaves an open claim that the next start completes as ``service_unavailable`` instead
of creating the session a second time.

``run`` is Firing's own task group: a pool of at most ``max_concurrent_fires`` workers that
claim, launch and complete queued fires, and the reader of ``DeploymentCopies``
(``agentcron.runtime.copies``), where fires take their deployments from. A due fire is
re-checked against that copy (and against its ``entry`` still being live in the scheduler)
just before its claim.

Shutdown (``drain``): no new claims; session creations already started get ``grace`` seconds to
finish; the rest are cancelled and their runs completed as ``service_unavailable``. The part of a
fire after its claim is shielded from cancellation, so the journal never keeps an open claim of
a run whose task was torn down.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import anyio
import anyio.abc
import structlog

from agentcron.clock import Clock
from agentcron.core.models import Deployment, DeploymentRun, RunError, RunErrorType, TriggerType
from agentcron.core.timeutil import format_ts
from agentcron.errors import AgentcronError, Conflict, LaunchFailure, ServiceUnavailable
from agentcron.journal import RECOVERED_MESSAGE, Claim, Journal, OutboxEvent
from agentcron.launchers.base import Launcher, SessionRequest
from agentcron.metrics import Metrics
from agentcron.runtime.copies import DeploymentCopies
from agentcron.runtime.outbox import Outbox
from agentcron.runtime.service import DeploymentService

log = structlog.get_logger("agentcron.scheduler")


class LiveEntry(Protocol):
    """The scheduler's handle of a deployment's schedule: ``live`` turns False, for good,
    once the scheduler removed or replaced it (paused, archived, rescheduled)."""

    @property
    def live(self) -> bool: ...


@runtime_checkable
class WarmsAhead(Protocol):
    """A launcher that can prepare for a burst (``ManagedAgentsLauncher.warm``: open
    connections), so the burst's session creations do not pay for it at the due instant."""

    async def warm(self, count: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DueFire:
    """One occurrence the loop found due, and how to re-check that it is still wanted."""

    deployment_id: str
    expression: str
    timezone: str
    scheduled_at: datetime
    fire_at: datetime
    entry: LiveEntry
    """The scheduler's entry it came from; a fire whose entry is no longer live is dropped."""

    def is_live(self) -> bool:
        return self.entry.live

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
    """Firing's counters (``Scheduler.health()`` reports them with its own)."""

    __slots__ = ("duplicates", "failed", "fired", "in_flight", "succeeded")

    def __init__(self) -> None:
        self.fired = 0
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
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
        copies: DeploymentCopies,
        auto_pause_on: Iterable[str] = (),
        max_concurrent_fires: int = 64,
        outbox: Outbox | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``outbox``: each completion carries its run's webhook events; ``metrics`` counts."""
        if max_concurrent_fires < 1:
            raise ValueError("max_concurrent_fires must be at least 1")
        self._journal = journal
        self._service = service
        self._launcher = launcher
        self._clock = clock
        self._copies = copies
        self._auto_pause_on = frozenset(auto_pause_on)
        self._outbox = outbox
        self._metrics = metrics
        self._max_workers = max_concurrent_fires
        self._queue: deque[DueFire] = deque()
        self._workers = 0
        self._parked: deque[anyio.Event] = deque()  # one per idle worker, oldest first
        self._tg: anyio.abc.TaskGroup | None = None
        self._launches: set[anyio.CancelScope] = set()
        self._stopping = False
        self._cutoff = False
        self._warming = False
        self.warms_ahead = isinstance(launcher, WarmsAhead)
        """The launcher prepares for bursts (the scheduler then wakes ahead of them)."""
        self.changes = Changes()
        """Notified whenever a fire ends or a launch returns (and by the scheduler's loop)."""
        self.stats = FireStats()

    # --- bookkeeping ---------------------------------------------------------------------------

    def _begin(self) -> None:
        self.stats.in_flight += 1

    def _end(self) -> None:
        self.stats.in_flight -= 1
        self.changes.notify()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def reopen(self) -> None:
        """Accept fires again after ``drain`` (a daemon that stopped leading keeps serving
        manual runs, and may lead again)."""
        self._stopping = False
        self._cutoff = False

    # --- the task group ------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Firing's task group (the workers and the deployment reader) until cancelled.

        ``drain`` first when stopping: cancelling ``run`` tears down fires that have not
        claimed yet, never the shielded part after a claim.
        """
        async with anyio.create_task_group() as tg:
            await tg.start(self._copies.run)
            self._tg = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    # --- scheduled fires -----------------------------------------------------------------------

    def submit(self, due: DueFire) -> None:
        """Queue a due occurrence (sync, for the loop; ``run`` must be running); a pool of at
        most ``max_concurrent_fires`` workers claims, launches and completes queued fires.

        A burst costs the loop one append per fire; workers stay parked between bursts (no
        task per fire), and concurrent claims of the workers are group-committed by the journal.
        """
        if self._tg is None:
            raise RuntimeError("Firing.run is not running")
        self._begin()
        self._queue.append(due)
        if self._parked:
            self._parked.popleft().set()
        elif self._workers < self._max_workers:
            self._workers += 1
            self._tg.start_soon(self._worker)

    def expect(self, count: int) -> None:
        """The scheduler's notice that about ``count`` fires are due within moments (sync).

        A launcher that warms ahead (``WarmsAhead``) prepares for ``min(count,
        max_concurrent_fires)`` creations in Firing's task group, one warm-up at a time; a
        failed warm-up is logged and left to the fires themselves.
        """
        launcher = self._launcher
        if (
            count < 1
            or self._warming
            or self._stopping
            or self._tg is None
            or not isinstance(launcher, WarmsAhead)  # (``warms_ahead``; narrows the type)
        ):
            return
        self._warming = True
        self._tg.start_soon(self._warm, launcher, min(count, self._max_workers))

    async def _warm(self, launcher: WarmsAhead, count: int) -> None:
        try:
            await launcher.warm(count)
        except Exception as exc:  # only a head start: the fires connect for themselves
            log.warning("launcher_warm_up_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._warming = False

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

    async def _fire_scheduled(self, due: DueFire) -> None:
        try:
            if self._stopping or not due.is_live():
                return
            with structlog.contextvars.bound_contextvars(deployment_id=due.deployment_id):
                try:
                    deployment = await self._copies.get(due.deployment_id)
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
            claim = await self._journal.claim_run(
                deployment_id=deployment.id,
                agent=deployment.agent,
                trigger_type=TriggerType.SCHEDULE,
                scheduled_at=due.scheduled_at,
                claimed_at=self._clock.now(),
            )
        except AgentcronError as exc:
            log.error("run_claim_failed", scheduled_at=format_ts(due.scheduled_at), error=str(exc))
            return
        if claim is None:
            self.stats.duplicates += 1
            if self._metrics is not None:
                self._metrics.claims_refused.inc()
            log.info("run_duplicate_suppressed", scheduled_at=format_ts(due.scheduled_at))
            return
        with structlog.contextvars.bound_contextvars(run_id=claim.run_id):
            started_at, session_id, error = await self._launch(deployment, claim)
            try:
                run = await self._complete(claim, session_id, error, last_run_at=started_at)
            except AgentcronError:
                return  # logged; the claim stays open and the next start completes it
            lag_ms = round((started_at - due.fire_at).total_seconds() * 1000, 3)
            self._record(run, session_id, error, lag_ms=lag_ms)
            if error is not None:
                await self._after_failure(deployment.id, error.type, scheduled=True)

    # --- manual runs ---------------------------------------------------------------------------

    async def run_manual(self, deployment_id: str) -> DeploymentRun:
        """Run a deployment now (``POST /v1/deployments/{id}/run``).

        Raises ``NotFound`` for an unknown id and ``Conflict`` for an archived deployment;
        works while paused; returns the completed run, also when it carries an error; never
        touches ``last_run_at`` and never auto-pauses; ``agent_archived`` archives the deployment.
        """
        deployment = await self._service.get(deployment_id)  # NotFound
        if deployment.is_archived:
            raise Conflict(f"deployment {deployment_id} is archived")
        if self._stopping:
            raise ServiceUnavailable("the daemon is shutting down; try again after it restarts")
        self._begin()
        try:
            with structlog.contextvars.bound_contextvars(deployment_id=deployment_id):
                with anyio.CancelScope(shield=True):
                    return await self._run_manual_claimed(deployment)
            # Unreachable: nothing cancels that shielded scope (mypy cannot know it).
            raise ServiceUnavailable("the manual run was cancelled")
        finally:
            self._end()

    async def _run_manual_claimed(self, deployment: Deployment) -> DeploymentRun:
        claim = await self._journal.claim_run(
            deployment_id=deployment.id,
            agent=deployment.agent,
            trigger_type=TriggerType.MANUAL,
            scheduled_at=None,
            claimed_at=self._clock.now(),
        )
        if claim is None:  # pragma: no cover - manual claims have no unique key
            raise ServiceUnavailable("the journal refused the manual run's claim")
        with structlog.contextvars.bound_contextvars(run_id=claim.run_id):
            _, session_id, error = await self._launch(deployment, claim)
            run = await self._complete(claim, session_id, error, last_run_at=None)
            self._record(run, session_id, error, lag_ms=0.0)
            if error is not None:
                await self._after_failure(deployment.id, error.type, scheduled=False)
        return run

    # --- the shared steps ----------------------------------------------------------------------

    async def _launch(
        self, deployment: Deployment, claim: Claim
    ) -> tuple[datetime, str | None, RunError | None]:
        """Call the launcher; returns (when the call began, session id, error)."""
        started_at = self._clock.now()
        if self._cutoff:
            return (
                started_at,
                None,
                RunError(type=RunErrorType.SERVICE_UNAVAILABLE, message=RECOVERED_MESSAGE),
            )
        request = SessionRequest.for_deployment(deployment, claim.run_id)
        scope = anyio.CancelScope()
        self._launches.add(scope)
        session_id: str | None = None
        error: RunError | None = None
        began = time.perf_counter()
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
            self.changes.notify()
            if self._metrics is not None:
                self._metrics.session_create.observe(time.perf_counter() - began)
        if scope.cancelled_caught or (session_id is None and error is None):
            session_id = None
            error = RunError(type=RunErrorType.SERVICE_UNAVAILABLE, message=RECOVERED_MESSAGE)
        return started_at, session_id, error

    async def _complete(
        self,
        claim: Claim,
        session_id: str | None,
        error: RunError | None,
        *,
        last_run_at: datetime | None,
    ) -> DeploymentRun:
        completed_at = self._clock.now()
        events: tuple[OutboxEvent, ...] = ()
        outbox = self._outbox
        if outbox is not None and outbox.wants_run(error is not None):
            outcome = DeploymentRun(
                id=claim.run_id,
                deployment_id=claim.deployment_id,
                agent=claim.agent,
                trigger_type=claim.trigger_type,
                scheduled_at=claim.scheduled_at,
                session_id=session_id,
                error=error,
                created_at=completed_at,
            )
            events = outbox.run_events(outcome)
        try:
            run = await self._journal.complete_run(
                claim,
                session_id=session_id,
                error=error,
                completed_at=completed_at,
                last_run_at=last_run_at,
                events=events,
            )
        except AgentcronError as exc:
            # The claim stays open; the next start completes it as service_unavailable.
            log.error("run_completion_failed", session_id=session_id, error=str(exc))
            raise
        if events and outbox is not None:
            outbox.committed(events)
        return run

    def _record(
        self,
        run: DeploymentRun,
        session_id: str | None,
        error: RunError | None,
        *,
        lag_ms: float,
    ) -> None:
        self.stats.fired += 1
        metrics = self._metrics
        if metrics is not None:
            metrics.run_recorded(run.trigger_type.value, error.type if error else "session")
            if run.scheduled_at is not None:
                metrics.fire_lag.observe(lag_ms / 1000)
                metrics.record_lag.observe((run.created_at - run.scheduled_at).total_seconds())
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
                await self.changes.wait_until(lambda: not self._launches)
                tg.cancel_scope.cancel()
        self._cutoff = True
        for scope in list(self._launches):
            scope.cancel()
