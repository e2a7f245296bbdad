"""A small async client for the control API over the Unix socket (used by the CLI).

Methods mirror the API and return its JSON objects as dicts. An error response is raised as
the matching ``ApiError`` subclass rebuilt from the envelope (``request_id`` attached); a
socket that is missing, refuses or drops the connection raises ``DaemonUnreachable``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from agentcron.core.pagination import DEPLOYMENTS_MAX_LIMIT, RUNS_MAX_LIMIT
from agentcron.core.timeutil import format_ts
from agentcron.errors import AgentcronError, ApiError, api_error_class

_BASE = URL("http://localhost")
_MAX_PAGE = {"deployments": DEPLOYMENTS_MAX_LIMIT, "deployment_runs": RUNS_MAX_LIMIT}

QueryValue = str | int | bool | datetime | None


class DaemonUnreachable(AgentcronError):
    """The daemon cannot be reached on its socket (missing, refused, dropped, timed out)."""

    def __init__(self, socket_path: Path, reason: str) -> None:
        super().__init__(f"the agentcron daemon is not reachable at {socket_path}: {reason}")
        self.socket_path = socket_path
        self.reason = reason


def error_from_response(status: int, payload: object, request_id: str | None) -> ApiError:
    """Rebuild the ``ApiError`` an error response stands for."""
    error_type = "api_error"
    message = f"HTTP {status}"
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        error_type = str(error.get("type") or error_type)
        message = str(error.get("message") or message)
    elif isinstance(payload, str) and payload.strip():
        message = payload.strip()[:500]
    exc = api_error_class(status)(message)
    exc.status = status
    exc.error_type = error_type
    if request_id:
        exc.add_note(f"request_id: {request_id}")
    return exc


class Client:
    """The control API over the Unix socket at ``socket_path``. Use as ``async with``."""

    def __init__(self, socket_path: Path | str, *, timeout: float = 60.0) -> None:
        self.socket_path = Path(socket_path)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- deployments -------------------------------------------------------------------------

    async def create_deployment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", ("v1", "deployments"), body=body)

    async def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return await self.request("GET", ("v1", "deployments", deployment_id))

    async def update_deployment(
        self, deployment_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.request("POST", ("v1", "deployments", deployment_id), body=body)

    async def pause_deployment(self, deployment_id: str) -> dict[str, Any]:
        return await self.request("POST", ("v1", "deployments", deployment_id, "pause"))

    async def unpause_deployment(self, deployment_id: str) -> dict[str, Any]:
        return await self.request("POST", ("v1", "deployments", deployment_id, "unpause"))

    async def archive_deployment(self, deployment_id: str) -> dict[str, Any]:
        return await self.request("POST", ("v1", "deployments", deployment_id, "archive"))

    async def run_deployment(self, deployment_id: str) -> dict[str, Any]:
        """A manual run; the returned run carries ``error`` when the session failed."""
        return await self.request("POST", ("v1", "deployments", deployment_id, "run"))

    async def list_deployments(self, **query: QueryValue) -> dict[str, Any]:
        """One page: ``agent_id``, ``status``, ``include_archived``, ``created_at_gte``,
        ``created_at_lte``, ``limit``, ``page``."""
        return await self.request("GET", ("v1", "deployments"), query=query)

    def iter_deployments(
        self, *, max_items: int | None = None, **query: QueryValue
    ) -> AsyncIterator[dict[str, Any]]:
        """Every deployment matching ``query``, following pages (at most ``max_items``)."""
        return self._iterate("deployments", max_items, query)

    # --- runs ----------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self.request("GET", ("v1", "deployment_runs", run_id))

    async def list_runs(self, **query: QueryValue) -> dict[str, Any]:
        """One page: ``deployment_id``, ``has_error``, ``trigger_type``,
        ``created_at_gt``/``_gte``/``_lt``/``_lte``, ``limit``, ``page``."""
        return await self.request("GET", ("v1", "deployment_runs"), query=query)

    def iter_runs(
        self, *, max_items: int | None = None, **query: QueryValue
    ) -> AsyncIterator[dict[str, Any]]:
        """Every run matching ``query``, newest first, following pages (at most ``max_items``)."""
        return self._iterate("deployment_runs", max_items, query)

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", ("v1", "health"))

    # --- webhooks ------------------------------------------------------------------------------

    async def list_webhooks(self) -> dict[str, Any]:
        """The configured endpoints and their state (``data``)."""
        return await self.request("GET", ("v1", "webhooks"))

    async def list_webhook_deliveries(self, **query: QueryValue) -> dict[str, Any]:
        """One page of the outbox: ``endpoint``, ``status``, ``limit``, ``page``."""
        return await self.request("GET", ("v1", "webhooks", "deliveries"), query=query)

    async def retry_webhook(self, name: str, *, event_id: str | None = None) -> dict[str, Any]:
        """Re-enable ``name`` and make its failed deliveries (or one event's) due now."""
        body = {} if event_id is None else {"event_id": event_id}
        return await self.request("POST", ("v1", "webhooks", name, "retry"), body=body)

    async def test_webhook(self, name: str) -> dict[str, Any]:
        """Send one signed ``webhook.test`` event to ``name`` now; the outcome."""
        return await self.request("POST", ("v1", "webhooks", name, "test"))

    # --- local sessions ------------------------------------------------------------------------

    async def get_session(self, session_id: str) -> dict[str, Any]:
        """A local session: status, pid, exit code or signal, end reason, log size, host."""
        return await self.request("GET", ("v1", "sessions", session_id))

    async def stop_session(self, session_id: str) -> dict[str, Any]:
        """Stop a running local session (returns once it ended); an ended one as it is."""
        return await self.request("POST", ("v1", "sessions", session_id, "stop"))

    async def session_log(
        self, session_id: str, *, offset: int = 0, follow: bool = False
    ) -> AsyncIterator[bytes]:
        """The session's log from ``offset``, chunk by chunk; with ``follow``, until the
        session ends (no time limit)."""
        url = _BASE.joinpath("v1", "sessions", session_id, "log")
        params = _encode_query({"offset": offset, "follow": follow or None})
        timeout = aiohttp.ClientTimeout(total=None) if follow else self._timeout
        session = self._ensure_session()
        try:
            async with session.get(url, params=params, timeout=timeout) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise error_from_response(
                        response.status, _decode(raw), response.headers.get("request-id")
                    )
                async for chunk in response.content.iter_any():
                    yield chunk
        except aiohttp.ClientConnectorError as exc:
            raise DaemonUnreachable(self.socket_path, _connect_reason(exc.os_error)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DaemonUnreachable(self.socket_path, str(exc) or type(exc).__name__) from exc

    # --- transport -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        segments: tuple[str, ...],
        *,
        query: Mapping[str, QueryValue] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send one request; return the JSON object or raise (see the module docstring)."""
        url = _BASE.joinpath(*segments)
        params = _encode_query(query or {})
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        session = self._ensure_session()
        try:
            async with session.request(
                method, url, params=params, data=data, headers=headers
            ) as response:
                raw = await response.read()
                request_id = response.headers.get("request-id")
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            raise DaemonUnreachable(self.socket_path, _connect_reason(exc.os_error)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DaemonUnreachable(self.socket_path, str(exc) or type(exc).__name__) from exc
        payload = _decode(raw)
        if status >= 400:
            raise error_from_response(status, payload, request_id)
        if not isinstance(payload, dict):
            raise AgentcronError(f"the daemon answered {method} {url.path} with non-JSON")
        return payload

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.UnixConnector(path=str(self.socket_path))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _iterate(
        self, resource: str, max_items: int | None, query: Mapping[str, QueryValue]
    ) -> AsyncIterator[dict[str, Any]]:
        query = dict(query)
        if max_items is not None and query.get("limit") is None:
            query["limit"] = min(max_items, _MAX_PAGE[resource])
        produced = 0
        while True:
            page = await self.request("GET", ("v1", resource), query=query)
            for item in page.get("data", []):
                yield item
                produced += 1
                if max_items is not None and produced >= max_items:
                    return
            next_page = page.get("next_page")
            if not next_page:
                return
            query["page"] = next_page


def _encode_query(query: Mapping[str, QueryValue]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in query.items():
        if value is None:
            continue
        wire_name = name
        for suffix in ("_gte", "_lte", "_gt", "_lt"):
            if name.startswith("created_at") and name.endswith(suffix):
                wire_name = f"created_at[{suffix[1:]}]"
                break
        if isinstance(value, bool):
            params[wire_name] = "true" if value else "false"
        elif isinstance(value, datetime):
            params[wire_name] = format_ts(value)
        else:
            params[wire_name] = str(value)
    return params


def _decode(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _connect_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "the socket does not exist"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (a stale socket: the daemon is not running)"
    if isinstance(error, PermissionError):
        return "permission denied (is your user in the socket's group?)"
    return error.strerror or str(error)
