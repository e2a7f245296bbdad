"""Sessions you can inspect: what ``/v1/sessions/{id}`` answers, for either launcher.

``LocalSessions`` (the ``command`` launcher) joins what the launcher knows of a session that runs
now with the journal's record of every session, and reaches its log file; ``HostedSessions``
(``managed_agents``) answers every request with a 404 that says where the session lives.

A local session's ``status``: ``running``; ``exited`` (it exited by itself, with an exit code,
whatever ended it); ``killed`` (a signal ended it); ``unknown`` (the daemon could not see its end:
the spawner died, or the daemon stopped while it ran and found it still recorded as running at
its next start, ``end_reason`` ``recovered``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import anyio

from agentcron.core.timeutil import format_ts
from agentcron.errors import Conflict, NotFound
from agentcron.journal import Journal
from agentcron.launchers.command import CommandLauncher

__all__ = ["FOLLOW_POLL", "HostedSessions", "LocalSessions", "SessionLog", "Sessions"]

FOLLOW_POLL = 0.2
"""Seconds between two looks at a followed log (and at whether its session still runs)."""
_CHUNK = 1 << 16


class SessionLog(Protocol):
    """A session's log as ``/v1/sessions/{id}/log`` serves it."""

    size: int

    @property
    def running(self) -> bool:
        """Whether its session still runs here."""
        ...

    def chunks(self, offset: int, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes from ``offset`` up to ``end`` (exclusive; ``None``: what is there now)."""
        ...

    def follow(self, offset: int) -> AsyncIterator[bytes]:
        """The bytes from ``offset``, then new ones as they are written, until the session
        has ended and everything it wrote was sent."""
        ...


class Sessions(Protocol):
    """What the sessions routes ask of the launcher's sessions."""

    async def get(self, session_id: str) -> dict[str, Any]:
        """The session as the API returns it; ``NotFound`` when there is none here."""
        ...

    async def log(self, session_id: str) -> SessionLog:
        """Its log; ``NotFound`` when the session or its log file is not here."""
        ...

    async def stop(self, session_id: str) -> dict[str, Any]:
        """Stop it if it runs (waits for its end) and return it; an ended session is returned
        as it is. ``Conflict`` when it runs on another host."""
        ...


def _status(record: dict[str, Any]) -> str:
    if record["ended_at"] is None:
        return "running"
    exit_status = record["exit_status"]
    if exit_status is None:
        return "unknown"
    return "killed" if exit_status < 0 else "exited"


def _signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _ts(value: Any) -> str | None:
    return None if value is None else format_ts(value)


class _LocalLog:
    """A log file of this host; ``running`` while its session runs here."""

    def __init__(self, path: Path, size: int, launcher: CommandLauncher, session_id: str) -> None:
        self._path = path
        self.size = size
        self._launcher = launcher
        self._session_id = session_id

    @property
    def running(self) -> bool:
        return self._launcher.running_session(self._session_id) is not None

    async def chunks(self, offset: int, end: int | None = None) -> AsyncIterator[bytes]:
        limit = self.size if end is None else end
        async with await anyio.open_file(self._path, "rb") as handle:
            await handle.seek(offset)
            position = offset
            while position < limit:
                data = await handle.read(min(_CHUNK, limit - position))
                if not data:
                    return
                position += len(data)
                yield data

    async def follow(self, offset: int) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self._path, "rb") as handle:
            await handle.seek(offset)
            while True:
                running = self.running  # looked at before the read: nothing is missed
                while data := await handle.read(_CHUNK):
                    yield data
                if not running:
                    return
                await anyio.sleep(FOLLOW_POLL)


class LocalSessions:
    """The ``command`` launcher's sessions: the running ones from the launcher, every other
    from the journal (see the module docstring)."""

    def __init__(self, *, journal: Journal, launcher: CommandLauncher) -> None:
        self._journal = journal
        self._launcher = launcher

    async def get(self, session_id: str) -> dict[str, Any]:
        return self._wire(await self._record(session_id))

    async def log(self, session_id: str) -> SessionLog:
        record = await self._record(session_id)
        launcher = self._launcher
        if record["host"] not in (None, launcher.host):
            raise NotFound(
                f"the log of session {session_id} is on host {record['host']}, which ran it; "
                "ask that host's daemon"
            )
        path = launcher.log_path(session_id)
        try:
            size = (await anyio.Path(path).stat()).st_size
        except FileNotFoundError:
            raise NotFound(
                f"the log of session {session_id} no longer exists (removed by retention, or "
                "never written)"
            ) from None
        return _LocalLog(path, size, launcher, session_id)

    async def stop(self, session_id: str) -> dict[str, Any]:
        launcher = self._launcher
        if await launcher.stop_session(session_id):
            await self._journal.flush()
            return await self.get(session_id)
        record = await self._record(session_id)
        if record["ended_at"] is None:
            raise Conflict(
                f"session {session_id} runs on host {record['host'] or 'unknown'}, not on "
                f"{launcher.host}; stop it through that host's daemon"
            )
        return self._wire(record)  # ended already: stopping it again changes nothing

    async def _record(self, session_id: str) -> dict[str, Any]:
        """The session's record, the live state first: a running session may not be written
        yet, and an ended one may still be queued."""
        launcher = self._launcher
        running = launcher.running_session(session_id)
        if running is not None:
            return {
                "session_id": session_id,
                "run_id": running.run_id,
                "deployment_id": running.deployment_id,
                "pid": running.pid,
                "exit_status": None,
                "started_at": running.started_at,
                "ended_at": None,
                "end_reason": None,
                "signal": None,
                "log_bytes": None,
                "host": launcher.host,
                "stopping": running.stopping,
            }
        record = await self._journal.get_session(session_id)
        if record is not None and record["ended_at"] is None and record["host"] == launcher.host:
            await self._journal.flush()  # its end is seen and queued: read it written
            record = await self._journal.get_session(session_id)
        if record is None:
            raise NotFound(f"session {session_id} not found")
        return record

    def _wire(self, record: dict[str, Any]) -> dict[str, Any]:
        session_id = record["session_id"]
        log_bytes = record["log_bytes"]
        if record["host"] in (None, self._launcher.host):
            with contextlib.suppress(OSError):  # removed: the size it had when it ended
                log_bytes = self._launcher.log_path(session_id).stat().st_size
        exit_status = record["exit_status"]
        killed_by = -exit_status if exit_status is not None and exit_status < 0 else None
        return {
            "type": "session",
            "id": session_id,
            "status": _status(record),
            "pid": record["pid"],
            "exit_code": exit_status if exit_status is not None and exit_status >= 0 else None,
            "signal": _signal_name(killed_by),
            "started_at": _ts(record["started_at"]),
            "ended_at": _ts(record["ended_at"]),
            "end_reason": record["end_reason"],
            "stopping": record.get("stopping"),
            "deployment_id": record["deployment_id"],
            "run_id": record["run_id"],
            "log_bytes": log_bytes,
            "host": record["host"],
        }


class HostedSessions:
    """``managed_agents``: sessions live in the hosted API, not here."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url

    def _elsewhere(self, session_id: str) -> NotFound:
        return NotFound(
            f"session {session_id} is not a local session: with the managed_agents launcher "
            f"sessions live in the hosted API (GET {self._base_url}/v1/sessions/{session_id})"
        )

    async def get(self, session_id: str) -> dict[str, Any]:
        raise self._elsewhere(session_id)

    async def log(self, session_id: str) -> SessionLog:
        raise self._elsewhere(session_id)

    async def stop(self, session_id: str) -> dict[str, Any]:
        raise self._elsewhere(session_id)
