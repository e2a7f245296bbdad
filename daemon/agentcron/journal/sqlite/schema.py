"""The journal's SQL schema and its forward migrations.

``PRAGMA user_version`` holds the schema version. ``MIGRATIONS[n]`` takes a database from
version ``n`` to ``n + 1``; a fresh (or empty, version-0) file runs them all. A file whose
version is newer than ``SCHEMA_VERSION`` was written by a newer agentcron and is refused.

Timestamps are integer microseconds since the Unix epoch (``agentcron.core.timeutil.to_micros``).
JSON-shaped fields are stored as JSON text.

A run row is an *open claim* while ``created_at`` is NULL (neither ``session_id`` nor an error
yet); completing it sets ``created_at`` and exactly one outcome. Every list index is partial
(``WHERE created_at IS NOT NULL``) so open claims cost nothing there, and every list query
repeats that condition so the planner may use them.
"""

from __future__ import annotations

SCHEMA_VERSION = 3

_V1 = """
CREATE TABLE deployments (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    description        TEXT,
    agent_id           TEXT NOT NULL,
    agent_version      INTEGER NOT NULL,
    environment_id     TEXT NOT NULL,
    initial_events     TEXT NOT NULL,
    metadata           TEXT NOT NULL,
    resources          TEXT NOT NULL,
    vault_ids          TEXT NOT NULL,
    budget             TEXT,
    schedule_expression TEXT,
    schedule_timezone  TEXT,
    paused_type        TEXT,
    paused_error_type  TEXT,
    archived_at        INTEGER,
    last_run_at        INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    archived           INTEGER GENERATED ALWAYS AS (archived_at IS NOT NULL) VIRTUAL,
    paused             INTEGER GENERATED ALWAYS AS (paused_type IS NOT NULL) VIRTUAL,
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
    id              TEXT PRIMARY KEY,
    deployment_id   TEXT NOT NULL REFERENCES deployments (id),
    agent_id        TEXT NOT NULL,
    agent_version   INTEGER NOT NULL,
    trigger_type    TEXT NOT NULL CHECK (trigger_type IN ('schedule', 'manual')),
    scheduled_at    INTEGER,
    claimed_at      INTEGER NOT NULL,
    session_id      TEXT,
    error_type      TEXT,
    error_message   TEXT,
    created_at      INTEGER,
    has_error       INTEGER GENERATED ALWAYS AS (error_type IS NOT NULL) VIRTUAL,
    CHECK ((trigger_type = 'schedule') = (scheduled_at IS NOT NULL)),
    CHECK ((error_type IS NULL) = (error_message IS NULL)),
    CHECK (session_id IS NULL OR error_type IS NULL),
    CHECK ((created_at IS NULL) = (session_id IS NULL AND error_type IS NULL))
);
-- At most one run per occurrence of a schedule (SPEC 2): the idempotence of firing.
CREATE UNIQUE INDEX runs_occurrence ON runs (deployment_id, scheduled_at)
    WHERE scheduled_at IS NOT NULL;
CREATE INDEX runs_open ON runs (claimed_at) WHERE created_at IS NULL;
CREATE INDEX runs_created ON runs (created_at, id) WHERE created_at IS NOT NULL;
-- has_error rides along so "deployment_id + has_error" filters inside this index; a separate
-- (deployment_id, has_error, ...) index would cost one more random index write per run.
CREATE INDEX runs_deployment ON runs (deployment_id, created_at, id, has_error)
    WHERE created_at IS NOT NULL;
CREATE INDEX runs_error ON runs (has_error, created_at, id) WHERE created_at IS NOT NULL;
CREATE INDEX runs_trigger ON runs (trigger_type, created_at, id) WHERE created_at IS NOT NULL;

CREATE TABLE sessions (
    session_id      TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    deployment_id   TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    exit_status     INTEGER,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER
);
CREATE INDEX sessions_run ON sessions (run_id);
"""

# Version 2: the webhook outbox. An event row is written in the transaction of the change that
# caused it, with one delivery row per endpoint that subscribes to its type; the delivery
# worker settles deliveries and keeps each endpoint's state (failing since, disabled at).
_V2 = """
CREATE TABLE outbox_events (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    event_id        TEXT NOT NULL REFERENCES outbox_events (id),
    endpoint        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    retry_from      INTEGER NOT NULL,
    next_attempt_at INTEGER,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    PRIMARY KEY (endpoint, event_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at, event_id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_endpoints (
    name            TEXT PRIMARY KEY,
    failing_since   INTEGER,
    disabled_at     INTEGER,
    last_success_at INTEGER
);
"""

# Version 3: what a local session's record says besides its exit status. ``end_reason`` is why
# it ended (exited, max_duration, stopped, daemon_shutdown, spawner_lost, recovered), ``signal``
# the number of the signal that killed it, ``log_bytes`` its log's size when it ended, ``host``
# the daemon's host name (several daemons may share one PostgreSQL journal). The partial index
# finds the sessions a host left running when it stopped.
_V3 = """
ALTER TABLE sessions ADD COLUMN end_reason TEXT;
ALTER TABLE sessions ADD COLUMN signal INTEGER;
ALTER TABLE sessions ADD COLUMN log_bytes INTEGER;
ALTER TABLE sessions ADD COLUMN host TEXT;
CREATE INDEX sessions_running ON sessions (host) WHERE ended_at IS NULL;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
"""``MIGRATIONS[n]`` is the SQL script from version ``n`` to ``n + 1``."""

assert len(MIGRATIONS) == SCHEMA_VERSION
