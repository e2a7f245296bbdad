"""The scheduler: one loop, one heap of next fire times.

Every deployment that fires has exactly one live ``_Entry`` in ``Scheduler._entries``; the heap
holds ``(fire_at_us, token, entry)`` items, where ``fire_at_us`` is the nominal occurrence plus
the deployment's stable jitter offset in epoch microseconds. Changes are applied at once and
lazily: a new or rescheduled deployment gets a new entry (older heap items of the deployment no
longer match ``_entries`` and are dropped when they surface), pause and archive remove the entry,
any other update only refreshes the entry's snapshot. A heap item is current only while its
token equals the entry's token, so each entry has one live item.

The loop sleeps on the injected clock until the earliest item, at most ``max_sleep`` seconds so
that a wall-clock step is noticed, and is woken early by ``deployment_changed``. For each due
item it either counts the occurrence as missed (more than ``misfire_grace`` late) or spawns a
fire task (``agentcron.firing``), then pushes the deployment's next occurrence. The loop never
awaits a session creation.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import structlog

from agentcron.clock import Clock
from agentcron.errors import AgentcronError
from agentcron.firing import Changes, DueFire, Firing
from agentcron.jitter import jitter_offset
from agentcron.journal import Journal
from agentcron.launcher import Launcher
from agentcron.models import Deployment, DeploymentRun, Schedule
from agentcron.schedule import CompiledSchedule, compile_schedule
from agentcron.service import DeploymentService
from agentcron.timeutil import format_ts, from_micros, to_micros

log = structlog.get_logger("agentcron.scheduler")

_YIELD_EVERY = 256  # due items handled between checkpoints, so a burst never starves the API
_NEXT_CACHE_MAX = 50_000  # ~10 MB at most; cleared after each burst and after startup
_MISSED_COUNT_MAX = 100  # downtime misses counted per deployment at startup (bounds the work)


class _Entry:
    """The live heap entry of one deployment (mutable; replaced when its schedule changes).

    Lean on purpose (no deployment snapshot): 100,000 of them fit in a few tens of MB. The fire
    path reads the deployment from the journal.
    """

    __slots__ = ("deployment_id", "fire_at_us", "jitter_us", "schedule", "scheduled_at", "token")

    def __init__(self, deployment_id: str, schedule: CompiledSchedule, jitter_us: int) -> None:
        self.deployment_id = deployment_id
        self.schedule = schedule
        self.jitter_us = jitter_us
        self.scheduled_at: datetime | None = None
        self.fire_at_us = 0
        self.token = 0


class Scheduler:
    """Fires every scheduled deployment at its occurrences; runs manual runs on request."""

    def __init__(
        self,
        *,
        journal: Journal,
        service: DeploymentService,
        launcher: Launcher,
        clock: Clock,
        max_jitter: float = 10.0,
        misfire_grace: float = 60.0,
        auto_pause_on: Iterable[str] = (),
        max_concurrent_fires: int = 64,
        max_sleep: float = 30.0,
        shutdown_grace: float = 10.0,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        if max_sleep <= 0:
            raise ValueError("max_sleep must be positive")
        self._journal = journal
        self._clock = clock
        self._max_jitter = max_jitter
        self._grace_us = round(misfire_grace * 1_000_000)
        self._misfire_grace = misfire_grace
        self._max_sleep = max_sleep
        self._shutdown_grace = shutdown_grace
        self._heartbeat = heartbeat
        self._changes = Changes()
        self._firing = Firing(
            journal=journal,
            service=service,
            launcher=launcher,
            clock=clock,
            auto_pause_on=auto_pause_on,
            max_concurrent_fires=max_concurrent_fires,
            changes=self._changes,
        )
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[int, int, _Entry]] = []
        self._tokens = itertools.count(1)
        self._next_cache: dict[tuple[str, str, datetime], tuple[datetime, int]] = {}
        self._started = False
        self._early: dict[str, Deployment] = {}  # changes seen while the heap was being built
        self._sleep_scope: anyio.CancelScope | None = None
        self._wake_requested = False
        self._parked = False
        service.subscribe(self.deployment_changed)

    # --- the public contract -------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover, build the heap, report started, then fire until cancelled; drain on exit."""
        await self._startup()
        try:
            async with anyio.create_task_group() as tg:
                task_status.started()
                try:
                    await self._loop(tg)
                finally:
                    self._parked = False
                    with anyio.CancelScope(shield=True):
                        log.info("scheduler_stopping", in_flight=self._firing.stats.in_flight)
                        await self._firing.drain(self._shutdown_grace)
                    tg.cancel_scope.cancel()  # fires that have not claimed yet never will
        finally:
            self._changes.notify()
            log.info("scheduler_stopped")

    def deployment_changed(self, deployment: Deployment) -> None:
        """Apply a committed change to the heap at once and wake the loop (sync, cheap)."""
        if not self._started:
            self._early[deployment.id] = deployment
            return
        current = self._entries.get(deployment.id)
        if not deployment.fires:
            if current is not None:
                del self._entries[deployment.id]
                self._wake()
            return
        schedule = deployment.schedule
        assert schedule is not None
        if (
            current is not None
            and current.schedule.expression == schedule.expression
            and current.schedule.timezone == schedule.timezone
        ):
            return  # same schedule: keep the pending occurrence
        entry = self._new_entry(deployment.id, schedule)
        if entry is None:  # cannot happen for a schedule the service validated
            self._entries.pop(deployment.id, None)
            return
        self._entries[deployment.id] = entry
        self._push(entry, self._next_after(entry.schedule, self._clock.now()))
        self._wake()

    async def run_manual(self, deployment_id: str) -> DeploymentRun:
        """Run a deployment now (``POST /v1/deployments/{id}/run``).

        Raises ``NotFound`` for an unknown id and ``Conflict`` for an archived deployment;
        works while paused; returns the completed run, also when it carries an error; never
        touches ``last_run_at`` and never auto-pauses; ``agent_archived`` archives the deployment.
        """
        return await self._firing.run_manual(deployment_id)

    def health(self) -> dict[str, Any]:
        """Counters for ``/v1/health`` and the systemd status line."""
        stats = self._firing.stats
        top = self._peek()
        return {
            "fired": stats.fired,
            "succeeded": stats.succeeded,
            "failed": dict(stats.failed),
            "missed": stats.missed,
            "duplicates": stats.duplicates,
            "in_flight": stats.in_flight,
            "scheduled": len(self._entries),
            "next_fire_at": format_ts(from_micros(top.fire_at_us)) if top else None,
        }

    async def idle(self) -> None:
        """Return once the loop is asleep with nothing due and no fire is in flight.

        For tests and benchmarks: the journal writes in a thread, so "all tasks blocked" is not
        the same as "every fire durably completed".
        """
        await self._changes.wait_until(
            lambda: self._parked and not self._wake_requested and self._firing.stats.in_flight == 0
        )

    # --- startup -------------------------------------------------------------------------------

    async def _startup(self) -> None:
        now = self._clock.now()
        recovered = await self._journal.recover_open_claims(now)
        for run in recovered:
            log.warning(
                "run_recovered",
                deployment_id=run.deployment_id,
                run_id=run.id,
                scheduled_at=format_ts(run.scheduled_at) if run.scheduled_at else None,
                outcome=run.error.type if run.error else None,
            )
        deployments = await self._journal.scheduled_deployments()
        latest = await self._journal.latest_scheduled_at()
        floor = now - timedelta(seconds=self._misfire_grace + self._max_jitter)
        compiled: dict[tuple[str, str], CompiledSchedule | None] = {}
        for deployment in deployments:
            if not deployment.fires:
                continue
            assert deployment.schedule is not None
            entry = self._new_entry(deployment.id, deployment.schedule, compiled)
            if entry is None:
                continue
            # Occurrences after the last one handled (its run, or the change that set the
            # current schedule / unpaused) and before the grace window were missed while down.
            last = latest.get(deployment.id)
            seen = max(last, deployment.updated_at) if last else deployment.updated_at
            upcoming = self._next_after(entry.schedule, max(seen, floor))
            if seen < floor:
                first, _ = self._next_after(entry.schedule, seen)
                if first <= floor:
                    self._count_missed_while_down(entry, first, floor)
            self._entries[deployment.id] = entry
            self._push(entry, upcoming)
        heapq.heapify(self._heap)
        self._started = True
        early, self._early = self._early, {}
        for deployment in early.values():
            self.deployment_changed(deployment)
        self._next_cache.clear()
        top = self._peek()
        log.info(
            "scheduler_started",
            scheduled=len(self._entries),
            recovered=len(recovered),
            next_fire_at=format_ts(from_micros(top.fire_at_us)) if top else None,
        )

    def _count_missed_while_down(self, entry: _Entry, first: datetime, floor: datetime) -> None:
        """Count (up to a cap) and log, in one line, the occurrences missed while stopped."""
        count = 0
        for scheduled_at in itertools.chain((first,), entry.schedule.iter_after(first)):
            if scheduled_at > floor or count == _MISSED_COUNT_MAX:
                break
            count += 1
        self._firing.stats.missed += count
        log.warning(
            "occurrence_missed",
            deployment_id=entry.deployment_id,
            scheduled_at=format_ts(first),
            count=count,
            capped=count == _MISSED_COUNT_MAX,
            reason="daemon_down",
            misfire_grace_s=self._misfire_grace,
        )

    def _new_entry(
        self,
        deployment_id: str,
        spec: Schedule,
        compiled: dict[tuple[str, str], CompiledSchedule | None] | None = None,
    ) -> _Entry | None:
        key = (spec.expression, spec.timezone)
        if compiled is not None and key in compiled:
            schedule = compiled[key]
        else:
            try:
                schedule = compile_schedule(spec.expression, spec.timezone)
            except AgentcronError as exc:  # stored before a stricter validator; never fire it
                log.error("schedule_invalid", deployment_id=deployment_id, error=str(exc))
                schedule = None
            if compiled is not None:
                compiled[key] = schedule
        if schedule is None:
            return None
        jitter_us = round(jitter_offset(deployment_id, self._max_jitter) * 1_000_000)
        return _Entry(deployment_id, schedule, jitter_us)

    # --- the heap ------------------------------------------------------------------------------

    def _next_after(self, schedule: CompiledSchedule, after: datetime) -> tuple[datetime, int]:
        """``schedule.next_after`` (and its epoch microseconds), memoized: deployments sharing
        a schedule and a starting point share the answer (a burst, the startup)."""
        key = (schedule.expression, schedule.timezone, after)
        found = self._next_cache.get(key)
        if found is None:
            if len(self._next_cache) >= _NEXT_CACHE_MAX:
                self._next_cache.clear()
            instant = schedule.next_after(after)
            found = (instant, to_micros(instant))
            self._next_cache[key] = found
        return found

    def _push(self, entry: _Entry, occurrence: tuple[datetime, int]) -> None:
        entry.scheduled_at, micros = occurrence
        entry.fire_at_us = micros + entry.jitter_us
        entry.token = next(self._tokens)
        if self._started:
            heapq.heappush(self._heap, (entry.fire_at_us, entry.token, entry))
        else:
            self._heap.append((entry.fire_at_us, entry.token, entry))  # heapified at the end
        if len(self._heap) > 2 * len(self._entries) + 1024:
            self._compact()

    def _is_current(self, token: int, entry: _Entry) -> bool:
        return entry.token == token and self._entries.get(entry.deployment_id) is entry

    def _peek(self) -> _Entry | None:
        heap = self._heap
        while heap and not self._is_current(heap[0][1], heap[0][2]):
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def _compact(self) -> None:
        self._heap = [item for item in self._heap if self._is_current(item[1], item[2])]
        heapq.heapify(self._heap)

    # --- the loop ------------------------------------------------------------------------------

    async def _loop(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            if self._heartbeat is not None:
                self._heartbeat()
            self._wake_requested = False
            now_us = to_micros(self._clock.now())
            handled = 0
            while self._heap and self._heap[0][0] <= now_us:
                _, token, entry = heapq.heappop(self._heap)
                if not self._is_current(token, entry):
                    continue
                self._handle_due(entry, now_us, tg)
                handled += 1
                if handled % _YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
            if handled:
                self._next_cache.clear()
            top = self._peek()
            delay = self._max_sleep
            if top is not None:
                delay = min(delay, (top.fire_at_us - now_us) / 1_000_000)
            await self._park(delay)

    def _handle_due(self, entry: _Entry, now_us: int, tg: anyio.abc.TaskGroup) -> None:
        scheduled_at = entry.scheduled_at
        assert scheduled_at is not None
        fire_at_us = entry.fire_at_us
        if now_us - fire_at_us > self._grace_us:
            self._firing.stats.missed += 1
            log.warning(
                "occurrence_missed",
                deployment_id=entry.deployment_id,
                scheduled_at=format_ts(scheduled_at),
                count=1,
                reason="late",
                late_s=round((now_us - fire_at_us) / 1_000_000, 3),
                misfire_grace_s=self._misfire_grace,
            )
        else:
            due = DueFire(
                deployment_id=entry.deployment_id,
                expression=entry.schedule.expression,
                timezone=entry.schedule.timezone,
                scheduled_at=scheduled_at,
                fire_at=from_micros(fire_at_us),
                is_live=lambda: self._entries.get(entry.deployment_id) is entry,
            )
            self._firing.submit(due, tg)
        self._push(entry, self._next_after(entry.schedule, scheduled_at))

    async def _park(self, delay: float) -> None:
        """Sleep ``delay`` seconds on the clock unless ``deployment_changed`` wakes us first."""
        if self._wake_requested:
            await anyio.lowlevel.checkpoint()
            return
        scope = anyio.CancelScope()
        self._sleep_scope = scope
        self._parked = True
        self._changes.notify()
        try:
            with scope:
                await self._clock.sleep(delay)
        finally:
            self._parked = False
            self._sleep_scope = None

    def _wake(self) -> None:
        self._wake_requested = True
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()
