"""Webhooks and metrics of the real ``agentcrond``: a receiver that is down across a daemon
restart still gets every event, verified by the ``standardwebhooks`` library; ``/metrics`` on
the socket and on the TCP listener; the ``agentcron webhooks`` commands."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentcron.cli import main as cli_main
from agentcron.core.events import EventType
from agentcron.metrics import METRIC_NAMES
from tests.support.daemon_harness import (
    DaemonProcess,
    UnixHTTPConnection,
    create_body,
    running_daemon,
    write_config,
)
from tests.support.fakes import wait_until
from tests.support.webhook_receiver import SECRET, WebhookReceiver, free_port, running_receiver

TOKEN = "ghp_never-in-a-webhook"


def webhook_config(
    tmp_path: Path, url: str, *, metrics_port: int | None = None, missing_agent: bool = True
) -> Path:
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    config = write_config(tmp_path, agent_argv=["/bin/true"])
    events = json.dumps([event_type.value for event_type in EventType])
    extra = (
        f'\n[agents.agent_missing]\nversion = 1\nargv = ["{tmp_path / "no-such-program"}"]\n'
        if missing_agent
        else ""
    )
    extra += f"""
[[webhooks]]
name = "ops"
url = "{url}"
secret_file = "{secret_file}"
events = {events}
timeout = "2s"
retry_delays = ["300ms"]
"""
    if metrics_port is not None:
        extra += f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    config.write_text(config.read_text() + extra)
    return config


def raw_get(daemon: DaemonProcess, path: str) -> tuple[int, str]:
    conn = UnixHTTPConnection(daemon.socket_path)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def deliveries(daemon: DaemonProcess) -> list[dict[str, Any]]:
    status, body = daemon.request("GET", "/v1/webhooks/deliveries?limit=100")
    assert status == 200, body
    return list(body["data"])


def make_events(daemon: DaemonProcess) -> list[str]:
    """A succeeded and two failed manual runs, a pause and an archive: five events."""
    ok_body = {
        **create_body("ok", cron=None),
        "resources": [
            {
                "type": "github_repository",
                "url": "https://github.com/o/r",
                "authorization_token": TOKEN,
            }
        ],
    }
    status, ok = daemon.request("POST", "/v1/deployments", ok_body)
    assert status == 200, ok
    status, bad = daemon.request(
        "POST", "/v1/deployments", {**create_body("bad", cron=None), "agent": "agent_missing"}
    )
    assert status == 200, bad
    for deployment_id in (ok["id"], bad["id"], bad["id"]):
        status, run = daemon.request("POST", f"/v1/deployments/{deployment_id}/run")
        assert status == 200, run
    assert daemon.request("POST", f"/v1/deployments/{ok['id']}/pause")[0] == 200
    assert daemon.request("POST", f"/v1/deployments/{bad['id']}/archive")[0] == 200
    return [ok["id"], bad["id"]]


def test_a_receiver_down_across_a_restart_gets_every_event_once_verified(
    tmp_path: Path,
) -> None:
    port = free_port()
    receiver = WebhookReceiver(port=port)
    config = webhook_config(tmp_path, f"http://127.0.0.1:{port}/hook")
    daemon = DaemonProcess(tmp_path, config)
    try:
        daemon.start()
        make_events(daemon)
        wait_until(
            lambda: (
                len(found := deliveries(daemon)) == 5 and all(d["attempts"] >= 1 for d in found)
            ),
            "every event attempted while the receiver is down",
        )
        before = deliveries(daemon)
        assert {d["status"] for d in before} == {"pending"}
        assert all(d["last_error"].startswith("cannot connect") for d in before)
        assert daemon.stop() == 0

        with running_receiver(receiver):
            daemon.start()
            wait_until(lambda: len(receiver.delivered()) == 5, "every event delivered", timeout=20)
            wait_until(
                lambda: {d["status"] for d in deliveries(daemon)} == {"delivered"},
                "the outbox says delivered",
            )
            status, exposition = raw_get(daemon, "/metrics")
            assert status == 200
            assert daemon.stop() == 0
    finally:
        daemon.close()
    assert all(r.verified for r in receiver.requests), [
        r.verification_error for r in receiver.requests
    ]
    accepted = Counter(r.webhook_id for r in receiver.requests if r.status == 204)
    assert set(accepted) == {d["event_id"] for d in before}  # none lost
    assert set(accepted.values()) == {1}  # and, here, none sent twice
    types = Counter(r.payload["type"] for r in receiver.delivered().values())
    assert types == {
        "deployment_run.succeeded": 1,
        "deployment_run.failed": 2,
        "deployment.paused": 1,
        "deployment.archived": 1,
    }
    bodies = b"".join(r.body for r in receiver.requests).decode()
    secret = SECRET.removeprefix("whsec_")
    for text in (bodies, daemon.logs(), exposition):
        assert TOKEN not in text
        assert secret not in text
    assert (
        'agentcron_webhook_deliveries_total{endpoint="ops",outcome="delivered"} 5.0' in exposition
    )


def test_metrics_on_the_socket_and_the_tcp_listener_which_serves_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics_port = free_port()
    with running_receiver(WebhookReceiver()) as receiver:
        config = webhook_config(tmp_path, receiver.url, metrics_port=metrics_port)
        with running_daemon(tmp_path, config) as daemon:
            make_events(daemon)
            base = f"http://127.0.0.1:{metrics_port}"
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                over_tcp = response.read().decode()
            for method, path in (("GET", "/v1/health"), ("POST", "/v1/deployments")):
                request = urllib.request.Request(f"{base}{path}", method=method, data=b"{}")
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=10)
                assert refused.value.code in (404, 405)
            status, over_socket = raw_get(daemon, "/metrics")
            assert status == 200
            for exposition in (over_tcp, over_socket):
                types = {f.name: f.type for f in text_string_to_metric_families(exposition)}
                for name, kind in METRIC_NAMES.items():
                    assert types.get(name) == kind, name
            assert 'agentcron_runs_total{outcome="session",trigger="manual"} 1.0' in over_socket

            socket = ["--socket", str(daemon.socket_path)]
            capsys.readouterr()
            assert cli_main(["webhooks", "list", "--json", *socket]) == 0
            (listed,) = json.loads(capsys.readouterr().out)
            assert (listed["name"], listed["status"]) == ("ops", "enabled")
            assert listed["url"] == f"http://127.0.0.1:{receiver.port}/…"
            assert cli_main(["webhooks", "test", "ops", *socket]) == 0
            assert "ops: delivered msg_" in capsys.readouterr().out
            tested = [r for r in receiver.requests if r.payload["type"] == "webhook.test"]
            assert len(tested) == 1
            assert tested[0].verified
            wait_until(lambda: len(receiver.delivered()) == 6, "the five events and the test")
            assert cli_main(["webhooks", "deliveries", "--status", "delivered", *socket]) == 0
            out = capsys.readouterr().out
            assert out.count("delivered") == 5
            assert cli_main(["webhooks", "retry", "ops", *socket]) == 0
            assert "ops: enabled; 0 deliveries due now" in capsys.readouterr().out
            assert cli_main(["webhooks", "test", "nope", *socket]) == 1
            assert "not_found_error" in capsys.readouterr().err


def test_check_config_reads_the_secret_and_never_prints_it_or_the_url_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentcron.daemon import main as daemon_main

    config = webhook_config(
        tmp_path, "https://hooks.example/agentcron?token=url-token", missing_agent=False
    )
    assert daemon_main(["--check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    (hook,) = json.loads(out)["webhooks"]
    assert hook["url"] == "https://hooks.example/…"
    assert "url-token" not in out
    assert SECRET.removeprefix("whsec_") not in out
    (tmp_path / "hook.secret").write_text("whsec_short\n")
    assert daemon_main(["--check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "webhooks[0].secret_file" in err
    assert "whsec_short" not in err
