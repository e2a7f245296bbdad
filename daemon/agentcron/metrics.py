"""Prometheus metrics: what the daemon counts, and the exposition ``/metrics`` serves.

``Metrics`` owns one ``prometheus_client`` registry (not the library's global one, so two
daemons in one test process never share counters). The fire path only increments counters and
observes histograms through children bound once (about a microsecond each); gauges that need
a journal read (deployments by status, the journal's size) or another part's state (next
fire, running sessions) are refreshed by ``render`` just before each scrape.

No label carries a deployment id (cardinality); ``endpoint`` labels are the configured webhook
names, which the operator bounds. No label or value ever holds a secret.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentcron import __version__

__all__ = ["CONTENT_TYPE_LATEST", "METRIC_NAMES", "Metrics", "MetricsSources"]

_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RECORD_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0)
_CREATE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

METRIC_NAMES: dict[str, str] = {
    "agentcron_runs": "counter",
    "agentcron_fire_lag_seconds": "histogram",
    "agentcron_run_record_lag_seconds": "histogram",
    "agentcron_session_create_duration_seconds": "histogram",
    "agentcron_occurrences_missed": "counter",
    "agentcron_claims_refused": "counter",
    "agentcron_deployments": "gauge",
    "agentcron_next_fire_timestamp_seconds": "gauge",
    "agentcron_sessions_running": "gauge",
    "agentcron_journal_commit_duration_seconds": "histogram",
    "agentcron_journal_bytes": "gauge",
    "agentcron_build_info": "gauge",
    "agentcron_webhook_deliveries": "counter",
    "agentcron_webhook_endpoint_disabled": "gauge",
}
"""Every metric family by its name as ``prometheus_client.parser`` reports it (a counter
without its ``_total`` suffix), with its type: the README's list, checked by a test."""


class MetricsSources(Protocol):
    """What ``render`` reads before a scrape (the daemon's parts; see ``build_stack``)."""

    async def counts(self) -> dict[str, int]:
        """Deployments by state: ``active``, ``paused``, ``archived`` (the journal)."""
        ...

    async def storage_bytes(self) -> int:
        """The journal's size on disk."""
        ...

    def next_fire_at(self) -> datetime | None:
        """The next fire, jitter included (the scheduler)."""
        ...

    def sessions_running(self) -> int:
        """Local sessions running now (0 where the launcher keeps none)."""
        ...


@runtime_checkable
class RunningSessions(Protocol):
    """A launcher that knows how many of its sessions run (the ``command`` launcher)."""

    def running_sessions(self) -> int: ...


class Metrics:
    """The daemon's metrics; ``render()`` is the text exposition of all of them."""

    def __init__(self, *, launcher: str = "command") -> None:
        registry = CollectorRegistry(auto_describe=True)
        self.registry = registry
        self._runs = Counter(
            "agentcron_runs",
            "Runs recorded in the journal, by trigger and outcome (session, or the error type).",
            ["trigger", "outcome"],
            registry=registry,
        )
        self._run_children: dict[tuple[str, str], Callable[[], None]] = {}
        self.fire_lag = Histogram(
            "agentcron_fire_lag_seconds",
            "Scheduled fires: session creation start minus (scheduled_at + jitter).",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.record_lag = Histogram(
            "agentcron_run_record_lag_seconds",
            "Scheduled runs: created_at (outcome recorded) minus scheduled_at (jitter included).",
            buckets=_RECORD_BUCKETS,
            registry=registry,
        )
        self._session_create = Histogram(
            "agentcron_session_create_duration_seconds",
            "How long the launcher took to create (or fail to create) a session.",
            ["launcher"],
            buckets=_CREATE_BUCKETS,
            registry=registry,
        )
        self.session_create = self._session_create.labels(launcher)
        self.missed = Counter(
            "agentcron_occurrences_missed",
            "Occurrences skipped: reached later than misfire_grace, or missed while stopped.",
            registry=registry,
        )
        self.claims_refused = Counter(
            "agentcron_claims_refused",
            "Claims the journal refused because the occurrence already had a run.",
            registry=registry,
        )
        self._deployments = Gauge(
            "agentcron_deployments",
            "Deployments by status (active, paused, archived).",
            ["status"],
            registry=registry,
        )
        self._next_fire = Gauge(
            "agentcron_next_fire_timestamp_seconds",
            "Unix time of the next scheduled fire, jitter included (0: nothing scheduled).",
            registry=registry,
        )
        self._sessions_running = Gauge(
            "agentcron_sessions_running",
            "Local sessions running now (command launcher; 0 for managed_agents).",
            registry=registry,
        )
        self.journal_commit = Histogram(
            "agentcron_journal_commit_duration_seconds",
            "Duration of each committed journal write transaction (group commit).",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self._journal_bytes = Gauge(
            "agentcron_journal_bytes",
            "Size of the journal (the SQLite file and its WAL, or the PostgreSQL database).",
            registry=registry,
        )
        Gauge(
            "agentcron_build_info",
            "Always 1; the labels say which agentcron runs.",
            ["version", "python", "launcher"],
            registry=registry,
        ).labels(__version__, platform.python_version(), launcher).set(1)
        self._webhook_deliveries = Counter(
            "agentcron_webhook_deliveries",
            "Webhook delivery attempts by endpoint name and outcome "
            "(delivered, failed, given_up: the last failed attempt of a delivery).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self._webhook_disabled = Gauge(
            "agentcron_webhook_endpoint_disabled",
            "1 while a webhook endpoint is disabled for failing too long, else 0.",
            ["endpoint"],
            registry=registry,
        )
        self._sources: MetricsSources | None = None

    # --- the fire path and the other counting parts ----------------------------------------

    def run_recorded(self, trigger: str, outcome: str) -> None:
        """Count one run the journal recorded (``outcome``: ``session`` or the error type)."""
        inc = self._run_children.get((trigger, outcome))
        if inc is None:
            inc = self._runs.labels(trigger, outcome).inc
            self._run_children[(trigger, outcome)] = inc
        inc()

    def webhook_attempt(self, endpoint: str, outcome: str) -> None:
        self._webhook_deliveries.labels(endpoint, outcome).inc()

    def webhook_endpoints(self, disabled: dict[str, bool]) -> None:
        """Set the disabled gauge of every configured endpoint."""
        for name, is_disabled in disabled.items():
            self._webhook_disabled.labels(name).set(1 if is_disabled else 0)

    # --- scraping ------------------------------------------------------------------------------

    def attach(self, sources: MetricsSources) -> None:
        """Where ``render`` reads the gauges from (set once the daemon's parts exist)."""
        self._sources = sources

    async def render(self) -> bytes:
        """Refresh the gauges from the sources, then the text exposition (format 0.0.4)."""
        sources = self._sources
        if sources is not None:
            counts = await sources.counts()
            for status in ("active", "paused", "archived"):
                self._deployments.labels(status).set(counts.get(status, 0))
            self._journal_bytes.set(await sources.storage_bytes())
            next_fire = sources.next_fire_at()
            self._next_fire.set(0 if next_fire is None else next_fire.timestamp())
            self._sessions_running.set(sources.sessions_running())
        return generate_latest(self.registry)
