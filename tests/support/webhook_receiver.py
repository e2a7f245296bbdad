"""A webhook receiver on loopback that verifies every delivery with the ``standardwebhooks``
library, as an operator's receiver would.

``WebhookReceiver`` is a real aiohttp server on ``127.0.0.1``. ``mode`` decides its answer:
``ok`` (204), ``down`` (503) or ``hang`` (never answers). Every request is recorded with its
verification outcome; ``delivered`` dedupes by ``webhook-id`` the verified requests it
answered 2xx. ``running_receiver`` serves it from a background thread for synchronous tests
(a daemon in a subprocess).
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from aiohttp import web
from anyio.from_thread import start_blocking_portal
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

Mode = Literal["ok", "down", "hang"]

SECRET = "whsec_" + base64.b64encode(b"agentcron-test-secret-32-bytes!!").decode()
"""A Standard Webhooks secret (32 bytes) for tests; never a real one."""


@dataclass(frozen=True, slots=True)
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    verification_error: str | None
    status: int | None  # what the receiver answered (None: it hung)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class WebhookReceiver:
    secret: str = SECRET
    mode: Mode = "ok"
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    hanging: int = 0
    _arrived: anyio.Event | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def verify(self, body: bytes, headers: dict[str, str]) -> Any:
        """The library's verification (raises ``WebhookVerificationError``)."""
        return Webhook(self.secret).verify(body, headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        try:
            self.verify(body, headers)
            verified, problem = True, None
        except WebhookVerificationError as exc:
            verified, problem = False, str(exc)
        mode = self.mode
        status = {"ok": 204, "down": 503}.get(mode)
        self.requests.append(
            Received(
                webhook_id=headers.get("webhook-id", ""),
                headers=headers,
                body=body,
                verified=verified,
                verification_error=problem,
                status=status,
            )
        )
        if self._arrived is not None:
            self._arrived.set()
        if mode == "hang":
            self.hanging += 1
            try:
                await anyio.sleep_forever()
            finally:
                self.hanging -= 1
        return web.Response(status=status or 500)

    def delivered(self) -> dict[str, Received]:
        """Verified requests answered 2xx, one per ``webhook-id`` (the receiver's dedupe)."""
        return {
            r.webhook_id: r
            for r in self.requests
            if r.verified and r.status is not None and 200 <= r.status < 300
        }

    async def wait_for_requests(self, count: int) -> None:
        while len(self.requests) < count:
            self._arrived = anyio.Event()
            await self._arrived.wait()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[WebhookReceiver]:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


@contextmanager
def running_receiver(receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    """Serve ``receiver`` from a background event loop for the ``with`` block."""
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(receiver.serving()) as served,
    ):
        yield served
