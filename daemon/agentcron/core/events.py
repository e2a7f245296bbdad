"""Webhook events as data, and when to retry a delivery. Pure.

An event's body is ``{"type", "timestamp", "data"}`` (the Standard Webhooks payload shape):
``data`` is the object as the API returns it (``agentcron.core.wire``, so no write-only secret
is ever part of it), or for ``occurrence.missed``, which has no object, the occurrence.

Retries: after the ``n``-th failed attempt a delivery waits ``delays[n - 1]`` (the last delay
repeats), spread by +-20 % jitter so endpoints that failed together do not retry together, and
it is given up once it has been retried for ``retry_for`` seconds.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from agentcron.core.timeutil import format_ts


class EventType(StrEnum):
    """What a webhook endpoint can subscribe to (``[[webhooks]] events``)."""

    RUN_FAILED = "deployment_run.failed"
    RUN_SUCCEEDED = "deployment_run.succeeded"
    DEPLOYMENT_ARCHIVED = "deployment.archived"
    DEPLOYMENT_PAUSED = "deployment.paused"
    OCCURRENCE_MISSED = "occurrence.missed"


TEST_EVENT = "webhook.test"
"""The type of the event ``agentcron webhooks test`` sends (never stored, never subscribed)."""

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 3600.0, 3 * 3600.0, 6 * 3600.0)
"""5 s, 30 s, 2 m, 10 m, 1 h, 3 h, 6 h (then every 6 h) until ``retry_for`` (24 h)."""
DEFAULT_RETRY_FOR = 24 * 3600.0
JITTER = 0.2


def event_body(event_type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    """The JSON body of one event, compact, exactly as it is signed and sent."""
    return json.dumps(
        {"type": event_type, "timestamp": format_ts(timestamp), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def missed_data(
    deployment_id: str, scheduled_at: datetime, *, count: int, reason: str
) -> dict[str, Any]:
    """The ``data`` of ``occurrence.missed``: the first missed occurrence and how many."""
    return {
        "type": "occurrence",
        "deployment_id": deployment_id,
        "scheduled_at": format_ts(scheduled_at),
        "missed_count": count,
        "reason": reason,
    }


def retry_delay(attempts: int, delays: tuple[float, ...], u: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based); ``u`` in [0, 1)
    picks the jitter."""
    if not delays:
        raise ValueError("delays must not be empty")
    base = delays[min(max(attempts, 1), len(delays)) - 1]
    return base * (1.0 - JITTER + 2 * JITTER * u)


def next_attempt_at(
    *,
    attempts: int,
    attempted_at: datetime,
    retry_from: datetime,
    delays: tuple[float, ...],
    retry_for: float,
    u: float,
) -> datetime | None:
    """When to try a delivery again after its ``attempts``-th failure, or ``None`` to give it
    up: it has been retried for ``retry_for`` seconds since ``retry_from``."""
    if (attempted_at - retry_from).total_seconds() >= retry_for:
        return None
    return attempted_at + timedelta(seconds=retry_delay(attempts, delays, u))
