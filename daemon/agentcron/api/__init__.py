"""The control API: HTTP/1.1 over a Unix socket, wire-compatible with the hosted API (SPEC §5)."""

from __future__ import annotations

from agentcron.api.app import create_app
from agentcron.api.socket import bind_control_socket, serve

__all__ = ["bind_control_socket", "create_app", "serve"]
