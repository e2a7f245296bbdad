"""Launcher implementations: `command` (local processes) and `managed_agents` (hosted API).

``create_launcher`` picks one by ``[launcher] type``. Either must be entered
(``async with launcher:``) before it creates sessions; leaving the context releases its
connections and stops local sessions still running.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol, Self

from agentcron.clock import Clock
from agentcron.config import Config
from agentcron.launchers.api_key import load_api_key
from agentcron.launchers.base import Launcher, SessionRecorder
from agentcron.launchers.command import CommandLauncher
from agentcron.launchers.managed_agents import ManagedAgentsLauncher

__all__ = [
    "CommandLauncher",
    "LauncherContext",
    "ManagedAgentsLauncher",
    "create_launcher",
    "load_api_key",
]


class LauncherContext(Launcher, Protocol):
    """A ``Launcher`` that is also an async context manager (what ``create_launcher`` returns)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def create_launcher(
    config: Config,
    *,
    recorder: SessionRecorder | None,
    clock: Clock,
    environ: Mapping[str, str] | None = None,
) -> LauncherContext:
    """The launcher ``config.launcher.type`` names.

    ``managed_agents`` reads its API key here (``environ`` defaults to ``os.environ``) and
    raises ``ConfigError`` when there is none; ``recorder`` is only used by ``command``.
    """
    settings = config.launcher
    if settings.type == "managed_agents":
        managed = settings.managed_agents
        return ManagedAgentsLauncher(
            base_url=managed.base_url,
            api_key=load_api_key(managed, os.environ if environ is None else environ),
            timeout=managed.timeout,
            max_connections=max(100, settings.max_concurrent_creations),
        )
    return CommandLauncher(
        declarations=config.declarations,
        state_dir=config.daemon.state_dir,
        max_concurrent_sessions=settings.max_concurrent_sessions,
        stop_grace=settings.stop_grace,
        recorder=recorder,
        clock=clock,
        host=config.daemon.node_name,
        log_max_bytes=config.retention.session_log_max_bytes,
    )
