"""Webhooks through the runtime: the outbox, the delivery lanes and a real loopback receiver
that verifies every delivery with the ``standardwebhooks`` library."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import WebhookVerificationError
from structlog.testing import capture_logs

from agentcron.config import WebhookConfig
from agentcron.core.events import EventType
from agentcron.core.models import TriggerType
from agentcron.core.wire import run_to_wire
from agentcron.journal import SqliteJournal
from agentcron.runtime.delivery import Endpoint, load_secret
from tests.support.fakes import RecordingLauncher, eventually
from tests.support.scheduler_rig import Rig, deployment_body, scheduler_rig, stored_deployment
from tests.support.webhook_receiver import SECRET, WebhookReceiver

ALL_EVENTS = tuple(event_type.value for event_type in EventType)
TOKEN = "ghp_do-not-leak-this-token"


def now_minute() -> datetime:
    """Real time to the minute: the library's verification wants timestamps within 5 min."""
    return datetime.now(UTC).replace(second=0, microsecond=0)


def endpoint(
    tmp_path: Path,
    name: str,
    url: str,
    *,
    events: tuple[str, ...] = ALL_EVENTS,
    timeout: float = 5.0,
    retry_delays: tuple[float, ...] = (5.0,),
    retry_for: float = 3600.0,
) -> Endpoint:
    secret_file = tmp_path / f"{name}.secret"
    secret_file.write_text(SECRET + "\n")
    config = WebhookConfig(
        name=name,
        url=url,
        secret_file=secret_file,
        events=events,
        timeout=timeout,
        retry_delays=retry_delays,
        retry_for=retry_for,
    )
    return Endpoint(config=config, signer=load_secret(secret_file, "secret"))


@asynccontextmanager
async def delivering(
    tmp_path: Path, endpoints: list[Endpoint], **options: Any
) -> AsyncIterator[Rig]:
    """A scheduler rig whose webhook lanes run too."""
    options.setdefault("start", now_minute() + timedelta(seconds=30))
    async with scheduler_rig(tmp_path / "journal.db", webhooks=endpoints, **options) as rig:
        await rig.tg.start(rig.stack.webhooks.run)
        yield rig


def secret_free(value: Any) -> bool:
    text = json.dumps(value, default=str)
    return TOKEN not in text and SECRET not in text and SECRET.removeprefix("whsec_") not in text


async def test_every_event_type_is_delivered_signed_with_the_api_object_and_no_secret(
    tmp_path: Path,
) -> None:
    """Failed and succeeded runs, a manual and an automatic pause, a manual and an automatic
    archive (agent_archived): each arrives once, verified by the library, its data the object
    as the API returns it, without the resource's write-only token."""
    launcher = RecordingLauncher()
    resource = {"type": "github_repository", "url": "https://github.com/o/r"}
    with capture_logs() as logs:
        async with (
            WebhookReceiver().serving() as receiver,
            delivering(
                tmp_path,
                [endpoint(tmp_path, "ops", receiver.url)],
                launcher=launcher,
                auto_pause_on=["session_rate_limited"],
            ) as rig,
        ):
            service = rig.service
            body = deployment_body(
                "* * * * *", resources=[{**resource, "authorization_token": TOKEN}]
            )
            scheduled = await service.create(body)
            manual = await service.create({**body, "schedule": None})
            gone = await service.create({**body, "schedule": None, "name": "gone"})
            launcher.fail_with = "session_rate_limited"
            await rig.advance(31)  # the minute: a failed scheduled run, then the auto-pause
            launcher.fail_with = None
            succeeded = await rig.stack.firing.run_manual(manual.id)
            await service.pause(manual.id)  # a manual pause
            await service.archive(manual.id)
            launcher.archived_agents.add("agent_test")
            failed = await rig.stack.firing.run_manual(gone.id)  # archives the deployment
            await eventually(lambda: len(receiver.delivered()) == 7, "7 events delivered")
            runs = {run.id: run for run in await rig.runs()}
            deployments = {d.id: await service.get(d.id) for d in (scheduled, manual, gone)}
    assert all(r.verified for r in receiver.requests), [
        r.verification_error for r in receiver.requests
    ]
    assert len(receiver.requests) == 7  # nothing sent twice
    seen: list[tuple[str, str]] = []
    for received in receiver.delivered().values():
        payload = received.payload
        assert received.webhook_id.startswith("msg_")
        assert set(payload) == {"type", "timestamp", "data"}
        data = payload["data"]
        assert secret_free(payload)
        if payload["type"].startswith("deployment_run."):
            assert data == run_to_wire(runs[data["id"]])
            seen.append((payload["type"], data["deployment_id"]))
        else:
            assert data["type"] == "deployment"
            assert data["resources"] == [resource]  # echoed as the API does: no token
            seen.append((payload["type"], data["id"]))
    assert sorted(seen) == sorted(
        [
            ("deployment_run.failed", scheduled.id),
            ("deployment.paused", scheduled.id),
            ("deployment_run.succeeded", manual.id),
            ("deployment.paused", manual.id),
            ("deployment.archived", manual.id),
            ("deployment_run.failed", gone.id),
            ("deployment.archived", gone.id),
        ]
    )
    assert succeeded.session_id is not None
    assert failed.error is not None
    assert deployments[scheduled.id].paused_reason is not None
    assert deployments[gone.id].is_archived
    assert all(secret_free(entry) for entry in logs)


async def test_a_hanging_endpoint_delays_neither_a_storm_nor_another_endpoint(
    tmp_path: Path,
) -> None:
    """300 fires due together complete while one endpoint holds its first request forever;
    the other endpoint gets every event."""
    start = now_minute() + timedelta(seconds=30)
    async with SqliteJournal.open(tmp_path / "journal.db") as journal:
        for _ in range(300):
            await journal.insert_deployment(stored_deployment(start, "* * * * *"))
    async with (
        WebhookReceiver(mode="hang").serving() as slow,
        WebhookReceiver().serving() as fast,
    ):
        hooks = [
            endpoint(tmp_path, "slow", slow.url, timeout=3600.0),
            endpoint(tmp_path, "fast", fast.url),
        ]
        async with delivering(tmp_path, hooks, start=start) as rig:
            await rig.advance(31)
            assert len(await rig.runs()) == 300
            await eventually(lambda: len(fast.delivered()) == 300, "every event to 'fast'")
            assert slow.hanging == 1
            assert len(slow.requests) == 1
            pending = await rig.journal.list_deliveries(endpoint="slow", limit=1000)
            assert {d.status for d in pending} == {"pending"}
            assert len(pending) == 300


async def test_a_failing_endpoint_backs_off_is_disabled_after_retry_for_and_retry_revives_it(
    tmp_path: Path,
) -> None:
    with capture_logs() as logs:
        async with WebhookReceiver(mode="down").serving() as receiver:
            hook = endpoint(tmp_path, "ops", receiver.url, retry_delays=(5.0,), retry_for=60.0)
            async with delivering(tmp_path, [hook]) as rig:
                delivery = rig.stack.webhooks
                deployment = await rig.service.create(deployment_body(schedule=None))
                await rig.service.pause(deployment.id)
                await eventually(lambda: len(receiver.requests) == 1, "a first attempt")
                await rig.advance(3)  # within the backoff: nothing more
                assert len(receiver.requests) == 1
                await rig.advance(4)
                await eventually(lambda: len(receiver.requests) == 2, "a retry after ~5 s")
                for _ in range(12):
                    await rig.advance(7)
                (state,) = delivery.endpoints()
                assert state["status"] == "disabled"
                attempts = len(receiver.requests)
                await rig.advance(60)
                assert len(receiver.requests) == attempts  # disabled: no more probes
                exposition = (await rig.stack.metrics.render()).decode()
                assert 'agentcron_webhook_endpoint_disabled{endpoint="ops"} 1.0' in exposition
                assert (
                    'agentcron_webhook_deliveries_total{endpoint="ops",outcome="given_up"} 1.0'
                    in exposition
                )
                (given_up,) = await rig.journal.list_deliveries(limit=10)
                assert given_up.status == "failed"
                receiver.mode = "ok"
                assert await delivery.retry("ops") == 1
                await eventually(lambda: len(receiver.delivered()) == 1, "delivered after retry")
                (state,) = delivery.endpoints()
                assert state["status"] == "enabled"
                exposition = (await rig.stack.metrics.render()).decode()
                assert 'agentcron_webhook_endpoint_disabled{endpoint="ops"} 0.0' in exposition
    events = [entry["event"] for entry in logs]
    assert "webhook_attempt_failed" in events
    assert "webhook_delivery_given_up" in events
    assert events.count("webhook_endpoint_disabled") == 1


async def test_a_missed_occurrence_is_delivered_as_occurrence_missed(tmp_path: Path) -> None:
    async with WebhookReceiver().serving() as receiver:
        hook = endpoint(tmp_path, "ops", receiver.url, events=("occurrence.missed",))
        async with delivering(tmp_path, [hook]) as rig:
            deployment = await rig.service.create(deployment_body("* * * * *"))
            rig.clock.step_wall(timedelta(minutes=2, seconds=10))  # NTP step: one minute is late
            await rig.advance(1)
            await eventually(lambda: len(receiver.delivered()) == 1, "occurrence.missed")
    (received,) = receiver.delivered().values()
    payload = received.payload
    assert payload["type"] == "occurrence.missed"
    assert payload["data"]["deployment_id"] == deployment.id
    assert payload["data"]["reason"] == "late"


async def test_unsubscribed_events_write_no_outbox_rows(tmp_path: Path) -> None:
    async with WebhookReceiver().serving() as receiver:
        hook = endpoint(tmp_path, "ops", receiver.url, events=("deployment.archived",))
        async with delivering(tmp_path, [hook]) as rig:
            deployment = await rig.service.create(deployment_body(schedule=None))
            await rig.stack.firing.run_manual(deployment.id)  # succeeded: not subscribed
            await rig.service.pause(deployment.id)  # paused: not subscribed
            assert await rig.journal.list_deliveries(limit=10) == []


async def test_a_tampered_delivery_fails_the_library_verification(tmp_path: Path) -> None:
    async with (
        WebhookReceiver().serving() as receiver,
        delivering(tmp_path, [endpoint(tmp_path, "ops", receiver.url)]) as rig,
    ):
        deployment = await rig.service.create(deployment_body(schedule=None))
        await rig.service.archive(deployment.id)
        await eventually(lambda: len(receiver.delivered()) == 1, "one delivery")
    (received,) = receiver.requests
    receiver.verify(received.body, received.headers)  # as sent: verifies
    tampered = received.body.replace(b'"deployment.archived"', b'"deployment.paused"')
    assert tampered != received.body
    with pytest.raises(WebhookVerificationError):
        receiver.verify(tampered, received.headers)
    with pytest.raises(WebhookVerificationError):
        receiver.verify(received.body, {**received.headers, "webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        WebhookReceiver(secret="whsec_" + "A" * 44).verify(received.body, received.headers)


def test_signing_reproduces_the_standard_webhooks_test_vector(tmp_path: Path) -> None:
    """The specification's published vector: id, timestamp and body give this signature."""
    secret_file = tmp_path / "vector.secret"
    secret_file.write_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signer = load_secret(secret_file, "secret")
    signed = signer.sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        datetime.fromtimestamp(1614265330, UTC),
        '{"test": 2432232314}',
    )
    assert signed == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    "content",
    ["", "not-a-secret", "whsec_c2hvcnQ=", "whsec_!!!!"],
    ids=["empty", "no-prefix", "too-short", "not-base64"],
)
def test_a_bad_secret_file_is_refused_without_echoing_it(tmp_path: Path, content: str) -> None:
    from agentcron.errors import ConfigError

    secret_file = tmp_path / "bad.secret"
    secret_file.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_secret(secret_file, "webhooks[0].secret_file")
    (problem,) = caught.value.problems
    assert problem.startswith("webhooks[0].secret_file:")
    assert not content or content not in problem


async def test_a_restart_delivers_recovered_claims_and_occurrences_missed_while_down(
    tmp_path: Path,
) -> None:
    """A claim left open by a stopped daemon is completed as a failed run, and the minutes
    missed while it was down become one occurrence.missed (reason daemon_down) with the count."""
    start = now_minute() + timedelta(seconds=30)
    async with scheduler_rig(tmp_path / "journal.db", start=start) as rig:
        deployment = await rig.service.create(deployment_body("* * * * *"))
        await rig.journal.claim_run(
            deployment_id=deployment.id,
            agent=deployment.agent,
            trigger_type=TriggerType.MANUAL,
            scheduled_at=None,
            claimed_at=start,
        )
    async with WebhookReceiver().serving() as receiver:
        events = ("deployment_run.failed", "occurrence.missed")
        hook = endpoint(tmp_path, "ops", receiver.url, events=events)
        later = start + timedelta(minutes=3, seconds=45)  # 3 minutes are past the grace
        async with delivering(tmp_path, [hook], start=later):
            await eventually(lambda: len(receiver.delivered()) == 2, "both events")
    payloads = {r.payload["type"]: r.payload["data"] for r in receiver.delivered().values()}
    assert payloads["deployment_run.failed"]["error"]["type"] == "service_unavailable"
    assert payloads["occurrence.missed"]["reason"] == "daemon_down"
    assert payloads["occurrence.missed"]["missed_count"] == 3
    assert payloads["occurrence.missed"]["deployment_id"] == deployment.id
