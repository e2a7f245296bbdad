"""The scheduler loop end to end: a real journal file, a fake clock, a recording launcher."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
import structlog
from structlog.testing import capture_logs

from agentcron.core.jitter import jitter_offset
from agentcron.core.models import Deployment, TriggerType
from agentcron.errors import Conflict, NotFound
from agentcron.journal import Journal
from agentcron.runtime.copies import DeploymentCopies
from tests.support.fakes import FakeClock, RecordingLauncher, eventually
from tests.support.scheduler_rig import (
    NOON,
    START,
    deployment_body,
    scheduler_rig,
    stored_deployment,
)


async def test_fire_happens_at_nominal_time_plus_jitter_offset_not_before(tmp_path: Path) -> None:
    """The session is created exactly at scheduled_at + jitter_offset(id), never earlier."""
    async with scheduler_rig(tmp_path / "journal.db", max_jitter=10.0) as rig:
        deployment = await rig.service.create(deployment_body())
        offset = jitter_offset(deployment.id, 10.0)
        assert 0 <= offset < 10
        fire_at = NOON + timedelta(seconds=offset)
        await rig.advance_to(fire_at - timedelta(milliseconds=1))
        assert rig.launcher.requests == []
        await rig.advance(0.001)
        assert len(rig.launcher.requests) == 1
        (run,) = await rig.runs(deployment.id)
        assert run.scheduled_at == NOON
        assert run.trigger_type is TriggerType.SCHEDULE
        assert run.session_id == rig.launcher.session_ids[0]
        stored = await rig.service.get(deployment.id)
        assert stored.last_run_at == fire_at  # when the session creation call began


@pytest.mark.parametrize(
    ("expression", "start", "end", "expected"),
    [
        pytest.param(
            "30 2 * * *",
            datetime(2026, 3, 7, 0, 0, tzinfo=UTC),
            datetime(2026, 3, 10, 0, 0, tzinfo=UTC),
            ["2026-03-07T07:30:00+00:00", "2026-03-09T06:30:00+00:00"],
            id="spring-forward-02:30-never-fires-on-2026-03-08",
        ),
        pytest.param(
            "30 1 * * *",
            datetime(2026, 10, 31, 12, 0, tzinfo=UTC),
            datetime(2026, 11, 2, 12, 0, tzinfo=UTC),
            [
                "2026-11-01T05:30:00+00:00",
                "2026-11-01T06:30:00+00:00",
                "2026-11-02T06:30:00+00:00",
            ],
            id="fall-back-01:30-fires-twice-on-2026-11-01",
        ),
    ],
)
async def test_dst_gap_and_double_fire_through_the_loop(
    tmp_path: Path, expression: str, start: datetime, end: datetime, expected: list[str]
) -> None:
    """America/New_York: a gap time is skipped, a doubled wall time fires at both instants."""
    async with scheduler_rig(tmp_path / "journal.db", start=start) as rig:
        deployment = await rig.service.create(deployment_body(expression, "America/New_York"))
        await rig.advance_to(end, step=1800)
        fired = await rig.scheduled_ats(deployment.id)
        assert [at.isoformat() if at else None for at in fired] == expected
        assert len(rig.launcher.requests) == len(expected)


async def test_pause_suppresses_and_unpause_resumes_without_backfill(tmp_path: Path) -> None:
    """Paused occurrences never fire, not even after unpause; manual runs work while paused."""
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        deployment = await rig.service.create(deployment_body("*/10 * * * *"))
        await rig.advance_to(NOON + timedelta(minutes=1))
        await rig.service.pause(deployment.id)
        await rig.advance_to(NOON + timedelta(minutes=45))
        manual = await rig.stack.firing.run_manual(deployment.id)
        assert manual.trigger_type is TriggerType.MANUAL
        assert manual.session_id is not None
        assert manual.scheduled_at is None
        await rig.service.unpause(deployment.id)
        await rig.advance_to(NOON + timedelta(minutes=61))
        fired = [at for at in await rig.scheduled_ats(deployment.id) if at is not None]
        assert fired == [NOON, NOON + timedelta(minutes=50), NOON + timedelta(minutes=60)]
        stored = await rig.service.get(deployment.id)
        assert stored.last_run_at == NOON + timedelta(minutes=60)  # the manual run left it alone


async def test_schedule_update_takes_effect_at_once_without_a_missed_or_extra_fire(
    tmp_path: Path,
) -> None:
    """An hourly schedule changed to every 20 minutes fires on the new one, 13:00 exactly once."""
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        deployment = await rig.service.create(deployment_body("0 * * * *"))
        await rig.advance_to(NOON + timedelta(minutes=2))
        await rig.service.update(
            deployment.id,
            {"schedule": {"type": "cron", "expression": "*/20 * * * *", "timezone": "UTC"}},
        )
        await rig.advance_to(NOON + timedelta(minutes=61))
        assert await rig.scheduled_ats(deployment.id) == [
            NOON + timedelta(minutes=m) for m in (0, 20, 40, 60)
        ]


async def test_update_of_other_fields_keeps_a_pending_jittered_occurrence(tmp_path: Path) -> None:
    """Renaming between an occurrence and its jittered fire time neither drops nor repeats it."""
    async with scheduler_rig(tmp_path / "journal.db", max_jitter=10.0) as rig:
        deployment = await rig.service.create(deployment_body())
        offset = jitter_offset(deployment.id, 10.0)
        await rig.advance_to(NOON + timedelta(seconds=offset / 2))
        await rig.service.update(deployment.id, {"name": "renamed report"})
        await rig.advance_to(NOON + timedelta(minutes=5))
        assert await rig.scheduled_ats(deployment.id) == [NOON]
        assert [r.title for r in rig.launcher.requests] == ["renamed report"]


async def test_archive_while_a_fire_is_in_flight_completes_it_and_stops_the_schedule(
    tmp_path: Path,
) -> None:
    """The in-flight creation finishes and is recorded; no later occurrence fires."""
    launcher = RecordingLauncher(gate=anyio.Event())
    async with scheduler_rig(tmp_path / "journal.db", launcher=launcher) as rig:
        deployment = await rig.service.create(deployment_body("* * * * *"))
        await rig.clock.advance(60)
        await launcher.wait_for_requests(1)
        archived = await rig.service.archive(deployment.id)
        assert archived.is_archived
        assert rig.scheduler.health()["scheduled"] == 0
        assert launcher.gate is not None
        launcher.gate.set()
        await rig.scheduler.idle()
        await rig.advance_to(NOON + timedelta(minutes=10), step=60)
        (run,) = await rig.runs(deployment.id)
        assert run.session_id is not None
        assert run.scheduled_at == NOON
        assert len(launcher.requests) == 1
        with pytest.raises(Conflict):
            await rig.stack.firing.run_manual(deployment.id)


@pytest.mark.parametrize(
    "error_type",
    ["session_rate_limited", "environment_archived", "vault_not_found", "service_unavailable"],
)
async def test_failures_are_recorded_once_with_no_retry(tmp_path: Path, error_type: str) -> None:
    """A failed creation becomes one error run; the next try is the next occurrence."""
    launcher = RecordingLauncher(fail_with=error_type)
    async with scheduler_rig(tmp_path / "journal.db", launcher=launcher) as rig:
        deployment = await rig.service.create(deployment_body("*/5 * * * *"))
        await rig.advance_to(NOON + timedelta(minutes=4), step=30)
        assert len(launcher.requests) == 1
        await rig.advance_to(NOON + timedelta(minutes=5), step=30)
        runs = await rig.runs(deployment.id)
        assert [(r.scheduled_at, r.error.type if r.error else None) for r in runs] == [
            (NOON, error_type),
            (NOON + timedelta(minutes=5), error_type),
        ]
        assert all(r.session_id is None for r in runs)
        assert len(launcher.requests) == 2
        stored = await rig.service.get(deployment.id)
        assert stored.status == "active"
        assert rig.scheduler.health()["failed"] == {error_type: 2}


async def test_auto_pause_on_pauses_after_a_scheduled_failure_only(tmp_path: Path) -> None:
    """auto_pause_on error types pause on a scheduled failure; a manual failure never pauses."""
    launcher = RecordingLauncher(fail_with="environment_archived")
    async with scheduler_rig(
        tmp_path / "journal.db", launcher=launcher, auto_pause_on=["environment_archived"]
    ) as rig:
        deployment = await rig.service.create(deployment_body("*/5 * * * *"))
        manual = await rig.stack.firing.run_manual(deployment.id)
        assert manual.error is not None
        assert (await rig.service.get(deployment.id)).paused_reason is None
        await rig.advance_to(NOON + timedelta(minutes=30), step=60)
        stored = await rig.service.get(deployment.id)
        assert stored.paused_reason is not None
        assert stored.paused_reason.type == "error"
        assert stored.paused_reason.error_type == "environment_archived"
        assert len(launcher.requests) == 2  # the manual run and the first scheduled one


async def test_agent_archived_archives_the_deployment(tmp_path: Path) -> None:
    """A scheduled agent_archived run archives the deployment; nothing fires after."""
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        deployment = await rig.service.create(deployment_body("* * * * *"))
        rig.launcher.archived_agents.add("agent_test")
        await rig.advance_to(NOON + timedelta(minutes=5), step=30)
        (run,) = await rig.runs(deployment.id)
        assert run.error is not None
        assert run.error.type == "agent_archived"
        assert (await rig.service.get(deployment.id)).is_archived
        assert len(rig.launcher.requests) == 1


async def test_manual_run_with_agent_archived_archives_the_deployment(tmp_path: Path) -> None:
    """A manual run returns its error run and still archives the deployment (agent gone)."""
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        deployment = await rig.service.create(deployment_body())
        rig.launcher.archived_agents.add("agent_test")
        run = await rig.stack.firing.run_manual(deployment.id)
        assert run.error is not None
        assert run.error.type == "agent_archived"
        assert run.trigger_type is TriggerType.MANUAL
        assert (await rig.service.get(deployment.id)).is_archived


async def test_manual_run_of_an_unknown_deployment_is_not_found(tmp_path: Path) -> None:
    """run_manual raises NotFound for an id that does not exist and writes no run."""
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        with pytest.raises(NotFound):
            await rig.stack.firing.run_manual("depl_01JD3000000000000000000000")
        assert await rig.runs() == []


async def test_heartbeat_is_called_at_least_every_max_sleep(tmp_path: Path) -> None:
    """With nothing scheduled the loop still wakes every max_sleep seconds and beats."""
    beats: list[datetime] = []
    clock_box: list[FakeClock] = []

    def heartbeat() -> None:
        beats.append(clock_box[0].now() if clock_box else START)

    async with scheduler_rig(tmp_path / "journal.db", heartbeat=heartbeat, max_sleep=30.0) as rig:
        clock_box.append(rig.clock)
        before = len(beats)
        assert before >= 1
        for _ in range(10):
            await rig.advance(30)
        assert len(beats) - before >= 10
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(beats[before:])]
        assert max(gaps) <= 30


async def test_a_wall_clock_step_is_noticed_within_max_sleep(tmp_path: Path) -> None:
    """An NTP step forward makes a due occurrence fire on the next wake, not an hour later."""
    async with scheduler_rig(
        tmp_path / "journal.db", start=NOON - timedelta(hours=1), max_sleep=30.0
    ) as rig:
        deployment = await rig.service.create(deployment_body())
        rig.clock.step_wall(timedelta(minutes=59, seconds=45))  # wall 11:59:45, loop asleep
        await rig.advance(30)  # woken by max_sleep at 12:00:15 wall time
        assert await rig.scheduled_ats(deployment.id) == [NOON]


async def test_health_counts_fires_failures_misses_and_reports_the_next_fire(
    tmp_path: Path,
) -> None:
    """health(): fired/succeeded/failed/missed/in_flight/scheduled/next_fire_at."""
    async with scheduler_rig(tmp_path / "journal.db", max_sleep=30.0) as rig:
        health = rig.scheduler.health()
        assert health["scheduled"] == 0
        assert health["next_fire_at"] is None
        ok = await rig.service.create(deployment_body("* * * * *"))
        await rig.service.create(deployment_body("0 13 * * *"))
        assert rig.scheduler.health()["next_fire_at"] == "2026-06-01T12:00:00Z"
        await rig.advance_to(NOON + timedelta(seconds=30), step=30)
        rig.launcher.fail_with = "session_rate_limited"
        await rig.advance_to(NOON + timedelta(minutes=1, seconds=30), step=30)
        await rig.service.pause(ok.id)
        await rig.service.unpause(ok.id)
        await rig.scheduler.idle()  # the loop has taken the unpause in and sleeps until 12:02
        # Wall clock jumps so the loop wakes at 12:07:01: 12:02-12:06 are more than 60 s late
        # (missed), 12:07 is 1 s late (fired).
        rig.clock.step_wall(timedelta(minutes=5, seconds=1))
        await rig.advance(30)
        health = rig.scheduler.health()
        assert health["fired"] == 3
        assert health["succeeded"] == 1
        assert health["failed"] == {"session_rate_limited": 2}
        assert health["missed"] == 5
        assert health["in_flight"] == 0
        assert health["scheduled"] == 2


async def test_each_fire_logs_one_run_fired_line_with_lag_and_outcome(tmp_path: Path) -> None:
    """run_fired carries deployment_id, run_id, scheduled_at, lag_ms and the session id."""
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        deployment = await rig.service.create(deployment_body())
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await rig.advance_to(NOON + timedelta(seconds=1))
        (line,) = [entry for entry in logs if entry["event"] == "run_fired"]
        (run,) = await rig.runs(deployment.id)
        assert line["scheduled_at"] == "2026-06-01T12:00:00Z"
        assert line["outcome"] == run.session_id
        assert line["lag_ms"] == 0
        assert line["deployment_id"] == deployment.id  # bound through contextvars
        assert line["run_id"] == run.id


async def test_a_slow_launcher_is_bounded_and_never_blocks_the_loop(tmp_path: Path) -> None:
    """With creations hanging, at most max_concurrent_fires run; the loop and service go on."""
    launcher = RecordingLauncher(gate=anyio.Event())
    beats: list[int] = []
    async with scheduler_rig(
        tmp_path / "journal.db",
        launcher=launcher,
        max_concurrent_fires=2,
        max_sleep=30.0,
        heartbeat=lambda: beats.append(1),
    ) as rig:
        for _ in range(3):
            await rig.service.create(deployment_body())
        await rig.clock.advance(60)
        await launcher.wait_for_requests(2)
        before = len(beats)
        await rig.clock.advance(90)  # the loop keeps waking while both slots hang
        later = await rig.service.create(deployment_body("5 12 * * *"))
        assert len(beats) - before >= 3
        assert len(launcher.requests) == 2  # the third waits for a slot
        assert rig.scheduler.health()["in_flight"] == 3
        assert launcher.gate is not None
        launcher.gate.set()
        await rig.scheduler.idle()
        assert len(launcher.requests) == 3
        await rig.advance_to(NOON + timedelta(minutes=6), step=60)
        assert await rig.scheduled_ats(later.id) == [NOON + timedelta(minutes=5)]


async def test_a_queued_fire_is_dropped_when_a_pause_races_it(tmp_path: Path) -> None:
    """Due, queued behind a busy slot, then paused: it is re-checked and never claimed."""
    launcher = RecordingLauncher(gate=anyio.Event())
    async with scheduler_rig(
        tmp_path / "journal.db", launcher=launcher, max_concurrent_fires=1
    ) as rig:
        first = await rig.service.create(deployment_body())
        second = await rig.service.create(deployment_body())
        await rig.clock.advance(60)
        await launcher.wait_for_requests(1)
        assert launcher.requests[0].deployment_id == first.id
        await rig.service.pause(second.id)
        assert launcher.gate is not None
        launcher.gate.set()
        await rig.scheduler.idle()
        assert [r.deployment_id for r in launcher.requests] == [first.id]
        assert await rig.runs(second.id) == []


async def test_a_change_after_the_read_ahead_is_what_the_fire_sends(tmp_path: Path) -> None:
    """A deployment read ahead of its fire and then updated fires with the update."""
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        deployment = await rig.service.create(deployment_body())
        await rig.clock.advance(59)  # 11:59:59: noon is within the read-ahead horizon
        await rig.service.create(deployment_body("0 3 * * *"))  # wakes the loop
        copies = rig.stack.copies
        await eventually(lambda: deployment.id in copies.kept_ids(), "read ahead", interval=0.001)
        events = [{"type": "user.message", "content": [{"type": "text", "text": "v2"}]}]
        await rig.service.update(deployment.id, {"initial_events": events})
        await rig.advance(2)
        (request,) = rig.launcher.requests
        assert request.deployment_id == deployment.id
        assert request.initial_events == events


class GatedReads:
    """The journal's deployment reads, held until ``release`` (a read in flight, on demand)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.waiting = anyio.Event()
        self.release = anyio.Event()

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        return await self._journal.get_deployment(deployment_id)

    async def get_deployments(self, deployment_ids: list[str]) -> dict[str, Deployment]:
        found = await self._journal.get_deployments(deployment_ids)
        self.waiting.set()
        await self.release.wait()
        return found


async def test_a_change_while_reading_ahead_discards_that_deployment_copy(
    journal: Journal,
) -> None:
    """A change committed while a read-ahead query is in flight is never shadowed by it."""
    changed, kept = stored_deployment(START), stored_deployment(START)
    for deployment in (changed, kept):
        await journal.insert_deployment(deployment)
    reads = GatedReads(journal)
    copies = DeploymentCopies(reads)  # as after a restart: nothing is kept yet
    async with anyio.create_task_group() as tg:
        await tg.start(copies.run)
        copies.read_ahead([changed.id, kept.id])
        await reads.waiting.wait()  # the query has answered with the old copies
        newer = dataclasses.replace(changed, name="renamed")
        copies.changed(newer)  # what the service's subscriber does after a commit
        reads.release.set()
        await eventually(lambda: not copies.reading, "read-ahead done", interval=0.001)
        tg.cancel_scope.cancel()
    assert sorted(copies.kept_ids()) == sorted([changed.id, kept.id])
    assert await copies.get(changed.id) == newer
    assert await copies.get(kept.id) == kept
    assert copies.journal_reads == 2  # the batch; the two gets were served from the copies


async def test_deployments_known_since_start_fire_without_a_read(tmp_path: Path) -> None:
    """Created or fired once: the kept copy serves every later fire; a restart reads once."""
    path = tmp_path / "journal.db"
    async with scheduler_rig(path) as rig:
        created = await rig.service.create(deployment_body("* * * * *"))
        await rig.advance_to(START + timedelta(minutes=3), step=30)
        assert len(await rig.runs(created.id)) == 3
        assert rig.stack.copies.journal_reads == 0
    async with scheduler_rig(path, start=START + timedelta(minutes=3)) as rig:
        await rig.advance_to(START + timedelta(minutes=6), step=30)
        assert len(await rig.runs(created.id)) == 6
        # the first fire after the restart (its own read or the read-ahead), then the copy
        assert rig.stack.copies.journal_reads == 1


async def test_the_kept_copies_are_bounded_least_recently_used_first(journal: Journal) -> None:
    made = [stored_deployment(START) for _ in range(3)]
    for deployment in made:
        await journal.insert_deployment(deployment)
    copies = DeploymentCopies(journal, max_kept=3)
    for deployment in made:
        copies.changed(deployment)
    assert await copies.get(made[0].id) == made[0]  # used: now the newest
    newer = stored_deployment(START)
    copies.changed(newer)
    assert copies.kept_ids() == [made[2].id, made[0].id, newer.id]
    assert copies.journal_reads == 0
