"""A loopback stand-in for the hosted Managed Agents API, for tests and benchmarks.

A real aiohttp server on 127.0.0.1 (ephemeral port) serving ``POST /v1/sessions`` and
``GET /v1/agents/{id}``, ``/v1/environments/{id}``, ``/v1/vaults/{id}`` from in-memory
objects that can be archived. Every request is recorded (method, raw path, headers, JSON body).
Faults are switched on by setting attributes::

    async with HostedApi() as api:
        api.add_agent("agent_a", version=3)
        api.session_fault = Fault.RATE_LIMITED       # POST /v1/sessions answers 429
        api.lookup_fault = Fault.UNAVAILABLE         # the GETs answer 503
        api.delay = 0.2                              # every answer takes 200 ms more
        launcher = ManagedAgentsLauncher(base_url=api.base_url, api_key=api.api_key, ...)

``refused_url()`` is a base URL on which nobody listens (connection refused).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import socket
import struct
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
from aiohttp import web

from agentcron import ids
from agentcron.core.timeutil import format_ts

_ARCHIVED_AT = "2026-01-01T00:00:00Z"
_CREATED_AT = "2025-12-01T00:00:00Z"


class Fault(StrEnum):
    """How the stand-in misbehaves."""

    RATE_LIMITED = "rate_limited"  # 429 rate_limit_error
    INTERNAL_ERROR = "internal_error"  # 500 api_error
    UNAVAILABLE = "unavailable"  # 503 overloaded
    BAD_REQUEST = "bad_request"  # 400 invalid_request_error with ``fault_message``
    SLOW = "slow"  # answer normally, but only after ``slow_seconds``
    RESET = "reset"  # 200 headers, part of the body, then a TCP reset
    MALFORMED = "malformed"  # 200 with a body that is not a session


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    method: str
    path: str  # raw (still percent-encoded) path with the query string
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None


@dataclass(slots=True, kw_only=True)
class StoredAgent:
    version: int = 1
    archived: bool = False


@dataclass
class HostedApi:
    """The stand-in server; use as ``async with HostedApi() as api``."""

    api_key: str = "sk-test-0123456789"
    agents: dict[str, StoredAgent] = field(default_factory=dict)
    environments: dict[str, bool] = field(default_factory=dict)  # id -> archived
    vaults: dict[str, bool] = field(default_factory=dict)  # id -> archived
    session_fault: Fault | None = None
    lookup_fault: Fault | None = None
    fault_message: str = "the request was rejected"
    slow_seconds: float = 5.0
    delay: float = 0.0
    record: bool = True
    requests: list[RecordedRequest] = field(default_factory=list)
    sessions_created: int = 0
    sessions_in_flight: int = 0  # POST /v1/sessions being answered right now
    max_sessions_in_flight: int = 0  # the most there ever were at once
    _runner: web.AppRunner | None = None
    _port: int = 0

    # -- objects ---------------------------------------------------------------------------

    def add_agent(self, agent_id: str, *, version: int = 1, archived: bool = False) -> None:
        self.agents[agent_id] = StoredAgent(version=version, archived=archived)

    def add_environment(self, environment_id: str, *, archived: bool = False) -> None:
        self.environments[environment_id] = archived

    def add_vault(self, vault_id: str, *, archived: bool = False) -> None:
        self.vaults[vault_id] = archived

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def open_connections(self) -> int:
        """Client connections the server holds open right now (kept-alive ones included)."""
        server = self._runner.server if self._runner is not None else None
        return 0 if server is None else len(server.connections)

    # -- life ------------------------------------------------------------------------------

    async def __aenter__(self) -> HostedApi:
        app = web.Application()
        app.router.add_post("/v1/sessions", self._create_session)
        app.router.add_get("/v1/agents/{id}", self._get_agent)
        app.router.add_get("/v1/environments/{id}", self._get_environment)
        app.router.add_get("/v1/vaults/{id}", self._get_vault)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock, backlog=1024).start()
        self._runner = runner
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- handlers --------------------------------------------------------------------------

    async def _enter(self, request: web.Request) -> web.StreamResponse | None:
        """Record the request, apply the delay, check the key; a response ends the request."""
        body: Any = None
        raw = await request.read()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        if self.record:
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.raw_path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                )
            )
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        return None

    async def _fault(self, request: web.Request, fault: Fault | None) -> web.StreamResponse | None:
        if fault is None:
            return None
        if fault is Fault.SLOW:
            await asyncio.sleep(self.slow_seconds)
            return None
        if fault is Fault.RATE_LIMITED:
            return _error(429, "rate_limit_error", "too many sessions are being created")
        if fault is Fault.INTERNAL_ERROR:
            return _error(500, "api_error", "internal server error")
        if fault is Fault.UNAVAILABLE:
            return _error(503, "overloaded_error", "the service is overloaded")
        if fault is Fault.BAD_REQUEST:
            return _error(400, "invalid_request_error", self.fault_message)
        if fault is Fault.MALFORMED:
            return web.json_response({"type": "session"})
        return await _reset(request)

    async def _create_session(self, request: web.Request) -> web.StreamResponse:
        self.sessions_in_flight += 1
        self.max_sessions_in_flight = max(self.max_sessions_in_flight, self.sessions_in_flight)
        try:
            return await self._answer_session(request)
        finally:
            self.sessions_in_flight -= 1

    async def _answer_session(self, request: web.Request) -> web.StreamResponse:
        answer = await self._enter(request) or await self._fault(request, self.session_fault)
        if answer is not None:
            return answer
        body = self.requests[-1].body if self.record else json.loads(await request.read())
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "body must be a JSON object")
        agent_ref = body.get("agent") or {}
        agent = self.agents.get(agent_ref.get("id", ""))
        if agent is None:
            return _error(404, "not_found_error", "agent not found")
        if agent.archived:
            return _error(400, "invalid_request_error", "agent is archived")
        if not 1 <= int(agent_ref.get("version", 0)) <= agent.version:
            return _error(400, "invalid_request_error", "agent version does not exist")
        environment_id = body.get("environment_id", "")
        if environment_id not in self.environments:
            return _error(404, "not_found_error", "environment not found")
        if self.environments[environment_id]:
            return _error(400, "invalid_request_error", "environment is archived")
        for vault_id in body.get("vault_ids", []):
            if vault_id not in self.vaults:
                return _error(404, "not_found_error", "vault not found")
            if self.vaults[vault_id]:
                return _error(400, "invalid_request_error", "vault is archived")
        self.sessions_created += 1
        now = format_ts(datetime.now(UTC))
        return web.json_response(
            {
                "type": "session",
                "id": ids.new_id(ids.SESSION),
                "status": "idle",
                "agent": {"type": "agent", "id": agent_ref["id"], "version": agent_ref["version"]},
                "environment_id": environment_id,
                "metadata": body.get("metadata", {}),
                "vault_ids": body.get("vault_ids", []),
                "title": body.get("title"),
                "budget": body.get("budget"),
                "archived_at": None,
                "created_at": now,
                "updated_at": now,
            }
        )

    async def _get_agent(self, request: web.Request) -> web.StreamResponse:
        answer = await self._enter(request) or await self._fault(request, self.lookup_fault)
        if answer is not None:
            return answer
        agent_id = request.match_info["id"]
        agent = self.agents.get(agent_id)
        version = agent.version if agent else 0
        if "version" in request.query:
            try:
                version = int(request.query["version"])
            except ValueError:
                return _error(400, "invalid_request_error", "version must be an integer")
        if agent is None or not 1 <= version <= agent.version:
            return _error(404, "not_found_error", f"agent {agent_id} not found")
        return web.json_response(
            {
                "type": "agent",
                "id": agent_id,
                "version": version,
                "name": agent_id,
                "archived_at": _ARCHIVED_AT if agent.archived else None,
                "created_at": _CREATED_AT,
            }
        )

    async def _get_environment(self, request: web.Request) -> web.StreamResponse:
        return await self._get_simple(request, "environment", self.environments)

    async def _get_vault(self, request: web.Request) -> web.StreamResponse:
        return await self._get_simple(request, "vault", self.vaults)

    async def _get_simple(
        self, request: web.Request, kind: str, table: dict[str, bool]
    ) -> web.StreamResponse:
        answer = await self._enter(request) or await self._fault(request, self.lookup_fault)
        if answer is not None:
            return answer
        object_id = request.match_info["id"]
        if object_id not in table:
            return _error(404, "not_found_error", f"{kind} {object_id} not found")
        return web.json_response(
            {
                "type": kind,
                "id": object_id,
                "name": object_id,
                "archived_at": _ARCHIVED_AT if table[object_id] else None,
                "created_at": _CREATED_AT,
            }
        )


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": ids.new_id(ids.REQUEST),
        },
        status=status,
    )


async def _reset(request: web.Request) -> web.StreamResponse:
    """Send the headers and part of the body, then reset the connection (SO_LINGER 0)."""
    response = web.StreamResponse(status=200, headers={"content-type": "application/json"})
    response.content_length = 4096
    await response.prepare(request)
    await response.write(b'{"type": "session", "id": "sesn_')
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return response


def refused_url() -> str:
    """A loopback base URL on which nobody listens: bind a port, close it, return its URL."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def serve(*, delay: float, agents: list[str], environments: list[str]) -> None:
    """Serve until stdin closes, after printing ``{"base_url", "api_key"}`` as one JSON line."""
    async with HostedApi(record=False, delay=delay) as api:
        for agent_id in agents:
            api.add_agent(agent_id)
        for environment_id in environments:
            api.add_environment(environment_id)
        print(json.dumps({"base_url": api.base_url, "api_key": api.api_key}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.hosted_api``: the stand-in in its own process (for benchmarks)."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.hosted_api", description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument("--agent", action="append", default=[], help="an agent id to serve")
    parser.add_argument("--environment", action="append", default=[], help="an environment id")
    args = parser.parse_args(argv)
    anyio.run(
        functools.partial(serve, delay=args.delay, agents=args.agent, environments=args.environment)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
