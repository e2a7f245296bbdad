"""Deployment copies for the fire path: the journal's current deployments, kept in memory.

A fire needs its deployment (agent, environment, events, ...). ``DeploymentCopies`` keeps a
bounded copy of each (least recently used evicted first), fed by the service's change events
(``changed``, called with every committed object, also for changes that land while a read is
in flight), so a deployment created or changed since start, or fired once, fires again without
a read. For the others the scheduler announces fires a moment before they are due
(``read_ahead``); ``run`` reads them in one query per batch, so a due fire goes straight to its
claim. ``get`` returns the kept copy or reads the journal itself. Either way the copy is the
journal's current one: a read that raced with a change of that deployment is not kept.
"""

from __future__ import annotations

from typing import Protocol

import anyio
import anyio.abc
import structlog

from agentcron.core.models import Deployment
from agentcron.errors import AgentcronError

log = structlog.get_logger("agentcron.scheduler")

READ_BATCH = 500
"""Deployments read ahead per query."""
MAX_KEPT = 16_384
"""Deployment copies kept at most (about 1-2 kB each)."""


class DeploymentReads(Protocol):
    """The part of ``agentcron.journal.Journal`` the copies read through."""

    async def get_deployment(self, deployment_id: str) -> Deployment | None: ...

    async def get_deployments(self, deployment_ids: list[str]) -> dict[str, Deployment]: ...


class DeploymentCopies:
    """The journal's current deployments, kept (bounded) and read ahead in batches."""

    def __init__(
        self, journal: DeploymentReads, *, max_kept: int = MAX_KEPT, read_batch: int = READ_BATCH
    ) -> None:
        if max_kept < 1 or read_batch < 1:
            raise ValueError("max_kept and read_batch must be at least 1")
        self._journal = journal
        self.journal_reads = 0
        """Deployments asked of the journal so far (one fire's read, or a read-ahead batch's)."""
        self._max_kept = max_kept
        self._read_batch = read_batch
        self._kept: dict[str, Deployment] = {}  # insertion order = least recently used first
        self._changes_seen = 0  # ``changed`` calls so far
        self._changed_while_reading: set[str] | None = None
        self._to_read: list[str] = []
        self._wanted = anyio.Event()
        self._reading = False

    # --- what the service and the scheduler tell us (sync, cheap) ---------------------------

    def changed(self, deployment: Deployment) -> None:
        """Keep the committed copy of a deployment that changed (a service subscriber)."""
        self._changes_seen += 1
        if self._changed_while_reading is not None:
            self._changed_while_reading.add(deployment.id)
        self._keep(deployment)

    def clear(self) -> None:
        """Drop every kept copy (they may predate changes made elsewhere: a new leader)."""
        self._changes_seen += 1
        self._kept.clear()
        self._to_read.clear()

    def read_ahead(self, deployment_ids: list[str]) -> None:
        """Read these deployments (soon due) in the background, batched."""
        self._to_read.extend(deployment_ids)
        self._wanted.set()

    # --- what a fire asks -------------------------------------------------------------------

    async def get(self, deployment_id: str) -> Deployment | None:
        """The journal's current copy: the one kept if there is one, else read now.

        Raises what the journal raises (``ServiceUnavailable``, ...).
        """
        deployment = self._kept.get(deployment_id)
        if deployment is not None:
            self._keep(deployment)  # now the most recently used
            return deployment
        changes = self._changes_seen
        self.journal_reads += 1
        deployment = await self._journal.get_deployment(deployment_id)
        if deployment is not None and self._changes_seen == changes:
            self._keep(deployment)  # no change landed during the read: it is current
        return deployment

    # --- looking inside (status, tests) -----------------------------------------------------

    def kept_ids(self) -> list[str]:
        """The ids of the kept copies, least recently used first."""
        return list(self._kept)

    @property
    def reading(self) -> bool:
        """Whether a read-ahead is queued or in flight."""
        return self._reading or bool(self._to_read)

    # --- the reader task --------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Read announced deployments ahead, batch by batch, until cancelled."""
        task_status.started()
        while True:
            await self._wanted.wait()
            self._wanted = anyio.Event()
            self._reading = True
            try:
                await self._read_batches()
            finally:
                self._reading = False

    async def _read_batches(self) -> None:
        while self._to_read:
            batch = [i for i in self._to_read[: self._read_batch] if i not in self._kept]
            del self._to_read[: self._read_batch]
            if not batch:
                continue
            changed: set[str] = set()
            self._changed_while_reading = changed
            self.journal_reads += len(batch)
            try:
                found = await self._journal.get_deployments(batch)
            except AgentcronError as exc:  # the fires read for themselves
                log.warning("read_ahead_failed", deployments=len(batch), error=str(exc))
                continue
            finally:
                self._changed_while_reading = None
            for deployment_id, deployment in found.items():
                if deployment_id not in changed:
                    self._keep(deployment)

    def _keep(self, deployment: Deployment) -> None:
        """Store ``deployment`` as the most recently used copy; evict the oldest beyond the cap."""
        kept = self._kept
        kept.pop(deployment.id, None)
        kept[deployment.id] = deployment
        while len(kept) > self._max_kept:
            del kept[next(iter(kept))]
