"""The control API over a real Unix socket, spoken to with raw HTTP (no SDK in between)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from structlog.testing import capture_logs

from agentcron import __version__
from agentcron.core.models import AgentRef
from agentcron.errors import ServiceUnavailable
from tests.support.api_harness import ApiServer, deployment_body, running_api
from tests.support.fakes import RecordingLauncher


@pytest.fixture
def http(api_server: ApiServer) -> Iterator[httpx2.Client]:
    with api_server.http() as client:
        yield client


def create(http: httpx2.Client, **overrides: Any) -> dict[str, Any]:
    response = http.post("/v1/deployments", json=deployment_body(**overrides))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: httpx2.Response, status: int, error_type: str, *words: str) -> None:
    """The response is the API's error envelope with this status, type and message words."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    assert body["request_id"].startswith("req_")
    for word in words:
        assert word in body["error"]["message"], body["error"]["message"]
    assert "Traceback" not in response.text


def test_created_deployment_has_every_field_with_z_timestamps(http: httpx2.Client) -> None:
    deployment = create(http)
    assert set(deployment) >= {
        "type", "id", "name", "description", "agent", "environment_id", "initial_events",
        "metadata", "resources", "vault_ids", "schedule", "status", "paused_reason",
        "archived_at", "created_at", "updated_at",
    }  # fmt: skip
    assert deployment["type"] == "deployment"
    assert deployment["id"].startswith("depl_")
    assert deployment["agent"] == {"type": "agent", "id": "agent_test", "version": 1}
    assert deployment["created_at"].endswith("Z")
    assert all(t.endswith("Z") for t in deployment["schedule"]["upcoming_runs_at"])
    assert len(deployment["schedule"]["upcoming_runs_at"]) == 5
    fetched = http.get(f"/v1/deployments/{deployment['id']}")
    assert fetched.json() == deployment


def test_every_response_carries_a_distinct_request_id(http: httpx2.Client) -> None:
    responses = [
        http.get("/v1/health"),
        http.get("/v1/deployments"),
        http.get("/v1/deployments/depl_missing"),
        http.get("/v1/nowhere"),
        http.delete("/v1/deployments"),
        http.post("/v1/deployments", content=b"{"),
    ]
    ids = [r.headers["request-id"] for r in responses]
    assert all(i.startswith("req_") for i in ids)
    assert len(set(ids)) == len(ids)


def test_unknown_ids_and_routes_are_404_envelopes(http: httpx2.Client) -> None:
    assert_error(http.get("/v1/deployments/depl_nope"), 404, "not_found_error", "depl_nope")
    assert_error(http.get("/v1/deployment_runs/drun_nope"), 404, "not_found_error")
    assert_error(http.post("/v1/deployments/depl_nope/pause"), 404, "not_found_error")
    assert_error(http.post("/v1/deployments/depl_nope/run"), 404, "not_found_error")
    assert_error(http.get("/v1/sessions"), 404, "not_found_error", "/v1/sessions")
    assert_error(http.get("/"), 404, "not_found_error")


def test_wrong_methods_are_405_envelopes_naming_the_allowed_ones(http: httpx2.Client) -> None:
    response = http.delete("/v1/deployments")
    assert_error(response, 405, "invalid_request_error", "DELETE", "GET", "POST")
    assert "POST" in response.headers["Allow"]
    assert_error(http.put("/v1/health"), 405, "invalid_request_error", "PUT")
    assert_error(http.get("/v1/deployments/depl_x/pause"), 405, "invalid_request_error", "POST")


def test_conflicts_are_409_and_tell_the_sdk_not_to_retry(http: httpx2.Client) -> None:
    deployment = create(http)
    assert http.post(f"/v1/deployments/{deployment['id']}/archive").status_code == 200
    for action in ("pause", "unpause", "archive", "run"):
        response = http.post(f"/v1/deployments/{deployment['id']}/{action}")
        assert_error(response, 409, "invalid_request_error", "archived")
        assert response.headers["x-should-retry"] == "false"
    response = http.post(f"/v1/deployments/{deployment['id']}", json={"name": "x"})
    assert_error(response, 409, "invalid_request_error")


def test_bodyless_posts_are_accepted_with_content_length_zero(http: httpx2.Client) -> None:
    deployment = create(http)
    headers = {"Content-Type": "application/json", "Content-Length": "0"}
    paused = http.post(f"/v1/deployments/{deployment['id']}/pause", headers=headers)
    assert paused.status_code == 200
    assert paused.json()["paused_reason"] == {"type": "manual"}
    run = http.post(f"/v1/deployments/{deployment['id']}/run", headers=headers)
    assert run.status_code == 200
    assert run.json()["trigger_context"] == {"type": "manual"}
    # An explicit empty object is fine too.
    assert http.post(f"/v1/deployments/{deployment['id']}/unpause", json={}).status_code == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{", ["not valid JSON", "line 1"]),
        (b'{"name": }', ["not valid JSON"]),
        (b"\xff\xfe{}", ["not valid UTF-8"]),
        (b"[1, 2]", ["JSON object", "array"]),
        (b'"text"', ["JSON object", "string"]),
        (b"null", ["JSON object", "null"]),
        (b'{"name": NaN}', ["NaN"]),
        (b"[" * 100 + b"]" * 100, ["JSON object"]),
        (b'{"a":' * 100 + b"1" + b"}" * 100, ["nested deeper"]),
        (b'{"name": "\\ud800"}', ["surrogate"]),
        (b'{"name": ' + b"9" * 5000 + b"}", ["not valid JSON"]),
    ],
    ids=[
        "truncated", "missing-value", "invalid-utf8", "array", "string", "null", "nan",
        "deep-array", "deep-object", "lone-surrogate", "huge-integer",
    ],
)  # fmt: skip
def test_malformed_bodies_are_400_naming_the_problem(
    http: httpx2.Client, body: bytes, words: list[str]
) -> None:
    response = http.post("/v1/deployments", content=body)
    assert_error(response, 400, "invalid_request_error", *words)


def test_wrong_field_types_are_400_not_500(http: httpx2.Client) -> None:
    for body in (
        {"name": 5},
        {**deployment_body(), "initial_events": "hello"},
        {**deployment_body(), "metadata": [1]},
        {**deployment_body(), "schedule": {"type": "cron"}},
        {**deployment_body(), "agent": {"id": 7}},
    ):
        response = http.post("/v1/deployments", json=body)
        assert_error(response, 400, "invalid_request_error")
    deployment = create(http)
    response = http.post(f"/v1/deployments/{deployment['id']}", json={"name": None})
    assert_error(response, 400, "invalid_request_error", "name")


def test_oversized_bodies_are_413_before_being_read(tmp_path: Path) -> None:
    with running_api(tmp_path / "state", max_request_bytes=4096) as server, server.http() as http:
        big = json.dumps(deployment_body(description="x" * 5000)).encode()
        response = http.post("/v1/deployments", content=big)
        assert_error(response, 413, "request_too_large", "max_request_bytes", "4096")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the read itself is capped
            for start in range(0, len(big), 1000):
                yield big[start : start + 1000]

        response = http.post("/v1/deployments", content=chunks())
        assert_error(response, 413, "request_too_large")
        assert server.deployment_count() == 0
        # The daemon keeps serving after refusing.
        assert http.post("/v1/deployments", json=deployment_body()).status_code == 200


def test_percent_encoded_bracket_filters_are_decoded(
    api_server: ApiServer, http: httpx2.Client
) -> None:
    first = create(http, name="first")
    api_server.step_wall(3600)
    second = create(http, name="second")
    raw = http.get(f"/v1/deployments?created_at%5Bgte%5D={second['created_at']}")
    assert [d["id"] for d in raw.json()["data"]] == [second["id"]]
    raw = http.get(f"/v1/deployments?created_at%5Blte%5D={first['created_at']}")
    assert [d["id"] for d in raw.json()["data"]] == [first["id"]]


def test_timestamps_without_offset_mean_utc(api_server: ApiServer, http: httpx2.Client) -> None:
    create(http, name="early")
    api_server.step_wall(3600)
    late = create(http, name="late")
    naive = late["created_at"].removesuffix("Z")
    by_naive = http.get("/v1/deployments", params={"created_at[gte]": naive})
    assert [d["id"] for d in by_naive.json()["data"]] == [late["id"]]
    # "+00:00" sent unencoded arrives as a space; it still means +00:00.
    unencoded = http.get(f"/v1/deployments?created_at[gte]={naive}+00:00")
    assert [d["id"] for d in unencoded.json()["data"]] == [late["id"]]
    shifted = naive.replace("T", " ")  # a space separator is ISO 8601 too
    assert http.get("/v1/deployments", params={"created_at[gte]": shifted}).status_code == 200


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/v1/deployments?status=paused&include_archived=true", ["include_archived", "status"]),
        ("/v1/deployments?status=archived", ["status", "archived"]),
        ("/v1/deployments?include_archived=yes", ["include_archived", "true", "false"]),
        ("/v1/deployments?include_archived=1", ["include_archived"]),
        ("/v1/deployment_runs?has_error=True", ["has_error"]),
        ("/v1/deployments?limit=0", ["limit", "1 to 100"]),
        ("/v1/deployments?limit=101", ["limit", "1 to 100"]),
        ("/v1/deployments?limit=ten", ["limit"]),
        ("/v1/deployments?limit=5&limit=6", ["limit", "once"]),
        ("/v1/deployment_runs?limit=1001", ["limit", "1 to 1000"]),
        ("/v1/deployment_runs?limit=-1", ["limit"]),
        ("/v1/deployment_runs?trigger_type=cron", ["trigger_type"]),
        ("/v1/deployment_runs?created_at%5Bgt%5D=yesterday", ["created_at[gt]", "RFC 3339"]),
        ("/v1/deployments?created_at%5Blte%5D=2026-13-01", ["created_at[lte]"]),
        ("/v1/deployments?page=not-a-cursor", ["page"]),
        ("/v1/deployment_runs?page=%00%01", ["page"]),
    ],
)
def test_bad_query_parameters_are_400_naming_the_parameter(
    http: httpx2.Client, path: str, words: list[str]
) -> None:
    assert_error(http.get(path), 400, "invalid_request_error", *words)


def test_limits_at_the_edges_are_accepted(http: httpx2.Client) -> None:
    assert http.get("/v1/deployments?limit=100").status_code == 200
    assert http.get("/v1/deployments?limit=1").status_code == 200
    assert http.get("/v1/deployment_runs?limit=1000").status_code == 200


def test_unknown_query_parameters_are_ignored(http: httpx2.Client) -> None:
    create(http)
    response = http.get("/v1/deployments?order=asc&beta=1&created_at%5Bgt%5D=x")
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


def test_auth_and_version_headers_are_accepted_and_ignored(http: httpx2.Client) -> None:
    headers = {
        "Authorization": "Bearer whatever",
        "x-api-key": "sk-ant-nothing",
        "anthropic-version": "1999-01-01",
        "anthropic-beta": "nonsense-beta,managed-agents-2026-04-01",
    }
    response = http.post("/v1/deployments", json=deployment_body(), headers=headers)
    assert response.status_code == 200
    assert http.get("/v1/deployments", headers=headers).status_code == 200


def test_runs_of_an_unknown_deployment_are_an_empty_page(http: httpx2.Client) -> None:
    response = http.get("/v1/deployment_runs", params={"deployment_id": "depl_unknown"})
    assert response.json() == {"data": [], "next_page": None}


def test_manual_run_returns_the_run_even_when_the_session_failed(tmp_path: Path) -> None:
    launcher = RecordingLauncher(fail_with="session_rate_limited")
    with running_api(tmp_path / "state", launcher=launcher) as server, server.http() as http:
        deployment = create(http)
        response = http.post(f"/v1/deployments/{deployment['id']}/run")
        assert response.status_code == 200
        run = response.json()
        assert run["session_id"] is None
        assert run["error"]["type"] == "session_rate_limited"
        assert http.get(f"/v1/deployment_runs/{run['id']}").json() == run


def test_health_reports_version_journal_counts_and_scheduler(
    api_server: ApiServer, http: httpx2.Client
) -> None:
    create(http)
    health = http.get("/v1/health").json()
    assert health["status"] == "ok"
    assert health["version"] == __version__
    assert health["journal"] == str(api_server.journal_path)
    assert health["deployments"]["active"] == 1
    assert "next_fire_at" in health["scheduler"]
    assert health["now"] == "2026-05-04T12:00:00Z"


class ExplodingLauncher(RecordingLauncher):
    """A launcher whose agent lookup fails in a way nobody planned for."""

    async def resolve_agent(self, agent_id: str, version: int | None) -> AgentRef:
        raise RuntimeError("db password is hunter2")


def test_unexpected_errors_are_a_generic_500_logged_with_the_request_id(tmp_path: Path) -> None:
    with (
        running_api(tmp_path / "state", launcher=ExplodingLauncher()) as server,
        server.http() as http,
        capture_logs() as logs,
    ):
        response = http.post("/v1/deployments", json=deployment_body())
        assert_error(response, 500, "api_error", "request_id")
        assert "hunter2" not in response.text
        assert response.headers["x-should-retry"] == "false"  # a non-idempotent POST
        assert http.get("/v1/health").status_code == 200
    failures = [e for e in logs if e["event"] == "api_request_failed"]
    assert failures
    assert failures[0]["request_id"] == response.headers["request-id"]


class UnavailableLauncher(RecordingLauncher):
    """A launcher whose backing service is down while deployments are validated."""

    async def validate_environment(self, environment_id: str) -> None:
        raise ServiceUnavailable("the environment registry cannot be reached right now")


def test_service_unavailable_is_a_503_envelope(tmp_path: Path) -> None:
    with (
        running_api(tmp_path / "state", launcher=UnavailableLauncher()) as server,
        server.http() as http,
    ):
        response = http.post("/v1/deployments", json=deployment_body())
        assert_error(response, 503, "api_error", "cannot be reached")
        assert response.headers["x-should-retry"] == "false"
        assert server.deployment_count() == 0


def test_the_openapi_document_lists_every_route_and_method() -> None:
    from aiohttp.web import RouteDef

    from agentcron.api.routes import routes

    text = (Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text()
    paths = text.split("\npaths:\n", 1)[1].split("\ncomponents:\n", 1)[0]
    sections = {
        block.split(":\n", 1)[0]: block
        for block in ("\n" + paths).split("\n  /")[1:]
        if ":\n" in block
    }
    for route in routes:
        assert isinstance(route, RouteDef)
        section = sections.get(route.path.removeprefix("/"))
        assert section is not None, f"{route.path} is not in docs/openapi.yaml"
        assert f"\n    {route.method.lower()}:" in section, f"{route.method} {route.path}"
