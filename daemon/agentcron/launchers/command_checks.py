"""What a ``command`` launcher's declarations would fail on at fire time, found beforehand.

``agentcrond --check-config`` reports these problems (exit 2); at start and on SIGHUP the
daemon logs them as warnings and runs anyway, since a program, directory or env-file may appear
later. Each problem names its key, as ``ConfigError`` problems do:

- ``agents.<id>.argv[0]``: the program does not exist, is a directory or is not executable (a
  bare name is looked up on the daemon's ``PATH``, as a session would be started);
- ``environments.<id>.cwd``: the directory does not exist or is not a directory;
- ``vaults.<id>.env_file``: the env-file cannot be read, is not UTF-8 or is malformed (read
  with the parser sessions use, ``read_vault_file``).

Archived declarations are skipped: they never start a session. Only the file system is read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from agentcron.config import AgentDecl, Config, EnvironmentDecl
from agentcron.launchers.command import DEFAULT_PATH, VaultFileError, read_vault_file


def declaration_problems(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Every problem of the ``command`` launcher's declarations (none for another launcher)."""
    if config.launcher.type != "command":
        return []
    declarations = config.declarations
    problems: list[str] = []
    path = environ.get("PATH") or DEFAULT_PATH
    for agent in declarations.agents.values():
        if not agent.archived and (problem := _program_problem(agent, path)):
            problems.append(f"agents.{agent.id}.argv[0]: {problem}")
    for environment in declarations.environments.values():
        if not environment.archived and (problem := _cwd_problem(environment)):
            problems.append(f"environments.{environment.id}.cwd: {problem}")
    for vault in declarations.vaults.values():
        if vault.archived:
            continue
        try:
            read_vault_file(vault.env_file)
        except VaultFileError as exc:
            problems.append(f"vaults.{vault.id}.env_file: {exc}")
    return problems


def _program_problem(agent: AgentDecl, path: str) -> str | None:
    program = agent.argv[0] if agent.argv else ""
    if not program:
        return None  # already a configuration error
    if "/" not in program:
        if shutil.which(program, path=path) is None:
            return f"program {program!r} is not found on PATH ({path})"
        return None
    file = Path(program)
    if not file.is_absolute():
        return None  # relative to the environment's cwd, which differs per deployment
    if not file.exists():
        return f"program {program} does not exist"
    if file.is_dir():
        return f"program {program} is a directory"
    if not os.access(file, os.X_OK):
        return f"program {program} is not executable"
    return None


def _cwd_problem(environment: EnvironmentDecl) -> str | None:
    cwd = environment.cwd
    if cwd is None:
        return None
    if not cwd.exists():
        return f"directory {cwd} does not exist"
    if not cwd.is_dir():
        return f"{cwd} is not a directory"
    return None
