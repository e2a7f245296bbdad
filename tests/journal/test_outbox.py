"""The webhook outbox in the journal: events commit with their cause, deliveries settle."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentcron import ids
from agentcron.core.models import (
    AgentRef,
    Deployment,
    DeploymentRun,
    RunError,
    Schedule,
    TriggerType,
)
from agentcron.errors import JournalError, NotFound
from agentcron.journal import Claim, EndpointState, Journal, OutboxEvent, SqliteJournal
from agentcron.journal.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

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


def event(event_type: str = "deployment_run.failed", *endpoints: str) -> OutboxEvent:
    return OutboxEvent(
        id=ids.new_id(ids.WEBHOOK_MESSAGE),
        type=event_type,
        body=json.dumps({"type": event_type}),
        created_at=T0,
        endpoints=endpoints or ("hooks",),
    )


async def manual_claim(journal: Journal, deployment: Deployment) -> Claim:
    claim = await journal.claim_run(
        deployment_id=deployment.id,
        agent=AGENT,
        trigger_type=TriggerType.MANUAL,
        scheduled_at=None,
        claimed_at=T0,
    )
    assert claim is not None
    return claim


async def test_a_completion_stores_its_events_with_one_pending_delivery_per_endpoint(
    journal: Journal,
) -> None:
    deployment = make_deployment()
    await journal.insert_deployment(deployment)
    claim = await manual_claim(journal, deployment)
    failed = event("deployment_run.failed", "ops", "pager")
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
            claim, session_id="sesn_2", error=None, completed_at=T0, events=[event()]
        )
    with pytest.raises(NotFound):
        await journal.update_deployment(make_deployment(), events=[event("deployment.paused")])
    assert await journal.list_deliveries(limit=10) == []


async def test_an_update_and_recovered_claims_carry_their_events(journal: Journal) -> None:
    deployment = make_deployment()
    await journal.insert_deployment(deployment)
    paused = event("deployment.paused")
    await journal.update_deployment(
        dataclasses.replace(deployment, name="renamed"), events=[paused]
    )
    await manual_claim(journal, deployment)
    seen: list[str] = []

    def events_for(run: DeploymentRun) -> list[OutboxEvent]:
        seen.append(run.id)
        return [event("deployment_run.failed")]

    recovered = await journal.recover_open_claims(T0, events_for=events_for)
    assert [run.id for run in recovered] == seen
    types = sorted(d.event_type for d in await journal.list_deliveries(limit=10))
    assert types == ["deployment.paused", "deployment_run.failed"]


async def test_attempts_settle_deliveries_and_store_the_endpoint_state(journal: Journal) -> None:
    first, second, third = event(), event(), event()
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
    failed, other = event(), event("deployment.archived", "other")
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
    events = [event("deployment_run.failed", "a", "b") for _ in range(5)]
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
    await journal.add_events([dataclasses.replace(event(), endpoints=())])
    assert await journal.list_deliveries(limit=10) == []


async def test_a_version_1_journal_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.execute(
        "INSERT INTO sessions (session_id, run_id, deployment_id, pid, started_at) "
        "VALUES ('sesn_old', 'drun_old', 'depl_old', 42, 1)"
    )
    conn.close()
    async with SqliteJournal.open(path) as journal:
        assert (await journal.get_session("sesn_old") or {})["pid"] == 42
        await journal.add_events([event()])
        assert len(await journal.list_deliveries(limit=10)) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()


async def test_storage_bytes_counts_the_file_and_its_wal(journal: SqliteJournal) -> None:
    before = await journal.storage_bytes()
    await journal.add_events([event() for _ in range(200)])
    assert await journal.storage_bytes() > before > 0
