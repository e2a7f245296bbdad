"""``overlap = "skip"`` on the scheduled fire path: the runtime on a real journal file, a fake
clock and the real ``command`` launcher with a child that outlives several occurrences."""

from __future__ import annotations

from pathlib import Path

import anyio

from agentcron.config import AgentDecl, Declarations, EnvironmentDecl
from agentcron.core.models import TriggerType
from agentcron.daemon import build_stack
from agentcron.journal import SqliteJournal
from agentcron.launchers.command import CommandLauncher
from tests.support.fakes import FakeClock, eventually
from tests.support.scheduler_rig import START, deployment_body


async def test_each_skipped_occurrence_records_session_already_running_exactly_once(
    tmp_path: Path,
) -> None:
    declarations = Declarations(
        agents={
            "agent_test": AgentDecl(
                id="agent_test", version=1, argv=("/bin/sleep", "3600"), overlap="skip"
            )
        },
        environments={"env_test": EnvironmentDecl(id="env_test", cwd=tmp_path)},
    )
    clock = FakeClock(START)
    async with (
        SqliteJournal.open(tmp_path / "journal.db") as journal,
        CommandLauncher(
            declarations=declarations,
            state_dir=tmp_path / "state",
            max_concurrent_sessions=4,
            stop_grace=2.0,
            recorder=journal,
            clock=clock,
        ) as launcher,
    ):
        stack = build_stack(journal=journal, launcher=launcher, clock=clock, max_jitter=0.0)
        async with anyio.create_task_group() as tg:
            await tg.start(stack.scheduler.run)
            await stack.scheduler.idle()
            deployment = await stack.service.create(deployment_body("* * * * *"))
            for _ in range(4):  # four occurrences: one session, three skipped
                await clock.advance(60)
                await stack.scheduler.idle()
            manual = await stack.firing.run_manual(deployment.id)
            assert manual.error is not None
            assert manual.error.type == "session_already_running"

            page = await stack.service.list_runs(deployment_id=deployment.id, limit=100)
            runs = list(reversed(page.data))
            scheduled = [r for r in runs if r.trigger_type == TriggerType.SCHEDULE]
            assert len(scheduled) == 4
            assert len({r.scheduled_at for r in scheduled}) == 4  # one run per occurrence
            first, *skipped = scheduled
            assert first.session_id is not None
            assert [r.error.type if r.error else None for r in skipped] == [
                "session_already_running"
            ] * 3
            assert all(first.session_id in (r.error.message if r.error else "") for r in skipped)
            assert launcher.running_sessions() == 1
            assert not (await stack.service.get(deployment.id)).paused_reason

            assert await launcher.stop_session(first.session_id)
            await clock.advance(60)
            await stack.scheduler.idle()
            latest = (await stack.service.list_runs(deployment_id=deployment.id, limit=1)).data[0]
            assert latest.session_id is not None  # the previous session ended: a new one
            await eventually(lambda: launcher.running_sessions() == 1, "one session runs")
            tg.cancel_scope.cancel()
