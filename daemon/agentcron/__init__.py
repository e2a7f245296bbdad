"""agentcron: a self-hosted scheduler for Managed Agents scheduled deployments."""

__version__ = "0.1.0"
