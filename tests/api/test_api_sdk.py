"""Conformance with the official ``anthropic`` SDK, talking to the daemon over its Unix socket.

Deployments and successful runs are parsed with ``_strict_response_validation=True``. Failed
runs keep the seed's error type names (``session_rate_limited``, not the SDK's
``session_rate_limited_error``), which the SDK's strict union rejects; those are read with a
lenient client, which keeps the type string as sent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsDeployment, BetaManagedAgentsDeploymentRun

from tests.support.api_harness import START, ApiServer, deployment_body, running_api
from tests.support.fakes import RecordingLauncher

SCHEDULE: Any = {"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"}
EVENTS: Any = [{"type": "user.message", "content": [{"type": "text", "text": "Go."}]}]


def create(client: anthropic.Anthropic, **overrides: Any) -> BetaManagedAgentsDeployment:
    fields: dict[str, Any] = {
        "name": "weekly scan",
        "agent": "agent_test",
        "environment_id": "env_test",
        "initial_events": EVENTS,
        "schedule": SCHEDULE,
    }
    fields.update(overrides)
    return client.beta.deployments.create(**fields)


def test_create_and_retrieve_parse_strictly(api_server: ApiServer) -> None:
    client = api_server.sdk()
    created = create(client, metadata={"team": "ops"}, description="scan it")
    assert isinstance(created, BetaManagedAgentsDeployment)
    assert created.id.startswith("depl_")
    assert created.agent.id == "agent_test"
    assert created.agent.version == 1
    assert created.status == "active"
    assert created.paused_reason is None
    assert created.schedule is not None
    assert created.schedule.upcoming_runs_at is not None
    assert created.schedule.upcoming_runs_at[0] == datetime(2026, 5, 9, 0, 0, tzinfo=UTC)
    assert created._request_id is not None
    assert created._request_id.startswith("req_")
    fetched = client.beta.deployments.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()


def test_update_tells_null_from_omitted(api_server: ApiServer) -> None:
    client = api_server.sdk()
    created = create(client, description="keep me", metadata={"a": "1", "b": "2"})
    renamed = client.beta.deployments.update(created.id, name="renamed")
    assert renamed.name == "renamed"
    assert renamed.description == "keep me"  # omitted: kept
    assert renamed.schedule is not None
    patched = client.beta.deployments.update(created.id, metadata={"a": None, "c": "3"})
    assert patched.metadata == {"b": "2", "c": "3"}  # per-key patch, null deletes
    cleared = client.beta.deployments.update(created.id, schedule=None, description=None)
    assert cleared.schedule is None  # null: cleared
    assert cleared.description is None
    assert cleared.name == "renamed"


def test_list_auto_pages_newest_first(api_server: ApiServer) -> None:
    client = api_server.sdk()
    made = []
    for index in range(7):
        made.append(create(client, name=f"d{index}").id)
        api_server.step_wall(1)
    listed = [d.id for d in client.beta.deployments.list(limit=2)]
    assert listed == list(reversed(made))
    assert api_server.count("GET", "/v1/deployments") == 4  # 2+2+2+1, last next_page null


def test_list_filters(tmp_path: Path) -> None:
    launcher = RecordingLauncher(agents={"agent_test": 1, "agent_other": 3})
    with running_api(tmp_path / "state", launcher=launcher) as server:
        client = server.sdk()
        old = create(client, name="old")
        server.step_wall(3600)
        other = create(client, name="other", agent={"type": "agent", "id": "agent_other"})
        paused = create(client, name="paused")
        client.beta.deployments.pause(paused.id)
        archived = create(client, name="archived")
        client.beta.deployments.archive(archived.id)

        def ids(**filters: Any) -> set[str]:
            return {d.id for d in client.beta.deployments.list(**filters)}

        assert ids() == {old.id, other.id, paused.id}
        assert ids(include_archived=True) == {old.id, other.id, paused.id, archived.id}
        assert ids(agent_id="agent_other") == {other.id}
        assert ids(status="paused") == {paused.id}
        assert ids(status="active") == {old.id, other.id}
        hour_later = START + timedelta(hours=1)
        assert ids(created_at_gte=hour_later) == {other.id, paused.id}
        assert ids(created_at_lte=START) == {old.id}
        naive = hour_later.replace(tzinfo=None)  # sent without an offset: means UTC
        assert ids(created_at_gte=naive) == {other.id, paused.id}
        assert ids(created_at_lte="2026-05-04T12:00:00Z") == {old.id}
        assert other.agent.version == 3


def test_lifecycle_pause_unpause_archive_and_run(api_server: ApiServer) -> None:
    client = api_server.sdk()
    created = create(client)
    paused = client.beta.deployments.pause(created.id)
    assert paused.status == "paused"
    assert paused.paused_reason is not None
    assert paused.paused_reason.type == "manual"
    assert paused.schedule is not None
    assert paused.schedule.upcoming_runs_at  # still shown while paused
    run = client.beta.deployments.run(created.id)  # manual runs work while paused
    assert isinstance(run, BetaManagedAgentsDeploymentRun)
    assert run.trigger_context.type == "manual"
    assert run.session_id == api_server.launcher.session_ids[-1]
    assert run.error is None
    unpaused = client.beta.deployments.unpause(created.id)
    assert unpaused.status == "active"
    assert unpaused.paused_reason is None
    archived = client.beta.deployments.archive(created.id)
    assert archived.archived_at is not None
    assert archived.status == "active"
    assert archived.schedule is not None
    assert archived.schedule.upcoming_runs_at == []
    assert archived.schedule.last_run_at is None  # manual runs never touch it
    assert client.beta.deployment_runs.retrieve(run.id).model_dump() == run.model_dump()


def test_deployment_runs_list_and_filters(api_server: ApiServer) -> None:
    client = api_server.sdk()
    lenient = api_server.sdk(strict=False)
    first = create(client, name="first")
    second = create(client, name="second")
    manual = client.beta.deployments.run(first.id)
    api_server.step_wall(60)
    scheduled_at = datetime(2026, 5, 9, 0, 0, tzinfo=UTC)
    scheduled = api_server.add_run(first.id, scheduled_at=scheduled_at)
    api_server.step_wall(60)
    failed = api_server.add_run(second.id, error_type="service_unavailable")
    failed_at = api_server.clock.now()

    def ids(sdk: anthropic.Anthropic = lenient, **filters: Any) -> list[str]:
        return [r.id for r in sdk.beta.deployment_runs.list(**filters)]

    assert ids() == [failed.id, scheduled.id, manual.id]  # newest first
    assert ids(limit=1) == [failed.id, scheduled.id, manual.id]  # auto-paging
    assert ids(deployment_id=first.id) == [scheduled.id, manual.id]
    assert ids(deployment_id="depl_does_not_exist") == []
    assert ids(client, has_error=False) == [scheduled.id, manual.id]
    assert ids(has_error=True) == [failed.id]
    assert ids(client, trigger_type="schedule") == [scheduled.id]
    assert ids(trigger_type="manual") == [failed.id, manual.id]
    assert ids(created_at_gt=START) == [failed.id, scheduled.id]
    assert ids(created_at_gte=failed_at) == [failed.id]
    assert ids(created_at_lt=failed_at) == [scheduled.id, manual.id]
    assert ids(created_at_lte=START) == [manual.id]
    strict_scheduled = client.beta.deployment_runs.retrieve(scheduled.id)
    assert strict_scheduled.trigger_context.type == "schedule"
    assert getattr(strict_scheduled.trigger_context, "scheduled_at", None) == scheduled_at
    error_run = lenient.beta.deployment_runs.retrieve(failed.id)
    assert error_run.error is not None
    error_type: str = error_run.error.type
    assert error_type == "service_unavailable"  # the seed's name, kept as sent
    assert error_run.session_id is None


def test_bad_request_is_bad_request_error(api_server: ApiServer) -> None:
    client = api_server.sdk()
    bad = {"type": "cron", "expression": "0 0 31 2 *", "timezone": "UTC"}
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(client, schedule=bad)
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.request_id is not None
    with pytest.raises(anthropic.BadRequestError):
        client.beta.deployments.list(status="paused", include_archived=True)
    with pytest.raises(anthropic.BadRequestError, match="page"):
        client.beta.deployment_runs.list(page="garbage")


def test_unknown_id_is_not_found_error(api_server: ApiServer) -> None:
    client = api_server.sdk()
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.beta.deployments.retrieve("depl_missing")
    assert caught.value.type == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.deployment_runs.retrieve("drun_missing")


def test_conflict_is_conflict_error_sent_once(api_server: ApiServer) -> None:
    client = api_server.sdk(max_retries=2)
    created = create(client)
    client.beta.deployments.archive(created.id)
    for call in (
        client.beta.deployments.pause,
        client.beta.deployments.run,
        client.beta.deployments.archive,
    ):
        with pytest.raises(anthropic.ConflictError) as caught:
            call(created.id)
        assert caught.value.status_code == 409
    # Without x-should-retry: false the SDK would have sent each of these three times.
    assert api_server.count("POST", f"/v1/deployments/{created.id}/pause") == 1
    assert api_server.count("POST", f"/v1/deployments/{created.id}/run") == 1
    assert api_server.count("POST", f"/v1/deployments/{created.id}/archive") == 2


def test_oversized_body_is_content_too_large_error(tmp_path: Path) -> None:
    with running_api(tmp_path / "state", max_request_bytes=2048) as server:
        client = server.sdk()
        with pytest.raises(anthropic.ContentTooLargeError) as caught:
            create(client, description="x" * 4096)
        assert caught.value.status_code == 413
        error_type: str | None = caught.value.type
        assert error_type == "request_too_large"  # the docs' type; the SDK's literal lacks it
        assert server.deployment_count() == 0


async def test_async_client_round_trip(api_server: ApiServer) -> None:
    client = api_server.async_sdk()
    async with client:
        created = await client.beta.deployments.create(**deployment_body())
        fetched = await client.beta.deployments.retrieve(created.id)
        assert fetched.id == created.id
        run = await client.beta.deployments.run(created.id)
        assert run.deployment_id == created.id
        listed = [d.id async for d in client.beta.deployments.list(limit=1)]
        assert listed == [created.id]
        runs = [r.id async for r in client.beta.deployment_runs.list(deployment_id=created.id)]
        assert runs == [run.id]
        with pytest.raises(anthropic.NotFoundError):
            await client.beta.deployments.retrieve("depl_missing")
