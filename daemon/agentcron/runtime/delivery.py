"""Webhook delivery: the outbox's pending deliveries, signed and POSTed, at least once.

``WebhookDelivery.run`` is its own task group with one *lane* per configured endpoint, so a
slow or dead endpoint holds up nothing but itself: not the fire path (which only writes events
with its journal writes, ``agentcron.runtime.outbox``), not the other endpoints. A lane takes
its endpoint's pending deliveries from the journal, earliest due first, and sends them one at
a time; it is woken when new events for it commit, and otherwise sleeps (on the injected
clock) until the next one is due.

Each attempt is signed per the Standard Webhooks spec (``webhook-id`` = the event id, the same
on every attempt, so receivers can dedupe; ``webhook-timestamp``; ``webhook-signature`` =
``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` with the ``whsec_`` secret, computed by
the ``standardwebhooks`` package). A 2xx answer delivers it; anything else, a timeout or a
connection error is a failed attempt: the delivery is retried after the endpoint's backoff
(``agentcron.core.events``) and given up once it has been retried for ``retry_for``; the lane
itself pauses for the same backoff before its next attempt, so a dead endpoint gets one probe
per step instead of one request per queued event. An endpoint whose attempts have all failed
for ``retry_for`` is disabled (logged, ``agentcron_webhook_endpoint_disabled``) until
``retry`` (``agentcron webhooks retry``) re-enables it; its events keep queueing meanwhile.
Every attempt's outcome and the endpoint's state are written together, so all of this survives
a restart.
"""

from __future__ import annotations

import binascii
import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import anyio.abc
import structlog
from standardwebhooks.webhooks import Webhook

from agentcron import __version__, ids
from agentcron.clock import Clock
from agentcron.config import WebhookConfig
from agentcron.core.events import TEST_EVENT, event_body, next_attempt_at, retry_delay
from agentcron.core.timeutil import format_ts
from agentcron.errors import AgentcronError, ConfigError, NotFound, ServiceUnavailable
from agentcron.journal import Delivery, DeliveryStatus, EndpointState, Journal
from agentcron.metrics import Metrics

log = structlog.get_logger("agentcron.webhooks")

SECRET_PREFIX = "whsec_"
BATCH = 100
"""Pending deliveries a lane reads per journal query."""
JOURNAL_RETRY = 5.0
"""Seconds a lane waits after the journal could not be read or written."""


def load_secret(path: Path, key: str) -> Webhook:
    """The signer for a ``whsec_...`` secret in ``path``; ``ConfigError`` naming ``key`` (never
    the secret) when the file is unreadable or holds no such secret (24-64 bytes, base64)."""
    try:
        text = path.read_bytes().decode("utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"{key}: cannot read {path}: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError:
        raise ConfigError([f"{key}: {path} is not UTF-8 text"]) from None
    problem = f"{key}: {path} must hold one secret, whsec_ followed by 24-64 base64 bytes"
    if not text.startswith(SECRET_PREFIX):
        raise ConfigError([problem])
    try:
        raw = binascii.a2b_base64(text[len(SECRET_PREFIX) :] + "==", strict_mode=False)
    except (binascii.Error, ValueError):
        raise ConfigError([problem]) from None
    if not 24 <= len(raw) <= 64:
        raise ConfigError([problem])
    return Webhook(raw)


def redacted_url(url: str) -> str:
    """``scheme://host:port`` and ``/…`` if there is more: a path or query may hold a token."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    rest = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{rest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A configured endpoint and its signer (the secret never leaves ``signer``)."""

    config: WebhookConfig
    signer: Webhook

    @property
    def name(self) -> str:
        return self.config.name


def load_endpoints(configs: Sequence[WebhookConfig]) -> list[Endpoint]:
    """Every ``[[webhooks]]`` endpoint with its secret read; ``ConfigError`` lists problems."""
    problems: list[str] = []
    endpoints: list[Endpoint] = []
    for index, config in enumerate(configs):
        try:
            signer = load_secret(config.secret_file, f"webhooks[{index}].secret_file")
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        endpoints.append(Endpoint(config=config, signer=signer))
    if problems:
        raise ConfigError(problems)
    return endpoints


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptResult:
    """What one POST came to."""

    status_code: int | None
    error: str | None
    duration_s: float

    @property
    def delivered(self) -> bool:
        return self.error is None


class _Lane:
    """One endpoint's queue runner state."""

    def __init__(self, endpoint: Endpoint, state: EndpointState) -> None:
        self.endpoint = endpoint
        self.state = state
        self.failures = 0  # consecutive failed attempts (the lane's own backoff)
        self.hold_until: datetime | None = None
        self._wakeup = anyio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def wait(self, clock: Clock, seconds: float | None) -> None:
        """Until woken, or ``seconds`` on ``clock`` (``None``: only a wake-up)."""
        if not self._wakeup.is_set():
            async with anyio.create_task_group() as tg:
                if seconds is not None:

                    async def timer() -> None:
                        await clock.sleep(seconds)
                        tg.cancel_scope.cancel()

                    tg.start_soon(timer)
                await self._wakeup.wait()
                tg.cancel_scope.cancel()
        self._wakeup = anyio.Event()


class WebhookDelivery:
    """Delivers the outbox to every configured endpoint (see the module docstring)."""

    def __init__(
        self,
        *,
        journal: Journal,
        endpoints: Sequence[Endpoint],
        clock: Clock,
        metrics: Metrics | None = None,
        random_unit: Callable[[], float] = random.random,
        max_sleep: float = 30.0,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._metrics = metrics
        self._random = random_unit
        self._max_sleep = max_sleep
        self._lanes = {
            endpoint.name: _Lane(endpoint, EndpointState(name=endpoint.name))
            for endpoint in endpoints
        }
        self._http: aiohttp.ClientSession | None = None

    # --- what the outbox, the API and the CLI call --------------------------------------------

    def wake(self, endpoint_names: Iterable[str]) -> None:
        """New events for these endpoints were committed (``Outbox.on_commit``)."""
        for name in endpoint_names:
            lane = self._lanes.get(name)
            if lane is not None:
                lane.wake()

    def wake_all(self) -> None:
        """Look for due deliveries on every lane now (events another daemon committed)."""
        for lane in self._lanes.values():
            lane.wake()

    def endpoints(self) -> list[dict[str, Any]]:
        """Each configured endpoint as ``GET /v1/webhooks`` shows it (no secret, URL redacted)."""
        shown = []
        for lane in self._lanes.values():
            state, config = lane.state, lane.endpoint.config
            status = "enabled"
            if state.disabled_at is not None:
                status = "disabled"
            elif state.failing_since is not None:
                status = "failing"
            shown.append(
                {
                    "type": "webhook_endpoint",
                    "name": config.name,
                    "url": redacted_url(config.url),
                    "events": list(config.events),
                    "status": status,
                    "failing_since": _ts(state.failing_since),
                    "disabled_at": _ts(state.disabled_at),
                    "last_success_at": _ts(state.last_success_at),
                }
            )
        return shown

    async def list_deliveries(
        self,
        *,
        endpoint: str | None = None,
        status: DeliveryStatus | None = None,
        after: tuple[str, str] | None = None,
        limit: int,
    ) -> list[Delivery]:
        """The outbox, newest event first (``Journal.list_deliveries``)."""
        return await self._journal.list_deliveries(
            endpoint=endpoint, status=status, after=after, limit=limit
        )

    def _lane(self, name: str) -> _Lane:
        lane = self._lanes.get(name)
        if lane is None:
            known = ", ".join(sorted(self._lanes)) or "none"
            raise NotFound(f"webhook endpoint {name!r} is not configured; configured: {known}")
        return lane

    async def retry(self, name: str, *, event_id: str | None = None) -> int:
        """Re-enable endpoint ``name`` and make its failed and pending deliveries (or one
        event's) due now; returns how many. ``NotFound`` for an unknown endpoint or event."""
        lane = self._lane(name)
        count = await self._journal.retry_deliveries(name, now=self._clock.now(), event_id=event_id)
        if event_id is not None and count == 0:
            raise NotFound(f"no failed or pending delivery of {event_id} to {name}")
        lane.state = dataclasses.replace(lane.state, failing_since=None, disabled_at=None)
        lane.failures = 0
        lane.hold_until = None
        self._publish_disabled()
        log.info("webhook_retry_requested", endpoint=name, deliveries=count, event_id=event_id)
        lane.wake()
        return count

    async def send_test(self, name: str) -> dict[str, Any]:
        """POST one signed ``webhook.test`` event to ``name`` now (not stored, not retried)."""
        lane = self._lane(name)
        now = self._clock.now()
        event_id = ids.new_id(ids.WEBHOOK_MESSAGE)
        body = event_body(TEST_EVENT, now, {"type": "webhook_test", "endpoint": name})
        result = await self._post(lane.endpoint, event_id, body)
        log.info(
            "webhook_test_sent",
            endpoint=name,
            event_id=event_id,
            status_code=result.status_code,
            error=result.error,
        )
        return {
            "type": "webhook_test",
            "endpoint": name,
            "event_id": event_id,
            "delivered": result.delivered,
            "status_code": result.status_code,
            "error": result.error,
            "duration_ms": round(result.duration_s * 1000, 3),
        }

    # --- the task group ------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """One lane per endpoint until cancelled (a lane's request in flight is dropped; its
        delivery stays pending and is sent again: at least once)."""
        try:
            states = await self._journal.endpoint_states()
        except AgentcronError as exc:
            log.error("webhook_states_unreadable", error=str(exc))
            states = {}
        for name, lane in self._lanes.items():
            if name in states:
                lane.state = states[name]
        self._publish_disabled()
        for lane in self._lanes.values():
            if lane.state.disabled_at is not None:
                log.warning(
                    "webhook_endpoint_disabled",
                    endpoint=lane.endpoint.name,
                    disabled_at=format_ts(lane.state.disabled_at),
                    hint="agentcron webhooks retry NAME re-enables it",
                )
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=2)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            self._http = http
            try:
                async with anyio.create_task_group() as tg:
                    for lane in self._lanes.values():
                        tg.start_soon(self._lane_loop, lane)
                    task_status.started()
            finally:
                self._http = None

    async def _lane_loop(self, lane: _Lane) -> None:
        clock = self._clock
        with structlog.contextvars.bound_contextvars(endpoint=lane.endpoint.name):
            while True:
                if lane.state.disabled_at is not None:
                    await lane.wait(clock, None)
                    continue
                now = clock.now()
                if lane.hold_until is not None and lane.hold_until > now:
                    await lane.wait(clock, (lane.hold_until - now).total_seconds())
                    continue
                try:
                    batch = await self._journal.pending_deliveries(lane.endpoint.name, limit=BATCH)
                except AgentcronError as exc:
                    log.error("webhook_deliveries_unreadable", error=str(exc))
                    await lane.wait(clock, JOURNAL_RETRY)
                    continue
                if not batch:
                    await lane.wait(clock, self._max_sleep)
                    continue
                await self._send_due(lane, batch)

    async def _send_due(self, lane: _Lane, batch: list[Delivery]) -> None:
        """Send the due deliveries of ``batch`` in order; stop at the first failure or at the
        first that is not due yet (then sleep until it is, or a wake-up)."""
        for delivery in batch:
            now = self._clock.now()
            assert delivery.next_attempt_at is not None  # pending
            if delivery.next_attempt_at > now:
                wait = (delivery.next_attempt_at - now).total_seconds()
                await lane.wait(self._clock, min(self._max_sleep, wait))
                return
            if not await self._attempt(lane, delivery):
                return

    async def _attempt(self, lane: _Lane, delivery: Delivery) -> bool:
        """One attempt, recorded with the endpoint's new state. True: go on with the next."""
        endpoint, config = lane.endpoint, lane.endpoint.config
        result = await self._post(endpoint, delivery.event_id, delivery.body)
        now = self._clock.now()
        state = lane.state
        next_at: datetime | None = None
        if result.delivered:
            state = dataclasses.replace(state, failing_since=None, last_success_at=now)
        else:
            failing_since = state.failing_since or now
            disabled_at = state.disabled_at
            if (now - failing_since).total_seconds() >= config.retry_for:
                disabled_at = now
            state = dataclasses.replace(state, failing_since=failing_since, disabled_at=disabled_at)
            next_at = next_attempt_at(
                attempts=delivery.attempts + 1,
                attempted_at=now,
                retry_from=delivery.retry_from,
                delays=config.retry_delays,
                retry_for=config.retry_for,
                u=self._random(),
            )
        try:
            await self._journal.record_attempt(
                delivery,
                attempted_at=now,
                status_code=result.status_code,
                error=result.error,
                next_attempt_at=next_at,
                endpoint_state=state,
            )
        except AgentcronError as exc:  # it stays pending: sent again later (at least once)
            log.error("webhook_attempt_unrecorded", event_id=delivery.event_id, error=str(exc))
            lane.hold_until = now + timedelta(seconds=JOURNAL_RETRY)
            return False
        was_disabled = lane.state.disabled_at is not None
        lane.state = state
        fields = {
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "attempt": delivery.attempts + 1,
        }
        if result.delivered:
            lane.failures = 0
            lane.hold_until = None
            self._count(endpoint.name, "delivered")
            log.debug("webhook_delivered", **fields, status_code=result.status_code)
            return True
        lane.failures += 1
        pause = retry_delay(lane.failures, config.retry_delays, self._random())
        lane.hold_until = now + timedelta(seconds=pause)
        if next_at is None:
            self._count(endpoint.name, "given_up")
            log.warning(
                "webhook_delivery_given_up",
                **fields,
                status_code=result.status_code,
                error=result.error,
                retried_for_s=config.retry_for,
            )
        else:
            self._count(endpoint.name, "failed")
            log.warning(
                "webhook_attempt_failed",
                **fields,
                status_code=result.status_code,
                error=result.error,
                next_attempt_at=format_ts(next_at),
            )
        if state.disabled_at is not None and not was_disabled:
            self._publish_disabled()
            log.warning(
                "webhook_endpoint_disabled",
                failing_since=_ts(state.failing_since),
                retry_for_s=config.retry_for,
                hint="agentcron webhooks retry NAME re-enables it",
            )
        return False

    async def _post(self, endpoint: Endpoint, event_id: str, body: str) -> AttemptResult:
        """One signed POST with the endpoint's timeout (on the clock); never raises."""
        http = self._http
        if http is None:
            raise ServiceUnavailable("webhook delivery is not running")
        config = endpoint.config
        sent_at = self._clock.now()
        headers = {
            "content-type": "application/json",
            "user-agent": f"agentcron/{__version__}",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": endpoint.signer.sign(event_id, sent_at, body),
        }
        began = time.perf_counter()
        status: int | None = None
        error: str | None = None
        timed_out = False
        async with anyio.create_task_group() as tg:

            async def deadline() -> None:
                nonlocal timed_out
                await self._clock.sleep(config.timeout)
                timed_out = True
                tg.cancel_scope.cancel()

            tg.start_soon(deadline)
            try:
                async with http.post(
                    config.url, data=body.encode(), headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    await response.read()
            except aiohttp.ClientConnectorError as exc:
                error = f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                # Only the class: an aiohttp message may quote the URL, which may hold a token.
                error = f"request failed: {type(exc).__name__}"
            finally:
                tg.cancel_scope.cancel()
        duration = time.perf_counter() - began
        if timed_out:
            error = f"timed out after {config.timeout:g}s"
        elif error is None and status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        elif error is None and status is None:
            error = "no response"
        return AttemptResult(status_code=status, error=error, duration_s=duration)

    def _count(self, endpoint: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_attempt(endpoint, outcome)

    def _publish_disabled(self) -> None:
        if self._metrics is not None:
            self._metrics.webhook_endpoints(
                {name: lane.state.disabled_at is not None for name, lane in self._lanes.items()}
            )


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)
