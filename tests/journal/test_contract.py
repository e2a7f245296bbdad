"""The journal's contract (``agentcron.journal.protocol``), proven on every backend.

Each test runs once on SQLite and once on PostgreSQL (a real server, see
``tests/support/postgres.py``): claims and the unique occurrence, group commit, completion,
recovery, ``last_run_at``, lists and cursors, local sessions, the webhook outbox (events in
the transaction of their cause, deliveries, endpoint states, retries), migrations and the
newer-schema refusal, and the errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

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
from agentcron.errors import JournalError, NotFound
from agentcron.journal import (
    RECOVERED_MESSAGE,
    Claim,
    EndpointState,
    Journal,
    OutboxEvent,
    ScheduleRow,
)
from agentcron.journal.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from agentcron.journal.postgres.schema import SCHEMA_VERSION as PG_SCHEMA_VERSION
from agentcron.journal.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from agentcron.journal.sqlite.schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from agentcron.runtime.service import DeploymentService
from tests.support.fakes import FakeClock, RecordingLauncher
from tests.support.journals import BACKENDS, Store

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AGENT = AgentRef(id="agent_test", version=1)
SCHEMA_VERSIONS = {"sqlite": SQLITE_SCHEMA_VERSION, "postgres": PG_SCHEMA_VERSION}


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Where this test's journals live: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return Store("sqlite", path=tmp_path / "state" / "journal.db")
    cluster = request.getfixturevalue("postgres_cluster")
    return Store("postgres", cluster=cluster, database=request.getfixturevalue("postgres_database"))


@pytest.fixture
async def journal(store: Store) -> AsyncIterator[Journal]:
    async with store.open() as opened:
        yield opened


def make_deployment(*, created_at: datetime = T0, **changes: object) -> Deployment:
    deployment = Deployment(
        id=ids.new_id(ids.DEPLOYMENT),
        name="hourly",
        description=None,
        agent=AGENT,
        environment_id="env_test",
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
        schedule=Schedule(expression="0 * * * *", timezone="UTC"),
        created_at=created_at,
        updated_at=created_at,
    )
    return dataclasses.replace(deployment, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def deployment(journal: Journal) -> Deployment:
    created = make_deployment()
    await journal.insert_deployment(created)
    return created


@pytest.fixture
def service(journal: Journal) -> DeploymentService:
    return DeploymentService(journal, RecordingLauncher(), FakeClock(T0))


async def claim(
    journal: Journal, deployment: Deployment | str, scheduled_at: datetime | None
) -> Claim | None:
    return await journal.claim_run(
        deployment_id=deployment if isinstance(deployment, str) else deployment.id,
        agent=AGENT,
        trigger_type=TriggerType.SCHEDULE if scheduled_at else TriggerType.MANUAL,
        scheduled_at=scheduled_at,
        claimed_at=T0,
    )


async def complete(
    journal: Journal, claimed: Claim | None, *, at: datetime = T0, error: RunError | None = None
) -> DeploymentRun:
    assert claimed is not None
    return await journal.complete_run(
        claimed, session_id=None if error else "sesn_1", error=error, completed_at=at
    )


# --- deployments -------------------------------------------------------------------------------


async def test_a_deployment_reads_back_exactly_as_stored(journal: Journal) -> None:
    """Every field round-trips, JSON key order included; updates write every mutable field."""
    created = make_deployment(
        description="d",
        metadata={"zeta": "1", "alpha": "2", "mid": "3"},
        resources=[{"type": "file", "file_id": "f", "mount_path": "/m"}],
        vault_ids=["vlt_1"],
        budget={"max_tokens": 5},
    )
    await journal.insert_deployment(created)
    stored = await journal.get_deployment(created.id)
    assert stored == created
    assert stored is not None
    assert list(stored.metadata) == ["zeta", "alpha", "mid"]
    changed = dataclasses.replace(
        created,
        name="renamed",
        schedule=None,
        paused_reason=PausedReason(type="error", error_type="vault_not_found"),
        archived_at=T0 + timedelta(hours=1),
        updated_at=T0 + timedelta(hours=1, microseconds=7),
    )
    await journal.update_deployment(changed)
    assert await journal.get_deployment(created.id) == changed
    assert await journal.get_deployment("depl_unknown") is None


async def test_updating_an_unknown_deployment_is_not_found(journal: Journal) -> None:
    with pytest.raises(NotFound, match="deployment depl_nope not found"):
        await journal.update_deployment(make_deployment(id="depl_nope"))


async def test_get_deployments_returns_the_existing_ones_by_id(
    journal: Journal, deployment: Deployment
) -> None:
    last = make_deployment()
    await journal.insert_deployment(last)
    wanted = [deployment.id, *(f"depl_unknown{n}" for n in range(600)), last.id]
    assert await journal.get_deployments(wanted) == {deployment.id: deployment, last.id: last}
    assert await journal.get_deployments([]) == {}


async def test_counts_and_the_scheduled_count(journal: Journal, deployment: Deployment) -> None:
    for other in (
        make_deployment(paused_reason=PausedReason(type="manual")),
        make_deployment(archived_at=T0),
        make_deployment(schedule=None),
    ):
        await journal.insert_deployment(other)
    await complete(journal, await claim(journal, deployment, None))
    await claim(journal, deployment, T0)  # open: not counted
    assert await journal.counts() == {
        "active": 2,
        "paused": 1,
        "archived": 1,
        "scheduled": 2,
        "runs": 1,
    }
    assert await journal.count_scheduled() == 2


# --- claims ------------------------------------------------------------------------------------


async def test_fifty_concurrent_claims_of_one_occurrence_have_one_winner(
    journal: Journal, deployment: Deployment
) -> None:
    occurrence = T0 + timedelta(hours=1)
    results = await asyncio.gather(*(claim(journal, deployment, occurrence) for _ in range(50)))
    winners = [claimed for claimed in results if claimed is not None]
    assert len(winners) == 1
    assert winners[0].run_id.startswith("drun_")
    assert await claim(journal, deployment, occurrence) is None  # also once committed


async def test_two_journals_on_one_store_cannot_both_claim_an_occurrence(store: Store) -> None:
    """The uniqueness lives in the schema, not in one process's memory (for PostgreSQL: two
    writer connections and two read pools)."""
    async with store.open() as first, store.open() as second:
        created = make_deployment()
        await first.insert_deployment(created)
        for hour in range(10):
            occurrence = T0 + timedelta(hours=hour)
            results = await asyncio.gather(
                claim(first, created, occurrence), claim(second, created, occurrence)
            )
            assert sorted(result is None for result in results) == [False, True]


async def test_manual_runs_are_never_unique_conflicts(
    journal: Journal, deployment: Deployment
) -> None:
    first, second = await asyncio.gather(
        claim(journal, deployment, None), claim(journal, deployment, None)
    )
    assert first is not None
    assert second is not None
    assert first.run_id != second.run_id


async def test_claim_needs_scheduled_at_exactly_for_scheduled_runs(
    journal: Journal, deployment: Deployment
) -> None:
    with pytest.raises(ValueError, match="scheduled_at"):
        await journal.claim_run(
            deployment_id=deployment.id,
            agent=AGENT,
            trigger_type=TriggerType.MANUAL,
            scheduled_at=T0,
            claimed_at=T0,
        )


async def test_a_claim_of_an_unknown_deployment_is_not_found_and_fails_alone(
    journal: Journal, deployment: Deployment
) -> None:
    results = await asyncio.gather(
        claim(journal, deployment, T0 + timedelta(minutes=1)),
        claim(journal, "depl_missing", T0 + timedelta(minutes=2)),
        claim(journal, deployment, T0 + timedelta(minutes=3)),
        return_exceptions=True,
    )
    assert isinstance(results[0], Claim)
    assert isinstance(results[1], NotFound)
    assert str(results[1]) == "deployment not found (the run names no stored deployment)"
    assert isinstance(results[2], Claim)
    latest = {row.deployment_id: row.latest_scheduled_at for row in await journal.schedule_rows()}
    assert latest == {deployment.id: to_micros(T0 + timedelta(minutes=3))}


async def test_group_commit_batches_concurrent_writes(
    journal: Journal, deployment: Deployment
) -> None:
    """200 concurrent claims, then 200 concurrent completions, commit in far fewer
    transactions than writes."""
    before = journal.transactions
    claims = await asyncio.gather(
        *(claim(journal, deployment, T0 + timedelta(minutes=i)) for i in range(200))
    )
    assert all(claimed is not None for claimed in claims)
    assert len({claimed.run_id for claimed in claims if claimed is not None}) == 200
    assert 1 <= journal.transactions - before < 20
    before = journal.transactions
    runs = await asyncio.gather(*(complete(journal, claimed) for claimed in claims))
    assert len(runs) == 200
    assert 1 <= journal.transactions - before < 20
    (row,) = await journal.schedule_rows()
    assert row.latest_scheduled_at == to_micros(T0 + timedelta(minutes=199))
    assert (await journal.counts())["runs"] == 200


# --- completion --------------------------------------------------------------------------------


async def test_open_claims_are_invisible_until_completed(
    journal: Journal, deployment: Deployment, service: DeploymentService
) -> None:
    claimed = await claim(journal, deployment, T0)
    assert claimed is not None
    assert await journal.get_run(claimed.run_id) is None
    assert (await service.list_runs()).data == []
    completed_at = T0 + timedelta(seconds=3)
    run = await journal.complete_run(
        claimed, session_id="sesn_1", error=None, completed_at=completed_at
    )
    assert run == DeploymentRun(
        id=claimed.run_id,
        deployment_id=deployment.id,
        agent=AGENT,
        trigger_type=TriggerType.SCHEDULE,
        scheduled_at=T0,
        session_id="sesn_1",
        error=None,
        created_at=completed_at,
    )
    assert await journal.get_run(claimed.run_id) == run
    assert (await service.list_runs()).data == [run]


async def test_completion_records_exactly_one_outcome_exactly_once(
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
    assert await journal.get_run(claimed.run_id) == run


async def test_concurrent_completions_of_one_claim_have_one_winner(
    journal: Journal, deployment: Deployment
) -> None:
    """Completions racing in one batch: one lands, the others fail alone; a claim that was
    never written is not an open claim either."""
    claimed = await claim(journal, deployment, T0)
    assert claimed is not None
    never = dataclasses.replace(claimed, run_id="drun_never_claimed")
    results = await asyncio.gather(
        *(
            journal.complete_run(claimed, session_id=f"sesn_{n}", error=None, completed_at=T0)
            for n in range(5)
        ),
        journal.complete_run(never, session_id="sesn_x", error=None, completed_at=T0),
        return_exceptions=True,
    )
    landed = [result for result in results if isinstance(result, DeploymentRun)]
    assert len(landed) == 1
    assert all(
        isinstance(result, JournalError) and "not an open claim" in str(result)
        for result in results
        if not isinstance(result, DeploymentRun)
    )
    assert await journal.get_run(claimed.run_id) == landed[0]


async def test_last_run_at_moves_only_when_asked_and_never_backwards(
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
    # Many completions in one batch, in any order: the latest wins.
    await asyncio.gather(
        *(fire(10 + n, T0 + timedelta(hours=1, seconds=n)) for n in (3, 9, 1, 7, 5))
    )
    assert await last_run_at() == T0 + timedelta(hours=1, seconds=9)


async def test_recover_completes_open_claims_as_service_unavailable(
    journal: Journal, deployment: Deployment
) -> None:
    left_open = await claim(journal, deployment, T0)
    manual_open = await claim(journal, deployment, None)
    done = await claim(journal, deployment, T0 + timedelta(hours=1))
    assert left_open is not None
    assert manual_open is not None
    await complete(journal, done)
    now = T0 + timedelta(minutes=5)
    recovered = await journal.recover_open_claims(now)
    assert {run.id for run in recovered} == {left_open.run_id, manual_open.run_id}
    for run in recovered:
        assert run.error == RunError(type="service_unavailable", message=RECOVERED_MESSAGE)
        assert run.created_at == now
        assert await journal.get_run(run.id) == run
    assert await journal.recover_open_claims(now) == []
    assert await claim(journal, deployment, T0) is None  # the occurrence stays taken


async def test_recovery_survives_reopening(store: Store) -> None:
    """A claim left open by one journal is recovered by the next one opened on the store."""
    created = make_deployment()
    async with store.open() as first:
        await first.insert_deployment(created)
        left_open = await claim(first, created, T0)
    assert left_open is not None
    async with store.open() as second:
        assert await second.get_run(left_open.run_id) is None
        (recovered,) = await second.recover_open_claims(T0 + timedelta(minutes=1))
        assert recovered.id == left_open.run_id
        assert await claim(second, created, T0) is None


# --- the scheduler's start-up read -------------------------------------------------------------


async def test_schedule_rows_list_only_firing_deployments_with_their_latest_scheduled_run(
    journal: Journal, deployment: Deployment
) -> None:
    fresh = make_deployment(updated_at=T0 + timedelta(minutes=5), created_at=T0)
    paused = make_deployment(paused_reason=PausedReason(type="manual"))
    archived = make_deployment(archived_at=T0)
    unscheduled = make_deployment(schedule=None)
    for other in (fresh, paused, archived, unscheduled):
        await journal.insert_deployment(other)
    await claim(journal, deployment, T0 + timedelta(hours=1))
    await claim(journal, deployment, T0 + timedelta(hours=3))  # left open
    await claim(journal, deployment, None)
    await claim(journal, paused, T0)
    assert await journal.schedule_rows() == sorted(
        [
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
        ],
        key=lambda row: row.deployment_id,  # same created_at: oldest first by id
    )


# --- lists, filters and cursors ----------------------------------------------------------------


async def test_recent_scheduled_errors_are_newest_first_for_deployments_that_still_fire(
    journal: Journal, deployment: Deployment
) -> None:
    """Completed scheduled runs only (no manual, no open claim), of deployments that still fire
    (a paused one's runs are left out), newest first, at most ``limit``."""
    paused = make_deployment(paused_reason=PausedReason(type="manual"))
    await journal.insert_deployment(paused)
    failed = RunError(type="service_unavailable", message="down")
    await complete(journal, await claim(journal, deployment, T0), at=T0)
    await complete(
        journal,
        await claim(journal, deployment, T0 + timedelta(hours=1)),
        at=T0 + timedelta(seconds=1),
        error=failed,
    )
    await complete(journal, await claim(journal, deployment, None), at=T0 + timedelta(seconds=2))
    await claim(journal, deployment, T0 + timedelta(hours=2))  # left open: not completed
    await complete(
        journal,
        await claim(journal, paused, T0),
        at=T0 + timedelta(seconds=3),
        error=failed,
    )
    assert await journal.recent_scheduled_errors(5) == ["service_unavailable", None]
    assert await journal.recent_scheduled_errors(1) == ["service_unavailable"]


async def test_write_failure_is_none_while_writes_commit(journal: Journal) -> None:
    """No failure to report on a healthy store (the failing case is each backend's own)."""
    await journal.insert_deployment(make_deployment())
    assert journal.write_failure is None


async def make_runs(journal: Journal, deployment: Deployment) -> list[DeploymentRun]:
    """Six runs, one second apart: scheduled/manual x success/error."""
    runs = []
    for i in range(6):
        scheduled_at = T0 + timedelta(hours=i) if i % 3 else None
        error = RunError(type="vault_not_found", message="vault gone") if i % 2 else None
        claimed = await claim(journal, deployment, scheduled_at)
        runs.append(await complete(journal, claimed, at=T0 + timedelta(seconds=i), error=error))
    return runs


async def test_run_filters_newest_first(
    journal: Journal, deployment: Deployment, service: DeploymentService
) -> None:
    runs = await make_runs(journal, deployment)
    other = make_deployment()
    await journal.insert_deployment(other)
    other_run = await complete(journal, await claim(journal, other, None))
    everyone = sorted([*runs, other_run], key=lambda r: (r.created_at, r.id), reverse=True)

    async def ids_of(**filters: object) -> list[str]:
        page = await service.list_runs(limit=1000, **filters)  # type: ignore[arg-type]
        return [run.id for run in page.data]

    newest = list(reversed(runs))
    newest_first = [run.id for run in newest]
    mine = {"deployment_id": deployment.id}
    assert await ids_of(**mine) == newest_first
    assert await ids_of(**mine, has_error=True) == [r.id for r in newest if r.error]
    assert await ids_of(has_error=True) == [r.id for r in everyone if r.error]
    assert await ids_of(has_error=False) == [r.id for r in everyone if not r.error]
    assert await ids_of(**mine, has_error=False) == [r.id for r in newest if not r.error]
    assert await ids_of(trigger_type="manual") == [
        r.id for r in everyone if r.trigger_type == TriggerType.MANUAL
    ]
    assert await ids_of(**mine, trigger_type="manual") == [
        r.id for r in newest if r.trigger_type == TriggerType.MANUAL
    ]
    assert await ids_of(**mine, trigger_type="schedule", has_error=True) == [
        r.id for r in newest if r.trigger_type == TriggerType.SCHEDULE and r.error
    ]
    assert await ids_of(**mine, created_at_gt=T0 + timedelta(seconds=1)) == newest_first[:4]
    assert await ids_of(**mine, created_at_gte=T0 + timedelta(seconds=1)) == newest_first[:5]
    assert await ids_of(**mine, created_at_lt=T0 + timedelta(seconds=4)) == newest_first[2:]
    assert await ids_of(**mine, created_at_lte=T0 + timedelta(seconds=4)) == newest_first[1:]
    assert await ids_of(deployment_id="depl_unknown") == []
    assert await ids_of() == [r.id for r in everyone]


async def test_run_pages_follow_cursors_through_ties_without_repeats(
    journal: Journal, deployment: Deployment, service: DeploymentService
) -> None:
    """Runs completed at the same instant are ordered by id; paging by 3 visits every run
    once, newest first, and runs added meanwhile do not shift later pages."""
    claims = [await claim(journal, deployment, None) for _ in range(10)]
    runs = [
        await complete(journal, claimed, at=T0 + timedelta(seconds=n // 4))
        for n, claimed in enumerate(claims)
    ]
    expected = [run.id for run in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]
    seen: list[str] = []
    page = await service.list_runs(limit=3)
    while True:
        seen.extend(run.id for run in page.data)
        if page.next_page is None:
            break
        await complete(journal, await claim(journal, deployment, None), at=T0 + timedelta(1))
        page = await service.list_runs(limit=3, page=page.next_page)
    assert seen == expected


async def test_deployment_filters_and_pages_newest_first(
    journal: Journal, service: DeploymentService
) -> None:
    made = []
    for n in range(7):
        made.append(
            make_deployment(
                created_at=T0 + timedelta(minutes=n),
                agent=AgentRef(id="agent_a" if n % 2 else "agent_b", version=1),
                paused_reason=PausedReason(type="manual") if n % 3 == 0 else None,
                archived_at=T0 if n == 5 else None,
            )
        )
    for deployment in made:
        await journal.insert_deployment(deployment)
    newest = list(reversed(made))

    async def ids_of(**filters: object) -> list[str]:
        page = await service.list(limit=100, **filters)  # type: ignore[arg-type]
        return [d.id for d in page.data]

    live = [d for d in newest if d.archived_at is None]
    assert await ids_of() == [d.id for d in live]
    assert await ids_of(include_archived=True) == [d.id for d in newest]
    assert await ids_of(status="paused") == [d.id for d in live if d.paused_reason]
    assert await ids_of(status="active") == [d.id for d in live if not d.paused_reason]
    assert await ids_of(agent_id="agent_a") == [d.id for d in live if d.agent.id == "agent_a"]
    assert await ids_of(agent_id="agent_a", include_archived=True) == [
        d.id for d in newest if d.agent.id == "agent_a"
    ]
    low, high = T0 + timedelta(minutes=2), T0 + timedelta(minutes=4)
    assert await ids_of(created_at_gte=low, created_at_lte=high) == [
        d.id for d in live if low <= d.created_at <= high
    ]
    seen: list[str] = []
    page = await service.list(limit=2, include_archived=True)
    while True:
        seen.extend(d.id for d in page.data)
        if page.next_page is None:
            break
        page = await service.list(limit=2, include_archived=True, page=page.next_page)
    assert seen == [d.id for d in newest]


# --- the webhook outbox ------------------------------------------------------------------------


def outbox_event(event_type: str = "deployment_run.failed", *endpoints: str) -> OutboxEvent:
    return OutboxEvent(
        id=ids.new_id(ids.WEBHOOK_MESSAGE),
        type=event_type,
        body=json.dumps({"type": event_type}),
        created_at=T0,
        endpoints=endpoints or ("hooks",),
    )


async def manual_claim(journal: Journal, deployment: Deployment) -> Claim:
    claimed = await claim(journal, deployment, None)
    assert claimed is not None
    return claimed


async def test_a_completion_stores_its_events_with_one_pending_delivery_per_endpoint(
    journal: Journal,
) -> None:
    deployment = make_deployment()
    await journal.insert_deployment(deployment)
    claim = await manual_claim(journal, deployment)
    failed = outbox_event("deployment_run.failed", "ops", "pager")
    error = RunError(type="service_unavailable", message="down")
    await journal.complete_run(
        claim, session_id=None, error=error, completed_at=T0, events=[failed]
    )
    deliveries = await journal.list_deliveries(limit=10)
    assert sorted((d.endpoint, d.event_id, d.status) for d in deliveries) == [
        ("ops", failed.id, "pending"),
        ("pager", failed.id, "pending"),
    ]
    pending = await journal.pending_deliveries("ops", limit=10)
    assert [d.body for d in pending] == [failed.body]
    assert pending[0].next_attempt_at == T0
    assert pending[0].attempts == 0


async def test_a_write_that_fails_stores_none_of_its_events(journal: Journal) -> None:
    """Same transaction: a completion of a claim that is not open, or an update of a missing
    deployment, leaves no event behind."""
    deployment = make_deployment()
    await journal.insert_deployment(deployment)
    claim = await manual_claim(journal, deployment)
    await journal.complete_run(claim, session_id="sesn_1", error=None, completed_at=T0)
    with pytest.raises(JournalError):
        await journal.complete_run(
            claim, session_id="sesn_2", error=None, completed_at=T0, events=[outbox_event()]
        )
    with pytest.raises(NotFound):
        await journal.update_deployment(
            make_deployment(), events=[outbox_event("deployment.paused")]
        )
    assert await journal.list_deliveries(limit=10) == []


async def test_an_update_and_recovered_claims_carry_their_events(journal: Journal) -> None:
    deployment = make_deployment()
    await journal.insert_deployment(deployment)
    paused = outbox_event("deployment.paused")
    await journal.update_deployment(
        dataclasses.replace(deployment, name="renamed"), events=[paused]
    )
    await manual_claim(journal, deployment)
    seen: list[str] = []

    def events_for(run: DeploymentRun) -> list[OutboxEvent]:
        seen.append(run.id)
        return [outbox_event("deployment_run.failed")]

    recovered = await journal.recover_open_claims(T0, events_for=events_for)
    assert [run.id for run in recovered] == seen
    types = sorted(d.event_type for d in await journal.list_deliveries(limit=10))
    assert types == ["deployment.paused", "deployment_run.failed"]


async def test_attempts_settle_deliveries_and_store_the_endpoint_state(journal: Journal) -> None:
    first, second, third = outbox_event(), outbox_event(), outbox_event()
    await journal.add_events([first, second, third])
    by_id = {d.event_id: d for d in await journal.pending_deliveries("hooks", limit=10)}
    later = T0 + timedelta(seconds=5)
    failing = EndpointState(name="hooks", failing_since=T0)
    await journal.record_attempt(
        by_id[first.id],
        attempted_at=T0,
        status_code=503,
        error="HTTP 503",
        next_attempt_at=later,
        endpoint_state=failing,
    )
    await journal.record_attempt(
        by_id[second.id],
        attempted_at=T0,
        status_code=None,
        error="timed out after 10s",
        next_attempt_at=None,
        endpoint_state=failing,
    )
    ok = EndpointState(name="hooks", last_success_at=later)
    await journal.record_attempt(
        by_id[third.id],
        attempted_at=later,
        status_code=204,
        error=None,
        next_attempt_at=None,
        endpoint_state=ok,
    )
    states = {d.event_id: d for d in await journal.list_deliveries(endpoint="hooks", limit=10)}
    assert states[first.id].status == "pending"
    assert states[first.id].next_attempt_at == later
    assert states[first.id].attempts == 1
    assert states[first.id].last_status == 503
    assert states[second.id].status == "failed"
    assert states[second.id].last_error == "timed out after 10s"
    assert states[third.id].status == "delivered"
    assert states[third.id].delivered_at == later
    assert await journal.endpoint_states() == {"hooks": ok}
    assert [d.event_id for d in await journal.pending_deliveries("hooks", limit=10)] == [first.id]
    # A delivery that is no longer pending is left alone by a late attempt.
    await journal.record_attempt(
        by_id[third.id],
        attempted_at=later,
        status_code=500,
        error="HTTP 500",
        next_attempt_at=later,
        endpoint_state=ok,
    )
    assert (await journal.list_deliveries(status="delivered", limit=10))[0].attempts == 1


async def test_retry_makes_failed_deliveries_due_and_reenables_the_endpoint(
    journal: Journal,
) -> None:
    failed, other = outbox_event(), outbox_event("deployment.archived", "other")
    await journal.add_events([failed, other])
    (delivery,) = await journal.pending_deliveries("hooks", limit=10)
    disabled = EndpointState(name="hooks", failing_since=T0, disabled_at=T0)
    await journal.record_attempt(
        delivery,
        attempted_at=T0,
        status_code=500,
        error="HTTP 500",
        next_attempt_at=None,
        endpoint_state=disabled,
    )
    now = T0 + timedelta(days=1)
    assert await journal.retry_deliveries("hooks", now=now) == 1
    (again,) = await journal.pending_deliveries("hooks", limit=10)
    assert (again.status, again.next_attempt_at, again.retry_from) == ("pending", now, now)
    assert again.attempts == 1
    assert await journal.endpoint_states() == {"hooks": EndpointState(name="hooks")}
    assert await journal.retry_deliveries("hooks", now=now, event_id=other.id) == 0


async def test_deliveries_page_newest_event_first_without_repeats(journal: Journal) -> None:
    events = [outbox_event("deployment_run.failed", "a", "b") for _ in range(5)]
    await journal.add_events(events)
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        page = await journal.list_deliveries(after=after, limit=3)
        if not page:
            break
        seen.extend((d.event_id, d.endpoint) for d in page)
        after = (page[-1].event_id, page[-1].endpoint)
    expected = [(e.id, name) for e in reversed(events) for name in ("a", "b")]
    assert seen == expected


async def test_events_without_endpoints_are_not_stored(journal: Journal) -> None:
    await journal.add_events([dataclasses.replace(outbox_event(), endpoints=())])
    assert await journal.list_deliveries(limit=10) == []


async def test_a_completion_whose_event_cannot_be_stored_does_not_happen(
    journal: Journal, deployment: Deployment
) -> None:
    """One transaction: the event's insert fails (its id is taken), so the completion is
    rolled back with it; the claim is still open and completes later."""
    taken = outbox_event()
    await journal.add_events([taken])
    claimed = await manual_claim(journal, deployment)
    error = RunError(type="service_unavailable", message="down")
    with pytest.raises(JournalError):
        await journal.complete_run(
            claimed, session_id=None, error=error, completed_at=T0, events=[taken]
        )
    assert await journal.get_run(claimed.run_id) is None
    assert [d.event_id for d in await journal.list_deliveries(limit=10)] == [taken.id]
    run = await journal.complete_run(claimed, session_id="sesn_1", error=None, completed_at=T0)
    assert await journal.get_run(claimed.run_id) == run


async def test_racing_completions_store_only_the_winners_events(
    journal: Journal, deployment: Deployment
) -> None:
    """Completions of one claim in one batch: the events of those that fail are not stored."""
    claimed = await manual_claim(journal, deployment)
    events = [outbox_event() for _ in range(5)]
    results = await asyncio.gather(
        *(
            journal.complete_run(
                claimed, session_id=f"sesn_{n}", error=None, completed_at=T0, events=[one]
            )
            for n, one in enumerate(events)
        ),
        return_exceptions=True,
    )
    winners = [n for n, result in enumerate(results) if isinstance(result, DeploymentRun)]
    assert len(winners) == 1
    stored = [d.event_id for d in await journal.list_deliveries(limit=10)]
    assert stored == [events[winners[0]].id]


async def test_recovery_whose_events_fail_completes_nothing(
    journal: Journal, deployment: Deployment
) -> None:
    """``events_for`` runs inside the recovery's transaction: when it fails, the open claims
    stay open and no event is stored."""
    claimed = await manual_claim(journal, deployment)

    def broken(run: DeploymentRun) -> list[OutboxEvent]:
        raise RuntimeError("no body for this run")

    with pytest.raises(JournalError):
        await journal.recover_open_claims(T0, events_for=broken)
    assert await journal.get_run(claimed.run_id) is None
    assert await journal.list_deliveries(limit=10) == []
    (recovered,) = await journal.recover_open_claims(T0)
    assert recovered.id == claimed.run_id


async def test_outbox_rows_survive_reopening(store: Store) -> None:
    stored = outbox_event("deployment.archived", "a", "b")
    async with store.open() as journal:
        await journal.add_events([stored])
        (delivery,) = await journal.pending_deliveries("a", limit=10)
        await journal.record_attempt(
            delivery,
            attempted_at=T0,
            status_code=204,
            error=None,
            next_attempt_at=None,
            endpoint_state=EndpointState(name="a", last_success_at=T0),
        )
    async with store.open() as journal:
        deliveries = await journal.list_deliveries(limit=10)
        assert [(d.endpoint, d.status, d.body) for d in deliveries] == [
            ("a", "delivered", stored.body),
            ("b", "pending", stored.body),
        ]
        assert await journal.endpoint_states() == {"a": EndpointState(name="a", last_success_at=T0)}


async def test_storage_bytes_is_the_stores_size(journal: Journal) -> None:
    assert await journal.storage_bytes() > 0


# --- local sessions ----------------------------------------------------------------------------


async def test_local_sessions_are_recorded_in_order_in_few_transactions(journal: Journal) -> None:
    before = journal.transactions
    for index in range(200):
        journal.session_started(
            session_id=f"sesn_{index}",
            run_id="drun_1",
            deployment_id="depl_1",
            pid=index,
            started_at=T0,
        )
        journal.session_ended(
            session_id=f"sesn_{index}", exit_status=index % 3 - 1, ended_at=T0 + timedelta(1)
        )
    await journal.flush()
    assert journal.transactions - before <= 3
    assert await journal.get_session("sesn_101") == {
        "session_id": "sesn_101",
        "run_id": "drun_1",
        "deployment_id": "depl_1",
        "pid": 101,
        "exit_status": 101 % 3 - 1,
        "started_at": T0,
        "ended_at": T0 + timedelta(1),
        "end_reason": "exited",
        "signal": None,
        "log_bytes": None,
        "host": None,
    }
    assert await journal.get_session("sesn_unknown") is None


async def test_a_failed_session_record_is_logged_and_fails_alone(journal: Journal) -> None:
    with capture_logs() as logs:
        journal.session_started(
            session_id="sesn_ok", run_id="drun_1", deployment_id="depl_1", pid=7, started_at=T0
        )
        journal.session_ended(session_id="sesn_unknown", exit_status=0, ended_at=T0)
        journal.session_ended(session_id="sesn_ok", exit_status=0, ended_at=T0)
        await journal.flush()
    failures = [entry for entry in logs if entry["event"] == "journal_write_failed"]
    assert failures == [
        {
            "event": "journal_write_failed",
            "log_level": "error",
            "write": "end of session sesn_unknown",
            "error": "session sesn_unknown not found",
        }
    ]
    record = await journal.get_session("sesn_ok")
    assert record is not None
    assert record["exit_status"] == 0


async def test_a_session_records_its_host_end_reason_signal_and_log_size(journal: Journal) -> None:
    journal.session_started(
        session_id="sesn_a",
        run_id="drun_a",
        deployment_id="depl_a",
        pid=4242,
        started_at=T0,
        host="edge-1",
    )
    await journal.flush()
    running = await journal.get_session("sesn_a")
    assert running is not None
    assert (running["host"], running["ended_at"], running["end_reason"]) == ("edge-1", None, None)
    journal.session_ended(
        session_id="sesn_a",
        exit_status=-9,
        ended_at=T0 + timedelta(seconds=5),
        end_reason="max_duration",
        log_bytes=1234,
    )
    await journal.flush()
    assert await journal.get_session("sesn_a") == {
        "session_id": "sesn_a",
        "run_id": "drun_a",
        "deployment_id": "depl_a",
        "pid": 4242,
        "exit_status": -9,
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=5),
        "end_reason": "max_duration",
        "signal": 9,
        "log_bytes": 1234,
        "host": "edge-1",
    }


async def test_recover_sessions_ends_only_the_running_sessions_of_that_host(
    journal: Journal,
) -> None:
    for session_id, host in (("sesn_1", "edge-1"), ("sesn_2", "edge-1"), ("sesn_3", "edge-2")):
        journal.session_started(
            session_id=session_id,
            run_id="drun_1",
            deployment_id="depl_1",
            pid=1,
            started_at=T0,
            host=host,
        )
    journal.session_started(  # recorded before hosts were: ended by any host's recovery
        session_id="sesn_0", run_id="drun_0", deployment_id="depl_1", pid=1, started_at=T0
    )
    journal.session_ended(session_id="sesn_2", exit_status=0, ended_at=T0, log_bytes=3)
    later = T0 + timedelta(minutes=5)
    recovered_ids = await journal.recover_sessions(host="edge-1", ended_at=later)
    assert sorted(recovered_ids) == ["sesn_0", "sesn_1"]
    recovered = await journal.get_session("sesn_1")
    assert recovered is not None
    assert (recovered["ended_at"], recovered["end_reason"], recovered["exit_status"]) == (
        later,
        "recovered",
        None,
    )
    ended = await journal.get_session("sesn_2")
    assert ended is not None
    assert (ended["end_reason"], ended["log_bytes"]) == ("exited", 3)
    other = await journal.get_session("sesn_3")
    assert other is not None
    assert other["ended_at"] is None
    assert await journal.recover_sessions(host="edge-1", ended_at=later) == []


async def test_a_version_2_store_migrates_to_version_3_and_keeps_its_sessions(
    store: Store,
) -> None:
    """Schema step 3 (the session record's end reason, signal, log size, host) on a store a
    version-2 agentcron left, with a session still running and one that ended."""
    await _create_at_version_2(store)
    async with store.open() as journal:
        old = await journal.get_session("sesn_old")
        assert old is not None
        assert (old["pid"], old["exit_status"], old["host"], old["end_reason"]) == (
            42,
            -15,
            None,
            None,
        )
        assert old["signal"] is None  # not known for sessions recorded before step 3
        running = await journal.get_session("sesn_running")
        assert running is not None
        assert running["ended_at"] is None
        journal.session_ended(
            session_id="sesn_running", exit_status=0, ended_at=T0, end_reason="exited", log_bytes=9
        )
        await journal.flush()
        done = await journal.get_session("sesn_running")
        assert done is not None
        assert (done["end_reason"], done["log_bytes"]) == ("exited", 9)
    assert store.schema_version() == SCHEMA_VERSIONS[store.backend] == 3


async def _create_at_version_2(store: Store) -> None:
    rows = (
        "INSERT INTO sessions (session_id, run_id, deployment_id, pid, exit_status, started_at, "
        "ended_at) VALUES ('sesn_old', 'drun_old', 'depl_old', 42, -15, {t}, {t}), "
        "('sesn_running', 'drun_new', 'depl_old', 43, NULL, {t}, NULL)"
    )
    if store.backend == "sqlite":
        assert store.path is not None
        store.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(store.path, isolation_level=None) as lite:
            script = "\n".join(SQLITE_MIGRATIONS[:2])
            lite.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = 2;\nCOMMIT;")
            lite.execute(rows.format(t=to_micros(T0)))
        return
    conn = await asyncpg.connect(store.url)
    try:
        async with conn.transaction():
            for step in PG_MIGRATIONS[:2]:
                await conn.execute(step)
            await conn.execute(
                "CREATE TABLE agentcron_schema (only_row boolean PRIMARY KEY DEFAULT true "
                "CHECK (only_row), version integer NOT NULL); "
                "INSERT INTO agentcron_schema (version) VALUES (2)"
            )
            await conn.execute(rows.format(t="now()"))
    finally:
        await conn.close()


# --- opening, migrations, closing --------------------------------------------------------------


async def test_reopening_keeps_data_and_version(store: Store) -> None:
    created = make_deployment()
    async with store.open() as first:
        await first.insert_deployment(created)
    async with store.open() as second:
        assert await second.get_deployment(created.id) == created
    assert store.schema_version() == SCHEMA_VERSIONS[store.backend]


async def test_a_store_at_version_zero_is_migrated_and_keeps_foreign_tables(store: Store) -> None:
    store.add_foreign_table()
    assert store.schema_version() == 0
    async with store.open() as journal:
        await journal.insert_deployment(make_deployment())
    assert store.schema_version() == SCHEMA_VERSIONS[store.backend]
    assert {"deployments", "runs", "sessions", "notes"} <= store.tables()


async def test_two_starters_at_once_both_open_a_migrated_store(store: Store) -> None:
    """Two journals opened together on a fresh store: both work, the schema exists once."""
    created = make_deployment()

    async def start(insert: bool) -> Deployment | None:
        async with store.open() as journal:
            if insert:
                await journal.insert_deployment(created)
            await asyncio.sleep(0.05)
            return await journal.get_deployment(created.id)

    results = await asyncio.gather(start(True), start(False))
    assert results[0] == created
    assert store.schema_version() == SCHEMA_VERSIONS[store.backend]


async def test_a_newer_schema_is_refused_with_a_clear_message_and_left_untouched(
    store: Store,
) -> None:
    async with store.open():
        pass
    newer = SCHEMA_VERSIONS[store.backend] + 1
    store.set_schema_version(newer)
    with pytest.raises(JournalError) as caught:
        async with store.open():
            pass
    message = str(caught.value)
    assert f"was written by a newer agentcron (schema {newer}, this version understands " in (
        message
    )
    assert message.endswith("; upgrade agentcron or restore a backup")
    assert store.schema_version() == newer


async def test_a_closed_journal_refuses_writes(store: Store) -> None:
    async with store.open() as journal:
        pass
    with pytest.raises(JournalError, match="closed"):
        await journal.insert_deployment(make_deployment())
    with pytest.raises(JournalError, match="closed"):
        journal.session_started(session_id="s", run_id="r", deployment_id="d", pid=1, started_at=T0)


async def test_location_names_the_store(journal: Journal, store: Store) -> None:
    expected = str(store.path) if store.backend == "sqlite" else store.url
    assert journal.location == expected


# --- retention ---------------------------------------------------------------------------------


async def test_prune_runs_removes_what_is_due_and_keeps_each_deployments_newest_run(
    journal: Journal, service: DeploymentService
) -> None:
    """Of two deployments with a day of hourly runs each (plus manual runs), pruning before
    noon removes every older run except, for the one that stopped early, its newest run and
    its latest scheduled occurrence; open claims and ``last_run_at`` are untouched."""
    busy, quiet = make_deployment(), make_deployment()
    for deployment in (busy, quiet):
        await journal.insert_deployment(deployment)
    runs: dict[str, list[DeploymentRun]] = {busy.id: [], quiet.id: []}
    for hour in range(24):
        at = T0 + timedelta(hours=hour)
        for deployment in (busy, quiet) if hour < 3 else (busy,):
            claimed = await claim(journal, deployment, at)
            assert claimed is not None
            runs[deployment.id].append(
                await journal.complete_run(
                    claimed, session_id="sesn_x", error=None, completed_at=at, last_run_at=at
                )
            )
    # the quiet one's newest run is a manual one, after its latest scheduled run
    manual = await complete(journal, await claim(journal, quiet, None), at=T0 + timedelta(hours=4))
    old_open = await claim(journal, busy, T0 - timedelta(days=30))
    assert old_open is not None
    cutoff = T0 + timedelta(hours=12)
    first_page = await service.list_runs(limit=5)

    total = 0
    while (pruned := await journal.prune_runs(cutoff, 4)).removed:
        assert pruned.removed <= 4
        assert pruned.held >= 0
        total += pruned.removed
    kept_busy = [run.id for run in runs[busy.id] if run.created_at >= cutoff]
    kept_quiet = [runs[quiet.id][-1].id, manual.id]  # latest scheduled + newest
    assert total == 12 + 2
    remaining = await service.list_runs(limit=100)
    assert sorted(run.id for run in remaining.data) == sorted(kept_busy + kept_quiet)
    # the open claim is still there: completing it works, and it was never visible
    await complete(journal, old_open, at=T0 + timedelta(days=2))
    # last_run_at stays; the scheduler resumes after each deployment's latest occurrence
    assert (await journal.get_deployment(quiet.id)).last_run_at == T0 + timedelta(hours=2)  # type: ignore[union-attr]
    latest = {row.deployment_id: row.latest_scheduled_at for row in await journal.schedule_rows()}
    assert latest[quiet.id] == to_micros(T0 + timedelta(hours=2))
    # a cursor taken before the prune goes on with the runs that are left, newest first
    assert first_page.next_page is not None
    rest = await service.list_runs(limit=100, page=first_page.next_page)
    newest_first = sorted(
        [run for run in remaining.data if run.id not in {r.id for r in first_page.data}],
        key=lambda run: (run.created_at, run.id),
        reverse=True,
    )
    assert [run.id for run in rest.data] == [run.id for run in newest_first]


async def test_run_created_at_rank_counts_completed_runs_newest_first(
    journal: Journal, deployment: Deployment
) -> None:
    for minute in range(5):
        await complete(
            journal, await claim(journal, deployment, None), at=T0 + timedelta(minutes=minute)
        )
    await claim(journal, deployment, None)  # open: not counted
    assert await journal.run_created_at_rank(1) == T0 + timedelta(minutes=4)
    assert await journal.run_created_at_rank(5) == T0
    assert await journal.run_created_at_rank(6) is None


async def test_prune_sessions_removes_ended_sessions_and_never_a_running_one(
    journal: Journal,
) -> None:
    for index in range(30):
        session_id = ids.new_id(ids.SESSION)
        journal.session_started(
            session_id=session_id,
            run_id="drun_1",
            deployment_id="depl_1",
            pid=index,
            started_at=T0 + timedelta(minutes=index),
        )
        if index % 3:  # every third one is still running
            journal.session_ended(
                session_id=session_id, exit_status=0, ended_at=T0 + timedelta(minutes=index + 1)
            )
    await journal.flush()
    cutoff = T0 + timedelta(minutes=21)  # ended at minute 21 or later: kept
    removed: list[str] = []
    while (pruned := await journal.prune_sessions(cutoff, 5)).removed:
        assert len(pruned.session_ids) == pruned.removed <= 5
        removed.extend(pruned.session_ids)
    assert len(removed) == len(set(removed)) == 13  # minutes 0-19 not divisible by 3
    for session_id in removed:
        assert await journal.get_session(session_id) is None
    # by id: only the ended ones named go, whatever their age
    late = T0 + timedelta(days=1)
    pruned = await journal.prune_sessions(late, 100, session_ids=["sesn_unknown", *removed])
    assert pruned.removed == 0
    running = ids.new_id(ids.SESSION)
    ended = ids.new_id(ids.SESSION)
    for session_id in (running, ended):
        journal.session_started(
            session_id=session_id, run_id="r", deployment_id="d", pid=1, started_at=T0
        )
    journal.session_ended(session_id=ended, exit_status=0, ended_at=T0)
    await journal.flush()
    pruned = await journal.prune_sessions(late, 100, session_ids=[running, ended])
    assert pruned.session_ids == (ended,)
    assert await journal.get_session(running) is not None


async def test_prune_outbox_removes_old_settled_events_and_never_a_pending_one(
    journal: Journal,
) -> None:
    old = [outbox_event("deployment_run.failed", "a", "b") for _ in range(6)]
    fresh = dataclasses.replace(outbox_event(), created_at=T0 + timedelta(days=10))
    await journal.add_events([*old, fresh])
    state = EndpointState(name="a")
    pending_left = {old[0].id, old[1].id}
    for endpoint in ("a", "b"):
        for delivery in await journal.pending_deliveries(endpoint, limit=100):
            if delivery.event_id == old[0].id and endpoint == "b":
                continue  # one endpoint still pending: the event stays, whole
            if delivery.event_id == old[1].id:
                continue
            failed = delivery.event_id == old[2].id
            await journal.record_attempt(
                delivery,
                attempted_at=T0,
                status_code=500 if failed else 204,
                error="HTTP 500" if failed else None,
                next_attempt_at=None,
                endpoint_state=dataclasses.replace(state, name=endpoint),
            )
    for delivery in await journal.pending_deliveries("hooks", limit=10):
        await journal.record_attempt(
            delivery,
            attempted_at=T0,
            status_code=204,
            error=None,
            next_attempt_at=None,
            endpoint_state=EndpointState(name="hooks"),
        )
    cutoff = T0 + timedelta(days=1)
    total = 0
    while (pruned := await journal.prune_outbox(cutoff, 3)).removed:
        assert pruned.removed <= 3
        total += pruned.removed
    assert total == 4
    left = await journal.list_deliveries(limit=100)
    assert {d.event_id for d in left} == {*pending_left, fresh.id}
    assert len([d for d in left if d.event_id == old[0].id]) == 2
