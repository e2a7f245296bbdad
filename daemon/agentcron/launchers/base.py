"""The ``Launcher`` interface: one fire becomes one session.

Implementations live in ``agentcron.launchers`` (``command`` runs a local program,
``managed_agents`` calls the hosted API). The scheduler and the deployment service only ever
see this Protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agentcron.config import Declarations
from agentcron.core.models import AgentRef, Deployment, JSONObject


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRequest:
    """Everything one session is created from. ``resources`` carry their secrets."""

    deployment_id: str
    run_id: str
    agent: AgentRef
    environment_id: str
    initial_events: list[JSONObject]
    metadata: dict[str, str] = field(default_factory=dict)
    resources: list[JSONObject] = field(default_factory=list)
    vault_ids: list[str] = field(default_factory=list)
    budget: JSONObject | None = None
    title: str | None = None

    @classmethod
    def for_deployment(cls, deployment: Deployment, run_id: str) -> SessionRequest:
        return cls(
            deployment_id=deployment.id,
            run_id=run_id,
            agent=deployment.agent,
            environment_id=deployment.environment_id,
            initial_events=deployment.initial_events,
            metadata=deployment.metadata,
            resources=deployment.resources,
            vault_ids=deployment.vault_ids,
            budget=deployment.budget,
            title=deployment.name,
        )

    def session_body(self) -> dict[str, Any]:
        """The body of ``POST /v1/sessions`` (and the JSON a local session reads on stdin)."""
        body: dict[str, Any] = {
            "agent": {"type": "agent", "id": self.agent.id, "version": self.agent.version},
            "environment_id": self.environment_id,
            "initial_events": self.initial_events,
            "metadata": self.metadata,
            "resources": self.resources,
            "vault_ids": self.vault_ids,
        }
        if self.budget is not None:
            body["budget"] = self.budget
        if self.title is not None:
            body["title"] = self.title
        return body


class SessionRecorder(Protocol):
    """Where a launcher records the life of the local sessions it starts (the journal).

    Both calls only queue the record (it is written with the next group commit and a failure
    is logged), so a burst of sessions costs the launcher no waiting.
    """

    def session_started(
        self,
        *,
        session_id: str,
        run_id: str,
        deployment_id: str,
        pid: int,
        started_at: datetime,
        host: str | None = None,
    ) -> None:
        """Record that ``session_id`` started as process ``pid`` on ``host``."""
        ...

    def session_ended(
        self,
        *,
        session_id: str,
        exit_status: int | None,
        ended_at: datetime,
        end_reason: str = "exited",
        log_bytes: int | None = None,
    ) -> None:
        """Record the process's exit status (negative: killed by that signal; ``None``:
        unknown), why it ended and its log's size."""
        ...


class Launcher(Protocol):
    """Creates sessions and resolves the agents and environments deployments name."""

    async def resolve_agent(self, agent_id: str, version: int | None) -> AgentRef:
        """Pin ``agent_id`` to ``version``, or to its latest version when ``None``.

        Raises ``InvalidRequest`` (naming ``agent``) when the agent does not exist, is
        archived or has no such version.
        """
        ...

    async def validate_environment(self, environment_id: str) -> None:
        """Raise ``InvalidRequest`` (naming ``environment_id``) if it cannot be used."""
        ...

    async def validate_vaults(self, vault_ids: Sequence[str]) -> None:
        """Raise ``InvalidRequest`` naming ``vault_ids[i]`` for the first vault that does not
        exist or is archived (``ServiceUnavailable`` when that cannot be known right now).

        A vault removed later is still found at fire time (``vault_not_found``).
        """
        ...

    async def create_session(self, request: SessionRequest) -> str:
        """Create one session and return its id (``sesn_...``).

        Raises ``LaunchFailure`` with a run error type on every failure; never retries.
        """
        ...

    def unavailable_reason(self) -> str | None:
        """Why the latest session creation failed for a cause every session shares (the
        session log cannot be created, the hosted API is unreachable or refuses the key), or
        ``None`` once a session was created since (for ``/v1/health``). Cheap: no I/O."""
        ...

    def reload(self, declarations: Declarations) -> None:
        """Take the agents, environments and vaults of a re-read config (SIGHUP).

        Sessions already running are not touched. A launcher that declares nothing locally
        (``managed_agents``) ignores them.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; stop local sessions still running (SIGTERM, then SIGKILL)."""
        ...
