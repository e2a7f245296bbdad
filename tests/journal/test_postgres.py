"""What only the PostgreSQL journal has: a server that can go away, logins, migrations that
race across connections, and the planner's use of the indexes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from agentcron import ids
from agentcron.config import JournalConfig
from agentcron.core.models import AgentRef, PausedReason, RunError, TriggerType
from agentcron.core.pagination import Position
from agentcron.errors import JournalError, ServiceUnavailable
from agentcron.journal import (
    Claim,
    DeploymentFilter,
    OutboxEvent,
    RunFilter,
    SqliteJournal,
    open_journal,
)
from agentcron.journal.postgres.reads import SCHEDULE_ROWS_SQL, deployments_query, runs_query
from agentcron.journal.postgres.retention import (
    PRUNE_RUNS,
    PRUNE_RUNS_CANDIDATES,
    RUN_CREATED_AT_RANK,
)
from agentcron.journal.postgres.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    migrate,
    schema_version,
)
from agentcron.journal.postgres.store import PostgresJournal
from agentcron.journal.postgres.writes import Fence
from tests.journal.test_contract import AGENT, T0, claim, complete, make_deployment
from tests.support.postgres import PASSWORD, PASSWORD_USER, PostgresCluster, start_cluster


def terminate_backends(cluster: PostgresCluster, database: str) -> int:
    """End every session on ``database`` as an administrator would; how many there were."""
    ended = cluster.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{database}'"
    )
    return int(ended)


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own, to stop and start (about a second)."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


# --- the server going away ---------------------------------------------------------------------


def write_failure(journal: PostgresJournal) -> str | None:
    """The journal's write failure, read afresh (a property mypy would otherwise narrow)."""
    return journal.write_failure


async def test_a_stopped_server_is_service_unavailable_and_the_journal_recovers(
    own_cluster: PostgresCluster,
) -> None:
    database = own_cluster.create_database()
    async with PostgresJournal.open(own_cluster.url(database)) as journal:
        deployment = make_deployment()
        await journal.insert_deployment(deployment)
        claimed = await claim(journal, deployment, T0)
        own_cluster.stop()
        with pytest.raises(ServiceUnavailable, match="journal unavailable"):
            await claim(journal, deployment, T0 + timedelta(hours=1))
        assert write_failure(journal) is not None  # /v1/health says degraded
        with pytest.raises(ServiceUnavailable, match="journal unavailable"):
            await complete(journal, claimed)
        with pytest.raises(ServiceUnavailable, match="journal unavailable"):
            await journal.get_deployment(deployment.id)
        with pytest.raises(ServiceUnavailable, match="journal unavailable"):
            await journal.list_runs(RunFilter(), after=None, limit=10)
        own_cluster.start()
        run = await complete(journal, claimed)  # the claim survived; the writer reconnects
        assert write_failure(journal) is None
        assert await journal.get_run(run.id) == run
        assert await claim(journal, deployment, T0 + timedelta(hours=1)) is not None


async def test_terminated_sessions_are_replaced_without_losing_a_write(
    postgres_cluster: PostgresCluster, postgres_database: str, postgres_url: str
) -> None:
    """pg_terminate_backend on every session of the journal: the next write and read each
    either work on a new connection or fail with ServiceUnavailable, and after that the
    journal works; nothing written before is lost."""
    async with PostgresJournal.open(postgres_url) as journal:
        deployment = make_deployment()
        await journal.insert_deployment(deployment)
        before = await claim(journal, deployment, T0)
        assert terminate_backends(postgres_cluster, postgres_database) >= 2  # writer + a reader
        await asyncio.sleep(0.1)
        for attempt in range(2):
            try:
                after = await claim(journal, deployment, T0 + timedelta(hours=1))
                found = await journal.get_deployment(deployment.id)
            except ServiceUnavailable:
                assert attempt == 0
            else:
                break
        assert after is not None
        assert found == deployment
        assert await claim(journal, deployment, T0) is None  # the earlier claim is kept
        assert before is not None
        assert (await complete(journal, before)).id == before.run_id


async def test_opening_an_unreachable_server_is_a_journal_error(tmp_path: Path) -> None:
    url = f"postgresql://someone:hunter2@/agentcron?host={tmp_path}"
    with pytest.raises(JournalError, match="cannot open the journal") as caught:
        async with PostgresJournal.open(url):
            pass
    message = str(caught.value)
    assert "hunter2" not in message
    assert f"postgresql://someone:***@/agentcron?host={tmp_path}" in message


# --- logging in --------------------------------------------------------------------------------


@pytest.fixture
def password_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A database owned by the role that logs in with a password."""
    name = postgres_cluster.create_database(owner=PASSWORD_USER)
    try:
        yield name
    finally:
        postgres_cluster.drop_database(name)


async def test_the_password_file_logs_in_and_is_never_shown(
    postgres_cluster: PostgresCluster, password_database: str, tmp_path: Path
) -> None:
    password_file = tmp_path / "journal-password"
    password_file.write_text(PASSWORD + "\n")
    config = JournalConfig(
        url=postgres_cluster.url(password_database, user=PASSWORD_USER),
        password_file=password_file,
    )
    with capture_logs() as logs:
        async with open_journal(config, state_dir=tmp_path, environ={}) as journal:
            assert isinstance(journal, PostgresJournal)
            await journal.insert_deployment(make_deployment())
            assert (await journal.counts())["active"] == 1
            assert PASSWORD not in journal.location
    assert PASSWORD not in repr(logs)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_open_journal_reports_each_commit_to_on_commit(
    backend: str, postgres_url: str, tmp_path: Path
) -> None:
    """The commit-duration metric hears every committed write, whichever backend it is."""
    config = JournalConfig(url=postgres_url if backend == "postgres" else None)
    durations: list[float] = []
    async with open_journal(
        config, state_dir=tmp_path, environ={}, on_commit=durations.append
    ) as journal:
        await journal.insert_deployment(make_deployment())
        await journal.insert_deployment(make_deployment())
    assert len(durations) >= 2
    assert all(seconds >= 0 for seconds in durations)


async def test_the_systemd_credential_logs_in(
    postgres_cluster: PostgresCluster, password_database: str, tmp_path: Path
) -> None:
    (tmp_path / "journal-password").write_text(PASSWORD)
    config = JournalConfig(url=postgres_cluster.url(password_database, user=PASSWORD_USER))
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    async with open_journal(config, state_dir=tmp_path, environ=environ) as journal:
        assert await journal.counts() == {
            "active": 0,
            "paused": 0,
            "archived": 0,
            "scheduled": 0,
            "runs": 0,
        }


async def test_a_wrong_password_is_a_journal_error_that_does_not_show_it(
    postgres_cluster: PostgresCluster, password_database: str
) -> None:
    url = postgres_cluster.url(password_database, user=PASSWORD_USER)
    with pytest.raises(JournalError, match="password authentication failed") as caught:
        async with PostgresJournal.open(url, password="not-the-password"):
            pass
    assert "not-the-password" not in str(caught.value)


async def test_open_journal_without_a_url_is_the_sqlite_file_in_the_state_dir(
    tmp_path: Path,
) -> None:
    async with open_journal(JournalConfig(), state_dir=tmp_path, environ={}) as journal:
        assert isinstance(journal, SqliteJournal)
        assert journal.location == str(tmp_path / "journal.db")


# --- fencing -----------------------------------------------------------------------------------


async def set_lease(conn: asyncpg.Connection, holder: str, epoch: int, seconds: float) -> None:
    await conn.execute(
        "INSERT INTO leases (name, holder, epoch, expires_at) "
        "VALUES ('scheduler', $1, $2, now() + make_interval(secs => $3)) "
        "ON CONFLICT (name) DO UPDATE "
        "SET holder = $1, epoch = $2, expires_at = excluded.expires_at",
        holder,
        epoch,
        seconds,
    )


async def test_a_fenced_claim_lands_only_while_its_lease_epoch_is_current(
    postgres_url: str,
) -> None:
    """Held and unexpired: the claim lands with its epoch. A newer epoch, another holder or
    an expired lease: nothing is written and the claim is ServiceUnavailable. Unfenced
    claims in the same batch are unaffected."""
    async with PostgresJournal.open(postgres_url) as journal:
        deployment = make_deployment()
        await journal.insert_deployment(deployment)
        conn = await asyncpg.connect(postgres_url)
        try:
            await set_lease(conn, "daemon-a", 5, 60)

            async def fenced(hour: int, epoch: int, holder: str = "daemon-a") -> object:
                return await journal.claim_run(
                    deployment_id=deployment.id,
                    agent=AGENT,
                    trigger_type=TriggerType.SCHEDULE,
                    scheduled_at=T0 + timedelta(hours=hour),
                    claimed_at=T0,
                    fence=Fence(lease="scheduler", holder=holder, epoch=epoch),
                )

            held, stale, other, unfenced = await asyncio.gather(
                fenced(1, 5),
                fenced(2, 4),
                fenced(3, 5, holder="daemon-b"),
                claim(journal, deployment, T0 + timedelta(hours=4)),
                return_exceptions=True,
            )
            assert isinstance(held, Claim)
            assert isinstance(stale, ServiceUnavailable)
            assert "no longer held by 'daemon-a' at epoch 4" in str(stale)
            assert isinstance(other, ServiceUnavailable)
            assert isinstance(unfenced, Claim)
            await set_lease(conn, "daemon-a", 5, -1)  # expired by the database's clock
            with pytest.raises(ServiceUnavailable, match="no longer held"):
                await fenced(5, 5)
            rows = await conn.fetch("SELECT scheduled_at, epoch FROM runs ORDER BY scheduled_at")
        finally:
            await conn.close()
    assert [(row["scheduled_at"], row["epoch"]) for row in rows] == [
        (T0 + timedelta(hours=1), 5),
        (T0 + timedelta(hours=4), None),
    ]


async def test_a_fenced_claim_that_waited_for_a_takeover_is_not_written(
    postgres_url: str,
) -> None:
    """A takeover in progress holds the lease row; the old leader's claim waits for it, then
    finds its epoch gone: no claim of a deposed leader lands after the takeover commits."""
    async with PostgresJournal.open(postgres_url) as journal:
        deployment = make_deployment()
        await journal.insert_deployment(deployment)
        conn = await asyncpg.connect(postgres_url)
        try:
            await set_lease(conn, "daemon-a", 5, 60)
            takeover = conn.transaction()
            await takeover.start()
            await set_lease(conn, "daemon-b", 6, 60)  # not committed yet
            attempt = asyncio.ensure_future(
                journal.claim_run(
                    deployment_id=deployment.id,
                    agent=AGENT,
                    trigger_type=TriggerType.SCHEDULE,
                    scheduled_at=T0,
                    claimed_at=T0,
                    fence=Fence(lease="scheduler", holder="daemon-a", epoch=5),
                )
            )
            await asyncio.sleep(0.3)
            assert not attempt.done()  # waiting on the lease row
            await takeover.commit()
            with pytest.raises(ServiceUnavailable, match="no longer held"):
                await attempt
            assert await conn.fetchval("SELECT count(*) FROM runs") == 0
        finally:
            await conn.close()


# --- migrations --------------------------------------------------------------------------------


async def test_concurrent_starters_run_each_migration_step_once(postgres_url: str) -> None:
    """Five connections migrate a fresh database at once: the steps run once in all."""
    conns = [await asyncpg.connect(postgres_url) for _ in range(5)]
    try:
        ran = await asyncio.gather(*(migrate(conn, "test") for conn in conns))
        # Each step is its own transaction, so two starters may share the steps between
        # them; what counts is that every step ran exactly once and the database is current.
        assert sum(ran) == SCHEMA_VERSION
        assert await schema_version(conns[0]) == SCHEMA_VERSION
    finally:
        for conn in conns:
            await conn.close()


async def test_a_version_1_database_gains_the_outbox_and_keeps_its_rows(postgres_url: str) -> None:
    """Step 2 (the webhook outbox) runs on a database a version-1 agentcron left."""
    conn = await asyncpg.connect(postgres_url)
    try:
        async with conn.transaction():
            await conn.execute(MIGRATIONS[0])
            await conn.execute(
                "CREATE TABLE agentcron_schema (only_row boolean PRIMARY KEY DEFAULT true "
                "CHECK (only_row), version integer NOT NULL); "
                "INSERT INTO agentcron_schema (version) VALUES (1)"
            )
            await conn.execute(
                "INSERT INTO sessions (session_id, run_id, deployment_id, pid, started_at) "
                "VALUES ('sesn_old', 'drun_old', 'depl_old', 42, now())"
            )
    finally:
        await conn.close()
    async with PostgresJournal.open(postgres_url) as journal:
        assert (await journal.get_session("sesn_old") or {})["pid"] == 42
        event = OutboxEvent(
            id=ids.new_id(ids.WEBHOOK_MESSAGE),
            type="deployment.paused",
            body="{}",
            created_at=T0,
            endpoints=("hooks",),
        )
        await journal.add_events([event])
        assert [d.event_id for d in await journal.list_deliveries(limit=10)] == [event.id]
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await schema_version(conn) == SCHEMA_VERSION == 3
    finally:
        await conn.close()


async def test_the_schema_sorts_ids_bytewise_whatever_the_locale(postgres_url: str) -> None:
    """Cursors compare ids; the id columns use the "C" collation, as SQLite compares."""
    async with PostgresJournal.open(postgres_url):
        pass
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE column_name IN ('id', 'deployment_id', 'agent_id') "
            "AND table_name IN ('deployments', 'runs')"
        )
    finally:
        await conn.close()
    collations = {(row["table_name"], row["column_name"]): row["collation_name"] for row in rows}
    assert collations == {
        ("deployments", "id"): "C",
        ("deployments", "agent_id"): "C",  # a filter's index key
        ("runs", "id"): "C",
        ("runs", "deployment_id"): "C",
        ("runs", "agent_id"): None,  # never compared: a snapshot of the agent
    }


# --- the planner and the indexes ------------------------------------------------------------

# Which indexes may serve each filter. The data below makes the filters selective (2% errors,
# 5% manual runs, one deployment in 50, 5% paused, 5% archived, one agent in 10), so each
# has its own index; an unselective one ("no error", 98%) may read the general index instead.
RUN_FILTERS = {
    "all": (RunFilter(), {"runs_created"}),
    "deployment": (RunFilter(deployment_id="D3"), {"runs_deployment"}),
    "has-error": (RunFilter(has_error=True), {"runs_error"}),
    "no-error": (RunFilter(has_error=False), {"runs_error", "runs_created"}),
    "trigger": (RunFilter(trigger_type="manual"), {"runs_trigger"}),
    "deployment-has-error": (RunFilter(deployment_id="D3", has_error=True), {"runs_deployment"}),
    "deployment-trigger": (
        RunFilter(deployment_id="D3", trigger_type="schedule"),
        {"runs_deployment"},
    ),
    "error-trigger": (RunFilter(has_error=True, trigger_type="schedule"), {"runs_error"}),
    "all-three": (
        RunFilter(deployment_id="D3", has_error=False, trigger_type="manual"),
        {"runs_deployment", "runs_trigger", "runs_occurrence"},  # a few rows: bitmaps may do
    ),
    "created-gt-lt": (RunFilter(created_at_gt=1, created_at_lt=5 * 10**15), {"runs_created"}),
    "deployment-created-range": (
        RunFilter(deployment_id="D3", created_at_gte=1, created_at_lte=5 * 10**15),
        {"runs_deployment"},
    ),
}

LIVE = {"deployments_live", "deployments_created"}
DEPLOYMENT_FILTERS = {
    "default": (DeploymentFilter(), LIVE),
    "include-archived": (DeploymentFilter(include_archived=True), {"deployments_created"}),
    "active": (DeploymentFilter(paused=False), {"deployments_state", *LIVE}),
    "paused": (DeploymentFilter(paused=True), {"deployments_state"}),
    "agent": (
        DeploymentFilter(agent_id="agent_3"),
        {"deployments_agent_live", "deployments_agent"},
    ),
    "agent-include-archived": (
        DeploymentFilter(agent_id="agent_3", include_archived=True),
        {"deployments_agent"},
    ),
    "agent-paused": (
        DeploymentFilter(agent_id="agent_3", paused=True),
        {"deployments_agent_state", "deployments_state"},
    ),
    "created-range": (DeploymentFilter(created_at_gte=1, created_at_lte=5 * 10**15), LIVE),
    "agent-active-range": (
        DeploymentFilter(agent_id="agent_3", paused=False, created_at_gte=1),
        {"deployments_agent_state", "deployments_agent_live", "deployments_agent"},
    ),
}
AFTER = Position(created_at=5 * 10**15, id="x")
# With these off, the planner takes an ordered index scan wherever one exists: what proves
# that an index serves the filter newest first, without a sort.
ORDERED_ONLY = {"enable_sort": "off", "enable_seqscan": "off", "enable_bitmapscan": "off"}


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


@pytest.fixture(scope="module")
def planned_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """One database with 400 deployments and 10,000 runs, analysed, for every plan test."""
    database = postgres_cluster.create_database()

    async def fill() -> None:
        async with PostgresJournal.open(postgres_cluster.url(database)) as journal:
            deployments = [
                make_deployment(
                    id=f"D{n}",
                    created_at=T0 + timedelta(seconds=n),
                    agent=AgentRef(id=f"agent_{n % 10}", version=1),
                    paused_reason=PausedReason(type="manual") if n % 20 == 1 else None,
                    archived_at=T0 if n % 20 == 2 else None,
                )
                for n in range(400)
            ]
            for deployment in deployments:
                await journal.insert_deployment(deployment)
            claims = await asyncio.gather(
                *(
                    journal.claim_run(
                        deployment_id=deployments[n % 50].id,
                        agent=AGENT,
                        trigger_type=TriggerType.MANUAL if n % 20 == 0 else TriggerType.SCHEDULE,
                        scheduled_at=None if n % 20 == 0 else T0 + timedelta(minutes=n),
                        claimed_at=T0,
                    )
                    for n in range(10_000)
                )
            )
            failed = RunError(type="vault_not_found", message="gone")
            await asyncio.gather(
                *(
                    complete(journal, claimed, at=T0 + timedelta(seconds=n), error=failed)
                    if n % 50 == 7
                    else complete(journal, claimed, at=T0 + timedelta(seconds=n))
                    for n, claimed in enumerate(claims)
                )
            )
        conn = await asyncpg.connect(postgres_cluster.url(database))
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    asyncio.run(fill())
    try:
        yield postgres_cluster.url(database)
    finally:
        postgres_cluster.drop_database(database)


async def explain_both(url: str, sql: str, params: list[Any]) -> tuple[Any, Any]:
    """The plan as the planner likes it, and the plan restricted to ordered index scans."""
    async with PostgresJournal.open(url) as journal:
        return await journal.explain(sql, params), await journal.explain(
            sql, params, settings=ORDERED_ONLY
        )


def read_through(plan: dict[str, Any], table: str) -> list[tuple[str, str | None]]:
    """How ``plan`` reads ``table``: (node type, index name) of each scan of it."""
    return [
        (node["Node Type"], node.get("Index Name"))
        for node in plan_nodes(plan)
        if node.get("Relation Name") == table or node["Node Type"] == "Bitmap Index Scan"
    ]


def assert_served_by_index(
    chosen: dict[str, Any] | None, ordered: dict[str, Any], table: str, indexes: set[str]
) -> None:
    """The planner reads ``table`` through one of ``indexes``, never sequentially; and an
    ordered scan of one of them serves the page newest first with no sort (the planner may
    still prefer to sort a handful of rows, by its statistics)."""
    if chosen is not None:
        scans = read_through(chosen, table)
        assert scans, chosen
        assert all(index in indexes for _, index in scans if index is not None), scans
        assert "Seq Scan" not in {kind for kind, _ in scans}, scans
    kinds = [(n["Node Type"], n.get("Index Name")) for n in plan_nodes(ordered)]
    assert [kind for kind, _ in kinds] in (["Limit", "Index Scan"], ["Limit", "Index Only Scan"])
    assert kinds[1][1] in indexes, kinds
    assert ordered["Plans"][0]["Relation Name"] == table
    assert ordered["Plans"][0]["Scan Direction"] == "Backward", kinds


@pytest.mark.parametrize("name", list(RUN_FILTERS))
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "next-page"])
async def test_every_run_filter_is_served_by_an_index_newest_first(
    planned_url: str, name: str, paged: bool
) -> None:
    flt, indexes = RUN_FILTERS[name]
    sql, params = runs_query(flt, after=AFTER if paged else None, limit=21)
    chosen, ordered = await explain_both(planned_url, sql, params)
    assert_served_by_index(chosen, ordered, "runs", indexes)


@pytest.mark.parametrize("name", list(DEPLOYMENT_FILTERS))
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "next-page"])
async def test_every_deployment_filter_is_served_by_an_index_newest_first(
    planned_url: str, name: str, paged: bool
) -> None:
    flt, indexes = DEPLOYMENT_FILTERS[name]
    sql, params = deployments_query(flt, after=AFTER if paged else None, limit=21)
    chosen, ordered = await explain_both(planned_url, sql, params)
    # 400 deployments are few enough for the planner to read them all in a scan; the ordered
    # plan is the proof that an index serves the filter.
    del chosen
    assert_served_by_index(None, ordered, "deployments", indexes)


async def test_schedule_rows_find_the_latest_run_through_the_occurrence_index(
    planned_url: str,
) -> None:
    chosen, _ = await explain_both(planned_url, SCHEDULE_ROWS_SQL, [])
    nodes = list(plan_nodes(chosen))
    assert any(n.get("Index Name") == "runs_occurrence" for n in nodes), nodes
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] == "runs"]


# --- retention: the prune queries are indexed, never a scan over runs ------------------------


def assert_no_seq_scan_of_runs(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = list(plan_nodes(plan))
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] == "runs"]
    return nodes


async def test_the_prune_candidates_are_read_along_runs_created(planned_url: str) -> None:
    chosen, _ = await explain_both(
        planned_url, PRUNE_RUNS_CANDIDATES, [T0 + timedelta(seconds=5000), 500]
    )
    nodes = assert_no_seq_scan_of_runs(chosen)
    used = {n.get("Index Name") for n in nodes}
    assert "runs_created" in used, nodes
    assert used & {"runs_deployment", "runs_occurrence"}, nodes  # the EXISTS are seeks


async def test_the_prune_delete_finds_its_rows_by_primary_key(planned_url: str) -> None:
    chosen, _ = await explain_both(
        planned_url, PRUNE_RUNS, [T0 + timedelta(seconds=5000), [f"drun_{n}" for n in range(500)]]
    )
    nodes = assert_no_seq_scan_of_runs(chosen)
    assert "runs_pkey" in {n.get("Index Name") for n in nodes}, nodes


async def test_the_count_cutoff_is_an_index_only_read(planned_url: str) -> None:
    chosen, _ = await explain_both(planned_url, RUN_CREATED_AT_RANK, [5000])
    nodes = assert_no_seq_scan_of_runs(chosen)
    assert "runs_created" in {n.get("Index Name") for n in nodes}, nodes
