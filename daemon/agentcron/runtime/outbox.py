"""The outbox's front: which changes become webhook events, for which endpoints.

The service and the fire path ask ``Outbox`` for the events of a change *before* writing it
and hand them to the journal with that write (``events=``), so an event is committed with its
cause or not at all; after the commit they call ``committed(events)``, which wakes the delivery
worker's lanes of those endpoints (``agentcron.runtime.delivery``). A change nobody subscribes
to costs one dictionary lookup and no row.

``occurrence.missed`` has no journal write of its own: the scheduler's loop (which never
awaits) queues it with ``occurrence_missed``, and ``run``, a task of the scheduler's group,
writes what is queued with ``Journal.add_events``. A crash can lose a queued miss (it was never
a run), never an event of a committed run or deployment change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

import anyio
import anyio.abc
import structlog

from agentcron import ids
from agentcron.clock import Clock
from agentcron.core.events import EventType, event_body, missed_data
from agentcron.core.models import Deployment, DeploymentRun
from agentcron.core.wire import deployment_to_wire, run_to_wire
from agentcron.errors import AgentcronError
from agentcron.journal import Journal, OutboxEvent

log = structlog.get_logger("agentcron.webhooks")

Wake = Callable[[Iterable[str]], None]
_NONE: tuple[OutboxEvent, ...] = ()


class Outbox:
    """Builds the events of committed changes for the endpoints subscribed to them."""

    def __init__(
        self,
        *,
        journal: Journal,
        clock: Clock,
        subscriptions: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """``subscriptions``: endpoint name -> the event types it wants."""
        self._journal = journal
        self._clock = clock
        by_type: dict[str, list[str]] = {}
        for endpoint, event_types in (subscriptions or {}).items():
            for event_type in event_types:
                by_type.setdefault(str(event_type), []).append(endpoint)
        self._by_type = {key: tuple(names) for key, names in by_type.items()}
        self._wakes: list[Wake] = []
        self._missed: list[OutboxEvent] = []
        self._missed_ready: anyio.Event | None = None

    @property
    def enabled(self) -> bool:
        """Some endpoint subscribes to something."""
        return bool(self._by_type)

    def on_commit(self, wake: Wake) -> None:
        """Call ``wake(endpoint_names)`` after events for those endpoints were committed."""
        self._wakes.append(wake)

    # --- building events ---------------------------------------------------------------------

    def _event(self, event_type: str, data: dict[str, object], now: datetime) -> OutboxEvent:
        return OutboxEvent(
            id=ids.new_id(ids.WEBHOOK_MESSAGE),
            type=event_type,
            body=event_body(event_type, now, data),
            created_at=now,
            endpoints=self._by_type[event_type],
        )

    def wants_run(self, failed: bool) -> bool:
        """Someone subscribes to runs with this outcome (checked before building a run)."""
        key = EventType.RUN_FAILED if failed else EventType.RUN_SUCCEEDED
        return key in self._by_type

    def run_events(self, run: DeploymentRun) -> tuple[OutboxEvent, ...]:
        """``deployment_run.failed`` or ``deployment_run.succeeded`` for ``run`` (if wanted)."""
        event_type = EventType.RUN_FAILED if run.error is not None else EventType.RUN_SUCCEEDED
        if event_type not in self._by_type:
            return _NONE
        return (self._event(event_type, run_to_wire(run), self._clock.now()),)

    def deployment_events(
        self, event_type: EventType, deployment: Deployment
    ) -> tuple[OutboxEvent, ...]:
        """``deployment.paused`` / ``deployment.archived`` for the changed ``deployment``."""
        if event_type not in self._by_type:
            return _NONE
        now = self._clock.now()
        return (self._event(event_type, deployment_to_wire(deployment, now), now),)

    def committed(self, events: Sequence[OutboxEvent]) -> None:
        """The journal committed ``events``: wake their endpoints' delivery lanes."""
        if not events:
            return
        names = {name for event in events for name in event.endpoints}
        for wake in self._wakes:
            wake(names)

    # --- missed occurrences --------------------------------------------------------------------

    def occurrence_missed(
        self, deployment_id: str, scheduled_at: datetime, *, count: int, reason: str
    ) -> None:
        """Queue ``occurrence.missed`` (sync, for the scheduler's loop); ``run`` writes it."""
        if EventType.OCCURRENCE_MISSED not in self._by_type:
            return
        data = missed_data(deployment_id, scheduled_at, count=count, reason=reason)
        self._missed.append(self._event(EventType.OCCURRENCE_MISSED, data, self._clock.now()))
        if self._missed_ready is not None:
            self._missed_ready.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Write queued missed occurrences until cancelled (then what is still queued)."""
        task_status.started()
        try:
            while True:
                if not self._missed:
                    self._missed_ready = anyio.Event()
                    await self._missed_ready.wait()
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        """Write the queued missed occurrences now (one transaction)."""
        events, self._missed = self._missed, []
        if not events:
            return
        try:
            await self._journal.add_events(events)
        except AgentcronError as exc:
            log.error("webhook_events_lost", events=len(events), error=str(exc))
            return
        self.committed(events)
