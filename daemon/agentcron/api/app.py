"""The control API application: one middleware, the routes, and the error envelope.

The middleware gives every request a ``req_`` id (the ``request-id`` header of every
response), checks the peer against the allow-list, refuses oversized bodies up front, and turns
every exception into the envelope ``{"type":"error","error":{"type","message"},"request_id"}``:
the project's ``ApiError`` tree with its own status, aiohttp's routing errors (404, 405) in
the same shape, anything else a generic 500 that is logged with the request id and never
leaks internals.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import cast

import structlog
from aiohttp import web

from agentcron import ids
from agentcron.api import observability, routes
from agentcron.api import sessions as sessions_api
from agentcron.api.params import too_large
from agentcron.api.socket import peer_allowed, peer_credentials
from agentcron.clock import Clock
from agentcron.errors import API_ERROR_TYPES, ApiError, Conflict, PermissionDenied
from agentcron.metrics import Metrics
from agentcron.runtime.delivery import WebhookDelivery
from agentcron.runtime.service import DeploymentService
from agentcron.runtime.sessions import Sessions

log = structlog.get_logger(__name__)

REQUEST_ID = web.RequestKey("request_id", str)
ALLOWED_UIDS = web.AppKey("allowed_uids", frozenset)
ALLOWED_GIDS = web.AppKey("allowed_gids", frozenset)
DAEMON_UID = web.AppKey("daemon_uid", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    *,
    service: DeploymentService,
    manual_runs: routes.ManualRuns,
    scheduler: routes.SchedulerHealth,
    clock: Clock,
    journal_path: Path | str,
    max_request_bytes: int = 10 * 1024 * 1024,
    allowed_uids: Collection[int] = (),
    allowed_gids: Collection[int] = (),
    metrics: Metrics | None = None,
    webhooks: WebhookDelivery | None = None,
    leadership: routes.LeadershipStatus | None = None,
    retention: routes.RetentionHealth | None = None,
    sessions: Sessions | None = None,
) -> web.Application:
    """The aiohttp application serving SPEC §5: reads and changes through ``service``, manual
    runs through ``manual_runs`` (the fire path), health from ``scheduler``; ``/metrics``
    from ``metrics`` and ``/v1/webhooks`` from ``webhooks`` (``agentcron.api.observability``);
    ``/v1/sessions`` from ``sessions`` (``agentcron.api.sessions``)."""
    app = web.Application(middlewares=[api_middleware], client_max_size=max_request_bytes)
    app[routes.SERVICE] = service
    app[routes.MANUAL_RUNS] = manual_runs
    app[routes.SCHEDULER] = scheduler
    app[routes.CLOCK] = clock
    app[routes.JOURNAL_PATH] = journal_path
    app[routes.MAX_REQUEST_BYTES] = max_request_bytes
    app[ALLOWED_UIDS] = frozenset(allowed_uids)
    app[ALLOWED_GIDS] = frozenset(allowed_gids)
    app[DAEMON_UID] = os.getuid()
    if metrics is not None:
        app[observability.METRICS] = metrics
    if webhooks is not None:
        app[observability.WEBHOOKS] = webhooks
    if leadership is not None:
        app[routes.LEADERSHIP] = leadership
    if retention is not None:  # journal size, session-log bytes, last prune in /v1/health
        app[routes.RETENTION] = retention
    if sessions is not None:
        app[sessions_api.SESSIONS] = sessions
    app.add_routes(routes.routes)
    app.add_routes(observability.routes)
    app.add_routes(sessions_api.routes)
    return app


def error_response(status: int, error_type: str, message: str, request_id: str) -> web.Response:
    """The API's error envelope."""
    return routes.json_response(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        },
        status=status,
    )


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, peer check, size check and the error envelope for every request."""
    request_id = ids.new_id(ids.REQUEST)
    request[REQUEST_ID] = request_id
    response: web.StreamResponse
    try:
        _check_peer(request)
        max_bytes = request.app[routes.MAX_REQUEST_BYTES]
        if request.content_length is not None and request.content_length > max_bytes:
            raise too_large(max_bytes)
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.error_type, exc.message, request_id)
    except web.HTTPException as exc:
        response = _http_error(request, exc, request_id)
    except Exception:
        log.exception(
            "api_request_failed", request_id=request_id, method=request.method, path=request.path
        )
        response = error_response(
            500,
            "api_error",
            f"internal error; the daemon's log has the details under request_id {request_id}",
            request_id,
        )
    response.headers["request-id"] = request_id
    if response.status == Conflict.status or (response.status >= 500 and request.method == "POST"):
        # The SDK retries 409 and 5xx by default; a retried create or run could duplicate it.
        response.headers["x-should-retry"] = "false"
    return response


def _check_peer(request: web.Request) -> None:
    allowed_uids = request.app[ALLOWED_UIDS]
    allowed_gids = request.app[ALLOWED_GIDS]
    if not allowed_uids and not allowed_gids:
        return
    sock = request.transport.get_extra_info("socket") if request.transport else None
    try:
        peer = peer_credentials(cast(socket.socket, sock))
    except (OSError, TypeError, AttributeError):
        raise PermissionDenied(
            "cannot read the peer's credentials (SO_PEERCRED); access is limited by allowed_uids"
        ) from None
    if not peer_allowed(
        peer,
        allowed_uids=allowed_uids,
        allowed_gids=allowed_gids,
        daemon_uid=request.app[DAEMON_UID],
    ):
        raise PermissionDenied(
            f"uid {peer.uid} (gid {peer.gid}) may not use this daemon: it is not in "
            "allowed_uids or allowed_gids"
        )


def _http_error(request: web.Request, exc: web.HTTPException, request_id: str) -> web.Response:
    status = exc.status
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"method {request.method} is not allowed on {request.path}; use {allowed}"
    elif isinstance(exc, web.HTTPNotFound):
        message = f"no route for {request.method} {request.path}"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(
            413,
            "request_too_large",
            too_large(request.app[routes.MAX_REQUEST_BYTES]).message,
            request_id,
        )
    else:
        message = exc.reason
    error_type = API_ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    response = error_response(status, error_type, message, request_id)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response
