"""The deployment service: create, update field by field, lifecycle, listing, listeners."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentcron.core.models import AgentRef, Deployment, PausedReason, Schedule, TriggerType
from agentcron.errors import Conflict, InvalidRequest, NotFound
from agentcron.journal import Journal
from agentcron.runtime.service import DeploymentService
from tests.support.fakes import FakeClock, RecordingLauncher

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TOKEN = "ghp_TOKEN_never_shown"
SCHEDULE = {"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"}


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "Weekly compliance scan",
        "agent": "agent_test",
        "environment_id": "env_test",
        "initial_events": [
            {"type": "user.message", "content": [{"type": "text", "text": "Run the scan."}]}
        ],
        "schedule": SCHEDULE,
    }
    return base | changes


class Harness:
    def __init__(self, journal: Journal, *, max_deployments: int = 1000) -> None:
        self.journal = journal
        self.clock = FakeClock(T0)
        self.launcher = RecordingLauncher(agents={"agent_test": 3, "agent_other": 1})
        self.service = DeploymentService(
            journal, self.launcher, self.clock, max_deployments=max_deployments
        )
        self.changes: list[Deployment] = []
        self.service.subscribe(self.changes.append)

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.step_wall(timedelta(seconds=seconds))


@pytest.fixture
def h(journal: Journal) -> Harness:
    return Harness(journal)


# --- create and get ------------------------------------------------------------------------


async def test_create_pins_the_latest_agent_version_and_stores_everything(h: Harness) -> None:
    created = await h.service.create(
        body(
            description="nightly",
            metadata={"team": "ops"},
            resources=[
                {"type": "github_repository", "url": "https://g/r", "authorization_token": TOKEN}
            ],
            vault_ids=["vlt_1"],
            budget={"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}},
        )
    )
    assert created.id.startswith("depl_")
    assert created.agent == AgentRef(id="agent_test", version=3)
    assert created.schedule == Schedule(expression="0 20 * * 5", timezone="America/New_York")
    assert created.created_at == created.updated_at == T0
    assert created.resources[0]["authorization_token"] == TOKEN  # stored for the launcher
    assert await h.service.get(created.id) == created
    assert h.changes == [created]


async def test_create_pins_a_requested_version(h: Harness) -> None:
    created = await h.service.create(
        body(agent={"type": "agent", "id": "agent_test", "version": 2})
    )
    assert created.agent == AgentRef(id="agent_test", version=2)


async def test_create_without_schedule_is_manual_only(h: Harness) -> None:
    created = await h.service.create(body(schedule=None))
    assert created.schedule is None
    assert (await h.service.counts())["scheduled"] == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"agent": "agent_nope"}, "agent: agent 'agent_nope'", id="unknown-agent"),
        pytest.param(
            {"agent": {"type": "agent", "id": "agent_test", "version": 9}},
            "agent: agent 'agent_test' has no version 9",
            id="unknown-version",
        ),
        pytest.param(
            {"environment_id": "env_nope"}, "environment_id: unknown environment", id="unknown-env"
        ),
        pytest.param({"bogus": 1}, "bogus: unknown field", id="unknown-field"),
    ],
)
async def test_create_rejects_what_the_launcher_or_validation_refuses(
    h: Harness, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await h.service.create(body(**changes))
    assert (await h.service.counts())["active"] == 0
    assert h.changes == []


async def test_max_deployments_limits_non_archived_scheduled_deployments(
    journal: Journal,
) -> None:
    h = Harness(journal, max_deployments=2)
    first = await h.service.create(body())
    await h.service.create(body())
    manual = await h.service.create(body(schedule=None))  # manual-only ones do not count
    with pytest.raises(InvalidRequest, match="max_deployments") as caught:
        await h.service.create(body())
    assert caught.value.status == 400
    with pytest.raises(InvalidRequest, match="max_deployments"):
        await h.service.update(manual.id, {"schedule": SCHEDULE})
    await h.service.pause(first.id)  # paused ones still count
    with pytest.raises(InvalidRequest, match="max_deployments"):
        await h.service.create(body())
    await h.service.archive(first.id)  # archived ones do not
    await h.service.create(body())


async def test_unknown_deployment_is_not_found(h: Harness) -> None:
    for call in (
        h.service.get("depl_missing"),
        h.service.update("depl_missing", {"name": "x"}),
        h.service.pause("depl_missing"),
        h.service.unpause("depl_missing"),
        h.service.archive("depl_missing"),
    ):
        with pytest.raises(NotFound, match="deployment depl_missing not found") as caught:
            await call
        assert caught.value.status == 404


# --- update, field by field ----------------------------------------------------------------


async def updated(
    h: Harness, changes: dict[str, Any], **create: Any
) -> tuple[Deployment, Deployment]:
    before = await h.service.create(body(**create))
    h.tick()
    after = await h.service.update(before.id, changes)
    assert await h.service.get(before.id) == after
    return before, after


async def test_update_with_empty_body_changes_nothing(h: Harness) -> None:
    before, after = await updated(h, {})
    assert after == before
    assert len(h.changes) == 1  # only the create


async def test_update_name_moves_updated_at_and_notifies(h: Harness) -> None:
    before, after = await updated(h, {"name": "Renamed"})
    assert after.name == "Renamed"
    assert after.updated_at == T0 + timedelta(seconds=1)
    assert after.created_at == before.created_at
    assert h.changes[-1] == after


@pytest.mark.parametrize("cleared", [None, ""], ids=["null", "empty-string"])
async def test_update_description_clears(h: Harness, cleared: str | None) -> None:
    _, after = await updated(h, {"description": cleared}, description="old")
    assert after.description is None


async def test_update_agent_string_repins_latest(h: Harness) -> None:
    before, after = await updated(
        h, {"agent": "agent_test"}, agent={"type": "agent", "id": "agent_test", "version": 1}
    )
    assert before.agent.version == 1
    assert after.agent == AgentRef(id="agent_test", version=3)


async def test_update_agent_object_pins_as_given(h: Harness) -> None:
    _, after = await updated(h, {"agent": {"type": "agent", "id": "agent_other", "version": 1}})
    assert after.agent == AgentRef(id="agent_other", version=1)


async def test_update_environment_is_validated(h: Harness) -> None:
    created = await h.service.create(body())
    with pytest.raises(InvalidRequest, match="environment_id: unknown environment"):
        await h.service.update(created.id, {"environment_id": "env_nope"})


async def test_update_initial_events_replaces_them(h: Harness) -> None:
    events = [{"type": "user.message", "content": [{"type": "text", "text": "new"}]}]
    _, after = await updated(h, {"initial_events": events})
    assert after.initial_events == events


async def test_update_metadata_is_a_per_key_patch(h: Harness) -> None:
    _, after = await updated(
        h,
        {"metadata": {"keep": "changed", "drop": None, "new": "n", "absent": None}},
        metadata={"keep": "k", "drop": "d", "other": "o"},
    )
    assert after.metadata == {"keep": "changed", "other": "o", "new": "n"}


async def test_update_metadata_result_must_stay_within_limits(h: Harness) -> None:
    created = await h.service.create(body(metadata={f"k{i}": "v" for i in range(15)}))
    with pytest.raises(InvalidRequest, match="metadata: at most 16 keys, got 17"):
        await h.service.update(created.id, {"metadata": {"a": "1", "b": "2"}})
    replaced = await h.service.update(created.id, {"metadata": {"k0": None, "a": "1"}})
    assert len(replaced.metadata) == 15


@pytest.mark.parametrize("cleared", [None, []], ids=["null", "empty-list"])
async def test_update_lists_are_replaced_or_cleared(h: Harness, cleared: list[str] | None) -> None:
    resources = [{"type": "file", "file_id": "file_1"}]
    before, after = await updated(
        h, {"resources": cleared, "vault_ids": cleared}, resources=resources, vault_ids=["v1"]
    )
    assert (before.resources, before.vault_ids) == (resources, ["v1"])
    assert (after.resources, after.vault_ids) == ([], [])
    _, replaced = await updated(h, {"vault_ids": ["v2", "v3"]}, vault_ids=["v1"])
    assert replaced.vault_ids == ["v2", "v3"]


async def test_update_budget_replaces_and_clears(h: Harness) -> None:
    budget = {"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}}
    _, with_budget = await updated(h, {"budget": budget})
    assert with_budget.budget == budget
    cleared = await h.service.update(with_budget.id, {"budget": None})
    assert cleared.budget is None


async def test_update_schedule_replaces_and_clears(h: Harness) -> None:
    _, after = await updated(
        h, {"schedule": {"type": "cron", "expression": "*/5 * * * *", "timezone": "UTC"}}
    )
    assert after.schedule == Schedule(expression="*/5 * * * *", timezone="UTC")
    cleared = await h.service.update(after.id, {"schedule": None})
    assert cleared.schedule is None
    assert h.changes[-1].schedule is None


async def test_update_with_a_bad_field_changes_nothing(h: Harness) -> None:
    created = await h.service.create(body())
    with pytest.raises(InvalidRequest, match="name: cannot be cleared"):
        await h.service.update(created.id, {"description": "new", "name": None})
    assert await h.service.get(created.id) == created


async def test_update_keeps_last_run_at_written_by_the_scheduler(h: Harness) -> None:
    """A service write never overwrites the scheduler's last_run_at with a stale value."""
    created = await h.service.create(body())
    run_id = await h.journal.claim_run(
        deployment_id=created.id,
        agent=created.agent,
        trigger_type=TriggerType.SCHEDULE,
        scheduled_at=T0,
        claimed_at=T0,
    )
    assert run_id is not None
    await h.journal.complete_run(
        run_id, session_id="s", error=None, completed_at=T0, last_run_at=T0 + timedelta(seconds=2)
    )
    renamed = await h.service.update(created.id, {"name": "x"})
    assert renamed.last_run_at == T0 + timedelta(seconds=2)
    paused = await h.service.pause(created.id)
    assert (await h.service.get(paused.id)).last_run_at == T0 + timedelta(seconds=2)


# --- lifecycle -----------------------------------------------------------------------------


async def test_pause_and_unpause_are_idempotent(h: Harness) -> None:
    created = await h.service.create(body())
    h.tick()
    paused = await h.service.pause(created.id)
    assert paused.paused_reason == PausedReason(type="manual")
    assert paused.updated_at == T0 + timedelta(seconds=1)
    h.tick()
    assert await h.service.pause(created.id) == paused
    active = await h.service.unpause(created.id)
    assert active.paused_reason is None
    assert await h.service.unpause(created.id) == active
    assert [change.paused_reason for change in h.changes] == [
        None,
        PausedReason(type="manual"),
        None,
    ]


async def test_error_pause_is_cleared_by_unpause(h: Harness) -> None:
    created = await h.service.create(body())
    paused = await h.service.pause_for_error(created.id, "vault_not_found")
    assert paused is not None
    assert paused.paused_reason == PausedReason(type="error", error_type="vault_not_found")
    assert h.changes[-1] == paused
    assert await h.service.pause_for_error(created.id, "environment_archived") is None
    assert await h.service.pause(created.id) == paused  # already paused: kept as it is
    active = await h.service.unpause(created.id)
    assert active.paused_reason is None


async def test_archive_is_terminal(h: Harness) -> None:
    created = await h.service.create(body())
    await h.service.pause(created.id)
    h.tick()
    archived = await h.service.archive(created.id)
    assert archived.archived_at == T0 + timedelta(seconds=1)
    assert archived.paused_reason is None
    assert h.changes[-1] == archived
    for call in (
        h.service.update(created.id, {"name": "x"}),
        h.service.update(created.id, {"name": None}),
        h.service.pause(created.id),
        h.service.unpause(created.id),
        h.service.archive(created.id),
    ):
        with pytest.raises(Conflict, match=f"deployment {created.id} is archived") as caught:
            await call
        assert caught.value.status == 409
    assert await h.service.get(created.id) == archived  # still readable
    assert await h.service.pause_for_error(created.id, "vault_not_found") is None
    assert await h.service.archive_for_agent(created.id) is None


async def test_archive_for_agent_archives_once(h: Harness) -> None:
    created = await h.service.create(body())
    archived = await h.service.archive_for_agent(created.id)
    assert archived is not None
    assert archived.is_archived
    assert h.changes[-1] == archived
    assert await h.service.archive_for_agent(created.id) is None


async def test_a_failing_listener_does_not_undo_the_change(h: Harness) -> None:
    def broken(_: Deployment) -> None:
        raise RuntimeError("listener bug")

    h.service.subscribe(broken)
    created = await h.service.create(body())
    assert await h.service.get(created.id) == created
    assert h.changes == [created]


# --- listing and counts --------------------------------------------------------------------


async def test_list_filters(h: Harness) -> None:
    made = []
    for i in range(6):
        made.append(await h.service.create(body(agent="agent_other" if i % 2 else "agent_test")))
        h.tick()
    await h.service.pause(made[1].id)
    await h.service.pause(made[2].id)
    await h.service.archive(made[3].id)
    await h.service.pause(made[4].id)
    await h.service.archive(made[4].id)

    async def ids_of(**filters: Any) -> list[str]:
        return [d.id for d in (await h.service.list(limit=100, **filters)).data]

    def expect(*indexes: int) -> list[str]:
        return [made[i].id for i in sorted(indexes, reverse=True)]

    assert await ids_of() == expect(0, 1, 2, 5)
    assert await ids_of(include_archived=True) == expect(0, 1, 2, 3, 4, 5)
    assert await ids_of(status="active") == expect(0, 5)
    assert await ids_of(status="paused") == expect(1, 2)
    assert await ids_of(agent_id="agent_other") == expect(1, 5)
    assert await ids_of(agent_id="agent_other", include_archived=True) == expect(1, 3, 5)
    assert await ids_of(agent_id="agent_other", status="paused") == expect(1)
    assert await ids_of(created_at_gte=T0 + timedelta(seconds=1)) == expect(1, 2, 5)
    assert await ids_of(created_at_lte=T0 + timedelta(seconds=1)) == expect(0, 1)
    assert await ids_of(agent_id="agent_unknown") == []
    assert await h.service.counts() == {
        "active": 2,
        "paused": 2,
        "archived": 2,
        "scheduled": 4,
        "runs": 0,
    }


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        pytest.param({"limit": 0}, "limit: must be between 1 and 100, got 0", id="limit-0"),
        pytest.param({"limit": 101}, "limit: must be between 1 and 100, got 101", id="limit-101"),
        pytest.param({"status": "archived"}, "status: must be active or paused", id="bad-status"),
        pytest.param(
            {"status": "active", "include_archived": True},
            "status: cannot be combined with include_archived",
            id="status-and-include-archived",
        ),
        pytest.param({"page": "not-a-cursor"}, "page: not a valid cursor", id="garbage-cursor"),
    ],
)
async def test_bad_list_arguments_are_400(
    h: Harness, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await h.service.list(**filters)
