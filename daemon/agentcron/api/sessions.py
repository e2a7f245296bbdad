"""The local sessions routes: ``GET /v1/sessions/{id}``, ``GET /v1/sessions/{id}/log`` and
``POST /v1/sessions/{id}/stop`` (agentcron's own; see ``agentcron.runtime.sessions``).

The log is served as bytes (``text/plain``; the child's output as written). It starts at an
offset: ``?offset=N``, or a ``Range: bytes=N-`` / ``bytes=N-M`` header, which is answered
``206`` with ``Content-Range`` (``416`` when N is not below the log's size). ``?follow=true``
streams from the offset until the session has ended, then ends the response. Every response
carries ``x-log-size`` (the size when the request was read) and ``x-session-status``.
"""

from __future__ import annotations

import re

from aiohttp import web

from agentcron.api.routes import json_response
from agentcron.errors import ApiError, InvalidRequest, NotFound
from agentcron.runtime.sessions import Sessions

SESSIONS = web.AppKey[Sessions]("sessions")

routes = web.RouteTableDef()

_RANGE = re.compile(r"bytes=(\d{1,18})-(\d{0,18})\Z")


class RangeNotSatisfiable(ApiError):
    """416: the ``Range`` starts at or past the end of the log."""

    status = 416
    error_type = "invalid_request_error"


def _request_id(request: web.Request) -> str:
    from agentcron.api.app import REQUEST_ID  # noqa: PLC0415 - the app imports this module

    return str(request.get(REQUEST_ID, ""))


def _sessions(request: web.Request) -> Sessions:
    sessions = request.app.get(SESSIONS)
    if sessions is None:
        raise NotFound("this daemon serves no sessions")
    return sessions


def _session_id(request: web.Request) -> str:
    value = request.match_info["session_id"]
    if not value.isprintable() or len(value) > 200:
        raise NotFound("session not found")
    return value


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise InvalidRequest(f"{name}: must be true or false, got {value!r}")
    return value == "true"


def _offset(request: web.Request) -> tuple[int, int | None, bool]:
    """``(start, end or None, from a Range header)`` of the log request."""
    header = request.headers.get("Range")
    if header is not None:
        if "offset" in request.query:
            raise InvalidRequest("offset: give either ?offset or a Range header, not both")
        match = _RANGE.match(header.strip())
        if match is None:
            raise InvalidRequest(
                f"Range: must be bytes=START- or bytes=START-END (one range), got {header!r}"
            )
        start = int(match.group(1))
        end = int(match.group(2)) + 1 if match.group(2) else None
        if end is not None and end <= start:
            raise InvalidRequest(f"Range: END must not be below START, got {header!r}")
        return start, end, True
    text = request.query.get("offset", "0")
    if not text.isdigit() or len(text) > 18:
        raise InvalidRequest(f"offset: must be a non-negative integer, got {text!r}")
    return int(text), None, False


@routes.get("/v1/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    return json_response(await _sessions(request).get(_session_id(request)))


@routes.post("/v1/sessions/{session_id}/stop")
async def stop_session(request: web.Request) -> web.Response:
    return json_response(await _sessions(request).stop(_session_id(request)))


@routes.get("/v1/sessions/{session_id}/log")
async def session_log(request: web.Request) -> web.StreamResponse:
    session_id = _session_id(request)
    follow = _flag(request, "follow")
    start, end, ranged = _offset(request)
    sessions = _sessions(request)
    log = await sessions.log(session_id)
    size = log.size
    response = web.StreamResponse()
    response.headers["request-id"] = _request_id(request)  # the middleware's comes too late
    response.content_type = "text/plain"
    response.headers["x-log-size"] = str(size)
    response.headers["x-session-status"] = "running" if log.running else "ended"
    if ranged:
        if start >= size and not follow:
            raise RangeNotSatisfiable(
                f"Range: the log of session {session_id} holds {size} bytes; "
                f"bytes={start}- starts at or past its end"
            )
        if not follow:
            last = min(size, end if end is not None else size) - 1
            response.set_status(206)
            response.headers["Content-Range"] = f"bytes {start}-{last}/{size}"
            end = last + 1
    if not follow:
        stop = size if end is None else min(end, size)
        response.content_length = max(0, stop - start)
        await response.prepare(request)
        if start < stop:
            async for chunk in log.chunks(start, stop):
                await response.write(chunk)
        await response.write_eof()
        return response
    await response.prepare(request)
    try:
        async for chunk in log.follow(start):
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:  # the client left (Ctrl-C on `sessions logs --follow`)
        pass
    return response
