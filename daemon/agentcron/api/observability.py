"""``GET /metrics`` and the webhook routes of the control API, and the metrics-only listener.

On the control socket (``routes``, added by ``create_app``): ``GET /metrics`` (the Prometheus
text exposition), ``GET /v1/webhooks`` (the configured endpoints and their state),
``GET /v1/webhooks/deliveries`` (the outbox, newest first), ``POST /v1/webhooks/{name}/retry``
and ``POST /v1/webhooks/{name}/test``. These are agentcron's own: the hosted API has no
equivalent.

``serve_metrics`` is the optional TCP listener of ``[metrics] listen``: an application of its
own with the one route ``GET /metrics``, so nothing reachable over TCP can read a deployment
or change anything.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, cast

import anyio
import anyio.abc
import structlog
from aiohttp import web

from agentcron.api.params import decode_json_object, read_body
from agentcron.api.routes import MAX_REQUEST_BYTES, json_response
from agentcron.core.timeutil import format_ts
from agentcron.errors import InvalidRequest, NotFound, StartupError
from agentcron.journal import Delivery, DeliveryStatus
from agentcron.metrics import CONTENT_TYPE_LATEST, Metrics
from agentcron.runtime.delivery import WebhookDelivery

log = structlog.get_logger(__name__)

METRICS = web.AppKey("metrics", Metrics)
WEBHOOKS = web.AppKey("webhooks", WebhookDelivery)

DELIVERIES_DEFAULT_LIMIT = 20
DELIVERIES_MAX_LIMIT = 100
_STATUSES = ("pending", "delivered", "failed")

routes = web.RouteTableDef()


async def _metrics_response(request: web.Request) -> web.Response:
    metrics = request.app.get(METRICS)
    if metrics is None:
        raise NotFound("metrics are not collected by this server")
    body = await metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return await _metrics_response(request)


def _webhooks(request: web.Request) -> WebhookDelivery:
    delivery = request.app.get(WEBHOOKS)
    if delivery is None:
        raise NotFound("no webhooks are configured")
    return delivery


@routes.get("/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    delivery = request.app.get(WEBHOOKS)
    endpoints = delivery.endpoints() if delivery is not None else []
    return json_response({"data": endpoints, "next_page": None})


def delivery_to_wire(delivery: Delivery) -> dict[str, Any]:
    """A delivery as the API shows it (the event's body is not repeated here)."""

    def ts(value: Any) -> str | None:
        return None if value is None else format_ts(value)

    return {
        "type": "webhook_delivery",
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "endpoint": delivery.endpoint,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "created_at": format_ts(delivery.created_at),
        "next_attempt_at": ts(delivery.next_attempt_at),
        "last_attempt_at": ts(delivery.last_attempt_at),
        "last_status_code": delivery.last_status,
        "last_error": delivery.last_error,
        "delivered_at": ts(delivery.delivered_at),
    }


def _cursor(delivery: Delivery) -> str:
    raw = f"{delivery.event_id}|{delivery.endpoint}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _position(page: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(page + "=" * (-len(page) % 4)).decode()
    except (binascii.Error, ValueError):
        raise InvalidRequest("page: not a cursor of this list") from None
    event_id, sep, endpoint = raw.partition("|")
    if not sep or not event_id.startswith("msg_") or not endpoint:
        raise InvalidRequest("page: not a cursor of this list")
    return event_id, endpoint


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"{name}: given more than once")
    return values[0] if values else None


@routes.get("/v1/webhooks/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    endpoint = _one(request, "endpoint")
    status = _one(request, "status")
    if status is not None and status not in _STATUSES:
        raise InvalidRequest(f"status: must be one of {', '.join(_STATUSES)}, got {status!r}")
    limit_text = _one(request, "limit")
    limit = DELIVERIES_DEFAULT_LIMIT
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= DELIVERIES_MAX_LIMIT:
            raise InvalidRequest(f"limit: must be between 1 and {DELIVERIES_MAX_LIMIT}")
        limit = int(limit_text)
    page = _one(request, "page") or None
    after = None if page is None else _position(page)
    found = await _webhooks(request).list_deliveries(
        endpoint=endpoint,
        status=cast(DeliveryStatus | None, status),
        after=after,
        limit=limit + 1,
    )
    data = found[:limit]
    next_page = _cursor(data[-1]) if len(found) > limit else None
    return json_response({"data": [delivery_to_wire(d) for d in data], "next_page": next_page})


@routes.post("/v1/webhooks/{name}/retry")
async def retry_webhook(request: web.Request) -> web.Response:
    delivery = _webhooks(request)
    raw = await read_body(request.content, request.content_length, request.app[MAX_REQUEST_BYTES])
    body = decode_json_object(raw)
    unknown = sorted(set(body) - {"event_id"})
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field")
    event_id = body.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise InvalidRequest("event_id: must be a string")
    name = request.match_info["name"]
    count = await delivery.retry(name, event_id=event_id)
    return json_response({"type": "webhook_retry", "endpoint": name, "retried": count})


@routes.post("/v1/webhooks/{name}/test")
async def test_webhook(request: web.Request) -> web.Response:
    delivery = _webhooks(request)
    raw = await read_body(request.content, request.content_length, request.app[MAX_REQUEST_BYTES])
    decode_json_object(raw)
    return json_response(await delivery.send_test(request.match_info["name"]))


# --- the metrics-only TCP listener ----------------------------------------------------------


async def _tcp_metrics(request: web.Request) -> web.Response:
    return await _metrics_response(request)


def create_metrics_app(metrics: Metrics) -> web.Application:
    """An application with ``GET /metrics`` and nothing else."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", _tcp_metrics)
    return app


async def serve_metrics(
    metrics: Metrics,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``create_metrics_app`` on ``host:port`` (TCP) until cancelled.

    Raises ``StartupError`` naming ``metrics.listen`` when the address cannot be bound.
    """
    runner = web.AppRunner(
        create_metrics_app(metrics), handle_signals=False, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"metrics.listen: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        log.info("metrics_listening", address=f"{host}:{port}")
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
