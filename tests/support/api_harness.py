"""The real API stack on a real Unix socket, served from a background thread's event loop.

``running_api`` opens a journal in a temporary directory, builds the deployment service and the
scheduler around a ``RecordingLauncher`` and a ``FakeClock``, and serves the control API on a
Unix socket, all inside an anyio blocking portal. The test thread then talks to the socket
with blocking clients (the SDK, httpx2, curl, the CLI) while the daemon's loop keeps running.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import anyio
import httpx2
from aiohttp import web
from anyio.from_thread import BlockingPortal, start_blocking_portal

from agentcron.api.app import create_app
from agentcron.api.socket import bind_control_socket, serve
from agentcron.core.models import AgentRef, DeploymentRun, RunError, TriggerType
from agentcron.daemon import build_stack
from agentcron.journal import Journal, SqliteJournal
from agentcron.runtime.scheduler import Scheduler
from agentcron.runtime.service import DeploymentService
from tests.support.fakes import FakeClock, RecordingLauncher

T = TypeVar("T")

START = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def deployment_body(**overrides: Any) -> dict[str, Any]:
    """A valid create body for the recording launcher's agent and environment."""
    body: dict[str, Any] = {
        "name": "nightly report",
        "agent": "agent_test",
        "environment_id": "env_test",
        "initial_events": [
            {"type": "user.message", "content": [{"type": "text", "text": "Write the report."}]}
        ],
        "schedule": {"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"},
    }
    body.update(overrides)
    return body


@dataclass
class ApiServer:
    """Handles to a running API stack; every ``call`` runs on the daemon's event loop."""

    socket_path: Path
    journal_path: Path
    portal: BlockingPortal
    journal: Journal
    service: DeploymentService
    scheduler: Scheduler
    launcher: RecordingLauncher
    clock: FakeClock
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    clients: list[anthropic.Anthropic | httpx2.Client] = field(default_factory=list)

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(func, *args)

    def step_wall(self, seconds: float) -> None:
        """Move the daemon's wall clock (not its monotonic clock) forward."""
        self.portal.call(self._step_wall, seconds)

    async def _step_wall(self, seconds: float) -> None:
        self.clock.step_wall(timedelta(seconds=seconds))

    def sdk(self, *, strict: bool = True, max_retries: int = 2) -> anthropic.Anthropic:
        """The official SDK, pointed at the socket exactly as SPEC §5 shows (closed at exit)."""
        client = anthropic.Anthropic(
            api_key="local",
            base_url="http://localhost",
            http_client=httpx2.Client(transport=httpx2.HTTPTransport(uds=str(self.socket_path))),
            max_retries=max_retries,
            _strict_response_validation=strict,
        )
        self.clients.append(client)
        return client

    def async_sdk(self, *, strict: bool = True) -> anthropic.AsyncAnthropic:
        """The async SDK on the socket; use it as ``async with`` in the test's own loop."""
        return anthropic.AsyncAnthropic(
            api_key="local",
            base_url="http://localhost",
            http_client=httpx2.AsyncClient(
                transport=httpx2.AsyncHTTPTransport(uds=str(self.socket_path))
            ),
            _strict_response_validation=strict,
        )

    def http(self) -> httpx2.Client:
        """A raw HTTP client on the socket, for requests the SDK would never send."""
        client = httpx2.Client(
            transport=httpx2.HTTPTransport(uds=str(self.socket_path)),
            base_url="http://localhost",
        )
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()

    def count(self, method: str, path: str) -> int:
        """How many requests the server answered for ``method path``."""
        return sum(1 for m, p, _ in self.requests if (m, p) == (method, path))

    def deployment_count(self) -> int:
        """Deployments in the journal, archived included (straight from the service)."""
        counts = self.call(self.service.counts)
        return int(counts["active"]) + int(counts["paused"]) + int(counts["archived"])

    def add_run(
        self,
        deployment_id: str,
        *,
        scheduled_at: datetime | None = None,
        error_type: str | None = None,
        at: datetime | None = None,
    ) -> DeploymentRun:
        """Write a completed run through the journal's run API (as the scheduler would)."""
        return self.portal.call(self._add_run, deployment_id, scheduled_at, error_type, at)

    async def _add_run(
        self,
        deployment_id: str,
        scheduled_at: datetime | None,
        error_type: str | None,
        at: datetime | None,
    ) -> DeploymentRun:
        deployment = await self.service.get(deployment_id)
        when = at or self.clock.now()
        claim = await self.journal.claim_run(
            deployment_id=deployment_id,
            agent=AgentRef(id=deployment.agent.id, version=deployment.agent.version),
            trigger_type=TriggerType.SCHEDULE if scheduled_at else TriggerType.MANUAL,
            scheduled_at=scheduled_at,
            claimed_at=when,
        )
        assert claim is not None
        error = RunError(type=error_type, message=f"{error_type} (test)") if error_type else None
        return await self.journal.complete_run(
            claim,
            session_id=None if error else f"sesn_test{claim.run_id[-8:]}",
            error=error,
            completed_at=when,
        )


@asynccontextmanager
async def _serve(
    state_dir: Path,
    socket_path: Path,
    portal: BlockingPortal,
    *,
    launcher: RecordingLauncher,
    max_request_bytes: int,
    allowed_uids: tuple[int, ...],
    allowed_gids: tuple[int, ...],
) -> AsyncIterator[ApiServer]:
    clock = FakeClock(START)
    async with SqliteJournal.open(state_dir / "journal.db") as journal:
        stack = build_stack(journal=journal, launcher=launcher, clock=clock, max_jitter=0.0)
        service, scheduler = stack.service, stack.scheduler
        app = create_app(
            service=service,
            manual_runs=stack.firing,
            scheduler=scheduler,
            clock=clock,
            journal_path=journal.path,
            max_request_bytes=max_request_bytes,
            allowed_uids=allowed_uids,
            allowed_gids=allowed_gids,
            metrics=stack.metrics,
            webhooks=stack.webhooks,
        )
        server = ApiServer(
            socket_path=socket_path,
            journal_path=journal.path,
            portal=portal,
            journal=journal,
            service=service,
            scheduler=scheduler,
            launcher=launcher,
            clock=clock,
        )

        async def record(request: web.Request, response: web.StreamResponse) -> None:
            server.requests.append((request.method, request.path, response.status))

        app.on_response_prepare.append(record)
        sock = bind_control_socket(socket_path)
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            await tg.start(serve, app, sock)
            yield server
            tg.cancel_scope.cancel()


@contextmanager
def short_socket_dir() -> Iterator[Path]:
    """A fresh directory with a short path (a Unix socket path must fit in 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="acapi-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def running_api(
    state_dir: Path,
    *,
    launcher: RecordingLauncher | None = None,
    max_request_bytes: int = 10 * 1024 * 1024,
    allowed_uids: tuple[int, ...] = (),
    allowed_gids: tuple[int, ...] = (),
) -> Iterator[ApiServer]:
    """Serve the API from a background event loop for the duration of the ``with``."""
    with (
        short_socket_dir() as socket_dir,
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(
            _serve(
                state_dir,
                socket_dir / "run" / "control.sock",
                portal,
                launcher=launcher or RecordingLauncher(),
                max_request_bytes=max_request_bytes,
                allowed_uids=allowed_uids,
                allowed_gids=allowed_gids,
            )
        ) as server,
    ):
        try:
            yield server
        finally:
            server.close_clients()
