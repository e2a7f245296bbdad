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
item it either counts the occurrence as missed (more than ``misfire_grace`` late) or queues a
fire (``agentcron.runtime.firing``), then pushes the deployment's next occurrence. The loop never
awaits a session creation.

Reading ahead: whenever the loop is awake, items due within ``_READ_AHEAD_US`` move from the
main heap to a small second heap (``_soon``, same item shape) and their deployments are read in
one background query, so a fire in a burst goes straight to its claim, and the fire path hears
how many fires are that close (``Firing.expect``). With a launcher that warms ahead
(``managed_agents``: it opens its connections before a burst) the loop also wakes that long
before the main heap's earliest item; otherwise it never wakes early for reading ahead. Due
items are taken from both heaps in fire order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import structlog

from agentcron.clock import Clock
from agentcron.core.jitter import jitter_offset
from agentcron.core.models import Deployment, DeploymentRun
from agentcron.core.schedule import CompiledSchedule, compile_schedule
from agentcron.core.timeutil import format_ts, from_micros, to_micros
from agentcron.errors import AgentcronError
from agentcron.journal import Journal, OutboxEvent
from agentcron.metrics import Metrics
from agentcron.runtime.copies import DeploymentCopies
from agentcron.runtime.firing import DueFire, Firing
from agentcron.runtime.outbox import Outbox

log = structlog.get_logger("agentcron.scheduler")

_YIELD_EVERY = 256  # due items handled between checkpoints, so a burst never starves the API
_NEXT_CACHE_MAX = 50_000  # ~10 MB at most during the startup; cleared after it
_NEXT_CACHE_RUNNING_MAX = 4096  # afterwards: a burst of one schedule shares one answer
_MISSED_COUNT_MAX = 100  # downtime misses counted per deployment at startup (bounds the work)
_READ_AHEAD_US = 2_000_000  # deployments are read (batched) this long before they fire
_SOON_MAX = 4096  # occurrences read ahead at once; later ones wait, or read when due


class _Entry:
    """The live heap entry of one deployment (mutable; replaced when its schedule changes).

    Lean on purpose (no deployment snapshot): 100,000 of them fit in a few tens of MB. The fire
    path reads the deployment from the journal. ``live`` turns False when the entry leaves
    ``Scheduler._entries`` (a due fire of it still queued is then dropped).
    """

    __slots__ = (
        "deployment_id",
        "fire_at_us",
        "jitter_us",
        "live",
        "schedule",
        "scheduled_at",
        "token",
    )

    def __init__(self, deployment_id: str, schedule: CompiledSchedule, jitter_us: int) -> None:
        self.deployment_id = deployment_id
        self.schedule = schedule
        self.jitter_us = jitter_us
        self.scheduled_at: datetime | None = None
        self.fire_at_us = 0
        self.token = 0
        self.live = True


class Scheduler:
    """Fires every scheduled deployment at its occurrences through ``firing``."""

    def __init__(
        self,
        *,
        journal: Journal,
        firing: Firing,
        copies: DeploymentCopies,
        clock: Clock,
        max_jitter: float = 10.0,
        misfire_grace: float = 60.0,
        max_sleep: float = 30.0,
        shutdown_grace: float = 10.0,
        heartbeat: Callable[[], None] | None = None,
        outbox: Outbox | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``outbox`` gets missed occurrences and recovered runs (webhooks); ``metrics``
        counts them."""
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
        self._outbox = outbox
        self._metrics = metrics
        self._firing = firing
        self._copies = copies
        self._changes = firing.changes
        self._missed = 0
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[int, int, _Entry]] = []
        self._soon: list[tuple[int, int, _Entry]] = []  # due within _READ_AHEAD_US: read ahead
        self._tokens = itertools.count(1)
        self._next_cache: dict[tuple[str, str, int], tuple[datetime, int]] = {}
        self._started = False
        self._early: dict[str, Deployment] = {}  # changes seen while the heap was being built
        self._sleep_scope: anyio.CancelScope | None = None
        self._wake_requested = False
        self._parked = False

    # --- the public contract -------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover, build the heap, report started, then fire until cancelled; drain on exit.

        May run again after it ended (a daemon that leads again after stepping down): each
        run starts from the journal, as a restart does."""
        self._reset()
        await self._startup()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._firing.run)
                if self._outbox is not None:
                    await tg.start(self._outbox.run)
                task_status.started()
                try:
                    await self._loop()
                finally:
                    self._parked = False
                    with anyio.CancelScope(shield=True):
                        log.info("scheduler_stopping", in_flight=self._firing.stats.in_flight)
                        await self._firing.drain(self._shutdown_grace)
                    tg.cancel_scope.cancel()  # fires that have not claimed yet never will
        finally:
            self._started = False
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
                self._set_entry(deployment.id, None)
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
        entry = self._new_entry(deployment.id, schedule.expression, schedule.timezone)
        self._set_entry(deployment.id, entry)  # None cannot happen for a validated schedule
        if entry is None:
            return
        self._push(entry, self._next_after(entry.schedule, to_micros(self._clock.now())))
        self._wake()

    def health(self) -> dict[str, Any]:
        """Counters for ``/v1/health`` and the systemd status line."""
        stats = self._firing.stats
        top = self._peek()
        return {
            "fired": stats.fired,
            "succeeded": stats.succeeded,
            "failed": dict(stats.failed),
            "missed": self._missed,
            "duplicates": stats.duplicates,
            "in_flight": stats.in_flight,
            "scheduled": len(self._entries),
            "next_fire_at": format_ts(from_micros(top.fire_at_us)) if top else None,
        }

    def next_fire_at(self) -> datetime | None:
        """The next fire (jitter included), or ``None`` when nothing is scheduled."""
        top = self._peek()
        return from_micros(top.fire_at_us) if top else None

    async def idle(self) -> None:
        """Return once the loop is asleep with nothing due and no fire is in flight.

        For tests and benchmarks: the journal writes in a thread, so "all tasks blocked" is not
        the same as "every fire durably completed".
        """
        await self._changes.wait_until(
            lambda: self._parked and not self._wake_requested and self._firing.stats.in_flight == 0
        )

    # --- startup -------------------------------------------------------------------------------

    def _reset(self) -> None:
        """Forget the heap of an earlier run (the journal is read again)."""
        for entry in self._entries.values():
            entry.live = False
        self._entries = {}
        self._heap = []
        self._soon = []
        self._early = {}
        self._next_cache.clear()

    async def _startup(self) -> None:
        now = self._clock.now()
        outbox, metrics = self._outbox, self._metrics
        written: list[OutboxEvent] = []
        events_for: Callable[[DeploymentRun], tuple[OutboxEvent, ...]] | None = None
        if outbox is not None and outbox.wants_run(failed=True):

            def events_for(run: DeploymentRun) -> tuple[OutboxEvent, ...]:
                events = outbox.run_events(run)
                written.extend(events)
                return events

        recovered = await self._journal.recover_open_claims(now, events_for=events_for)
        if outbox is not None:
            outbox.committed(written)
        for run in recovered:
            if metrics is not None:
                metrics.run_recorded(
                    run.trigger_type.value, run.error.type if run.error else "session"
                )
            log.warning(
                "run_recovered",
                deployment_id=run.deployment_id,
                run_id=run.id,
                scheduled_at=format_ts(run.scheduled_at) if run.scheduled_at else None,
                outcome=run.error.type if run.error else None,
            )
        rows = await self._journal.schedule_rows()
        floor = now - timedelta(seconds=self._misfire_grace + self._max_jitter)
        floor_us = to_micros(floor)
        compiled: dict[tuple[str, str], CompiledSchedule | None] = {}
        for deployment_id, expression, timezone, updated_at, latest in rows:
            entry = self._new_entry(deployment_id, expression, timezone, compiled)
            if entry is None:
                continue
            # Occurrences after the last one handled (its run, or the change that set the
            # current schedule / unpaused) and before the grace window were missed while down.
            seen_us = updated_at if latest is None else max(latest, updated_at)
            upcoming = self._next_after(entry.schedule, max(seen_us, floor_us))
            if seen_us < floor_us:
                first, _ = self._next_after(entry.schedule, seen_us)
                if first <= floor:
                    self._count_missed_while_down(entry, first, floor)
            self._set_entry(deployment_id, entry)
            self._push(entry, upcoming)
        del rows
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
        self._missed += count
        if self._metrics is not None:
            self._metrics.missed.inc(count)
        if self._outbox is not None:
            self._outbox.occurrence_missed(
                entry.deployment_id, first, count=count, reason="daemon_down"
            )
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
        expression: str,
        timezone: str,
        compiled: dict[tuple[str, str], CompiledSchedule | None] | None = None,
    ) -> _Entry | None:
        key = (expression, timezone)
        if compiled is not None and key in compiled:
            schedule = compiled[key]
        else:
            try:
                schedule = compile_schedule(expression, timezone)
            except AgentcronError as exc:  # stored before a stricter validator; never fire it
                log.error("schedule_invalid", deployment_id=deployment_id, error=str(exc))
                schedule = None
            if compiled is not None:
                compiled[key] = schedule
        if schedule is None:
            return None
        jitter_us = round(jitter_offset(deployment_id, self._max_jitter) * 1_000_000)
        return _Entry(deployment_id, schedule, jitter_us)

    def _set_entry(self, deployment_id: str, entry: _Entry | None) -> None:
        """Make ``entry`` the deployment's live entry (None: it has none); the one it replaces
        is no longer live, so a fire of it still queued is dropped."""
        if entry is None:
            previous = self._entries.pop(deployment_id, None)
        else:
            previous = self._entries.get(deployment_id)
            self._entries[deployment_id] = entry
        if previous is not None and previous is not entry:
            previous.live = False

    # --- the heap ------------------------------------------------------------------------------

    def _next_after(self, schedule: CompiledSchedule, after_us: int) -> tuple[datetime, int]:
        """``schedule.next_after`` of the instant ``after_us`` (epoch microseconds), with its
        epoch microseconds, memoized: deployments sharing a schedule and a starting point share
        the answer (a burst, the startup)."""
        key = (schedule.expression, schedule.timezone, after_us)
        found = self._next_cache.get(key)
        if found is None:
            if len(self._next_cache) >= (
                _NEXT_CACHE_RUNNING_MAX if self._started else _NEXT_CACHE_MAX
            ):
                self._next_cache.clear()
            instant = schedule.next_after(from_micros(after_us))
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
        """The live entry that fires first (from either heap), or None."""
        item = self._top(self._soon)
        later = self._top(self._heap)
        if item is None or (later is not None and later[:2] < item[:2]):
            item = later
        return item[2] if item else None

    def _top(self, heap: list[tuple[int, int, _Entry]]) -> tuple[int, int, _Entry] | None:
        """The first current item of ``heap`` (stale ones above it are dropped), or None."""
        while heap and not self._is_current(heap[0][1], heap[0][2]):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _compact(self) -> None:
        self._heap = [item for item in self._heap if self._is_current(item[1], item[2])]
        heapq.heapify(self._heap)

    def _pop_due(self, now_us: int) -> _Entry | None:
        """Pop the earliest current item due at ``now_us`` from either heap, or None."""
        soon = self._top(self._soon)
        later = self._top(self._heap)
        if soon is not None and (later is None or soon[:2] < later[:2]):
            if soon[0] > now_us:
                return None
            return heapq.heappop(self._soon)[2]
        if later is None or later[0] > now_us:
            return None
        return heapq.heappop(self._heap)[2]

    def _read_ahead(self, now_us: int) -> None:
        """Move what fires within ``_READ_AHEAD_US`` to the soon heap and read it ahead.

        Done whenever the loop is awake anyway (it never wakes early for it): in a burst, each
        wake-up reads the next seconds' deployments in one query, so only the burst's first
        fire reads its own.
        """
        heap, soon = self._heap, self._soon
        horizon = now_us + _READ_AHEAD_US
        ids: list[str] = []
        while heap and heap[0][0] <= horizon and len(soon) < _SOON_MAX:
            item = heapq.heappop(heap)
            if self._is_current(item[1], item[2]):
                heapq.heappush(soon, item)
                ids.append(item[2].deployment_id)
        if ids:
            self._copies.read_ahead(ids)
            self._firing.expect(len(soon))

    # --- the loop ------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if self._heartbeat is not None:
                self._heartbeat()
            self._wake_requested = False
            now_us = to_micros(self._clock.now())
            handled = 0
            while (entry := self._pop_due(now_us)) is not None:
                self._handle_due(entry, now_us)
                handled += 1
                if handled % _YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
            self._read_ahead(now_us)
            delay = self._max_sleep * 1_000_000
            soon = self._top(self._soon)
            if soon is not None:
                delay = min(delay, soon[0] - now_us)
            later = self._top(self._heap)
            if later is not None:
                wake = later[0] - now_us
                if (
                    self._firing.warms_ahead
                    and wake > _READ_AHEAD_US
                    and len(self._soon) < _SOON_MAX
                ):
                    wake -= _READ_AHEAD_US  # read and warm ahead of it
                delay = min(delay, wake)
            await self._park(max(delay, 0) / 1_000_000)

    def _handle_due(self, entry: _Entry, now_us: int) -> None:
        scheduled_at = entry.scheduled_at
        assert scheduled_at is not None
        fire_at_us = entry.fire_at_us
        if now_us - fire_at_us > self._grace_us:
            self._missed += 1
            if self._metrics is not None:
                self._metrics.missed.inc()
            if self._outbox is not None:
                self._outbox.occurrence_missed(
                    entry.deployment_id, scheduled_at, count=1, reason="late"
                )
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
                entry=entry,
            )
            self._firing.submit(due)
        self._push(entry, self._next_after(entry.schedule, fire_at_us - entry.jitter_us))

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
