"""Cursors and pages: opaque, list-specific, stable while rows are inserted."""

from __future__ import annotations

import asyncio
import base64
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentcron import ids
from agentcron.core.models import AgentRef, Deployment, Schedule, TriggerType
from agentcron.core.pagination import CursorKind, Position, decode_cursor, encode_cursor
from agentcron.errors import InvalidRequest
from agentcron.journal import Journal
from agentcron.runtime.service import DeploymentService
from tests.support.fakes import FakeClock, RecordingLauncher

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_cursor_round_trips_and_is_url_safe() -> None:
    position = Position(created_at=1_777_777_777_123_456, id="drun_01JD3ABCDEFGHJKMNPQRSTVWXY")
    cursor = encode_cursor(CursorKind.RUNS, position)
    assert decode_cursor(CursorKind.RUNS, cursor) == position
    assert all(c.isalnum() or c in "-_" for c in cursor)


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param(
            encode_cursor(CursorKind.DEPLOYMENTS, Position(created_at=1, id="d")), id="foreign-list"
        ),
        pytest.param("", id="empty"),
        pytest.param("garbage!!", id="not-base64"),
        pytest.param(_b64("not json"), id="not-json"),
        pytest.param(_b64('{"k": "r"}'), id="object"),
        pytest.param(_b64('["r", "1", "x"]'), id="string-time"),
        pytest.param(_b64('["r", true, "x"]'), id="bool-time"),
        pytest.param(_b64('["r", 1, ""]'), id="empty-id"),
        pytest.param(_b64('["r", 1, "x", 4]'), id="extra-item"),
        pytest.param("A" * 300, id="too-long"),
    ],
)
def test_bad_cursors_are_400_naming_page(cursor: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^page: ") as caught:
        decode_cursor(CursorKind.RUNS, cursor)
    assert caught.value.status == 400


@pytest.fixture
async def deployment(journal: Journal) -> Deployment:
    created = Deployment(
        id=ids.new_id(ids.DEPLOYMENT),
        name="d",
        description=None,
        agent=AgentRef(id="agent_test", version=1),
        environment_id="env_test",
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
        schedule=Schedule(expression="* * * * *", timezone="UTC"),
        created_at=T0,
        updated_at=T0,
    )
    await journal.insert_deployment(created)
    return created


def make_service(journal: Journal) -> DeploymentService:
    return DeploymentService(journal, RecordingLauncher(), FakeClock(T0))


async def add_run(journal: Journal, deployment: Deployment, completed_at: datetime) -> str:
    claim = await journal.claim_run(
        deployment_id=deployment.id,
        agent=deployment.agent,
        trigger_type=TriggerType.MANUAL,
        scheduled_at=None,
        claimed_at=completed_at,
    )
    assert claim is not None
    await journal.complete_run(claim, session_id="sesn_x", error=None, completed_at=completed_at)
    return claim.run_id


async def all_run_pages(service: DeploymentService, limit: int, **filters: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await service.list_runs(limit=limit, page=cursor, **filters)
        pages.append([run.id for run in page.data])
        cursor = page.next_page
        if cursor is None:
            return pages
        await asyncio.sleep(0)  # let concurrent writers in between pages


async def test_pages_cover_every_run_once_and_the_last_page_has_no_cursor(
    journal: Journal, deployment: Deployment
) -> None:
    """Ties on created_at are broken by id; an exact multiple of limit ends with null."""
    expected = [
        await add_run(journal, deployment, T0 + timedelta(seconds=i // 4)) for i in range(12)
    ]
    service = make_service(journal)
    pages = await all_run_pages(service, limit=4)
    assert [len(page) for page in pages] == [4, 4, 4]
    flat = [run_id for page in pages for run_id in page]
    assert flat == list(reversed(expected))  # newest first; ids break created_at ties
    assert (await service.list_runs(limit=12)).next_page is None
    assert (await service.list_runs(limit=11)).next_page is not None


async def test_run_pages_stay_exact_while_runs_are_inserted(
    journal: Journal, deployment: Deployment
) -> None:
    """Paging while another task inserts runs (newer, older and equal created_at): every run
    that existed before the listing appears exactly once, and nothing appears twice."""
    rng = random.Random(7)
    existing = [
        await add_run(journal, deployment, T0 + timedelta(seconds=rng.randrange(0, 60)))
        for _ in range(120)
    ]
    service = make_service(journal)

    async def insert_concurrently() -> None:
        for _ in range(80):
            at = T0 + timedelta(seconds=rng.randrange(-10, 120))
            await add_run(journal, deployment, at)
            await asyncio.sleep(0)

    pages, _ = await asyncio.gather(all_run_pages(service, limit=7), insert_concurrently())
    seen = [run_id for page in pages for run_id in page]
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert set(existing) <= set(seen), "a run that existed before listing was skipped"


async def test_filters_are_applied_again_on_every_page(
    journal: Journal, deployment: Deployment
) -> None:
    for i in range(10):
        await add_run(journal, deployment, T0 + timedelta(seconds=i))
    service = make_service(journal)
    first = await service.list_runs(limit=3, created_at_gte=T0 + timedelta(seconds=4))
    assert first.next_page is not None
    second = await service.list_runs(
        limit=3, created_at_gte=T0 + timedelta(seconds=4), page=first.next_page
    )
    assert second.next_page is None
    assert len(first.data) + len(second.data) == 6
    assert (
        await service.list_runs(limit=3, trigger_type="schedule", page=first.next_page)
    ).data == []


async def test_a_runs_cursor_is_refused_by_the_deployments_list(
    journal: Journal, deployment: Deployment
) -> None:
    for i in range(3):
        await add_run(journal, deployment, T0 + timedelta(seconds=i))
    service = make_service(journal)
    cursor = (await service.list_runs(limit=1)).next_page
    assert cursor is not None
    with pytest.raises(InvalidRequest, match=r"^page: "):
        await service.list(page=cursor)


async def test_deployment_pages_stay_exact_while_deployments_are_created(
    journal: Journal,
) -> None:
    clock = FakeClock(T0)
    service = DeploymentService(journal, RecordingLauncher(), clock)
    body = {
        "name": "d",
        "agent": "agent_test",
        "environment_id": "env_test",
        "initial_events": [{"type": "user.message", "content": [{"type": "text", "text": "x"}]}],
    }
    existing = []
    for _ in range(25):
        existing.append((await service.create(body)).id)
        clock.step_wall(timedelta(milliseconds=500))

    async def create_concurrently() -> None:
        for _ in range(15):
            await service.create(body)
            clock.step_wall(timedelta(milliseconds=300))

    async def page_through() -> list[str]:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = await service.list(limit=4, page=cursor)
            seen.extend(d.id for d in page.data)
            if page.next_page is None:
                return seen
            cursor = page.next_page
            await asyncio.sleep(0)

    seen, _ = await asyncio.gather(page_through(), create_concurrently())
    assert len(seen) == len(set(seen))
    assert set(existing) <= set(seen)
