"""The runtime on a real journal file, a fake clock and a recording launcher.

``scheduler_rig`` opens the journal, wires the runtime with the daemon's own ``build_stack`` and
starts the scheduler's loop in a task group; ``Rig.advance`` moves the fake clock and waits until
every fire it caused is durably completed. ``stored_deployment`` is a deployment as the service
would store it. Shared by the runtime tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from agentcron import ids
from agentcron.core.models import AgentRef, Deployment, DeploymentRun, Schedule
from agentcron.daemon import Stack, build_stack
from agentcron.journal import Journal, SqliteJournal
from agentcron.runtime.scheduler import Scheduler
from agentcron.runtime.service import DeploymentService
from tests.support.fakes import FakeClock, RecordingLauncher

START = datetime(2026, 6, 1, 11, 59, tzinfo=UTC)
NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def deployment_body(
    expression: str = "0 12 * * *", timezone: str = "UTC", **extra: Any
) -> dict[str, Any]:
    return {
        "name": "nightly report",
        "agent": "agent_test",
        "environment_id": "env_test",
        "initial_events": [
            {"type": "user.message", "content": [{"type": "text", "text": "write the report"}]}
        ],
        "schedule": {"type": "cron", "expression": expression, "timezone": timezone},
        **extra,
    }


@dataclass
class Rig:
    journal: Journal
    clock: FakeClock
    launcher: RecordingLauncher
    stack: Stack
    tg: anyio.abc.TaskGroup

    @property
    def service(self) -> DeploymentService:
        return self.stack.service

    @property
    def scheduler(self) -> Scheduler:
        return self.stack.scheduler

    async def advance(self, seconds: float) -> None:
        """Move the fake clock and wait until every fire it caused is durably completed."""
        await self.clock.advance(seconds)
        await self.scheduler.idle()

    async def advance_to(self, when: datetime, *, step: float = 3600.0) -> None:
        while (remaining := (when - self.clock.now()).total_seconds()) > 0:
            await self.advance(min(step, remaining))

    async def runs(self, deployment_id: str | None = None) -> list[DeploymentRun]:
        """Completed runs, oldest first."""
        page = await self.service.list_runs(deployment_id=deployment_id, limit=1000)
        return list(reversed(page.data))

    async def scheduled_ats(self, deployment_id: str) -> list[datetime | None]:
        return [run.scheduled_at for run in await self.runs(deployment_id)]


@asynccontextmanager
async def scheduler_rig(
    path: Path,
    *,
    start: datetime = START,
    launcher: RecordingLauncher | None = None,
    **options: Any,
) -> AsyncIterator[Rig]:
    """A journal file, a service and a running scheduler; stopped and closed on exit."""
    options.setdefault("max_jitter", 0.0)
    options.setdefault("max_sleep", 3600.0)
    async with SqliteJournal.open(path) as journal:
        clock = FakeClock(start)
        launcher = launcher or RecordingLauncher()
        stack = build_stack(journal=journal, launcher=launcher, clock=clock, **options)
        async with anyio.create_task_group() as tg:
            await tg.start(stack.scheduler.run)
            await stack.scheduler.idle()
            yield Rig(journal, clock, launcher, stack, tg)
            tg.cancel_scope.cancel()


def stored_deployment(now: datetime, expression: str = "0 12 * * *") -> Deployment:
    """A deployment as the service would store it (for bulk inserts straight into the journal)."""
    return Deployment(
        id=ids.new_id(ids.DEPLOYMENT),
        name="bulk",
        description=None,
        agent=AgentRef(id="agent_test", version=1),
        environment_id="env_test",
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
        schedule=Schedule(expression=expression, timezone="UTC"),
        created_at=now,
        updated_at=now,
    )
