"""Webhook events as data and the retry schedule (pure), and the webhook config keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentcron.config import parse_config
from agentcron.core.events import (
    DEFAULT_RETRY_DELAYS,
    event_body,
    missed_data,
    next_attempt_at,
    retry_delay,
)
from agentcron.errors import ConfigError

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_an_event_body_is_type_timestamp_and_data() -> None:
    body = event_body("occurrence.missed", T0, missed_data("depl_1", T0, count=3, reason="late"))
    assert json.loads(body) == {
        "type": "occurrence.missed",
        "timestamp": "2026-05-01T12:00:00Z",
        "data": {
            "type": "occurrence",
            "deployment_id": "depl_1",
            "scheduled_at": "2026-05-01T12:00:00Z",
            "missed_count": 3,
            "reason": "late",
        },
    }


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, 5.0), (2, 30.0), (3, 120.0), (4, 600.0), (5, 3600.0), (7, 21600.0), (50, 21600.0)],
    ids=["1st:5s", "2nd:30s", "3rd:2m", "4th:10m", "5th:1h", "7th:6h", "50th:last-repeats"],
)
def test_the_default_delays_grow_then_repeat_the_last(attempts: int, expected: float) -> None:
    assert retry_delay(attempts, DEFAULT_RETRY_DELAYS, 0.5) == pytest.approx(expected)


def test_jitter_spreads_a_delay_by_twenty_percent_either_way() -> None:
    assert retry_delay(1, (10.0,), 0.0) == pytest.approx(8.0)
    assert retry_delay(1, (10.0,), 0.999999) == pytest.approx(12.0, rel=1e-5)


def test_a_delivery_is_given_up_once_retried_for_retry_for() -> None:
    def after(elapsed: timedelta) -> datetime | None:
        return next_attempt_at(
            attempts=3,
            attempted_at=T0 + elapsed,
            retry_from=T0,
            delays=(5.0,),
            retry_for=3600.0,
            u=0.5,
        )

    assert after(timedelta(minutes=59)) == T0 + timedelta(minutes=59, seconds=5)
    assert after(timedelta(hours=1)) is None


def _config(webhooks: list[dict[str, object]], metrics: dict[str, object] | None = None) -> object:
    document: dict[str, object] = {"webhooks": webhooks}
    if metrics is not None:
        document["metrics"] = metrics
    return parse_config(document, environ={"HOME": "/nonexistent"}, base_dir=Path("/etc/ac"))


def test_webhook_keys_parse_with_defaults_and_relative_secret_files() -> None:
    config = parse_config(
        {
            "webhooks": [
                {
                    "url": "https://hooks.example:8443/agentcron?token=abc",
                    "secret_file": "hook.secret",
                    "events": ["deployment_run.failed", "occurrence.missed"],
                }
            ],
            "metrics": {"listen": "[::1]:9464"},
        },
        environ={"HOME": "/nonexistent"},
        base_dir=Path("/etc/ac"),
    )
    (hook,) = config.webhooks
    assert hook.name == "hooks.example:8443"  # host and port only: the query holds a token
    assert hook.secret_file == Path("/etc/ac/hook.secret")
    assert hook.timeout == 10.0
    assert hook.retry_delays == DEFAULT_RETRY_DELAYS
    assert hook.retry_for == 86400.0
    assert config.metrics.listen == ("::1", 9464)


@pytest.mark.parametrize(
    ("webhooks", "metrics", "named"),
    [
        ([{"url": "ftp://x", "secret_file": "s", "events": ["occurrence.missed"]}], None, "url"),
        ([{"url": "http://x", "events": ["occurrence.missed"]}], None, "secret_file"),
        ([{"url": "http://x", "secret_file": "s", "events": []}], None, "events"),
        ([{"url": "http://x", "secret_file": "s", "events": ["run.failed"]}], None, "events"),
        (
            [
                {"url": "http://x", "secret_file": "s", "events": ["occurrence.missed"]},
                {"url": "http://x/b", "secret_file": "s", "events": ["occurrence.missed"]},
            ],
            None,
            "webhooks[1].name",
        ),
        (
            [{"url": "http://x", "secret_file": "s", "events": ["occurrence.missed"], "x": 1}],
            None,
            "webhooks[0].x",
        ),
        (
            [
                {
                    "url": "http://x",
                    "secret_file": "s",
                    "events": ["occurrence.missed"],
                    "retry_delays": [],
                }
            ],
            None,
            "retry_delays",
        ),
        ([], {"listen": "9464"}, "metrics.listen"),
    ],
    ids=[
        "not-http",
        "no-secret",
        "no-events",
        "unknown-event",
        "same-name",
        "unknown-key",
        "no-delays",
        "listen-without-host",
    ],
)
def test_bad_webhook_and_metrics_keys_are_named(
    webhooks: list[dict[str, object]], metrics: dict[str, object] | None, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(webhooks, metrics)
    assert any(named in problem for problem in caught.value.problems), caught.value.problems
