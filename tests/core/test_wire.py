"""The API's JSON for deployments and runs (SPEC §2): every field, and never a secret."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from agentcron.core.models import (
    AgentRef,
    Deployment,
    DeploymentRun,
    PausedReason,
    RunError,
    Schedule,
    TriggerType,
)
from agentcron.core.wire import deployment_to_wire, run_to_wire

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
CREATED = datetime(2026, 5, 4, 11, 0, 0, 250_000, tzinfo=UTC)
TOKEN = "ghp_TOKEN_write_only_1234"
DEPLOYMENT_FIELDS = {
    "type",
    "id",
    "name",
    "description",
    "agent",
    "environment_id",
    "initial_events",
    "metadata",
    "resources",
    "vault_ids",
    "schedule",
    "status",
    "paused_reason",
    "archived_at",
    "created_at",
    "updated_at",
}


def deployment(**changes: Any) -> Deployment:
    base = Deployment(
        id="depl_01xyz",
        name="Weekly compliance scan",
        description=None,
        agent=AgentRef(id="agent_01ghi789", version=3),
        environment_id="env_01abc",
        initial_events=[
            {"type": "user.message", "content": [{"type": "text", "text": "Run the scan."}]}
        ],
        resources=[
            {
                "type": "github_repository",
                "url": "https://github.com/o/r",
                "authorization_token": TOKEN,
                "checkout": {"type": "branch", "name": "main"},
            },
            {"type": "file", "file_id": "file_1", "mount_path": None},
        ],
        schedule=Schedule(expression="0 20 * * 5", timezone="America/New_York"),
        created_at=CREATED,
        updated_at=CREATED,
    )
    return dataclasses.replace(base, **changes)


def test_active_scheduled_deployment_has_every_field_and_five_upcoming_runs() -> None:
    wire = deployment_to_wire(deployment(), NOW)
    assert set(wire) == DEPLOYMENT_FIELDS  # no budget key when there is no budget
    assert wire["type"] == "deployment"
    assert wire["agent"] == {"type": "agent", "id": "agent_01ghi789", "version": 3}
    assert wire["metadata"] == {}
    assert wire["vault_ids"] == []
    assert wire["status"] == "active"
    assert wire["paused_reason"] is None
    assert wire["archived_at"] is None
    assert wire["created_at"] == "2026-05-04T11:00:00.250000Z"
    assert wire["schedule"] == {
        "type": "cron",
        "expression": "0 20 * * 5",
        "timezone": "America/New_York",
        "last_run_at": None,
        "upcoming_runs_at": [
            "2026-05-09T00:00:00Z",
            "2026-05-16T00:00:00Z",
            "2026-05-23T00:00:00Z",
            "2026-05-30T00:00:00Z",
            "2026-06-06T00:00:00Z",
        ],
    }


def test_write_only_token_is_never_in_the_output_but_stays_in_the_model() -> None:
    model = deployment()
    wire = deployment_to_wire(model, NOW)
    assert TOKEN not in json.dumps(wire)
    assert wire["resources"][0] == {
        "type": "github_repository",
        "url": "https://github.com/o/r",
        "checkout": {"type": "branch", "name": "main"},
    }
    assert wire["resources"][1] == {"type": "file", "file_id": "file_1", "mount_path": None}
    assert model.resources[0]["authorization_token"] == TOKEN


def test_budget_is_present_only_when_set() -> None:
    budget = {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}}
    assert deployment_to_wire(deployment(budget=budget), NOW)["budget"] == budget


def test_paused_deployment_keeps_its_upcoming_runs() -> None:
    wire = deployment_to_wire(deployment(paused_reason=PausedReason(type="manual")), NOW)
    assert wire["status"] == "paused"
    assert wire["paused_reason"] == {"type": "manual"}
    assert len(wire["schedule"]["upcoming_runs_at"]) == 5


def test_error_pause_names_the_error_type_only() -> None:
    reason = PausedReason(type="error", error_type="vault_not_found")
    wire = deployment_to_wire(deployment(paused_reason=reason), NOW)
    assert wire["paused_reason"] == {"type": "error", "error": {"type": "vault_not_found"}}


def test_archived_reports_active_with_no_upcoming_runs_and_keeps_last_run_at() -> None:
    last = datetime(2026, 5, 2, 0, 0, 4, tzinfo=UTC)
    wire = deployment_to_wire(
        deployment(
            archived_at=NOW,
            last_run_at=last,
            paused_reason=PausedReason(type="manual"),  # even if stored, archived hides it
        ),
        NOW,
    )
    assert wire["status"] == "active"
    assert wire["paused_reason"] is None
    assert wire["archived_at"] == "2026-05-04T12:00:00Z"
    assert wire["schedule"]["upcoming_runs_at"] == []
    assert wire["schedule"]["last_run_at"] == "2026-05-02T00:00:04Z"


def test_manual_only_deployment_has_null_schedule() -> None:
    assert deployment_to_wire(deployment(schedule=None), NOW)["schedule"] is None


def test_upcoming_runs_are_strictly_after_now() -> None:
    at_fire_time = datetime(2026, 5, 9, 0, 0, tzinfo=UTC)
    wire = deployment_to_wire(deployment(), at_fire_time)
    assert wire["schedule"]["upcoming_runs_at"][0] == "2026-05-16T00:00:00Z"


def test_failed_scheduled_run_shape() -> None:
    run = DeploymentRun(
        id="drun_01abc124",
        deployment_id="depl_01xyz",
        agent=AgentRef(id="agent_01ghi789", version=3),
        trigger_type=TriggerType.SCHEDULE,
        scheduled_at=datetime(2026, 5, 9, tzinfo=UTC),
        session_id=None,
        error=RunError(type="environment_archived", message="environment `env_01abc` is archived"),
        created_at=datetime(2026, 5, 9, 0, 0, 1, tzinfo=UTC),
    )
    assert run_to_wire(run) == {
        "type": "deployment_run",
        "id": "drun_01abc124",
        "deployment_id": "depl_01xyz",
        "agent": {"type": "agent", "id": "agent_01ghi789", "version": 3},
        "trigger_context": {"type": "schedule", "scheduled_at": "2026-05-09T00:00:00Z"},
        "session_id": None,
        "error": {"type": "environment_archived", "message": "environment `env_01abc` is archived"},
        "created_at": "2026-05-09T00:00:01Z",
    }


def test_successful_manual_run_shape() -> None:
    run = DeploymentRun(
        id="drun_1",
        deployment_id="depl_1",
        agent=AgentRef(id="agent_1", version=1),
        trigger_type=TriggerType.MANUAL,
        scheduled_at=None,
        session_id="sesn_1",
        error=None,
        created_at=NOW,
    )
    wire = run_to_wire(run)
    assert wire["trigger_context"] == {"type": "manual"}
    assert (wire["session_id"], wire["error"]) == ("sesn_1", None)
