"""Launcher implementations: `command` (local processes) and `managed_agents` (hosted API)."""
