"""Leadership: which daemon runs the scheduler when several share one PostgreSQL journal.

Every daemon serves the whole control API; only the *leader* fires schedules (and delivers
webhooks). ``Leadership.run`` is the loop of one daemon:

- **follower**: try to take the lease (``agentcron.journal.postgres.lease``) whenever it can
  have expired by the database's clock (it waits exactly the lease's remaining time, at most
  ``ttl / 3``), or at once when the leader releases it on a clean stop;
- **leader**: a *term* begins: the daemon starts from the journal as a restart does (open
  claims completed as ``service_unavailable``, occurrences within ``misfire_grace`` fired,
  older ones counted as missed; deployment copies dropped), then fires until it steps down.
  The lease is renewed every ``ttl / 3``. Changes committed by other daemons arrive as
  notifications and are re-read from the journal and applied at once.

**Stepping down before the lease can expire.** A renewal that starts at ``t`` (this host's
monotonic clock) gives a lease that expires no earlier than ``t + ttl`` by the database's
clock: the database computes ``now() + ttl`` after ``t``. The daemon keeps leading only until
``t + ttl * VALID_FRACTION`` on its own monotonic clock unless a later renewal succeeds;
past that, or when a renewal finds the lease taken, or when the lease connection is lost, it
stops claiming at once (``fence`` raises) and ends its term. Only the *rate* of the two
clocks matters, never their offset. Whatever a paused process believes, every scheduled claim
is also fenced in the database, in its own transaction (``writes.HOLD_FENCE``), so a deposed
leader that wakes up claims nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import structlog

from agentcron.core.timeutil import format_ts
from agentcron.errors import AgentcronError, ServiceUnavailable
from agentcron.journal.postgres.lease import SCHEDULER_LEASE, LeaseLink, LeaseView
from agentcron.journal.postgres.store import PostgresJournal
from agentcron.journal.postgres.writes import Fence
from agentcron.runtime.roles import Role

log = structlog.get_logger("agentcron.leadership")

VALID_FRACTION = 0.75
"""A leader stops firing this fraction of ``ttl`` after the start of its last renewal."""
RETRY_MAX = 5.0
"""The longest wait between two attempts to reach a database that went away (seconds)."""


Term = Callable[[], Awaitable[None]]


class Leadership:
    """The lease loop of one daemon on a PostgreSQL journal; see the module docstring.

    ``term()`` is what the daemon does while leading (it runs until cancelled);
    ``after_term()`` is called once a term has ended (the fire path accepts manual runs
    again); ``refresh(ids)`` re-reads deployments other daemons changed and applies them.
    """

    def __init__(
        self,
        *,
        journal: PostgresJournal,
        node: str,
        ttl: float,
        term: Term,
        after_term: Callable[[], None],
        refresh: Callable[[Sequence[str]], Awaitable[None]],
    ) -> None:
        self.node_id = node
        self.ttl = ttl
        self._journal = journal
        self._term = term
        self._after_term = after_term
        self._refresh = refresh
        self._leading = False
        self._epoch: int | None = None
        self._valid_until = 0.0
        self._view: LeaseView | None = None
        self._term_scope: anyio.CancelScope | None = None
        self._wake = anyio.Event()
        self._changed: set[str] = set()
        self._changes_ready = anyio.Event()
        self.terms = 0
        """Terms this daemon has led so far."""
        self._link: LeaseLink = journal.lease_link(
            holder=node,
            ttl=ttl,
            on_change=self._on_change,
            on_release=self._on_release,
            on_lost=self._on_lost,
        )
        journal.attach_leadership(node, self.fence)

    # --- what the rest of the daemon asks ---------------------------------------------------

    @property
    def role(self) -> Role:
        return Role.LEADER if self._leading else Role.FOLLOWER

    def fence(self) -> Fence:
        """The fence of a scheduled claim now; ``ServiceUnavailable`` unless leading."""
        if not self._leading or self._epoch is None:
            raise ServiceUnavailable(f"this daemon ({self.node_id}) is not the leader")
        if time.monotonic() >= self._valid_until:
            self._step_down("lease_not_renewed")
            raise ServiceUnavailable(f"this daemon ({self.node_id}) could not renew its lease")
        return Fence(lease=SCHEDULER_LEASE, holder=self.node_id, epoch=self._epoch)

    def status(self) -> dict[str, Any]:
        """``/v1/health``'s ``leadership`` object (the lease as last seen)."""
        view = self._view
        current = view is not None and view.holder is not None and view.remaining() > 0
        return {
            "role": self.role.value,
            "node_id": self.node_id,
            "leader_id": view.holder if current and view is not None else None,
            "epoch": view.epoch if view is not None else None,
            "lease_expires_at": (
                format_ts(view.expires_at)
                if view is not None and view.expires_at is not None
                else None
            ),
            "lease_ttl_s": self.ttl,
            "connected": self._link.connected,
        }

    # --- the loop -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow or lead until cancelled; reports started after the first attempt at the
        lease (so the role is known). A clean stop releases a held lease."""
        started = False
        retry = 0.25
        outage: str | None = None
        try:
            while True:
                began = time.monotonic()
                try:
                    if not self._link.connected:
                        await self._link.open()
                    taken, view = await self._link.acquire(self._epoch)
                except ServiceUnavailable as exc:
                    if outage is None:
                        outage = str(exc)
                        log.error("leadership_journal_unreachable", error=outage)
                    if not started:
                        started = True
                        task_status.started()
                    await self._wait(retry)
                    retry = min(retry * 2, RETRY_MAX)
                    continue
                if outage is not None:
                    log.info("leadership_journal_reachable")
                    outage = None
                retry = 0.25
                self._view = view
                if not started:
                    started = True
                    task_status.started()
                if taken:
                    await self._lead(view, began)
                    continue
                self._wake = anyio.Event()
                await self._wait(min(self.ttl / 3, view.remaining() + 0.02))
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    async def _wait(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def _close(self) -> None:
        """A clean stop: let a lease still held at our epoch expire now (the statement
        changes nothing if it is not), so that a follower takes over at once."""
        epoch = self._epoch
        self._leading = False
        if epoch is not None and self._link.connected:
            try:
                if await self._link.release(epoch):
                    log.info("leadership_released", epoch=epoch)
            except AgentcronError as exc:
                log.warning("leadership_release_failed", epoch=epoch, error=str(exc))
        await self._link.aclose()

    async def _lead(self, view: LeaseView, began: float) -> None:
        assert view.epoch is not None
        self._epoch = view.epoch
        self._valid_until = began + self.ttl * VALID_FRACTION
        self._changed.clear()
        self._leading = True
        self.terms += 1
        log.info(
            "leadership_acquired",
            epoch=view.epoch,
            lease_expires_at=format_ts(view.expires_at) if view.expires_at else None,
        )
        try:
            async with anyio.create_task_group() as tg:
                self._term_scope = tg.cancel_scope
                tg.start_soon(self._keep_renewing, view.epoch, began)
                tg.start_soon(self._apply_changes)
                await self._term()
                tg.cancel_scope.cancel()
        finally:
            self._term_scope = None
            self._leading = False
            self._after_term()
            log.info("leadership_term_ended", epoch=view.epoch)

    def _step_down(self, reason: str) -> None:
        """Stop claiming now and end the term (sync: callable from any callback)."""
        if not self._leading:
            return
        self._leading = False
        log.warning("leadership_stepped_down", epoch=self._epoch, reason=reason)
        if self._term_scope is not None:
            self._term_scope.cancel()

    async def _keep_renewing(self, epoch: int, renewed_at: float) -> None:
        interval = self.ttl / 3
        while True:
            await anyio.sleep(max(0.0, renewed_at + interval - time.monotonic()))
            while True:
                began = time.monotonic()
                remaining = self._valid_until - began
                if remaining <= 0:
                    self._step_down("lease_not_renewed")
                    return
                try:
                    view = await self._link.renew(epoch, within=remaining)
                except ServiceUnavailable as exc:
                    if not self._link.connected:
                        self._step_down("journal_connection_lost")
                        return
                    log.warning("leadership_renewal_failed", epoch=epoch, error=str(exc))
                    await anyio.sleep(min(interval / 3, max(0.0, remaining)))
                    continue
                if view is None:
                    self._step_down("lease_taken_over")
                    return
                self._valid_until = began + self.ttl * VALID_FRACTION
                self._view = view
                renewed_at = began
                break

    async def _apply_changes(self) -> None:
        """Apply, batched, the changes other daemons committed (their notifications)."""
        while True:
            if not self._changed:
                self._changes_ready = anyio.Event()
                await self._changes_ready.wait()
            batch, self._changed = sorted(self._changed), set()
            try:
                await self._refresh(batch)
            except AgentcronError as exc:  # read again shortly (or step down: connection)
                log.warning("leadership_refresh_failed", deployments=len(batch), error=str(exc))
                self._changed.update(batch)
                await anyio.sleep(0.1)

    # --- callbacks of the lease connection (sync, on the event loop) ------------------------

    def _on_change(self, node: str, deployment_id: str) -> None:
        if self._leading and node != self.node_id:
            self._changed.add(deployment_id)
            self._changes_ready.set()

    def _on_release(self) -> None:
        self._wake.set()

    def _on_lost(self) -> None:
        self._step_down("journal_connection_lost")
        self._wake.set()
