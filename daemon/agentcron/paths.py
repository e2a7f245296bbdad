"""Where the control socket lives when nobody says otherwise.

The daemon and the CLI share this one function so that both find the same socket:

1. ``$RUNTIME_DIRECTORY/control.sock`` — systemd's ``RuntimeDirectory=`` for the daemon itself;
2. ``/run/agentcron/control.sock`` if that socket exists (a system daemon under systemd);
3. ``$XDG_RUNTIME_DIR/agentcron/control.sock`` — a per-user daemon;
4. ``/tmp/agentcron-<uid>/control.sock`` — a private directory when nothing else is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SOCKET_NAME = "control.sock"
SYSTEM_SOCKET = Path("/run/agentcron") / SOCKET_NAME
SOCKET_ENV = "AGENTCRON_SOCKET"


def default_socket_path(
    environ: Mapping[str, str] | None = None, *, system_socket: Path = SYSTEM_SOCKET
) -> Path:
    """The default control socket path (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    runtime_directory = env.get("RUNTIME_DIRECTORY")
    if runtime_directory:
        # systemd may pass several directories separated by ':'; the first is ours.
        return Path(runtime_directory.split(":")[0]) / SOCKET_NAME
    if _is_socket(system_socket):
        return system_socket
    xdg_runtime_dir = env.get("XDG_RUNTIME_DIR")
    if xdg_runtime_dir:
        return Path(xdg_runtime_dir) / "agentcron" / SOCKET_NAME
    return Path("/tmp") / f"agentcron-{os.getuid()}" / SOCKET_NAME


def resolve_socket_path(
    explicit: str | Path | None, environ: Mapping[str, str] | None = None
) -> Path:
    """``explicit`` (``--socket``), else ``$AGENTCRON_SOCKET``, else the default path."""
    if explicit:
        return Path(explicit)
    env = os.environ if environ is None else environ
    from_env = env.get(SOCKET_ENV)
    if from_env:
        return Path(from_env)
    return default_socket_path(env)


def _is_socket(path: Path) -> bool:
    try:
        return path.is_socket()
    except OSError:  # e.g. EACCES on a 0750 directory we are not a member of
        return False
