"""``agentcrond`` on a PostgreSQL journal, end to end: config, password, restart, health."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_sessions import sessions_config
from tests.e2e.test_webhooks_daemon import deliveries, make_events, raw_get, webhook_config
from tests.support.daemon_harness import (
    DaemonProcess,
    create_body,
    list_all_runs,
    running_daemon,
    write_config,
)
from tests.support.fakes import wait_until
from tests.support.postgres import PASSWORD, PASSWORD_USER, PostgresCluster
from tests.support.webhook_receiver import WebhookReceiver, running_receiver


@pytest.fixture
def password_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.create_database(owner=PASSWORD_USER)
    try:
        yield name
    finally:
        postgres_cluster.drop_database(name)


def test_the_daemon_keeps_its_journal_in_postgresql_and_never_shows_the_password(
    tmp_path: Path, postgres_cluster: PostgresCluster, password_database: str
) -> None:
    """Deployments and runs survive a restart in the database; health names the database
    with the URL's password hidden; neither password reaches the log."""
    password_file = tmp_path / "journal-password"
    password_file.write_text(PASSWORD + "\n")
    url = postgres_cluster.url(password_database, user=f"{PASSWORD_USER}:inline-secret")
    config = write_config(tmp_path)
    with config.open("a") as handle:
        handle.write(f"\n[journal]\nurl = '{url}'\npassword_file = '{password_file}'\n")

    with running_daemon(tmp_path, config) as daemon:
        status, deployment = daemon.request("POST", "/v1/deployments", create_body("pg", cron=None))
        assert status == 200, deployment
        status, run = daemon.request("POST", f"/v1/deployments/{deployment['id']}/run")
        assert status == 200, run
        assert run["session_id"] is not None, run
        status, health = daemon.request("GET", "/v1/health")
        assert status == 200
        assert health["journal"] == postgres_cluster.url(
            password_database, user=f"{PASSWORD_USER}:***"
        )
        assert daemon.stop(signal.SIGTERM) == 0
        assert not (tmp_path / "state" / "journal.db").exists()

        daemon.start()
        status, again = daemon.request("GET", f"/v1/deployments/{deployment['id']}")
        assert status == 200
        assert again == deployment
        assert [stored["id"] for stored in list_all_runs(daemon)] == [run["id"]]
        assert daemon.stop(signal.SIGTERM) == 0
        logs = daemon.logs()
    assert PASSWORD not in logs
    assert "inline-secret" not in logs
    assert "daemon_ready" in logs


def test_the_daemon_refuses_to_start_when_the_database_is_unreachable(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with config.open("a") as handle:
        handle.write(f"\n[journal]\nurl = 'postgresql://u:pw-here@/db?host={tmp_path}'\n")
    daemon = DaemonProcess(tmp_path, config)
    try:
        daemon.start(wait_ready=False)
        assert daemon.process is not None
        assert daemon.process.wait(timeout=60) == 1
    finally:
        daemon.close()
    logs = daemon.logs()
    assert "daemon_failed" in logs
    assert "cannot open the journal postgresql://u:***@/db" in logs
    assert "pw-here" not in logs


def test_webhooks_and_metrics_work_on_a_postgresql_journal(
    tmp_path: Path, postgres_url: str
) -> None:
    """The outbox lives in the database: every event of a succeeded and two failed runs, a
    pause and an archive reaches the receiver, verified, and the outbox says delivered;
    ``agentcron_journal_bytes`` is the database's size."""
    with running_receiver(WebhookReceiver()) as receiver:
        config = webhook_config(tmp_path, receiver.url)
        with config.open("a") as handle:
            handle.write(f"\n[journal]\nurl = '{postgres_url}'\n")
        with running_daemon(tmp_path, config) as daemon:
            make_events(daemon)
            wait_until(lambda: len(receiver.delivered()) == 5, "every event delivered", timeout=20)
            wait_until(
                lambda: {d["status"] for d in deliveries(daemon)} == {"delivered"},
                "the outbox says delivered",
            )
            status, exposition = raw_get(daemon, "/metrics")
            assert status == 200
        assert not (tmp_path / "state" / "journal.db").exists()
    assert all(r.verified for r in receiver.requests)
    types = Counter(r.payload["type"] for r in receiver.delivered().values())
    assert types == {
        "deployment_run.succeeded": 1,
        "deployment_run.failed": 2,
        "deployment.paused": 1,
        "deployment.archived": 1,
    }
    (size,) = [
        line for line in exposition.splitlines() if line.startswith("agentcron_journal_bytes ")
    ]
    assert float(size.split()[1]) > 0


def test_two_daemons_on_one_database_each_name_their_own_host(
    tmp_path: Path, postgres_url: str
) -> None:
    """Sessions recorded by two daemons sharing a journal database carry each daemon's host:
    either daemon shows the other's session, says its log is on that host, and refuses to stop
    it (409) while it runs."""
    journal = f"\n[journal]\nurl = '{postgres_url}'\n"
    first = DaemonProcess(
        tmp_path / "a", sessions_config(tmp_path / "a", host="edge-a", extra=journal)
    )
    second = DaemonProcess(
        tmp_path / "b", sessions_config(tmp_path / "b", host="edge-b", extra=journal)
    )
    try:
        first.start()
        second.start()
        body = {**create_body("on b", cron=None), "agent": "agent_long"}
        status, deployment = second.request("POST", "/v1/deployments", body)
        assert status == 200, deployment
        status, run = second.request("POST", f"/v1/deployments/{deployment['id']}/run")
        assert status == 200, run
        session_id = run["session_id"]

        def seen_from_first() -> bool:
            return first.request("GET", f"/v1/sessions/{session_id}")[0] == 200

        wait_until(seen_from_first, "the session's record reached the database")
        status, shown = first.request("GET", f"/v1/sessions/{session_id}")
        assert (shown["host"], shown["status"]) == ("edge-b", "running")
        status, body = first.request("GET", f"/v1/sessions/{session_id}/log")
        assert status == 404
        assert "is on host edge-b" in body["error"]["message"]
        status, body = first.request("POST", f"/v1/sessions/{session_id}/stop")
        assert status == 409
        assert "runs on host edge-b, not on edge-a" in body["error"]["message"]
        status, stopped = second.request("POST", f"/v1/sessions/{session_id}/stop")
        assert (status, stopped["end_reason"], stopped["host"]) == (200, "stopped", "edge-b")
        assert first.request("GET", f"/v1/sessions/{session_id}")[1]["status"] == "killed"
    finally:
        first.close()
        second.close()
