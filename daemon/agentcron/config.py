"""Configuration: the TOML file of SPEC §7 as typed, validated values.

``load_config`` (below) reads a file, applies command-line overrides and returns a ``Config``
or raises ``ConfigError`` listing every problem, each naming its key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LauncherType = Literal["command", "managed_agents"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDecl:
    """A local agent for the ``command`` launcher: a program and its version."""

    id: str
    version: int
    argv: tuple[str, ...]
    archived: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvironmentDecl:
    """A local environment: a working directory and environment variables."""

    id: str
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    archived: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultDecl:
    """A local vault: an env-file of credentials merged into the session's environment."""

    id: str
    env_file: Path
    archived: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Declarations:
    """What the ``command`` launcher knows; replaced as a whole on SIGHUP."""

    agents: dict[str, AgentDecl] = field(default_factory=dict)
    environments: dict[str, EnvironmentDecl] = field(default_factory=dict)
    vaults: dict[str, VaultDecl] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagedAgentsConfig:
    """Settings of the ``managed_agents`` launcher."""

    base_url: str = "https://api.anthropic.com"
    api_key_file: Path | None = None
    timeout: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LauncherConfig:
    type: LauncherType = "command"
    max_concurrent_sessions: int = 16
    stop_grace: float = 10.0
    managed_agents: ManagedAgentsConfig = field(default_factory=ManagedAgentsConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonConfig:
    state_dir: Path
    socket: Path
    socket_group: str | None = None
    allowed_uids: tuple[int, ...] = ()
    allowed_gids: tuple[int, ...] = ()
    max_deployments: int = 1000
    max_jitter: float = 10.0
    misfire_grace: float = 60.0
    max_request_bytes: int = 10 * 1024 * 1024
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    auto_pause_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    daemon: DaemonConfig
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    declarations: Declarations = field(default_factory=Declarations)
