"""Test doubles for the edges agentcron talks to: a clock and a launcher; and poll helpers.

These are written for the tests (SPEC allows a simple launcher in scheduler tests); they
implement the project's Protocols and are never used by the daemon itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio

from agentcron import ids
from agentcron.config import Declarations
from agentcron.core.models import AgentRef, RunErrorType
from agentcron.errors import InvalidRequest, LaunchFailure
from agentcron.launchers.base import SessionRequest


class FakeClock:
    """A clock that only moves when a test moves it.

    ``sleep`` parks the caller until ``advance`` moves the monotonic time past its deadline;
    ``step_wall`` moves only the wall clock, like an NTP step. Time is kept in whole
    microseconds, so a deadline computed from wall-clock instants is met exactly.
    """

    def __init__(self, start: datetime) -> None:
        self._wall = start
        self._mono_us = 0
        self._sleepers: list[tuple[int, anyio.Event]] = []

    def now(self) -> datetime:
        return self._wall

    @property
    def monotonic(self) -> float:
        return self._mono_us / 1_000_000

    async def sleep(self, seconds: float) -> None:
        micros = round(seconds * 1_000_000)
        if micros <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        sleeper = (self._mono_us + micros, event)
        self._sleepers.append(sleeper)
        try:
            await event.wait()
        finally:
            if sleeper in self._sleepers:  # cancelled before its deadline: forget it
                self._sleepers.remove(sleeper)

    @property
    def sleepers(self) -> int:
        """How many tasks are parked in ``sleep`` right now."""
        return len(self._sleepers)

    def step_wall(self, delta: timedelta) -> None:
        self._wall += delta

    async def advance(self, seconds: float) -> None:
        """Move both clocks forward, waking each sleeper in deadline order on the way.

        Tasks that are ready to run (say, one just woken to re-compute its deadline) get to
        go to sleep again before time moves, so no deadline is jumped over.
        """
        await anyio.wait_all_tasks_blocked()
        target = self._mono_us + round(seconds * 1_000_000)
        while True:
            due = [s for s in self._sleepers if s[0] <= target]
            if not due:
                break
            deadline, event = min(due, key=lambda s: s[0])
            self._sleepers.remove((deadline, event))
            self._move_to(deadline)
            event.set()
            await anyio.wait_all_tasks_blocked()
        self._move_to(target)
        await anyio.wait_all_tasks_blocked()

    def _move_to(self, mono_us: int) -> None:
        if mono_us > self._mono_us:
            self._wall += timedelta(microseconds=mono_us - self._mono_us)
            self._mono_us = mono_us


@dataclass
class RecordingLauncher:
    """A launcher that records every request and answers as scripted.

    ``agents`` maps agent id -> latest version; ids in ``archived_agents`` fail with
    ``agent_archived``. ``fail_with`` makes every creation fail with that run error type;
    ``delay`` makes each creation take that long (real seconds); while ``gate`` is set to an
    unset event, each creation waits for it (after recording the request). ``wait_for_requests``
    returns once that many requests arrived.
    """

    agents: Mapping[str, int] = field(default_factory=lambda: {"agent_test": 1})
    environments: frozenset[str] = frozenset({"env_test"})
    archived_agents: set[str] = field(default_factory=set)
    fail_with: str | None = None
    delay: float = 0.0
    requests: list[SessionRequest] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    gate: anyio.Event | None = None
    _arrived: anyio.Event | None = field(default=None, repr=False)

    async def resolve_agent(self, agent_id: str, version: int | None) -> AgentRef:
        latest = self.agents.get(agent_id)
        if latest is None or agent_id in self.archived_agents:
            raise InvalidRequest(f"agent: agent {agent_id!r} does not exist or is archived")
        if version is not None and not 1 <= version <= latest:
            raise InvalidRequest(f"agent: agent {agent_id!r} has no version {version}")
        return AgentRef(id=agent_id, version=version or latest)

    async def validate_environment(self, environment_id: str) -> None:
        if environment_id not in self.environments:
            raise InvalidRequest(f"environment_id: unknown environment {environment_id!r}")

    async def create_session(self, request: SessionRequest) -> str:
        self.requests.append(request)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await anyio.sleep(self.delay)
        if request.agent.id in self.archived_agents:
            raise LaunchFailure(
                RunErrorType.AGENT_ARCHIVED, f"agent `{request.agent.id}` is archived"
            )
        if self.fail_with is not None:
            raise LaunchFailure(RunErrorType(self.fail_with), f"scripted failure: {self.fail_with}")
        session_id = ids.new_id(ids.SESSION)
        self.session_ids.append(session_id)
        return session_id

    async def wait_for_requests(self, count: int) -> None:
        """Wait until at least ``count`` session creations have been requested."""
        while len(self.requests) < count:
            if self._arrived is None:
                self._arrived = anyio.Event()
            await self._arrived.wait()

    async def validate_vaults(self, vault_ids: Sequence[str]) -> None:
        """Every vault is fine here."""

    def unavailable_reason(self) -> str | None:
        return None

    def reload(self, declarations: Declarations) -> None:
        """Nothing declared locally."""

    async def aclose(self) -> None:
        return None


POLL_SECONDS = 10.0


async def eventually(condition: Callable[[], bool], what: str, *, interval: float = 0.02) -> None:
    """Poll ``condition`` until it holds, for state with nothing to wait on (a child process's
    files or status, a background task's effect); fail naming ``what`` after 10 s."""
    for _ in range(max(1, round(POLL_SECONDS / interval))):
        if condition():
            return
        await anyio.sleep(interval)
    raise AssertionError(f"{what}: not reached within {POLL_SECONDS:g} s")


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = POLL_SECONDS) -> None:
    """``eventually`` for blocking code (a daemon in another process, a CLI subprocess):
    poll ``condition`` every 50 ms; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g} s")
        time.sleep(0.05)
