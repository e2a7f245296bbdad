"""The routes of the control API (SPEC §5): parse -> call the service -> serialize.

Handlers stay thin; validation lives in the service and in ``agentcron.api.params``, the
error envelope in the middleware of ``agentcron.api.app``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from agentcron import __version__
from agentcron.api.params import (
    decode_json_object,
    parse_deployment_list_query,
    parse_run_list_query,
    read_body,
)
from agentcron.clock import Clock
from agentcron.core.models import Deployment, DeploymentRun
from agentcron.core.timeutil import format_ts
from agentcron.core.wire import deployment_to_wire, run_to_wire
from agentcron.errors import NotFound
from agentcron.runtime.service import DeploymentService


class ManualRuns(Protocol):
    """Where ``POST /v1/deployments/{id}/run`` goes (the fire path)."""

    async def run_manual(self, deployment_id: str) -> DeploymentRun:
        """Claim, launch and complete a run now; ``NotFound``/``Conflict`` as the API says."""
        ...


class SchedulerHealth(Protocol):
    """What ``/v1/health`` reports of the scheduler."""

    def health(self) -> dict[str, Any]:
        """Counters and the next fire (JSON-ready)."""
        ...


class LeadershipStatus(Protocol):
    """What ``/v1/health`` reports of this daemon's role (``agentcron.runtime.leadership``)."""

    def status(self) -> dict[str, Any]:
        """Role, this daemon's id, the leader's id, the epoch, the lease's expiry."""
        ...


class RetentionHealth(Protocol):
    """What ``/v1/health`` reports of retention (``agentcron.runtime.retention.Pruner``)."""

    async def health(self) -> dict[str, Any]:
        """Journal size, session-log bytes and the latest prune (JSON-ready)."""
        ...


SERVICE = web.AppKey("service", DeploymentService)
MANUAL_RUNS = web.AppKey[ManualRuns]("manual_runs")
SCHEDULER = web.AppKey[SchedulerHealth]("scheduler")
CLOCK = web.AppKey[Clock]("clock")
JOURNAL_PATH: web.AppKey[Path | str] = web.AppKey("journal_path")
"""Where the journal lives: its file, or its database URL without the password."""
MAX_REQUEST_BYTES = web.AppKey("max_request_bytes", int)
LEADERSHIP = web.AppKey[LeadershipStatus]("leadership")
RETENTION = web.AppKey[RetentionHealth]("retention")

routes = web.RouteTableDef()


def json_response(payload: Any, *, status: int = 200) -> web.Response:
    """A JSON response, compact and UTF-8."""
    return web.Response(
        body=json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(),
        status=status,
        content_type="application/json",
    )


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request.content, request.content_length, request.app[MAX_REQUEST_BYTES])
    return decode_json_object(raw)


def _path_id(request: web.Request, name: str, kind: str) -> str:
    value = request.match_info[name]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NotFound(f"{kind} not found") from None
    return value


def _deployment(request: web.Request, deployment: Deployment) -> web.Response:
    return json_response(deployment_to_wire(deployment, request.app[CLOCK].now()))


@routes.post("/v1/deployments")
async def create_deployment(request: web.Request) -> web.Response:
    body = await _body(request)
    return _deployment(request, await request.app[SERVICE].create(body))


@routes.get("/v1/deployments")
async def list_deployments(request: web.Request) -> web.Response:
    query = parse_deployment_list_query(request.query)
    page = await request.app[SERVICE].list(
        agent_id=query.agent_id,
        status=query.status,
        include_archived=query.include_archived,
        created_at_gte=query.created_at_gte,
        created_at_lte=query.created_at_lte,
        limit=query.limit,
        page=query.page,
    )
    now = request.app[CLOCK].now()
    return json_response(
        {"data": [deployment_to_wire(d, now) for d in page.data], "next_page": page.next_page}
    )


@routes.get("/v1/deployments/{deployment_id}")
async def get_deployment(request: web.Request) -> web.Response:
    deployment_id = _path_id(request, "deployment_id", "deployment")
    return _deployment(request, await request.app[SERVICE].get(deployment_id))


@routes.post("/v1/deployments/{deployment_id}")
async def update_deployment(request: web.Request) -> web.Response:
    deployment_id = _path_id(request, "deployment_id", "deployment")
    body = await _body(request)
    return _deployment(request, await request.app[SERVICE].update(deployment_id, body))


@routes.post("/v1/deployments/{deployment_id}/pause")
async def pause_deployment(request: web.Request) -> web.Response:
    deployment_id = _path_id(request, "deployment_id", "deployment")
    await _body(request)  # bodyless; a body, if any, must still be a JSON object
    return _deployment(request, await request.app[SERVICE].pause(deployment_id))


@routes.post("/v1/deployments/{deployment_id}/unpause")
async def unpause_deployment(request: web.Request) -> web.Response:
    deployment_id = _path_id(request, "deployment_id", "deployment")
    await _body(request)
    return _deployment(request, await request.app[SERVICE].unpause(deployment_id))


@routes.post("/v1/deployments/{deployment_id}/archive")
async def archive_deployment(request: web.Request) -> web.Response:
    deployment_id = _path_id(request, "deployment_id", "deployment")
    await _body(request)
    return _deployment(request, await request.app[SERVICE].archive(deployment_id))


@routes.post("/v1/deployments/{deployment_id}/run")
async def run_deployment(request: web.Request) -> web.Response:
    deployment_id = _path_id(request, "deployment_id", "deployment")
    await _body(request)
    run = await request.app[MANUAL_RUNS].run_manual(deployment_id)
    return json_response(run_to_wire(run))


@routes.get("/v1/deployment_runs")
async def list_runs(request: web.Request) -> web.Response:
    query = parse_run_list_query(request.query)
    page = await request.app[SERVICE].list_runs(
        deployment_id=query.deployment_id,
        has_error=query.has_error,
        trigger_type=query.trigger_type,
        created_at_gt=query.created_at_gt,
        created_at_gte=query.created_at_gte,
        created_at_lt=query.created_at_lt,
        created_at_lte=query.created_at_lte,
        limit=query.limit,
        page=query.page,
    )
    return json_response({"data": [run_to_wire(r) for r in page.data], "next_page": page.next_page})


@routes.get("/v1/deployment_runs/{deployment_run_id}")
async def get_run(request: web.Request) -> web.Response:
    run_id = _path_id(request, "deployment_run_id", "deployment run")
    return json_response(run_to_wire(await request.app[SERVICE].get_run(run_id)))


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    app = request.app
    reasons = await app[SERVICE].degraded_reasons()
    body = {
        "status": "degraded" if reasons else "ok",
        "reasons": [reason.to_wire() for reason in reasons],
        "version": __version__,
        "journal": str(app[JOURNAL_PATH]),
        "deployments": await app[SERVICE].counts(),
        "scheduler": app[SCHEDULER].health(),
        "now": format_ts(app[CLOCK].now()),
    }
    if LEADERSHIP in app:
        body["leadership"] = app[LEADERSHIP].status()
    if RETENTION in app:
        body["retention"] = await app[RETENTION].health()
    return json_response(body)
