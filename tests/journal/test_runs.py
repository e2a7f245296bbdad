"""Runs in the journal: claims, completions, crash recovery, reading and filtering them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentcron import ids
from agentcron.core.models import (
    AgentRef,
    Deployment,
    DeploymentRun,
    PausedReason,
    RunError,
    Schedule,
    TriggerType,
)
from agentcron.core.timeutil import to_micros
from agentcron.errors import InvalidRequest, JournalError, NotFound
from agentcron.journal import RECOVERED_MESSAGE, Claim, Journal, ScheduleRow, SqliteJournal
from agentcron.journal.sqlite.reads import SCHEDULE_ROWS_SQL
from agentcron.runtime.service import DeploymentService
from tests.support.fakes import FakeClock, RecordingLauncher

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AGENT = AgentRef(id="agent_test", version=1)


def make_deployment() -> Deployment:
    return Deployment(
        id=ids.new_id(ids.DEPLOYMENT),
        name="hourly",
        description=None,
        agent=AGENT,
        environment_id="env_test",
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
        schedule=Schedule(expression="0 * * * *", timezone="UTC"),
        created_at=T0,
        updated_at=T0,
    )


@pytest.fixture
async def deployment(journal: Journal) -> Deployment:
    created = make_deployment()
    await journal.insert_deployment(created)
    return created


@pytest.fixture
def service(journal: Journal) -> DeploymentService:
    return DeploymentService(journal, RecordingLauncher(), FakeClock(T0))


async def claim(
    journal: Journal, deployment: Deployment, scheduled_at: datetime | None, at: datetime = T0
) -> Claim | None:
    return await journal.claim_run(
        deployment_id=deployment.id,
        agent=deployment.agent,
        trigger_type=TriggerType.SCHEDULE if scheduled_at else TriggerType.MANUAL,
        scheduled_at=scheduled_at,
        claimed_at=at,
    )


async def test_fifty_concurrent_claims_of_one_occurrence_have_one_winner(
    journal: Journal, deployment: Deployment
) -> None:
    occurrence = T0 + timedelta(hours=1)
    results = await asyncio.gather(*(claim(journal, deployment, occurrence) for _ in range(50)))
    winners = [claimed for claimed in results if claimed is not None]
    assert len(winners) == 1
    assert winners[0].run_id.startswith("drun_")
    assert await claim(journal, deployment, occurrence) is None  # also once committed


async def test_two_journals_on_one_file_cannot_both_claim_an_occurrence(
    tmp_path: Path,
) -> None:
    """The uniqueness lives in the schema, not in one process's memory."""
    path = tmp_path / "journal.db"
    async with SqliteJournal.open(path) as first, SqliteJournal.open(path) as second:
        created = make_deployment()
        await first.insert_deployment(created)
        occurrence = T0 + timedelta(hours=2)
        results = await asyncio.gather(
            claim(first, created, occurrence), claim(second, created, occurrence)
        )
        assert sorted(result is None for result in results) == [False, True]


async def test_manual_runs_are_never_unique_conflicts(
    journal: Journal, deployment: Deployment
) -> None:
    first = await claim(journal, deployment, None)
    second = await claim(journal, deployment, None)
    assert first is not None
    assert second is not None
    assert first != second


async def test_open_claims_are_invisible_until_completed(
    journal: Journal, deployment: Deployment, service: DeploymentService
) -> None:
    claimed = await claim(journal, deployment, T0)
    assert claimed is not None
    run_id = claimed.run_id
    assert await journal.get_run(run_id) is None
    with pytest.raises(NotFound, match=f"deployment run {run_id} not found"):
        await service.get_run(run_id)
    assert (await service.list_runs()).data == []
    assert (await service.counts())["runs"] == 0
    completed_at = T0 + timedelta(seconds=3)
    run = await journal.complete_run(
        claimed, session_id="sesn_1", error=None, completed_at=completed_at
    )
    assert run == DeploymentRun(
        id=run_id,
        deployment_id=deployment.id,
        agent=AGENT,
        trigger_type=TriggerType.SCHEDULE,
        scheduled_at=T0,
        session_id="sesn_1",
        error=None,
        created_at=completed_at,
    )
    assert await service.get_run(run_id) == run
    assert (await service.list_runs()).data == [run]


async def test_completion_records_exactly_one_outcome(
    journal: Journal, deployment: Deployment
) -> None:
    claimed = await claim(journal, deployment, T0)
    assert claimed is not None
    with pytest.raises(ValueError, match="exactly one"):
        await journal.complete_run(claimed, session_id=None, error=None, completed_at=T0)
    with pytest.raises(ValueError, match="exactly one"):
        await journal.complete_run(
            claimed, session_id="s", error=RunError(type="x", message="y"), completed_at=T0
        )
    error = RunError(type="session_rate_limited", message="too many sessions")
    run = await journal.complete_run(claimed, session_id=None, error=error, completed_at=T0)
    assert (run.session_id, run.error) == (None, error)
    with pytest.raises(JournalError, match="not an open claim"):
        await journal.complete_run(claimed, session_id="sesn_2", error=None, completed_at=T0)
    stored = await journal.get_run(claimed.run_id)
    assert stored is not None
    assert stored.error == error


async def test_completion_sets_last_run_at_only_when_asked_and_never_backwards(
    journal: Journal, deployment: Deployment
) -> None:
    async def fire(minute: int, last_run_at: datetime | None) -> None:
        claimed = await claim(journal, deployment, T0 + timedelta(minutes=minute))
        assert claimed is not None
        await journal.complete_run(
            claimed, session_id="s", error=None, completed_at=T0, last_run_at=last_run_at
        )

    async def last_run_at() -> datetime | None:
        stored = await journal.get_deployment(deployment.id)
        assert stored is not None
        return stored.last_run_at

    await fire(1, None)
    assert await last_run_at() is None
    await fire(2, T0 + timedelta(minutes=2, seconds=4))
    assert await last_run_at() == T0 + timedelta(minutes=2, seconds=4)
    await fire(3, T0 + timedelta(minutes=1))  # completed out of order: kept at the latest
    assert await last_run_at() == T0 + timedelta(minutes=2, seconds=4)


async def test_the_latest_scheduled_run_counts_open_claims_and_ignores_manual_runs(
    journal: Journal, deployment: Deployment
) -> None:
    other = make_deployment()
    await journal.insert_deployment(other)
    await claim(journal, deployment, T0 + timedelta(hours=1))
    await claim(journal, deployment, T0 + timedelta(hours=3))  # left open
    await claim(journal, deployment, None)
    await claim(journal, other, T0)
    latest = {row.deployment_id: row.latest_scheduled_at for row in await journal.schedule_rows()}
    assert latest == {
        deployment.id: to_micros(T0 + timedelta(hours=3)),
        other.id: to_micros(T0),
    }


async def test_schedule_rows_list_only_firing_deployments_with_their_latest_scheduled_run(
    journal: Journal, deployment: Deployment
) -> None:
    """Paused, archived and unscheduled deployments are left out; the latest scheduled_at
    counts open claims and ignores manual runs; a deployment without runs has None."""
    fresh = dataclasses.replace(make_deployment(), updated_at=T0 + timedelta(minutes=5))
    paused = dataclasses.replace(make_deployment(), paused_reason=PausedReason(type="manual"))
    archived = dataclasses.replace(make_deployment(), archived_at=T0)
    unscheduled = dataclasses.replace(make_deployment(), schedule=None)
    for other in (fresh, paused, archived, unscheduled):
        await journal.insert_deployment(other)
    await claim(journal, deployment, T0 + timedelta(hours=1))
    await claim(journal, deployment, T0 + timedelta(hours=3))  # left open
    await claim(journal, deployment, None)
    await claim(journal, paused, T0)
    assert await journal.schedule_rows() == [
        ScheduleRow(
            deployment_id=deployment.id,
            expression="0 * * * *",
            timezone="UTC",
            updated_at=to_micros(T0),
            latest_scheduled_at=to_micros(T0 + timedelta(hours=3)),
        ),
        ScheduleRow(
            deployment_id=fresh.id,
            expression="0 * * * *",
            timezone="UTC",
            updated_at=to_micros(T0 + timedelta(minutes=5)),
            latest_scheduled_at=None,
        ),
    ]


async def test_schedule_rows_find_the_latest_run_through_the_occurrence_index(
    journal: SqliteJournal,
) -> None:
    """One index seek per deployment, not a scan of the runs table."""
    plan = " | ".join(await journal.explain(SCHEDULE_ROWS_SQL, ()))
    assert "USING COVERING INDEX runs_occurrence (deployment_id=?" in plan
    assert "SCAN runs" not in plan


async def test_get_deployments_returns_the_existing_ones_by_id_across_query_chunks(
    journal: Journal, deployment: Deployment
) -> None:
    """Unknown ids are left out; more ids than one IN (...) query takes still work."""
    last = make_deployment()
    await journal.insert_deployment(last)
    wanted = [deployment.id, *(f"depl_unknown{n}" for n in range(600)), last.id]
    assert await journal.get_deployments(wanted) == {deployment.id: deployment, last.id: last}
    assert await journal.get_deployments([]) == {}


async def test_recover_completes_open_claims_as_service_unavailable(
    journal: Journal, deployment: Deployment
) -> None:
    left_open = await claim(journal, deployment, T0)
    done = await claim(journal, deployment, T0 + timedelta(hours=1))
    assert left_open is not None
    assert done is not None
    await journal.complete_run(done, session_id="sesn_ok", error=None, completed_at=T0)
    done_id = done.run_id
    now = T0 + timedelta(minutes=5)
    recovered = await journal.recover_open_claims(now)
    assert [run.id for run in recovered] == [left_open.run_id]
    assert recovered[0].error == RunError(type="service_unavailable", message=RECOVERED_MESSAGE)
    assert recovered[0].created_at == now
    assert await journal.recover_open_claims(now) == []
    stored = await journal.get_run(done_id)
    assert stored is not None
    assert stored.session_id == "sesn_ok"


_CLAIMING_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from datetime import datetime, UTC
    from pathlib import Path
    from agentcron.journal import SqliteJournal
    from agentcron.core.models import AgentRef, TriggerType

    async def main() -> None:
        async with SqliteJournal.open(Path(sys.argv[1])) as journal:
            claim = await journal.claim_run(
                deployment_id=sys.argv[2], agent=AgentRef(id="agent_test", version=1),
                trigger_type=TriggerType.SCHEDULE,
                scheduled_at=datetime(2026, 5, 1, 13, tzinfo=UTC),
                claimed_at=datetime(2026, 5, 1, 13, tzinfo=UTC))
            print(claim.run_id, flush=True)
            time.sleep(60)  # "creating the session" when SIGKILL arrives

    asyncio.run(main())
    """
)


async def test_claim_of_a_killed_process_is_recovered_on_the_next_open(tmp_path: Path) -> None:
    """A process claims a run and is SIGKILLed before completing it; the next opener completes
    that claim as service_unavailable and the occurrence can never be claimed again."""
    path = tmp_path / "journal.db"
    created = make_deployment()
    async with SqliteJournal.open(path) as first:
        await first.insert_deployment(created)

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLAIMING_CHILD,
        str(path),
        created.id,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None
        line = (await child.stdout.readline()).decode()
        run_id = line.strip()
        assert run_id.startswith("drun_"), line
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    async with SqliteJournal.open(path) as journal:
        assert await journal.get_run(run_id) is None
        now = T0 + timedelta(hours=1, seconds=30)
        recovered = await journal.recover_open_claims(now)
        assert [(run.id, run.error) for run in recovered] == [
            (run_id, RunError(type="service_unavailable", message=RECOVERED_MESSAGE))
        ]
        assert await journal.get_run(run_id) == recovered[0]
        assert await claim(journal, created, datetime(2026, 5, 1, 13, tzinfo=UTC)) is None


# --- listing runs through the service ------------------------------------------------------


async def make_runs(journal: Journal, deployment: Deployment) -> list[DeploymentRun]:
    """Six runs, one second apart: scheduled/manual x success/error."""
    runs = []
    for i in range(6):
        scheduled_at = T0 + timedelta(hours=i) if i % 3 else None
        claimed = await claim(journal, deployment, scheduled_at)
        assert claimed is not None
        error = RunError(type="vault_not_found", message="vault gone") if i % 2 else None
        runs.append(
            await journal.complete_run(
                claimed,
                session_id=None if error else f"sesn_{i}",
                error=error,
                completed_at=T0 + timedelta(seconds=i),
            )
        )
    return runs


async def test_run_filters(
    journal: Journal, deployment: Deployment, service: DeploymentService
) -> None:
    runs = await make_runs(journal, deployment)
    other = make_deployment()
    await journal.insert_deployment(other)
    other_claim = await claim(journal, other, None)
    assert other_claim is not None
    await journal.complete_run(other_claim, session_id="s", error=None, completed_at=T0)

    async def ids_of(**filters: object) -> list[str]:
        page = await service.list_runs(limit=1000, **filters)  # type: ignore[arg-type]
        return [run.id for run in page.data]

    newest_first = [run.id for run in reversed(runs)]
    mine = {"deployment_id": deployment.id}
    assert await ids_of(**mine) == newest_first
    assert await ids_of(**mine, has_error=True) == [r.id for r in reversed(runs) if r.error]
    assert await ids_of(**mine, has_error=False) == [r.id for r in reversed(runs) if not r.error]
    assert await ids_of(**mine, trigger_type="manual") == [
        r.id for r in reversed(runs) if r.trigger_type == TriggerType.MANUAL
    ]
    assert await ids_of(**mine, trigger_type="schedule", has_error=True) == [
        r.id for r in reversed(runs) if r.trigger_type == TriggerType.SCHEDULE and r.error
    ]
    assert await ids_of(**mine, created_at_gt=T0 + timedelta(seconds=1)) == newest_first[:4]
    assert await ids_of(**mine, created_at_gte=T0 + timedelta(seconds=1)) == newest_first[:5]
    assert await ids_of(**mine, created_at_lt=T0 + timedelta(seconds=4)) == newest_first[2:]
    assert await ids_of(**mine, created_at_lte=T0 + timedelta(seconds=4)) == newest_first[1:]
    assert await ids_of(deployment_id="depl_unknown") == []
    assert len(await ids_of()) == 7


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        pytest.param({"limit": 0}, "limit: must be between 1 and 1000, got 0", id="limit-0"),
        pytest.param({"limit": 1001}, "limit: must be between 1 and 1000", id="limit-1001"),
        pytest.param(
            {"trigger_type": "webhook"}, "trigger_type: must be schedule or manual", id="trigger"
        ),
        pytest.param({"page": "garbage!"}, "page: not a valid cursor", id="garbage-cursor"),
    ],
)
async def test_bad_run_list_arguments_are_400(
    service: DeploymentService, filters: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await service.list_runs(**filters)  # type: ignore[arg-type]
