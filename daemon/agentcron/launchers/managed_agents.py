"""The ``managed_agents`` launcher: every session is one ``POST /v1/sessions`` to the hosted API.

One keep-alive connection pool (``agentcron.launchers.http1``) lives as long as the launcher (at
most ``max_connections`` connections, a total timeout of ``timeout`` seconds per request);
``warm(count)`` opens connections ahead of a burst of fires. Nothing is retried: a fire is one
request, and a failure is recorded with its run error type:

====================================================  ===========================================
outcome of ``POST /v1/sessions``                      run error type
====================================================  ===========================================
2xx with an ``id``                                    (the session id)
429                                                   ``session_rate_limited``
5xx, 408, timeout, connection error, 2xx without id   ``service_unavailable``
other 4xx, agent archived or 404                      ``agent_archived``
other 4xx, environment archived / 404                 ``environment_archived`` / ``..._not_found``
other 4xx, a vault 404 / archived                     ``vault_not_found`` / ``vault_archived``
other 4xx, none of the above                          ``session_creation_rejected``
====================================================  ===========================================

The causes of a 4xx are found with ``GET /v1/agents/{id}``, ``/v1/environments/{id}`` and
``/v1/vaults/{id}`` (404, or ``archived_at`` set), looked up concurrently.

``resolve_agent(id, None)`` pins the agent's latest version; ``resolve_agent(id, n)`` fetches
``?version=n`` and accepts ``n`` when ``1 <= n <= version`` of the answer. ``validate_environment``
fetches the environment, ``validate_vaults`` each vault (concurrently). All three answer
``InvalidRequest`` (400) when the object is missing or archived and ``ServiceUnavailable``
(503) when the hosted API cannot answer: a deployment is never accepted on a guess.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio

from agentcron import __version__
from agentcron.config import Declarations
from agentcron.core.models import AgentRef, RunErrorType
from agentcron.errors import ApiError, InvalidRequest, LaunchFailure, ServiceUnavailable
from agentcron.launchers.api_key import load_api_key
from agentcron.launchers.base import SessionRequest
from agentcron.launchers.http1 import Origin, Unanswered

__all__ = ["ANTHROPIC_VERSION", "MANAGED_AGENTS_BETA", "ManagedAgentsLauncher", "load_api_key"]

ANTHROPIC_VERSION = "2023-06-01"
MANAGED_AGENTS_BETA = "managed-agents-2026-04-01"
_MESSAGE_LIMIT = 500
_REFUSES_EVERY_SESSION = frozenset({401, 403, 408})  # the key, the account, the connection


class _Unreachable(Exception):
    """No HTTP answer: a timeout or a connection error (message already free of the key)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Reply:
    status: int
    body: Any  # the parsed JSON, or None
    text: str  # the start of the raw body, for messages

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def api_message(self) -> str:
        """The API's ``error.message`` (or the raw body's start), for run error messages."""
        if isinstance(self.body, dict):
            error = self.body.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return str(error["message"])[:_MESSAGE_LIMIT]
        return self.text or "(empty body)"


class _Found(StrEnum):
    """What a lookup of one referenced object found."""

    PRESENT = "present"
    ARCHIVED = "archived"
    MISSING = "missing"
    UNKNOWN = "unknown"


def _segment(object_id: str) -> str:
    return quote(object_id, safe="")


class ManagedAgentsLauncher:
    """Creates sessions with the hosted Managed Agents API (SPEC §6, ``managed_agents``)."""

    def __init__(
        self, *, base_url: str, api_key: str, timeout: float, max_connections: int = 100
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._max_connections = max_connections
        self._session: Origin | None = None
        self._unavailable: str | None = None  # why the latest creation failed for every session

    async def __aenter__(self) -> ManagedAgentsLauncher:
        self._client()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _client(self) -> Origin:
        if self._session is None:
            self._session = Origin(
                self._base_url,
                headers={
                    "anthropic-version": ANTHROPIC_VERSION,
                    "anthropic-beta": MANAGED_AGENTS_BETA,
                    "x-api-key": self._api_key,
                    "content-type": "application/json",
                    "user-agent": f"agentcron/{__version__}",
                },
                limit=self._max_connections,
                connect_timeout=self._timeout,
            )
        return self._session

    async def warm(self, count: int) -> None:
        """Open up to ``count`` connections (at most ``max_connections``) before a burst of
        ``count`` fires, so their session creations do not wait for TCP and TLS handshakes."""
        await self._client().warm(count)

    def reload(self, declarations: Declarations) -> None:
        """Nothing to take: agents, environments and vaults live in the hosted API."""

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.aclose()

    # -- the Launcher protocol -------------------------------------------------------------

    async def create_session(self, request: SessionRequest) -> str:
        payload = json.dumps(request.session_body(), ensure_ascii=False).encode("utf-8")
        try:
            reply = await self._request("POST", "/v1/sessions", data=payload)
        except _Unreachable as exc:
            self._unavailable = f"session creation failed: {exc}"
            raise LaunchFailure(RunErrorType.SERVICE_UNAVAILABLE, self._unavailable) from exc
        if reply.status >= 500 or reply.status in _REFUSES_EVERY_SESSION:
            self._unavailable = (
                f"the hosted API answered {reply.status} to session creation: {self._clean(reply)}"
            )
        elif reply.ok:
            self._unavailable = None
        if reply.ok:
            session_id = reply.body.get("id") if isinstance(reply.body, dict) else None
            if not isinstance(session_id, str) or not session_id:
                raise LaunchFailure(
                    RunErrorType.SERVICE_UNAVAILABLE,
                    f"the hosted API answered {reply.status} without a session id",
                )
            return session_id
        if reply.status == 429:
            raise LaunchFailure(
                RunErrorType.SESSION_RATE_LIMITED,
                f"the hosted API rate-limited session creation (429): {self._clean(reply)}",
            )
        if reply.status >= 500 or reply.status == 408 or reply.status < 400:
            raise LaunchFailure(
                RunErrorType.SERVICE_UNAVAILABLE,
                f"the hosted API could not create the session ({reply.status}): "
                f"{self._clean(reply)}",
            )
        raise await self._diagnose(request, reply)

    async def resolve_agent(self, agent_id: str, version: int | None) -> AgentRef:
        if version is not None and version < 1:
            raise InvalidRequest(f"agent: version must be >= 1, not {version}")
        path = f"/v1/agents/{_segment(agent_id)}"
        if version is not None:
            path += f"?version={version}"
        reply = await self._lookup_or_503(path, f"agent {agent_id!r}", field="agent")
        if reply.status == 404:
            detail = f" or has no version {version}" if version is not None else ""
            raise InvalidRequest(f"agent: agent {agent_id!r} does not exist{detail}")
        body = reply.body if isinstance(reply.body, dict) else {}
        if body.get("archived_at"):
            raise InvalidRequest(f"agent: agent {agent_id!r} is archived")
        latest = body.get("version")
        if not isinstance(latest, int) or isinstance(latest, bool) or latest < 1:
            raise ServiceUnavailable(
                f"agent: the hosted API answered for agent {agent_id!r} without a version"
            )
        if version is None:
            return AgentRef(id=agent_id, version=latest)
        if version > latest:
            raise InvalidRequest(
                f"agent: agent {agent_id!r} has no version {version} (latest is {latest})"
            )
        return AgentRef(id=agent_id, version=version)

    async def validate_environment(self, environment_id: str) -> None:
        path = f"/v1/environments/{_segment(environment_id)}"
        what = f"environment {environment_id!r}"
        reply = await self._lookup_or_503(path, what, field="environment_id")
        if reply.status == 404:
            raise InvalidRequest(f"environment_id: {what} does not exist")
        if isinstance(reply.body, dict) and reply.body.get("archived_at"):
            raise InvalidRequest(f"environment_id: {what} is archived")

    async def validate_vaults(self, vault_ids: Sequence[str]) -> None:
        found: dict[int, _Reply | ApiError] = {}

        async def lookup(index: int, vault_id: str) -> None:
            path = f"/v1/vaults/{_segment(vault_id)}"
            what = f"vault {vault_id!r}"
            try:
                found[index] = await self._lookup_or_503(path, what, field=f"vault_ids[{index}]")
            except ApiError as exc:  # raised below, in index order, outside the task group
                found[index] = exc

        async with anyio.create_task_group() as task_group:
            for index, vault_id in enumerate(vault_ids):
                task_group.start_soon(lookup, index, vault_id)
        for index, vault_id in enumerate(vault_ids):
            reply = found[index]
            if isinstance(reply, ApiError):
                raise reply
            if reply.status == 404:
                raise InvalidRequest(f"vault_ids[{index}]: vault {vault_id!r} does not exist")
            if isinstance(reply.body, dict) and reply.body.get("archived_at"):
                raise InvalidRequest(f"vault_ids[{index}]: vault {vault_id!r} is archived")

    def unavailable_reason(self) -> str | None:
        """Set while the hosted API cannot be reached, answers 5xx, or refuses the key
        (``Launcher.unavailable_reason``); cleared by the next session created."""
        return self._unavailable

    # -- helpers ---------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, data: bytes | None = None) -> _Reply:
        """One HTTP exchange; raises ``_Unreachable`` when no complete answer arrives."""
        try:
            status, raw = await self._client().request(method, path, data, within=self._timeout)
        except TimeoutError as exc:
            raise _Unreachable(f"no answer from the hosted API within {self._timeout:g} s") from exc
        except Unanswered as exc:
            detail = self._scrub(str(exc)) or "no details"
            raise _Unreachable(
                f"the connection to the hosted API at {self._base_url} failed ({detail})"
            ) from exc
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        text = self._scrub(raw[:_MESSAGE_LIMIT].decode("utf-8", errors="replace"))
        return _Reply(status=status, body=body, text=text)

    async def _lookup_or_503(self, path: str, what: str, *, field: str) -> _Reply:
        """GET for ``resolve_agent``/``validate_environment``: 2xx or 404, else an ApiError."""
        try:
            reply = await self._request("GET", path)
        except _Unreachable as exc:
            raise ServiceUnavailable(f"{field}: cannot look up {what}: {exc}") from exc
        if reply.ok or reply.status == 404:
            return reply
        message = (
            f"{field}: the hosted API answered {reply.status} for {what}: {self._clean(reply)}"
        )
        if reply.status in {401, 403, 408, 429} or reply.status >= 500:
            raise ServiceUnavailable(message)
        raise InvalidRequest(message)

    async def _find(self, kind: str, object_id: str) -> _Found:
        try:
            reply = await self._request("GET", f"/v1/{kind}/{_segment(object_id)}")
        except _Unreachable:
            return _Found.UNKNOWN
        if reply.status == 404:
            return _Found.MISSING
        if not reply.ok or not isinstance(reply.body, dict):
            return _Found.UNKNOWN
        return _Found.ARCHIVED if reply.body.get("archived_at") else _Found.PRESENT

    async def _diagnose(self, request: SessionRequest, reply: _Reply) -> LaunchFailure:
        """Name the cause of a 4xx by looking up what the request references."""
        found: dict[tuple[str, str], _Found] = {}

        async def lookup(kind: str, object_id: str) -> None:
            found[kind, object_id] = await self._find(kind, object_id)

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(lookup, "agents", request.agent.id)
            task_group.start_soon(lookup, "environments", request.environment_id)
            for vault_id in dict.fromkeys(request.vault_ids):
                task_group.start_soon(lookup, "vaults", vault_id)

        agent = found["agents", request.agent.id]
        if agent in {_Found.ARCHIVED, _Found.MISSING}:
            state = "is archived" if agent is _Found.ARCHIVED else "does not exist"
            return LaunchFailure(RunErrorType.AGENT_ARCHIVED, f"agent `{request.agent.id}` {state}")
        environment = found["environments", request.environment_id]
        if environment is _Found.ARCHIVED:
            return LaunchFailure(
                RunErrorType.ENVIRONMENT_ARCHIVED,
                f"environment `{request.environment_id}` is archived",
            )
        if environment is _Found.MISSING:
            return LaunchFailure(
                RunErrorType.ENVIRONMENT_NOT_FOUND,
                f"environment `{request.environment_id}` does not exist",
            )
        for vault_id in request.vault_ids:
            if found["vaults", vault_id] is _Found.MISSING:
                return LaunchFailure(
                    RunErrorType.VAULT_NOT_FOUND, f"vault `{vault_id}` does not exist"
                )
        for vault_id in request.vault_ids:
            if found["vaults", vault_id] is _Found.ARCHIVED:
                return LaunchFailure(RunErrorType.VAULT_ARCHIVED, f"vault `{vault_id}` is archived")
        return LaunchFailure(
            RunErrorType.SESSION_CREATION_REJECTED,
            f"the hosted API rejected the session ({reply.status}): {self._clean(reply)}",
        )

    def _clean(self, reply: _Reply) -> str:
        return self._scrub(reply.api_message())

    def _scrub(self, text: str) -> str:
        """Remove the API key from ``text``, should the other side ever echo it."""
        return text.replace(self._api_key, "[redacted]") if self._api_key else text
