"""Fuzzing every route with malformed bodies and query strings: always a 4xx or a 2xx, never a
5xx; the daemon keeps serving; a rejected create leaves nothing behind in the journal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api_harness import ApiServer, deployment_body, running_api

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "name", "agent", "environment_id", "initial_events", "description", "metadata",
    "resources", "vault_ids", "budget", "schedule", "unknown",
]  # fmt: skip


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    """A valid create body with fields replaced, dropped or garbled, or raw garbage."""
    kind = draw(st.sampled_from(["mutate", "raw", "json"]))
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    body: dict[str, Any] = deployment_body()
    for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
        if draw(st.booleans()):
            body[field] = draw(json_values)
        else:
            body.pop(field, None)
    text = json.dumps(body)
    if draw(st.booleans()):
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:cut]
    return text.encode()


query_names = st.sampled_from(
    [
        "limit", "page", "status", "include_archived", "agent_id", "has_error", "trigger_type",
        "deployment_id", "created_at[gt]", "created_at[gte]", "created_at[lt]",
        "created_at[lte]", "created_at%5Bgte%5D", "x",
    ]
)  # fmt: skip
query_values = st.text(max_size=30) | st.sampled_from(
    ["true", "false", "0", "-1", "101", "1001", "2026-05-04T12:00:00", "9" * 40, "%ff", "%00"]
)


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(query_names, query_values), max_size=4))
    parts = []
    for name, value in pairs:
        encoded_name = name if "%" in name else quote(name, safe="[]")
        raw_ok = value.isascii() and value.isprintable() and not set(value) & set("#& ")
        encoded_value = value if raw_ok and draw(st.booleans()) else quote(value, safe="")
        parts.append(f"{encoded_name}={encoded_value}")
    return "&".join(parts)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(tmp_path_factory.mktemp("fuzz") / "state", max_request_bytes=64 * 1024) as s:
        yield s


@pytest.fixture(scope="module")
def fuzz_http(fuzz_server: ApiServer) -> Iterator[httpx2.Client]:
    with fuzz_server.http() as client:
        yield client


@pytest.fixture(scope="module")
def deployment_id(fuzz_http: httpx2.Client) -> str:
    response = fuzz_http.post("/v1/deployments", json=deployment_body())
    assert response.status_code == 200
    value: str = response.json()["id"]
    return value


def assert_client_error_or_success(response: httpx2.Response) -> None:
    assert response.status_code < 500, response.text
    assert "request-id" in response.headers
    if response.status_code >= 400:
        envelope = response.json()
        assert envelope["type"] == "error"
        assert envelope["error"]["message"]


@FUZZ
@given(body=mutated_bodies())
def test_create_rejects_garbage_without_writing(
    fuzz_server: ApiServer, fuzz_http: httpx2.Client, body: bytes
) -> None:
    before = fuzz_server.deployment_count()
    response = fuzz_http.post("/v1/deployments", content=body)
    assert_client_error_or_success(response)
    expected = before + 1 if response.status_code == 200 else before
    assert fuzz_server.deployment_count() == expected


@FUZZ
@given(body=mutated_bodies(), action=st.sampled_from(["", "/pause", "/unpause", "/run"]))
def test_deployment_posts_survive_garbage(
    fuzz_http: httpx2.Client, deployment_id: str, body: bytes, action: str
) -> None:
    response = fuzz_http.post(f"/v1/deployments/{deployment_id}{action}", content=body)
    assert_client_error_or_success(response)


@FUZZ
@given(query=query_strings(), path=st.sampled_from(["/v1/deployments", "/v1/deployment_runs"]))
def test_list_queries_survive_garbage(fuzz_http: httpx2.Client, query: str, path: str) -> None:
    response = fuzz_http.get(f"{path}?{query}")
    assert_client_error_or_success(response)
    if response.status_code == 200:
        assert set(response.json()) == {"data", "next_page"}


@FUZZ
@given(
    segment=st.text(min_size=1, max_size=40),
    route=st.sampled_from(
        [
            ("GET", "/v1/deployments/{}"),
            ("POST", "/v1/deployments/{}/archive"),
            ("GET", "/v1/deployment_runs/{}"),
        ]
    ),
)
def test_path_ids_survive_garbage(
    fuzz_http: httpx2.Client, segment: str, route: tuple[str, str]
) -> None:
    method, template = route
    response = fuzz_http.request(method, template.format(quote(segment, safe="")))
    assert_client_error_or_success(response)


def test_the_daemon_still_serves_after_the_fuzzing(fuzz_http: httpx2.Client) -> None:
    """Runs last in this module: the same server answers a normal request correctly."""
    assert fuzz_http.get("/v1/health").json()["status"] == "ok"
    assert fuzz_http.post("/v1/deployments", json=deployment_body()).status_code == 200


def test_rejected_creates_leave_no_half_written_rows(tmp_path: Path) -> None:
    with running_api(tmp_path / "state") as server, server.http() as http:
        for body in (b"{", json.dumps({**deployment_body(), "metadata": {"k": 1}}).encode()):
            assert http.post("/v1/deployments", content=body).status_code == 400
        assert server.deployment_count() == 0
        assert http.get("/v1/deployments?include_archived=true").json()["data"] == []
