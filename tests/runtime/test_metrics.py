"""Metrics through the runtime: counters agree with the journal, the exposition parses."""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agentcron.core.models import RunErrorType
from agentcron.errors import LaunchFailure
from agentcron.journal import SqliteJournal
from agentcron.launchers.base import SessionRequest
from agentcron.metrics import METRIC_NAMES
from tests.support.fakes import RecordingLauncher
from tests.support.scheduler_rig import START, scheduler_rig, stored_deployment

FAILURES = [
    None,
    RunErrorType.SESSION_RATE_LIMITED,
    None,
    RunErrorType.SERVICE_UNAVAILABLE,
    RunErrorType.VAULT_NOT_FOUND,
]


@dataclass
class MixedLauncher(RecordingLauncher):
    """Creates a session or fails, by the run id's last character (a stable mix)."""

    async def create_session(self, request: SessionRequest) -> str:
        failure = FAILURES[ord(request.run_id[-1]) % len(FAILURES)]
        if failure is not None:
            self.requests.append(request)
            raise LaunchFailure(failure, f"scripted {failure}")
        return await super().create_session(request)


def samples(exposition: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def journal_run_counts(path: Path) -> Counter[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT trigger_type, coalesce(error_type, 'session'), count(*) FROM runs "
            "WHERE created_at IS NOT NULL GROUP BY 1, 2"
        ).fetchall()
    finally:
        conn.close()
    return Counter({(trigger, outcome): count for trigger, outcome, count in rows})


async def test_counters_equal_the_journal_after_a_storm_with_mixed_errors(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal.open(path) as journal:
        ids = []
        for _ in range(400):
            deployment = stored_deployment(START, "* * * * *")
            await journal.insert_deployment(deployment)
            ids.append(deployment.id)
    async with scheduler_rig(path, launcher=MixedLauncher()) as rig:
        await rig.advance(60)  # 12:00: a storm of 400 fires
        for deployment_id in ids[:25]:
            await rig.stack.firing.run_manual(deployment_id)
        # A wall-clock step of 2.5 min, then the loop wakes at 12:03:30 (wall): 12:01 and
        # 12:02 are more than misfire_grace late (missed), 12:03 fires 30 s late.
        rig.clock.step_wall(timedelta(minutes=2, seconds=30))
        await rig.advance(60)
        await rig.journal.flush()
        exposition = (await rig.stack.metrics.render()).decode()
        health = rig.scheduler.health()
    found = samples(exposition)
    counted = Counter(
        {
            (dict(labels)["trigger"], dict(labels)["outcome"]): int(value)
            for labels, value in found["agentcron_runs_total"].items()
        }
    )
    expected = journal_run_counts(path)
    assert counted == expected
    assert {outcome for _, outcome in expected} == {
        "session",
        "session_rate_limited",
        "service_unavailable",
        "vault_not_found",
    }
    assert sum(expected.values()) == 825
    assert found["agentcron_occurrences_missed_total"][()] == health["missed"] == 800
    assert found["agentcron_claims_refused_total"][()] == health["duplicates"] == 0
    assert found["agentcron_fire_lag_seconds_count"][()] == 800
    assert found["agentcron_run_record_lag_seconds_count"][()] == 800
    launcher_label = (("launcher", "command"),)
    assert found["agentcron_session_create_duration_seconds_count"][launcher_label] == 825
    assert found["agentcron_deployments"][(("status", "active"),)] == 400


async def test_every_listed_metric_is_exposed_with_its_type(tmp_path: Path) -> None:
    async with scheduler_rig(tmp_path / "journal.db") as rig:
        exposition = (await rig.stack.metrics.render()).decode()
    types = {family.name: family.type for family in text_string_to_metric_families(exposition)}
    for name, kind in METRIC_NAMES.items():
        assert types.get(name) == kind, f"{name}: {types.get(name)} (want {kind})"
    found = samples(exposition)
    (build,) = found["agentcron_build_info"]
    assert dict(build)["version"]
    assert found["agentcron_journal_bytes"][()] > 0
    assert found["agentcron_next_fire_timestamp_seconds"][()] == 0  # nothing scheduled
