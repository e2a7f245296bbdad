"""The PostgreSQL journal's schema, its forward migrations and the guard around them.

The table ``agentcron_schema`` holds one row, the schema version; a database without it is at
version 0. ``MIGRATIONS[n]`` takes the database from version ``n`` to ``n + 1``. Each step
runs in its own transaction that first takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock``), then reads the version: two daemons starting together queue on
the lock, and the second finds the work done. A database whose version is newer than
``SCHEMA_VERSION`` was written by a newer agentcron and is refused, untouched.

The shape follows the SQLite schema (``agentcron.journal.sqlite.schema``) with PostgreSQL's
own types: ``timestamptz`` (microseconds, like the SQLite integers), ``json`` (kept as
written, key order included), ``boolean`` generated columns. Ids and agent ids sort
byte-wise (``COLLATE "C"``) so that pages are ordered exactly as in SQLite, whatever the
database's locale.

A run is an *open claim* while ``created_at`` is NULL; every list index is partial on
``created_at IS NOT NULL`` and every list query repeats that condition.

``leases`` and ``runs.epoch`` are there for leadership among several daemons on one database:
a leader holds the lease row (holder, epoch, expiry by the database clock), and a fenced
claim is written only while its epoch is current. Nothing writes them yet.
"""

from __future__ import annotations

import zlib

import asyncpg

from agentcron.errors import JournalError

SCHEMA_VERSION = 3

MIGRATION_LOCK = zlib.crc32(b"agentcron journal migrations")
"""The advisory lock key every migration step holds (any fixed 64-bit number would do)."""

_V1 = """
CREATE TABLE deployments (
    id                  text COLLATE "C" PRIMARY KEY,
    name                text NOT NULL,
    description         text,
    agent_id            text COLLATE "C" NOT NULL,
    agent_version       bigint NOT NULL,
    environment_id      text NOT NULL,
    initial_events      json NOT NULL,
    metadata            json NOT NULL,
    resources           json NOT NULL,
    vault_ids           json NOT NULL,
    budget              json,
    schedule_expression text,
    schedule_timezone   text,
    paused_type         text,
    paused_error_type   text,
    archived_at         timestamptz,
    last_run_at         timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    archived            boolean GENERATED ALWAYS AS (archived_at IS NOT NULL) STORED,
    paused              boolean GENERATED ALWAYS AS (paused_type IS NOT NULL) STORED,
    CHECK ((schedule_expression IS NULL) = (schedule_timezone IS NULL)),
    CHECK (paused_type IS NULL OR paused_type IN ('manual', 'error')),
    CHECK ((paused_type = 'error') = (paused_error_type IS NOT NULL))
);
CREATE INDEX deployments_created ON deployments (created_at, id);
CREATE INDEX deployments_state ON deployments (archived, paused, created_at, id);
CREATE INDEX deployments_live ON deployments (archived, created_at, id);
CREATE INDEX deployments_agent ON deployments (agent_id, created_at, id);
CREATE INDEX deployments_agent_live ON deployments (agent_id, archived, created_at, id);
CREATE INDEX deployments_agent_state ON deployments (agent_id, archived, paused, created_at, id);

CREATE TABLE runs (
    id              text COLLATE "C" PRIMARY KEY,
    deployment_id   text COLLATE "C" NOT NULL REFERENCES deployments (id),
    agent_id        text NOT NULL,
    agent_version   bigint NOT NULL,
    trigger_type    text NOT NULL CHECK (trigger_type IN ('schedule', 'manual')),
    scheduled_at    timestamptz,
    claimed_at      timestamptz NOT NULL,
    session_id      text,
    error_type      text,
    error_message   text,
    created_at      timestamptz,
    epoch           bigint,
    has_error       boolean GENERATED ALWAYS AS (error_type IS NOT NULL) STORED,
    -- At most one run per occurrence of a schedule (SPEC 2): the idempotence of firing.
    -- NULLs are distinct, so manual runs (no scheduled_at) never conflict.
    CONSTRAINT runs_occurrence UNIQUE (deployment_id, scheduled_at),
    CHECK ((trigger_type = 'schedule') = (scheduled_at IS NOT NULL)),
    CHECK ((error_type IS NULL) = (error_message IS NULL)),
    CHECK (session_id IS NULL OR error_type IS NULL),
    CHECK ((created_at IS NULL) = (session_id IS NULL AND error_type IS NULL))
);
CREATE INDEX runs_open ON runs (claimed_at) WHERE created_at IS NULL;
CREATE INDEX runs_created ON runs (created_at, id) WHERE created_at IS NOT NULL;
-- has_error is a key column after the order so "deployment_id + has_error" is checked in
-- the index (an index condition), without a second index to write per run.
CREATE INDEX runs_deployment ON runs (deployment_id, created_at, id, has_error)
    WHERE created_at IS NOT NULL;
CREATE INDEX runs_error ON runs (has_error, created_at, id) WHERE created_at IS NOT NULL;
CREATE INDEX runs_trigger ON runs (trigger_type, created_at, id) WHERE created_at IS NOT NULL;

CREATE TABLE sessions (
    session_id      text PRIMARY KEY,
    run_id          text NOT NULL,
    deployment_id   text NOT NULL,
    pid             bigint NOT NULL,
    exit_status     integer,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz
);
CREATE INDEX sessions_run ON sessions (run_id);

-- Leadership among daemons sharing this database (not used yet): one row per lease.
CREATE TABLE leases (
    name            text PRIMARY KEY,
    holder          text NOT NULL,
    epoch           bigint NOT NULL,
    expires_at      timestamptz NOT NULL
);
"""

# Version 2: the webhook outbox, as in SQLite's version 2. An event row is written in the
# transaction of the change that caused it, with one delivery row per endpoint that subscribes
# to its type; the delivery worker settles deliveries and keeps each endpoint's state.
_V2 = """
CREATE TABLE outbox_events (
    id              text COLLATE "C" PRIMARY KEY,
    type            text NOT NULL,
    body            text NOT NULL,
    created_at      timestamptz NOT NULL
);

CREATE TABLE webhook_deliveries (
    event_id        text COLLATE "C" NOT NULL REFERENCES outbox_events (id),
    endpoint        text COLLATE "C" NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    retry_from      timestamptz NOT NULL,
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    PRIMARY KEY (endpoint, event_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at, event_id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_endpoints (
    name            text COLLATE "C" PRIMARY KEY,
    failing_since   timestamptz,
    disabled_at     timestamptz,
    last_success_at timestamptz
);
"""

# Version 3: the session record's end reason, signal, log size and host, as in SQLite's
# version 3 (several daemons sharing this database each name their own host).
_V3 = """
ALTER TABLE sessions ADD COLUMN end_reason text;
ALTER TABLE sessions ADD COLUMN signal integer;
ALTER TABLE sessions ADD COLUMN log_bytes bigint;
ALTER TABLE sessions ADD COLUMN host text;
CREATE INDEX sessions_running ON sessions (host) WHERE ended_at IS NULL;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
"""``MIGRATIONS[n]`` is the SQL script from version ``n`` to ``n + 1``."""

assert len(MIGRATIONS) == SCHEMA_VERSION

_CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS agentcron_schema ("
    " only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),"
    " version integer NOT NULL)"
)


def newer_schema_message(location: str, version: int) -> str:
    """The refusal of a database written by a newer agentcron (like SQLite's)."""
    return (
        f"the journal database {location} was written by a newer agentcron (schema {version}, "
        f"this version understands {SCHEMA_VERSION}); upgrade agentcron or restore a backup"
    )


async def schema_version(conn: asyncpg.Connection) -> int:
    """The database's schema version (0 without the version table)."""
    table = await conn.fetchval("SELECT to_regclass('agentcron_schema')")
    if table is None:
        return 0
    version = await conn.fetchval("SELECT version FROM agentcron_schema")
    return 0 if version is None else int(version)


async def migrate(conn: asyncpg.Connection, location: str) -> int:
    """Bring the database to ``SCHEMA_VERSION``, one transaction per step; return the number
    of steps this call ran (0 when another starter, or an earlier start, did them).

    Raises ``JournalError`` (``newer_schema_message``) for a newer schema; asyncpg's own
    errors pass through to the caller's boundary.
    """
    ran = 0
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            version = await schema_version(conn)
            if version > SCHEMA_VERSION:
                raise JournalError(newer_schema_message(location, version))
            if version == SCHEMA_VERSION:
                return ran
            await conn.execute(MIGRATIONS[version])
            await conn.execute(_CREATE_VERSION_TABLE)
            await conn.execute(
                "INSERT INTO agentcron_schema (version) VALUES ($1) "
                "ON CONFLICT (only_row) DO UPDATE SET version = excluded.version",
                version + 1,
            )
            ran += 1
