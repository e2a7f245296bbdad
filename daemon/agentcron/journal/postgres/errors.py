"""The one boundary where asyncpg's (and the socket's) exceptions become the project's.

``map_postgres_errors`` wraps every statement the PostgreSQL journal runs:

- the server cannot be reached or went away (connection refused or lost, shut down, starting
  up, in recovery, out of connections, disk full, I/O errors, read-only after a failover,
  a deadlock or serialization failure, a timeout): ``ServiceUnavailable`` (503), the request
  was fine and may be retried;
- a run naming a deployment that does not exist (a foreign-key violation): ``NotFound``;
- anything else: ``JournalError``.

The project's own errors pass unchanged. No message carries the connection URL or password
(asyncpg's messages name neither).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg
import asyncpg.exceptions as pg

from agentcron.errors import AgentcronError, JournalError, NotFound, ServiceUnavailable

_UNAVAILABLE: tuple[tuple[type[BaseException], str], ...] = (
    (pg.PostgresConnectionError, "the connection to the server was lost or refused"),
    (pg.CannotConnectNowError, "the server is not accepting connections yet"),
    (pg.OperatorInterventionError, "the server is shutting down or starting up"),
    (pg.InsufficientResourcesError, "the server is out of resources"),
    (pg.PostgresSystemError, "the server had a system error"),
    (pg.TransactionRollbackError, "the transaction collided with another one"),
    (pg.ReadOnlySQLTransactionError, "the server is read-only (a standby?)"),
    (OSError, "the server cannot be reached"),
    (TimeoutError, "the server did not answer in time"),
)

MISSING_DEPLOYMENT = "deployment not found (the run names no stored deployment)"


def translate(exc: BaseException) -> AgentcronError:
    """The project's error for a foreign exception met on the way to PostgreSQL."""
    if isinstance(exc, AgentcronError):
        return exc
    if isinstance(exc, pg.ForeignKeyViolationError):
        # Only runs reference another row (their deployment), and deployments are never
        # deleted: the run named a deployment that does not exist.
        return NotFound(MISSING_DEPLOYMENT)
    for kind, reason in _UNAVAILABLE:
        if isinstance(exc, kind):
            detail = getattr(exc, "sqlstate", None) or type(exc).__name__
            return ServiceUnavailable(f"journal unavailable: {reason} ({detail}: {exc})")
    if isinstance(exc, asyncpg.PostgresError):
        return JournalError(f"journal error: {exc} ({exc.sqlstate})")
    return JournalError(f"journal error: {type(exc).__name__}: {exc}")


FOREIGN = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
"""What ``map_postgres_errors`` translates (``ValueError`` too: asyncpg's bad arguments)."""


@contextlib.contextmanager
def map_postgres_errors() -> Iterator[None]:
    """Raise the project's error (``translate``) for an asyncpg or socket failure."""
    try:
        yield
    except AgentcronError:
        raise
    except (*FOREIGN, ValueError) as exc:
        raise translate(exc) from exc
