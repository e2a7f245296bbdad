"""Leadership among daemons sharing one PostgreSQL journal: the lease row and the wake-ups.

The ``leases`` table (schema version 1) holds one row per lease: its ``holder``, its
``epoch`` and when it expires, always computed by the database's clock (``now()``), never a
host's. ``LeaseLink`` owns one dedicated connection of its own (not the writer's, not the
read pool's): it takes the lease over when it has expired (the epoch goes up by one on every
takeover), renews it while held, releases it on a clean stop, and LISTENs there for
``agentcron_changes`` (a deployment changed, sent with ``pg_notify`` in the transaction of the
change, by whichever daemon made it) and ``agentcron_lease`` (a lease was released).

Concurrent takeovers are decided by the row itself: ``INSERT ... ON CONFLICT DO UPDATE ...
WHERE expired`` locks the row and re-checks the condition on its newest version, so two
followers racing for an expired lease cannot both win. Fenced claims hold the row ``FOR SHARE``
in their own transaction (``agentcron.journal.postgres.writes.HOLD_FENCE``), so a takeover
waits for claims in flight and a claim that waited for a takeover finds its epoch gone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from agentcron.errors import ServiceUnavailable
from agentcron.journal.postgres.errors import FOREIGN, map_postgres_errors

log = structlog.get_logger(__name__)

SCHEDULER_LEASE = "scheduler"
"""The lease whose holder runs the scheduler (the only one there is)."""
CHANGES_CHANNEL = "agentcron_changes"
"""NOTIFY channel: payload ``<node id> <deployment id>``, sent in the change's transaction."""
LEASE_CHANNEL = "agentcron_lease"
"""NOTIFY channel: a lease was released (payload: its name); followers try to take it now."""

NOTIFY_CHANGE = "SELECT pg_notify('agentcron_changes', $1)"

# Takes the lease if it does not exist, has expired by the database's clock, or is still this
# daemon's own at the epoch it knows (it stepped down and comes back): always a new epoch.
_ACQUIRE = """
INSERT INTO leases AS l (name, holder, epoch, expires_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, epoch = l.epoch + 1, expires_at = excluded.expires_at
WHERE l.expires_at <= now() OR (l.holder = $2 AND l.epoch = $4::bigint)
RETURNING l.holder, l.epoch, l.expires_at, now()
"""
_CURRENT = "SELECT holder, epoch, expires_at, now() FROM leases WHERE name = $1"
_RENEW = """
UPDATE leases SET expires_at = now() + make_interval(secs => $3)
WHERE name = $1 AND holder = $2 AND epoch = $4 AND expires_at > now()
RETURNING holder, epoch, expires_at, now()
"""
_RELEASE = """
UPDATE leases SET expires_at = now()
WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
"""

Connect = Callable[[], Awaitable[asyncpg.Connection]]


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseView:
    """The lease row as the database saw it (``None`` fields: no row yet)."""

    holder: str | None
    epoch: int | None
    expires_at: datetime | None
    db_now: datetime

    def remaining(self) -> float:
        """Seconds until it expires by the database's clock (0 when expired or missing)."""
        if self.expires_at is None:
            return 0.0
        return max(0.0, (self.expires_at - self.db_now).total_seconds())


class LeaseLink:
    """One connection for the lease and the notifications of one daemon (``holder``)."""

    def __init__(
        self,
        connect: Connect,
        *,
        holder: str,
        ttl: float,
        on_change: Callable[[str, str], None],
        on_release: Callable[[], None],
        on_lost: Callable[[], None],
        name: str = SCHEDULER_LEASE,
    ) -> None:
        """``on_change(node_id, deployment_id)``, ``on_release()`` and ``on_lost()`` (the
        connection went away) are called from the event loop, synchronously."""
        self._connect = connect
        self.holder = holder
        self.ttl = ttl
        self.name = name
        self._on_change = on_change
        self._on_release = on_release
        self._on_lost = on_lost
        self._conn: asyncpg.Connection | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def open(self) -> None:
        """Connect and LISTEN. Raises ``ServiceUnavailable`` when the database is away."""
        self.close()
        with map_postgres_errors():
            conn = await self._connect()
            try:
                await conn.add_listener(CHANGES_CHANNEL, self._changed)
                await conn.add_listener(LEASE_CHANNEL, self._released)
            except BaseException:
                conn.terminate()
                raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn

    def close(self) -> None:
        """Drop the connection (a clean ``release`` first, if the lease is held)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.remove_termination_listener(self._terminated)
            conn.terminate()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.remove_termination_listener(self._terminated)
        try:
            await conn.close(timeout=5)
        except (*FOREIGN, ValueError):
            conn.terminate()

    def _live(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is None or conn.is_closed():
            raise ServiceUnavailable("journal unavailable: the lease connection is lost")
        return conn

    async def acquire(self, known_epoch: int | None) -> tuple[bool, LeaseView]:
        """Try to take the lease; (taken, the row as it is now)."""
        conn = self._live()
        with map_postgres_errors():
            row = await conn.fetchrow(_ACQUIRE, self.name, self.holder, self.ttl, known_epoch)
            if row is not None:
                return True, _view(row)
            row = await conn.fetchrow(_CURRENT, self.name)
        if row is None:  # pragma: no cover - the upsert above leaves a row
            raise ServiceUnavailable("journal unavailable: the lease row vanished")
        return False, _view(row)

    async def renew(self, epoch: int, *, within: float) -> LeaseView | None:
        """Extend the lease held at ``epoch`` (waiting at most ``within`` seconds for the
        answer); ``None`` if it is no longer ours."""
        conn = self._live()
        with map_postgres_errors():
            row = await conn.fetchrow(
                _RENEW, self.name, self.holder, self.ttl, epoch, timeout=max(within, 0.01)
            )
        return None if row is None else _view(row)

    async def release(self, epoch: int) -> bool:
        """Let the lease held at ``epoch`` expire now and tell the followers (a clean stop);
        False (nothing changed) if it is not held at that epoch."""
        conn = self._live()
        with map_postgres_errors():
            async with conn.transaction():
                status = await conn.execute(_RELEASE, self.name, self.holder, epoch, timeout=5)
                if status.endswith(" 0"):
                    return False
                await conn.execute("SELECT pg_notify($1, $2)", LEASE_CHANNEL, self.name)
        return True

    def _changed(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        node, _, deployment_id = str(payload).partition(" ")
        if deployment_id:
            self._on_change(node, deployment_id)

    def _released(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if payload == self.name:
            self._on_release()

    def _terminated(self, _conn: object) -> None:
        self._conn = None
        self._on_lost()


def _view(row: asyncpg.Record) -> LeaseView:
    return LeaseView(holder=row[0], epoch=row[1], expires_at=row[2], db_now=row[3])
