"""A launcher that warms ahead hears of a burst before it is due, and a failed warm-up costs
no fire."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from structlog.testing import capture_logs

from agentcron.runtime.firing import WarmsAhead
from tests.support.fakes import FakeClock, RecordingLauncher
from tests.support.scheduler_rig import NOON, deployment_body, scheduler_rig


@dataclass
class WarmingLauncher(RecordingLauncher):
    """Records each ``warm(count)``: the count, the fake time, and the requests made before."""

    clock: FakeClock | None = None
    warmed: list[tuple[int, datetime, int]] = field(default_factory=list)
    fail_warm: bool = False

    async def warm(self, count: int) -> None:
        assert self.clock is not None
        self.warmed.append((count, self.clock.now(), len(self.requests)))
        if self.fail_warm:
            raise RuntimeError("no route to the hosted API")


def test_only_a_launcher_with_warm_warms_ahead() -> None:
    assert isinstance(WarmingLauncher(), WarmsAhead)
    assert not isinstance(RecordingLauncher(), WarmsAhead)


async def test_a_burst_is_warmed_for_two_seconds_before_it_is_due(tmp_path: Path) -> None:
    launcher = WarmingLauncher()
    async with scheduler_rig(
        tmp_path / "journal.db", launcher=launcher, max_concurrent_fires=3
    ) as rig:
        launcher.clock = rig.clock
        for _ in range(5):
            await rig.service.create(deployment_body())
        await rig.advance_to(NOON - timedelta(seconds=1), step=0.5)
        # Once, for the 5 fires but no more than the 3 in flight, at 11:59:58, none sent yet.
        assert launcher.warmed == [(3, NOON - timedelta(seconds=2), 0)]
        await rig.advance(2)
        assert len(launcher.requests) == 5
        assert len(await rig.runs()) == 5


async def test_a_failed_warm_up_is_logged_and_the_burst_fires_all_the_same(
    tmp_path: Path,
) -> None:
    launcher = WarmingLauncher(fail_warm=True)
    async with scheduler_rig(tmp_path / "journal.db", launcher=launcher) as rig:
        launcher.clock = rig.clock
        for _ in range(2):
            await rig.service.create(deployment_body())
        with capture_logs() as logs:
            await rig.advance_to(NOON + timedelta(seconds=1), step=0.5)
        assert [entry["event"] for entry in logs].count("launcher_warm_up_failed") == 1
        assert len(launcher.warmed) == 1
        assert len(await rig.runs()) == 2
        assert all(run.session_id for run in await rig.runs())
