"""The scheduler across restarts, downtime and shutdown, and at scale."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from agentcron.core.models import Deployment, DeploymentRun, TriggerType
from agentcron.daemon import build_stack
from agentcron.journal import RECOVERED_MESSAGE as STOPPED_MESSAGE
from agentcron.journal import SqliteJournal
from agentcron.runtime.service import DeploymentService
from tests.support.fakes import FakeClock, RecordingLauncher
from tests.support.scheduler_rig import (
    NOON,
    START,
    deployment_body,
    scheduler_rig,
    stored_deployment,
)


async def create_offline(path: Path, *bodies: dict[str, object]) -> list[Deployment]:
    """Create deployments in a journal with no scheduler running (a first daemon life)."""
    async with SqliteJournal.open(path) as journal:
        service = DeploymentService(journal, RecordingLauncher(), FakeClock(START))
        return [await service.create(body) for body in bodies]


async def test_restart_after_a_crash_between_claim_and_completion_never_creates_that_session(
    tmp_path: Path,
) -> None:
    """An open claim is completed as service_unavailable at start; its session is never made."""
    path = tmp_path / "journal.db"
    (deployment,) = await create_offline(path, deployment_body())
    async with SqliteJournal.open(path) as journal:
        claimed = await journal.claim_run(
            deployment_id=deployment.id,
            agent=deployment.agent,
            trigger_type=TriggerType.SCHEDULE,
            scheduled_at=NOON,
            claimed_at=NOON,
        )
        assert claimed is not None
    # the daemon died there, before the launcher answered

    async with scheduler_rig(path, start=NOON + timedelta(seconds=10)) as rig:
        await rig.advance(120)
        assert rig.launcher.requests == []
        (run,) = await rig.runs(deployment.id)
        assert run.id == claimed.run_id
        assert run.error is not None
        assert run.error.type == "service_unavailable"
        await rig.advance_to(NOON + timedelta(days=1, minutes=1))
        assert await rig.scheduled_ats(deployment.id) == [NOON, NOON + timedelta(days=1)]
        assert len(rig.launcher.requests) == 1


@pytest.mark.parametrize(
    ("downtime", "fired_at_start"),
    [pytest.param(30.0, True, id="shorter-than-grace"), pytest.param(300.0, False, id="longer")],
)
async def test_downtime_fires_within_misfire_grace_and_counts_older_as_missed(
    tmp_path: Path, downtime: float, fired_at_start: bool
) -> None:
    """Back 30 s after 12:00 the run fires; back after 5 min it is missed: logged, no run."""
    path = tmp_path / "journal.db"
    (deployment,) = await create_offline(path, deployment_body())
    with capture_logs() as logs:
        async with scheduler_rig(path, start=NOON + timedelta(seconds=downtime)) as rig:
            expected = [NOON] if fired_at_start else []
            assert await rig.scheduled_ats(deployment.id) == expected
            health = rig.scheduler.health()
            assert health["missed"] == (0 if fired_at_start else 1)
            assert health["fired"] == len(expected)
            await rig.advance_to(NOON + timedelta(days=1, minutes=2))
            assert await rig.scheduled_ats(deployment.id) == [*expected, NOON + timedelta(days=1)]
    missed = [entry for entry in logs if entry["event"] == "occurrence_missed"]
    assert [entry["scheduled_at"] for entry in missed] == (
        [] if fired_at_start else ["2026-06-01T12:00:00Z"]
    )


async def test_restart_never_fires_an_occurrence_that_already_has_a_run(tmp_path: Path) -> None:
    """Restarting 20 s after a completed 12:00 fire does not fire 12:00 again."""
    path = tmp_path / "journal.db"
    async with scheduler_rig(path) as rig:
        deployment = await rig.service.create(deployment_body())
        await rig.advance_to(NOON + timedelta(seconds=10))
        assert len(rig.launcher.requests) == 1
    async with scheduler_rig(path, start=NOON + timedelta(seconds=20)) as rig:
        await rig.advance(120)
        assert rig.launcher.requests == []
        assert await rig.scheduled_ats(deployment.id) == [NOON]


async def test_an_occurrence_claimed_elsewhere_is_suppressed_as_a_duplicate(
    tmp_path: Path,
) -> None:
    """If the unique claim already exists, the loop skips it: no session, counted duplicate."""
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        deployment = await rig.service.create(deployment_body())
        other = await rig.journal.claim_run(
            deployment_id=deployment.id,
            agent=deployment.agent,
            trigger_type=TriggerType.SCHEDULE,
            scheduled_at=NOON,
            claimed_at=START,
        )
        assert other is not None
        await rig.advance_to(NOON + timedelta(seconds=30))
        assert rig.launcher.requests == []
        assert rig.scheduler.health()["duplicates"] == 1


async def only_run_after_shutdown(path: Path, deployment_id: str) -> DeploymentRun:
    """Reopen the journal: the shutdown left no open claim, and the deployment has one run."""
    async with SqliteJournal.open(path) as journal:
        assert await journal.recover_open_claims(NOON) == []
        service = DeploymentService(journal, RecordingLauncher(), FakeClock(NOON))
        (run,) = (await service.list_runs(deployment_id=deployment_id)).data
        return run


async def test_shutdown_waits_for_in_flight_creations_within_the_grace(tmp_path: Path) -> None:
    """A creation that answers within shutdown_grace is recorded with its session."""
    path = tmp_path / "journal.db"
    launcher = RecordingLauncher(delay=0.05)
    async with scheduler_rig(path, launcher=launcher, shutdown_grace=30.0) as rig:
        deployment = await rig.service.create(deployment_body())
        await rig.clock.advance(60)
        await launcher.wait_for_requests(1)
        # leaving the block cancels the scheduler while the creation is still running
    run = await only_run_after_shutdown(path, deployment.id)
    assert run.session_id == launcher.session_ids[0]


async def test_shutdown_completes_creations_past_the_grace_as_service_unavailable(
    tmp_path: Path,
) -> None:
    """A creation still hanging when the grace ends is cancelled; its run is not left open."""
    path = tmp_path / "journal.db"
    launcher = RecordingLauncher(gate=anyio.Event())  # never answers
    async with scheduler_rig(path, launcher=launcher, shutdown_grace=0.0) as rig:
        deployment = await rig.service.create(deployment_body())
        await rig.clock.advance(60)
        await launcher.wait_for_requests(1)
    run = await only_run_after_shutdown(path, deployment.id)
    assert run.session_id is None
    assert run.error is not None
    assert (run.error.type, run.error.message) == ("service_unavailable", STOPPED_MESSAGE)


async def test_ten_thousand_deployments_due_at_the_same_instant_all_fire_exactly_once(
    tmp_path: Path,
) -> None:
    """10,000 deployments on the same minute: 10,000 sessions, 10,000 unique completed runs."""
    count = 10_000
    path = tmp_path / "journal.db"
    async with SqliteJournal.open(path) as journal:
        async with anyio.create_task_group() as inserts:  # group-committed
            for _ in range(count):
                inserts.start_soon(journal.insert_deployment, stored_deployment(START))
        clock = FakeClock(START)
        launcher = RecordingLauncher()
        stack = build_stack(
            journal=journal,
            launcher=launcher,
            clock=clock,
            max_deployments=count,
            max_jitter=0.0,
            max_sleep=3600.0,
        )
        service, scheduler = stack.service, stack.scheduler
        with capture_logs():  # keeps 10,000 run_fired lines off the console
            async with anyio.create_task_group() as tg:
                await tg.start(scheduler.run)
                assert scheduler.health()["scheduled"] == count
                transactions = journal.transactions
                await clock.advance(60)
                await scheduler.idle()
                # 20,000 writes (claims + completions), group-committed in far fewer transactions
                # (over 20 writes per transaction where commits take milliseconds; on a RAM disk,
                # where they take microseconds, the writer's 2 ms pace still gathers about 17)
                assert journal.transactions - transactions < count // 5
                await clock.advance(3600)  # nothing fires twice
                await scheduler.idle()
                tg.cancel_scope.cancel()
        runs: list[DeploymentRun] = []
        page: str | None = None
        while True:
            batch = await service.list_runs(limit=1000, page=page)
            runs += batch.data
            if (page := batch.next_page) is None:
                break
        assert len(runs) == count
        assert len({r.deployment_id for r in runs}) == count
        assert {r.scheduled_at for r in runs} == {NOON}
        assert all(r.session_id is not None for r in runs)
        assert len(launcher.requests) == count
        health = scheduler.health()
        assert (health["fired"], health["succeeded"], health["duplicates"]) == (count, count, 0)
