"""``/metrics`` and ``/v1/webhooks`` on the control socket (raw HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from aiohttp.web import RouteDef
from prometheus_client.parser import text_string_to_metric_families

from agentcron.api.observability import routes
from agentcron.metrics import METRIC_NAMES
from tests.api.test_api import assert_error, create
from tests.support.api_harness import ApiServer


@pytest.fixture
def http(api_server: ApiServer) -> Iterator[httpx2.Client]:
    with api_server.http() as client:
        yield client


def test_metrics_are_the_prometheus_text_exposition(http: httpx2.Client) -> None:
    deployment = create(http, schedule=None)
    assert http.post(f"/v1/deployments/{deployment['id']}/run").status_code == 200
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert response.headers["request-id"].startswith("req_")
    types = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert {name: types.get(name) for name in METRIC_NAMES} == METRIC_NAMES
    assert 'agentcron_runs_total{outcome="session",trigger="manual"} 1.0' in response.text
    assert 'agentcron_deployments{status="active"} 1.0' in response.text


def test_webhook_routes_without_webhooks(http: httpx2.Client) -> None:
    listed = http.get("/v1/webhooks")
    assert listed.status_code == 200
    assert listed.json() == {"data": [], "next_page": None}
    page = http.get("/v1/webhooks/deliveries")
    assert page.json() == {"data": [], "next_page": None}
    assert_error(http.post("/v1/webhooks/ops/retry"), 404, "not_found_error", "'ops'")
    assert_error(http.post("/v1/webhooks/ops/test"), 404, "not_found_error", "configured")


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("status=sent", ("status",)),
        ("limit=0", ("limit",)),
        ("limit=101", ("limit",)),
        ("page=garbage", ("page",)),
        ("status=pending&status=failed", ("status", "more than once")),
    ],
    ids=["bad-status", "limit-0", "limit-101", "bad-cursor", "twice"],
)
def test_bad_delivery_queries_are_400s_naming_the_parameter(
    http: httpx2.Client, query: str, words: tuple[str, ...]
) -> None:
    assert_error(http.get(f"/v1/webhooks/deliveries?{query}"), 400, "invalid_request_error", *words)


def test_the_openapi_document_lists_the_observability_routes() -> None:
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
